"""Reads stay inside the inputs: index entries and links that lead elsewhere, FIFOs, mistyped paths, mixed dtypes."""
from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from hf_lines import LinesMerger
from hf_lines.errors import CheckpointError
from hf_lines.io.support_files import copy_support_files
from hf_lines.io import Checkpoint, resolve

INDEX = "model.safetensors.index.json"
SHARD = "model-00003-of-00011.safetensors"

# Paths opened while a test watches (an audit hook sees every open() and os.open() of this process).
_opened: list[Any] | None = None


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _opened is not None:
        _opened.append(args[0])


sys.addaudithook(_audit)


def _opens_of(target: Path, fn: Callable[[], Any]) -> tuple[list[str], BaseException | None]:
    """Paths opened by ``fn`` that lead to ``target``, and what ``fn`` raised."""
    global _opened
    _opened, error = [], None
    try:
        fn()
    except BaseException as e:  # noqa: BLE001 - returned to the test
        error = e
    finally:
        opened, _opened = _opened, None
    hits = [str(p) for p in opened if isinstance(p, (str, os.PathLike)) and Path(p).resolve() == target.resolve()]
    return hits, error


def _within(fn: Callable[[], Any], fifos: list[Path], seconds: float = 5.0) -> dict[str, Any]:
    """Run ``fn``; if it is still blocked on a FIFO after ``seconds``, the test fails instead of hanging.

    The rescue comes from another process: a read blocked in Rust (safetensors) holds the GIL, so no
    Python thread or signal handler could run. Opening a FIFO read-write never blocks and ends the wait.
    """
    helpers = [subprocess.Popen(["sh", "-c", f"sleep {seconds}; exec 3<>{shlex.quote(str(f))}"]) for f in fifos]
    start, box = time.monotonic(), {}
    try:
        box["result"] = fn()
    except Exception as e:  # noqa: BLE001 - returned to the test
        box["error"] = e
    finally:
        for helper in helpers:
            helper.kill()
            helper.wait()
    if time.monotonic() - start >= seconds:
        pytest.fail(f"blocked for {seconds}s on a FIFO")
    return box


def _sharded(family_models, tmp_path: Path) -> Path:
    base, _ = family_models("llama", max_shard_size="20KB")
    return Path(shutil.copytree(base, tmp_path / "model"))


def _repoint(folder: Path, shard: str, entry: str) -> None:
    """Make every index entry naming ``shard`` say ``entry`` instead."""
    index = json.loads((folder / INDEX).read_text())
    index["weight_map"] = {n: entry if f == shard else f for n, f in index["weight_map"].items()}
    (folder / INDEX).write_text(json.dumps(index))


# ------------------------------------------------------------------- escaping entries
def _dotdot(folder: Path, outside: Path) -> str:
    _repoint(folder, SHARD, "../outside.safetensors")
    return "../outside.safetensors"


def _absolute(folder: Path, outside: Path) -> str:
    _repoint(folder, SHARD, str(outside))
    return str(outside)


def _through_linked_folder(folder: Path, outside: Path) -> str:
    (folder / "sub").symlink_to(outside.parent, target_is_directory=True)
    _repoint(folder, SHARD, f"sub/{outside.name}")
    return f"sub/{outside.name}"


def _linked_shard(folder: Path, outside: Path) -> str:
    (folder / SHARD).symlink_to(outside)
    return SHARD


@pytest.mark.parametrize("make_entry", [_dotdot, _absolute, _through_linked_folder, _linked_shard])
def test_index_entry_leading_outside_is_refused_unread(family_models, tmp_path, make_entry):
    folder = _sharded(family_models, tmp_path)
    outside = tmp_path / "outside.safetensors"
    shutil.move(folder / SHARD, outside)  # a valid shard: read silently before, it would just work
    entry = make_entry(folder, outside)
    hits, error = _opens_of(outside, lambda: Checkpoint(folder))
    assert isinstance(error, CheckpointError), error
    assert repr(entry) in str(error) and "outside the model folder" in str(error)
    assert hits == []  # refused before a single byte of it is read


def test_linked_single_file_outside_is_refused_unread(family_models, tmp_path):
    base, _ = family_models("llama")
    folder = Path(shutil.copytree(base, tmp_path / "model"))
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(folder / "model.safetensors", outside)
    (folder / "model.safetensors").symlink_to(outside)
    hits, error = _opens_of(outside, lambda: Checkpoint(folder))
    assert isinstance(error, CheckpointError) and "model.safetensors" in str(error), error
    assert hits == []


# ------------------------------------------------------------------------- FIFOs
def test_fifo_named_by_the_index_is_refused(family_models, tmp_path):
    folder = _sharded(family_models, tmp_path)
    (folder / SHARD).unlink()
    os.mkfifo(folder / SHARD)
    box = _within(lambda: Checkpoint(folder), [folder / SHARD])
    assert isinstance(box.get("error"), CheckpointError), box
    assert SHARD in str(box["error"]) and "FIFO" in str(box["error"])


@pytest.mark.parametrize("name", ["config.json", INDEX])
def test_fifo_as_config_or_index_is_refused(family_models, tmp_path, name):
    folder = _sharded(family_models, tmp_path)
    (folder / name).unlink()
    os.mkfifo(folder / name)
    box = _within(lambda: Checkpoint(folder).config, [folder / name])
    assert isinstance(box.get("error"), CheckpointError), box
    assert name in str(box["error"]) and "FIFO" in str(box["error"])


# ----------------------------------------------------------------- Hub cache layout
def test_hub_snapshot_links_into_blobs_are_read_but_not_links_elsewhere(hub, family_models, tmp_path):
    base, _ = family_models("llama", max_shard_size="20KB")
    repo_id = hub.new_repo_id("confined")
    hub.emulator.add_commit(repo_id, {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()})
    snapshot = resolve(repo_id)
    assert (snapshot / SHARD).is_symlink() and "blobs" in os.readlink(snapshot / SHARD)

    ckpt, local = Checkpoint(snapshot), Checkpoint(base)
    assert ckpt.names() == local.names()
    name = "model.layers.1.mlp.up_proj.weight"
    assert torch.equal(ckpt.get(name), local.get(name))
    assert ckpt.config["model_type"] == "llama"

    outside = tmp_path / "elsewhere.safetensors"  # outside the repo's cache folder, though a valid shard
    shutil.copy(base / SHARD, outside)
    (snapshot / SHARD).unlink()
    (snapshot / SHARD).symlink_to(outside)
    with pytest.raises(CheckpointError, match=f"'{SHARD}'.*outside the model folder"):
        Checkpoint(snapshot)


# -------------------------------------------------------------- support files
def test_support_files_skip_links_outside_and_fifos(family_models, tmp_path, caplog):
    base, _ = family_models("llama")
    src = Path(shutil.copytree(base, tmp_path / "model"))
    secret = tmp_path / "secret.json"
    secret.write_text('{"private": "not part of the model"}')
    (src / "tokenizer.json").symlink_to(secret)
    os.mkfifo(src / "pipe.txt")
    dst = tmp_path / "out"
    dst.mkdir()
    with caplog.at_level(logging.WARNING, logger="hf_lines.io.support_files"):
        box = _within(lambda: copy_support_files(src, dst), [src / "pipe.txt"])
    assert "error" not in box, box
    assert "config.json" in box["result"]
    assert "tokenizer.json" not in box["result"] and "pipe.txt" not in box["result"]
    assert not (dst / "tokenizer.json").exists() and not (dst / "pipe.txt").exists()
    assert "tokenizer.json" in caplog.text and "pipe.txt" in caplog.text


# ------------------------------------------------------------ friendlier edges
@pytest.mark.parametrize("spec", ["models/llama-bse", "./models/llama-bse"])
def test_mistyped_local_path_suggests_close_names(tmp_path, monkeypatch, spec):
    (tmp_path / "models" / "llama-base").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"llama-bse does not exist; did you mean models/llama-base\?"):
        resolve(spec)


def test_hub_failure_says_no_local_folder_either(hub):
    with pytest.raises(CheckpointError, match="(?s)cannot download.*no local folder"):
        resolve(f"{hub.user}/no-such-model")


def test_other_float_dtype_warns_once_per_model(family_models, caplog):
    base, _ = family_models("llama")
    _, fts = family_models("llama", n_models=2, dtype=torch.bfloat16)
    with caplog.at_level(logging.WARNING, logger="hf_lines.pipeline.executor"):
        LinesMerger.from_pretrained(base, fts, alpha=0.5, beta=0.5)
    warned = [r.getMessage() for r in caplog.records if r.name == "hf_lines.pipeline.executor"]
    assert len(warned) == 2, warned
    for ft, message in zip(fts, warned):
        assert str(ft) in message and "bfloat16" in message and "float32" in message and "base's dtype" in message
