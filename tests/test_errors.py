"""Bad input gets a clear error that names the file or tensor, and nothing half-written is left."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import folder_digest
from hf_lines import LinesMerger
from hf_lines.cli import main
from hf_lines.errors import CheckpointError, IncompatibleModelsError, NonFiniteError, OutputExistsError


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _leftovers(parent, name):
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def test_different_architectures(family_models):
    llama, _ = family_models("llama")
    _, (gpt2_ft,) = family_models("gpt2")
    with pytest.raises(IncompatibleModelsError, match="gpt2.*llama|same architecture"):
        LinesMerger.from_pretrained(llama, [gpt2_ft], alpha=0.5, beta=0.5)


def test_different_tensor_sets(family_models, tmp_path):
    base, (ft,) = family_models("llama")
    bad = _copy(ft, tmp_path / "ft")
    sd = load_file(bad / "model.safetensors")
    sd.pop("model.layers.2.mlp.up_proj.weight")
    save_file(sd, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(IncompatibleModelsError, match="model.layers.2.mlp.up_proj.weight"):
        LinesMerger.from_pretrained(base, [bad], alpha=0.5, beta=0.5)


def test_shape_mismatch(family_models, tmp_path):
    base, (ft,) = family_models("llama")
    bad = _copy(ft, tmp_path / "ft")
    sd = load_file(bad / "model.safetensors")
    sd["model.embed_tokens.weight"] = torch.zeros(65, 32)
    save_file(sd, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(IncompatibleModelsError, match=r"model.embed_tokens.weight.*\[65, 32\]"):
        LinesMerger.from_pretrained(base, [bad], alpha=0.5, beta=0.5)


def test_non_finite_delta_leaves_no_output(family_models, tmp_path):
    base, (ft,) = family_models("llama")
    bad = _copy(ft, tmp_path / "ft")
    sd = load_file(bad / "model.safetensors")
    sd["model.layers.1.self_attn.k_proj.weight"][0, 0] = float("nan")
    save_file(sd, bad / "model.safetensors", metadata={"format": "pt"})
    merger = LinesMerger.from_pretrained(base, [bad], alpha=0.5, beta=0.5)
    with pytest.raises(NonFiniteError, match="model.layers.1.self_attn.k_proj.weight"):
        merger.save_pretrained(tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert _leftovers(tmp_path, "out") == []


def test_missing_shard(family_models, tmp_path):
    base, (ft,) = family_models("llama", max_shard_size="20KB")
    bad = _copy(ft, tmp_path / "ft")
    index = json.loads((bad / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[1]
    (bad / victim).unlink()
    with pytest.raises(CheckpointError, match=victim):
        LinesMerger.from_pretrained(base, [bad], alpha=0.5, beta=0.5)


def test_truncated_shard(family_models, tmp_path):
    base, (ft,) = family_models("llama")
    bad = _copy(ft, tmp_path / "ft")
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors.*re-download"):
        LinesMerger.from_pretrained(base, [bad], alpha=0.5, beta=0.5)


def test_no_weights_and_not_a_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no model weights"):
        LinesMerger.from_pretrained(tmp_path / "empty", [tmp_path / "empty"], alpha=0.5, beta=0.5)
    with pytest.raises(CheckpointError, match="neither an existing folder nor a Hub repo id"):
        LinesMerger.from_pretrained("a/b/c", ["x"], alpha=0.5, beta=0.5)


def test_existing_output_refused_unless_overwrite(family_models, tmp_path):
    base, (ft,) = family_models("llama")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    merger = LinesMerger.from_pretrained(base, [ft], alpha=0.5, beta=0.5)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        merger.save_pretrained(out, progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    merger.save_pretrained(out, overwrite=True, progress=False)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()
    assert _leftovers(tmp_path, "out") == []


def test_failed_overwrite_keeps_previous_output(family_models, tmp_path):
    base, (ft,) = family_models("llama")
    out = tmp_path / "out"
    LinesMerger.from_pretrained(base, [ft], alpha=0.5, beta=0.5).save_pretrained(out, progress=False)
    before = folder_digest(out)
    bad = _copy(ft, tmp_path / "ft")
    sd = load_file(bad / "model.safetensors")
    sd["lm_head.weight"][3, 3] = float("inf")
    save_file(sd, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(NonFiniteError):
        LinesMerger.from_pretrained(base, [bad], alpha=0.5, beta=0.5).save_pretrained(out, overwrite=True, progress=False)
    assert folder_digest(out) == before


def test_cli_reports_errors_cleanly(family_models, tmp_path, capsys):
    base, (ft,) = family_models("llama")
    out = tmp_path / "out"
    out.mkdir()
    rc = main(["scale", str(base), str(ft), "-o", str(out), "--alpha", "0.5", "--beta", "0.5", "-q"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "Traceback" not in err


def test_console_script_exit_codes_and_output(family_models, tmp_path):
    # the console entry point exits without interpreter teardown: its output and exit code must survive that
    import subprocess
    import sys

    base, (ft,) = family_models("llama")
    run = lambda *args: subprocess.run([sys.executable, "-m", "hf_lines", *args], capture_output=True, text=True,  # noqa: E731
                                       timeout=300)
    done = run("scale", str(base), str(ft), "-o", str(tmp_path / "out"), "--alpha", "0.5", "--beta", "0.5", "-q")
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and (tmp_path / "out" / "model.safetensors").exists()
    again = run("scale", str(base), str(ft), "-o", str(tmp_path / "out"), "--alpha", "0.5", "--beta", "0.5", "-q")
    assert again.returncode == 2 and "already exists" in again.stderr
    assert run("no-such-command").returncode == 2
    assert run("--version").stdout.startswith("hf-lines ")
