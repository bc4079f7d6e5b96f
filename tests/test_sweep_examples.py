"""The offline reproduction (examples/reproduce_paper.py --quick) and `hf-lines demo --quick`, end to end."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from hf_lines.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.slow  # 8 s on an idle 2-core machine, about a minute when the cores are shared
def test_reproduce_paper_quick(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("reproduce_paper", ROOT / "examples" / "reproduce_paper.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--out", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"results.md", "results.json", "tradeoff.png", "merging.png"}
    data = json.loads((tmp_path / "results.json").read_text())
    tasks = module.QUICK["tasks"]
    assert list(data["claim1"]["per_task"]) == tasks
    for row in data["claim1"]["per_task"].values():
        assert row["fine-tuned"]["target_norm"] == pytest.approx(1.0)
        assert row["zero-shot"]["control_norm"] == pytest.approx(1.0)
        assert 0.0 <= row[module.LINES]["alpha"] <= 1.0
        assert row[module.LINES]["alpha"] + row[module.LINES]["beta"] == pytest.approx(1.0)  # the single-task form
    assert set(data["claim2"]) == {"task_arithmetic", "ties", "consensus"}
    assert data["claim2"]["task_arithmetic"]["auto_alpha"] == pytest.approx(1 / len(tasks))  # the paper's auto alpha
    md = (tmp_path / "results.md").read_text()
    assert "| LiNeS (paper's rule) |" in md and "| Task arithmetic + LiNeS |" in md
    assert "| LiNeS (paper's rule) |" in capsys.readouterr().out


@pytest.mark.slow  # 7 s on an idle 2-core machine, up to a minute when the cores are shared
def test_demo_quick_writes_model_with_card(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", str(out), "--quick"]) == 0
    printed = capsys.readouterr().out
    assert "zero-shot" in printed and "fine-tuned" in printed and "LiNeS (alpha=" in printed
    record = json.loads((out / "hf_lines.json").read_text())
    assert record["lines"]["alpha"] + record["lines"]["beta"] == pytest.approx(1.0)
    assert (out / "README.md").exists() and (out / "config.json").exists()
    from hf_lines.demo import run_demo

    r = run_demo(tmp_path / "demo2", alpha=0.25, beta=0.5, quick=True)
    assert (r.alpha, r.beta) == (0.25, 0.5) and [a["model"] for a in r.accuracy][:2] == ["zero-shot", "fine-tuned"]
    assert [row[1] for row in r.rows] == pytest.approx([0.25 + 0.5 * i / 3 for i in range(4)])
