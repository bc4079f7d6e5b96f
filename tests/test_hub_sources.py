"""Inputs from the Hub: repo ids with pinned revisions, read through the real client."""
from pathlib import Path

import pytest

from hf_lines import LayerMap, LinesMerger
from reference import assert_close_dict, lines_reference, load_folder


def _seed(hub, repo_id: str, folder: Path, message: str = "upload"):
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    return hub.emulator.add_commit(repo_id, files, message=message)


def test_edit_from_hub_repos_with_revision(hub, family_models, tmp_path):
    base, (ft,) = family_models("llama")
    base_id, ft_id = hub.new_repo_id("base"), hub.new_repo_id("ft")
    _seed(hub, base_id, base)
    first = _seed(hub, ft_id, ft, "v1")
    # a later commit replaces the weights: pinning the first revision must ignore it
    hub.emulator.add_commit(ft_id, {"model.safetensors": b"not weights"}, message="broken")

    merger = LinesMerger.from_pretrained(base_id, [f"{ft_id}@{first.oid}"], alpha=0.3, beta=0.6)
    out = merger.save_pretrained(tmp_path / "out", progress=False)
    expected = lines_reference(load_folder(base), [load_folder(ft)], [1.0], merger.scales())
    assert_close_dict(load_folder(out), expected)
    record = merger.describe()
    assert record["models"][0]["repo_id"] == ft_id and record["models"][0]["revision"] == first.oid


def test_layer_map_from_hub_reads_headers_only(hub, family_models):
    base, _ = family_models("gpt2")
    repo = hub.new_repo_id("gpt2")
    _seed(hub, repo, base)
    lm = LayerMap.from_pretrained(repo)
    assert lm.num_blocks == 6
    assert lm.params["transformer.h.3.attn.c_proj.weight"] == 3
    # the weights were never downloaded: only config files and safetensors header ranges
    from huggingface_hub import try_to_load_from_cache

    assert try_to_load_from_cache(repo, "config.json") is not None
    assert try_to_load_from_cache(repo, "model.safetensors") is None


def test_unknown_repo_is_a_clear_error(hub):
    from hf_lines.errors import CheckpointError

    with pytest.raises(CheckpointError, match="cannot download"):
        LinesMerger.from_pretrained(f"{hub.user}/does-not-exist", ["x/y"], alpha=0.5, beta=0.5)
