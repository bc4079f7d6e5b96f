"""README.md and docs/: generated tables match their result files, links resolve, the front page stays short."""
from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench_report = _load("bench_report", ROOT / "benchmarks" / "bench_report.py")


def _ids(pages: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in pages]


# ------------------------------------------------------------------------------ generated tables
@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_generated_blocks_match_their_result_files(page: Path) -> None:
    text = page.read_text()
    assert bench_report.regenerate(text) == text, (
        f"{page.relative_to(ROOT)} has a stale generated table: run `python benchmarks/bench_report.py --docs`")


def test_every_result_file_has_its_table() -> None:
    sources = {path for page in PAGES for spec, _ in bench_report.blocks(page.read_text()) for path in spec.split()[1:]}
    expected = {str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks" / "results").glob("*.json")}
    expected |= {str(p.relative_to(ROOT)) for p in (ROOT / "examples" / "results").rglob("results.md")}
    assert expected <= sources, f"result files without a generated table in docs/: {sorted(expected - sources)}"
    for page in ("performance.md", "soups.md", "adapters.md", "evidence.md"):
        assert bench_report.blocks((DOCS / page).read_text()), f"docs/{page} has no generated table"


def test_markers_are_balanced() -> None:
    for page in PAGES:
        text = page.read_text()
        starts, ends = text.count("<!-- generated:"), text.count("<!-- end generated -->")
        assert starts == ends == len(bench_report.blocks(text)), f"{page.relative_to(ROOT)}: unmatched markers"


def test_docs_command_reports_nothing_stale() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_report.py"), "--docs", "--check"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_benchmark_reports_are_what_their_json_renders() -> None:
    for path in sorted((ROOT / "benchmarks" / "results").glob("1.1b-*.json")):
        assert bench_report.markdown(json.loads(path.read_text())) == path.with_suffix(".md").read_text(), path.name


def test_evidence_reports_are_what_their_json_renders() -> None:
    reproduce = _load("reproduce_paper_for_docs", ROOT / "examples" / "reproduce_paper.py")
    for md in sorted((ROOT / "examples" / "results").rglob("results.md")):
        data = json.loads(md.with_suffix(".json").read_text())
        assert reproduce.markdown(data["claim1"], data["claim2"], data["meta"]) == md.read_text(), md


# ------------------------------------------------------------------------------ front page
def test_readme_is_short() -> None:
    assert len(README.read_text().splitlines()) < 250


def _ci_commands() -> list[str]:
    return [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _readme_development_commands() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Development"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README's Development section has no bash block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_test_command_is_what_ci_runs() -> None:
    ci = _ci_commands()
    ci_test = next(line for line in ci if line.startswith("python -m pytest"))
    ci_install = next(shlex.split(line) for line in ci if line.startswith("pip install"))
    install, test = _readme_development_commands()
    assert test == ci_test
    # the same install, less pip's -q
    assert shlex.split(install) == [arg for arg in ci_install if arg != "-q"]


# ------------------------------------------------------------------------------ links
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(text: str) -> str:
    return INLINE_CODE.sub("", FENCE.sub("", text))


def _anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, -1, -2 on repeats."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def _links(page: Path) -> list[str]:
    return [m.group(1) for m in LINK.finditer(_prose(page.read_text()))]


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in _links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor})")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_readme_links_every_docs_page() -> None:
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in _links(README)}
    missing = [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert not missing, f"README.md does not link to docs/{missing}"
