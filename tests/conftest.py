"""Shared fixtures: tiny random models built offline."""
from __future__ import annotations

# The Hub emulator must set HF_ENDPOINT, HF_TOKEN, HF_HOME... before anything imports huggingface_hub.
from hub_emulator import configure_environment

configure_environment()

from conftest_hub import hub, hub_repo_id  # noqa: E402,F401  (fixtures)

import hashlib
from pathlib import Path

import pytest
import torch

import tiny_models


@pytest.fixture(scope="session")
def model_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def family_models(model_root):
    """family -> (base folder, [fine-tuned folders]); built once per session, on first use."""
    cache: dict[tuple, tuple[Path, list[Path]]] = {}

    def get(family: str, n_models: int = 1, dtype: torch.dtype = torch.float32, max_shard_size=None):
        key = (family, n_models, dtype, max_shard_size)
        if key not in cache:
            root = model_root / f"{family}-{n_models}-{str(dtype)[6:]}-{max_shard_size or 'one'}"
            cache[key] = tiny_models.make_family(root, family, n_models, dtype, max_shard_size)
        return cache[key]

    return get


def folder_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``: proves inputs are never modified."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow (CI always does)")


def pytest_collection_modifyitems(config, items):
    """Slow tests (whole-registry checks) run in CI or with --runslow, so the default run stays fast."""
    import os

    if config.getoption("--runslow") or os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow (CI runs it)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
