"""Build the optional fused CPU kernels; everything else is declared in pyproject.toml.

``optional=True``: where no C compiler is found the package installs without them and
the engine uses its torch code for everything (slower, same results to dtype tolerance).
"""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "hf_lines.core.kernels._native",
            sources=["hf_lines/core/kernels/_native.c"],
            depends=["hf_lines/core/kernels/_kernels_impl.h"],
            # no FMA contraction: every ISA clone rounds alike, so outputs are byte-identical across machines
            extra_compile_args=["-O3", "-ffp-contract=off", "-fno-trapping-math", "-std=c11"],
            optional=True,
        )
    ]
)
