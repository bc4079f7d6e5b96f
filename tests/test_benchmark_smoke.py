"""The benchmark script runs end to end on a tiny shape (a smoke run, not a timing)."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_smoke_run(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--smoke", "--tools", "floor,hf-lines",
           "--scenarios", "single,ta4", "--workdir", str(tmp_path / "inputs"), "--results-dir", str(tmp_path / "results")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "results" / "smoke.json").read_text())
    text = json.dumps(result)
    assert "hf-lines" in text and "floor" in text
    # the numeric check: hf-lines agrees with the float32 reference
    assert "hf-lines vs reference" in (tmp_path / "results" / "smoke.md").read_text()
