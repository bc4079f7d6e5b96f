"""torch's intra-op thread count is process-wide: runs in threads of one process must not undo each other."""
from __future__ import annotations

import threading

import torch

from hf_lines import LinesMerger
from hf_lines.core.threads import intra_op_threads
from reference import load_folder


def test_overlapping_runs_restore_the_count_only_when_the_last_ends():
    before = torch.get_num_threads()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with intra_op_threads(1):
            first_in.set()
            second_in.wait()
        first_out.set()

    def second():
        first_in.wait()
        with intra_op_threads(1):
            second_in.set()
            first_out.wait()
            seen["inside after the first ended"] = torch.get_num_threads()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # a plain save-and-restore would have put `before` back while the second run was still going
    assert seen["inside after the first ended"] == 1
    assert torch.get_num_threads() == before


def test_merges_in_threads_give_the_bytes_of_one_at_a_time(family_models, tmp_path):
    base, fts = family_models("llama", 2, torch.bfloat16)
    before = torch.get_num_threads()
    alone = LinesMerger.from_pretrained(base, fts, alpha=0.5, beta=0.5).save_pretrained(tmp_path / "alone", progress=False)
    errors = []

    def run(k: int) -> None:
        try:
            LinesMerger.from_pretrained(base, fts, alpha=0.5, beta=0.5).save_pretrained(tmp_path / f"t{k}", progress=False)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    expected = load_folder(alone)
    for k in range(3):
        got = load_folder(tmp_path / f"t{k}")
        assert all(torch.equal(got[n], expected[n]) for n in expected)
    assert torch.get_num_threads() == before
