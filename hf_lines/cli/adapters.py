"""Command-line pieces for adapter inputs and outputs, shared by ``scale`` and ``merge``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from hf_lines.core.schedule import block_scales
from hf_lines.adapters.save import OUTPUT_FORMATS


def add_output_format_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--output-format", choices=OUTPUT_FORMATS, default="auto",
        help="'adapter': a PEFT LoRA adapter with each module's B scaled (inputs must be LoRA adapters, method "
             "linear); 'model': a full model; 'auto' (default): adapter when every input is a non-DoRA LoRA "
             "adapter and the method is linear, else model",
    )


def print_adapter_summary(out: Path) -> None:
    from hf_lines.publish.tables import format_table

    record = json.loads((Path(out) / "hf_lines.json").read_text())
    lines = record["lines"]
    rows = [
        [t["name"], i, lam]
        for t in lines["towers"]
        for i, lam in enumerate(block_scales(t["num_blocks"], lines["alpha"], lines["beta"]))
    ]
    print(format_table(["tower", "block", "lambda"], rows))
    print(f"non-block tensors: {lines['policy']} policy (alpha = {lines['alpha']:g})")
    print(f"wrote adapter {out}")
