"""Outputs under races, kills and careless paths: nothing lost, inputs never touched, one complete OUT or none.

Runs that must be real processes (concurrent writers, kill -9, SIGTERM) use a ~120 MB
LLaMA-shaped checkpoint pair made here, so that a run holds its lock long enough to be hit.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import folder_digest
from hf_lines import LinesMerger
from hf_lines.io import staging
from hf_lines.cli import main
from hf_lines.errors import OutputExistsError, OutputLockedError, UnsafeOutputError

ALPHA, BETA = 0.3, 0.6


def _leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def _weights_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.safetensors"))}


# ------------------------------------------------------------------ a checkpoint worth killing
@pytest.fixture(scope="module")
def big_pair(tmp_path_factory):
    """(base, fine-tune) folders of a 4-block LLaMA shape, 30M float32 parameters (120 MB) each."""
    root = tmp_path_factory.mktemp("big")
    hidden, inter, vocab, layers = 512, 1536, 16000, 4
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
              "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": 8,
              "num_key_value_heads": 8, "vocab_size": vocab, "tie_word_embeddings": False}
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "lm_head.weight": (vocab, hidden),
              "model.norm.weight": (hidden,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + f"self_attn.{x}_proj.weight": (hidden, hidden) for x in "qkvo"})
        shapes.update({p + "mlp.gate_proj.weight": (inter, hidden), p + "mlp.up_proj.weight": (inter, hidden),
                       p + "mlp.down_proj.weight": (hidden, inter), p + "input_layernorm.weight": (hidden,),
                       p + "post_attention_layernorm.weight": (hidden,)})
    gen = torch.Generator().manual_seed(0)
    base = {n: torch.randn(s, generator=gen) * 0.02 for n, s in shapes.items()}
    ft = {n: t + torch.randn(t.shape, generator=gen) * 0.002 for n, t in base.items()}
    folders = []
    for name, sd in (("base", base), ("ft", ft)):
        folder = root / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        half = len(sd) // 2
        names = sorted(sd)
        index = {}
        for k, part in enumerate((names[:half], names[half:])):
            shard = f"model-0000{k + 1}-of-00002.safetensors"
            save_file({n: sd[n] for n in part}, folder / shard, metadata={"format": "pt"})
            index.update({n: shard for n in part})
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index}))
        folders.append(folder)
    reference = root / "reference"
    LinesMerger.from_pretrained(folders[0], [folders[1]], alpha=ALPHA, beta=BETA).save_pretrained(
        reference, progress=False)
    return folders[0], folders[1], _weights_digest(reference)


def _scale_cmd(base: Path, ft: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hf_lines", "scale", str(base), str(ft), "-o", str(out),
            "--alpha", str(ALPHA), "--beta", str(BETA), "-q", "--workers", "1", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


# Imports first, then waits for a "go" file: the runs then reach their lock within milliseconds of each other.
# Three runs start together. A loaded machine can start one so late that the winner has already
# finished (then it finds a finished folder, not a lock): the winner holds its lock until the
# other two have been refused (60 s at most), so the test sees the race it means to, every time.
_GATED = """
import sys, time, pathlib
from hf_lines.cli import main
from hf_lines.io import staging
ready, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
acquire = staging.OutputLock.acquire

def acquire_and_wait(lock):
    try:
        held = acquire(lock)
    except staging.OutputLockedError:
        (go.parent / ("refused-" + ready.name)).touch()
        raise
    deadline = time.time() + 60
    while len(list(go.parent.glob("refused-*"))) < 2 and time.time() < deadline:
        time.sleep(0.01)
    return held

staging.OutputLock.acquire = acquire_and_wait
ready.touch()
while not go.exists():
    time.sleep(0.005)
sys.exit(main(sys.argv[3:]))
"""


def test_concurrent_runs_one_wins_the_others_are_refused(big_pair, tmp_path):
    base, ft, reference = big_pair
    out = tmp_path / "out"
    go = tmp_path / "go"
    args = _scale_cmd(base, ft, out)[3:]
    procs = [subprocess.Popen([sys.executable, "-c", _GATED, str(tmp_path / f"ready{i}"), str(go), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for i in range(3)]
    deadline = time.time() + 60
    while not all((tmp_path / f"ready{i}").exists() for i in range(3)) and time.time() < deadline:
        time.sleep(0.02)
    go.touch()
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2, 2], results
    for rc, err in results:
        assert "Traceback" not in err
        if rc == 2:
            assert "hf-lines: error:" in err and "is being written by another hf-lines run (pid" in err, err
    assert _weights_digest(out) == reference
    assert _leftovers(tmp_path, "out") == []


def test_a_held_lock_names_its_holder(family_models, tmp_path, capsys):
    base, (ft,) = family_models("llama")
    out = tmp_path / "out"
    with staging.OutputLock(out):
        rc = main(["scale", str(base), str(ft), "-o", str(out), "--alpha", "0.5", "--beta", "0.5", "-q"])
        with pytest.raises(OutputLockedError, match=f"pid {os.getpid()} on "):
            LinesMerger.from_pretrained(base, [ft], alpha=0.5, beta=0.5).save_pretrained(out, progress=False)
    assert rc == 2
    assert f"{out} is being written by another hf-lines run (pid {os.getpid()}" in capsys.readouterr().err
    assert not out.exists() and _leftovers(tmp_path, "out") == []


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "fallback"])
@pytest.mark.parametrize("content", ["user-files", "empty-folder"])
def test_a_folder_appearing_at_out_mid_run_survives(renameat2, content, family_models, tmp_path, monkeypatch):
    base, (ft,) = family_models("llama")
    out = tmp_path / "out"
    if not renameat2:
        monkeypatch.setattr(staging, "_renameat2", lambda *a: False)
    import hf_lines.publish.card as card_module

    original = card_module.write_merger_card

    def card_and_a_user(*args, **kwargs):
        out.mkdir()
        if content == "user-files":
            (out / "notes.txt").write_text("mine")
        return original(*args, **kwargs)

    monkeypatch.setattr(card_module, "write_merger_card", card_and_a_user)
    merger = LinesMerger.from_pretrained(base, [ft], alpha=0.5, beta=0.5)
    with pytest.raises(OutputExistsError, match="appeared while this run was writing") as e:
        merger.save_pretrained(out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == (["notes.txt"] if content == "user-files" else [])
    if content == "user-files":
        assert (out / "notes.txt").read_text() == "mine"
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("out.new-")]
    assert len(kept) == 1 and str(kept[0]) in str(e.value)
    expected = LinesMerger.from_pretrained(base, [ft], alpha=0.5, beta=0.5).state_dict()
    got = load_file(kept[0] / "model.safetensors")
    assert all(torch.equal(got[n], expected[n]) for n in expected)
    assert _leftovers(tmp_path, "out") == []


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "fallback"])
def test_overwrite_replaces_only_at_the_end(renameat2, family_models, tmp_path, monkeypatch):
    base, (ft,) = family_models("llama")
    if not renameat2:
        monkeypatch.setattr(staging, "_renameat2", lambda *a: False)
    out = tmp_path / "out"
    LinesMerger.from_pretrained(base, [ft], alpha=0.1, beta=0.1).save_pretrained(out, progress=False)
    (out / "extra.txt").write_text("old")
    LinesMerger.from_pretrained(base, [ft], alpha=0.5, beta=0.5).save_pretrained(out, overwrite=True, progress=False)
    assert not (out / "extra.txt").exists()
    assert json.loads((out / "hf_lines.json").read_text())["lines"]["alpha"] == 0.5
    assert _leftovers(tmp_path, "out") == []


def test_a_kill_between_the_two_renames_of_an_overwrite_is_undone(tmp_path, monkeypatch, capsys):
    """Without renameat2 an overwrite is two renames; a crash between them leaves .OUT.old-*, which the next run restores."""
    out, stage = tmp_path / "out", tmp_path / f".out.tmp-{os.getpid()}-abc"
    out.mkdir()
    (out / "weights").write_text("old complete output")
    stage.mkdir()
    (stage / "weights").write_text("new complete output")
    pid = os.fork()
    if pid == 0:  # the run: the first rename happens, then it dies before the second
        staging._renameat2 = lambda *a: False
        staging.move_noreplace = lambda *a: os._exit(9)
        staging._place(stage, out, overwrite=True)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 9
    assert not out.exists() and [p.name.split("-")[0] for p in tmp_path.iterdir() if ".old-" in p.name] == [".out.old"]
    assert main(["clean", str(out)]) == 0
    said = capsys.readouterr().out
    assert "restored" in said and "removed .out.tmp-" in said
    assert (out / "weights").read_text() == "old complete output"
    assert _leftovers(tmp_path, "out") == []


@pytest.mark.parametrize("where", ["base", "finetuned", "inside-finetuned", "parent-of-base", "symlink-to-base"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_an_output_overlapping_an_input_is_refused(where, overwrite, family_models, tmp_path, capsys):
    family_base, (family_ft,) = family_models("llama")
    import shutil

    root = tmp_path / "models"
    base, ft = root / "base", root / "ft"
    shutil.copytree(family_base, base)
    shutil.copytree(family_ft, ft)
    (tmp_path / "link").symlink_to(base, target_is_directory=True)
    out = {"base": base, "finetuned": ft, "inside-finetuned": ft / "sub" / "out", "parent-of-base": root,
           "symlink-to-base": tmp_path / "link"}[where]
    before = {p: folder_digest(p) for p in (base, ft)}
    rc = main(["scale", str(base), str(ft), "-o", str(out), "--alpha", "0.5", "--beta", "0.5", "-q"]
              + (["--overwrite"] if overwrite else []))
    err = capsys.readouterr().err
    assert rc == 2 and "hf-lines: error:" in err and "inputs are never modified" in err, err
    assert {p: folder_digest(p) for p in (base, ft)} == before
    assert not (ft / "sub").exists()
    with pytest.raises(UnsafeOutputError):
        LinesMerger.from_pretrained(base, [ft], alpha=0.5, beta=0.5).save_pretrained(out, overwrite=True, progress=False)


def test_stale_staging_of_dead_runs_is_removed_and_said(family_models, tmp_path, caplog):
    base, (ft,) = family_models("llama")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.tmp-{dead.pid}-abcdef"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "model.safetensors").write_bytes(b"\0" * 1000)
    alive = tmp_path / ".out.tmp-1-abcdef"  # pid 1 is alive: never touched
    alive.mkdir()
    LinesMerger.from_pretrained(base, [ft], alpha=0.5, beta=0.5).save_pretrained(tmp_path / "out", progress=False)
    assert not stale.exists() and alive.exists()
    lines = [r.getMessage() for r in caplog.records if "staging folder of an interrupted run" in r.getMessage()]
    assert len(lines) == 1 and stale.name in lines[0]


def test_clean_by_hand(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    soup_out = tmp_path / "soups" / f".lam0.30.tmp-{dead.pid}-abc123"  # a soup output's staging, inside the sweep folder
    soup_out.mkdir(parents=True)
    beside = tmp_path / f".soups.tmp-{dead.pid}-abc123"
    beside.mkdir()
    assert main(["clean", str(tmp_path / "soups")]) == 0
    said = capsys.readouterr().out.splitlines()
    assert len(said) == 2 and not soup_out.exists() and not beside.exists()
    assert main(["clean", str(tmp_path / "soups")]) == 0
    assert "nothing to clean" in capsys.readouterr().out


def test_output_folders_follow_the_umask(family_models, tmp_path):
    base, (ft,) = family_models("llama")
    old = os.umask(0o022)
    try:
        out = LinesMerger.from_pretrained(base, [ft], alpha=0.5, beta=0.5).save_pretrained(tmp_path / "a" / "out",
                                                                                          progress=False)
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o755
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o644
    assert not list(tmp_path.glob("a/.out.lock"))


def _wait_for_staging(parent: Path, name: str, proc: subprocess.Popen, timeout: float = 60) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if any(".tmp-" in n for n in _leftovers(parent, name)):
            return True
        time.sleep(0.005)
    return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_a_killed_run_then_a_rerun_leave_one_complete_output(sig, big_pair, tmp_path):
    base, ft, reference = big_pair
    out = tmp_path / "out"
    rng = random.Random(int(sig))
    proc = subprocess.Popen(_scale_cmd(base, ft, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())
    if _wait_for_staging(tmp_path, "out", proc):
        time.sleep(rng.uniform(0.0, 0.4))  # somewhere in the streaming
    proc.send_signal(sig)
    rc = proc.wait(timeout=60)
    err = proc.stderr.read()
    assert "Traceback" not in err
    if out.exists():  # the kill came after the move: the output must be whole
        assert _weights_digest(out) == reference
    if sig == signal.SIGTERM and rc != 0:
        assert rc == 130 and "interrupted" in err
        assert not [n for n in _leftovers(tmp_path, "out") if ".tmp-" in n]  # cleaned up like Ctrl-C
    rerun = subprocess.run(_scale_cmd(base, ft, out), capture_output=True, text=True, env=_env(), timeout=120)
    assert rerun.returncode in (0, 2) and "Traceback" not in rerun.stderr
    assert _weights_digest(out) == reference
    assert _leftovers(tmp_path, "out") == []


def test_console_entry_turns_a_late_sigterm_into_exit_130(monkeypatch, capsys):
    """The console entry keeps its SIGTERM handler to the very exit: a signal just after main() returned must
    give exit 130 and one line, not death by signal or a traceback."""
    from hf_lines import cli

    exits = []
    monkeypatch.setattr(cli.os, "_exit", exits.append)

    def main_then_signal():
        assert signal.getsignal(signal.SIGTERM) is cli._terminated
        signal.raise_signal(signal.SIGTERM)  # arrives as main() returns
        return 0

    monkeypatch.setattr(cli, "main", main_then_signal)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        cli.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert exits == [130] and "interrupted" in capsys.readouterr().err
