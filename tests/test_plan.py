"""The run plan: any outputs over one read pass, each the bytes of its own merge, memory bounded by the budget."""
from __future__ import annotations

import threading
from collections import Counter

import pytest
import torch

from hf_lines import LinesMerger, RewardedSoup
from hf_lines.io.checkpoint import Checkpoint
from hf_lines.pipeline import plan as plan_module
from hf_lines.pipeline.plan import Plan, execute
from reference import load_folder


def merger_norms(merger: LinesMerger) -> dict[str, tuple[float, float]]:
    """The card norms ``LinesMerger`` measures tensor by tensor, outside any plan executor."""
    norms: dict[str, tuple[float, float]] = {}
    scales = merger.scales()
    for name in merger.base.checkpoint.names():
        merger.tensor(name, scales[name], norms)
    return norms


def test_outputs_of_different_methods_share_one_read_pass(family_models, tmp_path, monkeypatch):
    """TIES, task arithmetic with auto alpha and Consensus into float32: one pass, each output its own merge's bytes."""
    base, fts = family_models("llama", n_models=3, dtype=torch.bfloat16)
    mergers = [
        LinesMerger.from_pretrained(base, fts, method="ties", density=0.3, alpha=0.4, beta=0.5),
        LinesMerger.from_pretrained(base, fts, method="task_arithmetic", alpha="auto", beta=0.6),
        LinesMerger.from_pretrained(base, fts, method="consensus", k=1, alpha=0.5, beta=0.5, dtype="float32"),
    ]
    plans = [m.plan() for m in mergers]  # each runs its own statistics pass here
    plan = Plan(plans[0].base, plans[0].models, tuple(p.outputs[0] for p in plans))
    folders = [tmp_path / f"out{k}" for k in range(len(mergers))]
    for folder in folders:
        folder.mkdir()
    reads: Counter = Counter()
    real_get = Checkpoint.get

    def counted(self, name):
        reads[(str(self.path), name)] += 1
        return real_get(self, name)

    with monkeypatch.context() as m:
        m.setattr(Checkpoint, "get", counted)
        found = execute(plan, folders, max_shard_size="5GB", workers=2, progress=False)
    assert len(reads) == 4 * len(plan.names()) and set(reads.values()) == {1}  # every input tensor read once
    for merger, folder, norms in zip(mergers, folders, found):
        expected, got = merger.state_dict(), load_folder(folder)
        assert got.keys() == expected.keys()
        for name, tensor in expected.items():
            assert got[name].dtype == tensor.dtype and torch.equal(got[name], tensor), name
        assert norms == merger_norms(merger)  # exactly: the same arithmetic measured them
    assert {t.dtype for t in load_folder(folders[2]).values() if t.is_floating_point()} == {torch.float32}


def test_memory_budget_holds_in_a_several_output_run(family_models, tmp_path, monkeypatch):
    """With a budget below one tensor, one output tensor is in flight at a time, and the bytes do not change."""
    base, fts = family_models("llama", n_models=2, dtype=torch.bfloat16)
    soup = RewardedSoup.from_pretrained(base, fts, alpha=0.3, beta=0.6)
    plan = soup.plan(soup.outputs(lambdas="0,0.5,1"))
    active, peak, lock = 0, 0, threading.Lock()
    real = plan_module.output_tensor

    def tracked(*args, **kwargs):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                active -= 1

    results = {}
    for budget in (1, None):
        folders = [tmp_path / f"{budget}-{k}" for k in range(3)]
        for folder in folders:
            folder.mkdir()
        peak = 0
        with monkeypatch.context() as m:
            m.setattr(plan_module, "output_tensor", tracked)
            execute(plan, folders, max_shard_size="5GB", workers=2, memory_budget=budget, progress=False)
        results[budget] = ([load_folder(f) for f in folders], peak)
    assert results[1][1] == 1
    for tight, free in zip(results[1][0], results[None][0]):
        assert all(torch.equal(tight[n], free[n]) for n in free)


def test_soup_card_norms_are_those_of_the_merge_of_its_recipe(family_models, tmp_path, monkeypatch):
    """The soup's card reports the norms the merge of each output's recipe measures, to the bit."""
    import hf_lines.soups.soup as soup_module

    base, fts = family_models("llama", n_models=2, dtype=torch.bfloat16)
    soup = RewardedSoup.from_pretrained(base, fts, alpha=0.3, beta=0.6)
    seen = {}
    real = soup_module.write_output_files

    def capture(soup_, out, folder, fmt, **kwargs):
        seen[out.name] = kwargs.get("norms")
        return real(soup_, out, folder, fmt, **kwargs)

    monkeypatch.setattr(soup_module, "write_output_files", capture)
    soup.save_pretrained(tmp_path / "s", lambdas="0.25,0.75", output="model", progress=False)
    assert sorted(seen) == ["lam0.25", "lam0.75"]
    for name, norms in seen.items():
        merger = LinesMerger.from_recipe(tmp_path / "s" / name / "hf_lines_recipe.yaml")
        assert norms == merger_norms(merger)


@pytest.mark.parametrize("native", [True, False])
def test_plan_tensor_equals_the_streamed_output(family_models, tmp_path, monkeypatch, native):
    """``Plan.tensor`` (sweeps, state_dict) and ``execute`` (files) give the same bytes, with and without the kernels."""
    from hf_lines.core import kernels

    if not native:
        monkeypatch.setattr(kernels, "_LIB", None)
    elif not kernels.available():
        pytest.skip("compiled kernels not built")
    base, fts = family_models("llama", n_models=2, dtype=torch.bfloat16)
    plan = LinesMerger.from_pretrained(base, fts, method="ties", density=0.5, alpha=0.2, beta=0.8).plan()
    (tmp_path / "o").mkdir()
    execute(plan, [tmp_path / "o"], max_shard_size="5GB", progress=False)
    got = load_folder(tmp_path / "o")
    for name in plan.names():
        assert torch.equal(plan.tensor(0, name), got[name]), name
