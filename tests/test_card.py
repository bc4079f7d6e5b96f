"""Model cards: metadata the Hub indexes, a body that says what was done, a plot, custom templates."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hf_lines import LinesMerger
from hf_lines.publish.card import PLOT_NAME, TEMPLATE_NAME, TEMPLATES_DIR, write_card
from hf_lines.publish.metadata import check_metadata, pipeline_tag
from hf_lines.cli import main
from hf_lines.errors import CardError
from hf_lines.publish.provenance import hub_snapshot, weights_fingerprint

ALPHA, BETA = 0.25, 0.6
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def licensed(family_models, tmp_path) -> tuple[Path, Path]:
    """A private copy of the tiny LLaMA base with an apache-2.0 card, and its fine-tune."""
    base, (ft,) = family_models("llama")
    own = tmp_path / "llama-base"
    shutil.copytree(base, own)
    (own / "README.md").write_text("---\nlicense: apache-2.0\nlanguage: en\n---\n# a base model\n")
    return own, ft


def assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_scaled_model_card(licensed, tmp_path):
    base, ft = licensed
    merger = LinesMerger.from_pretrained(base, [ft], alpha=ALPHA, beta=BETA)
    out = merger.save_pretrained(tmp_path / "edited", progress=False)

    card = ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    # local parents have no Hub id, and the Hub refuses paths in base_model: they are named under lines.parents
    assert "base_model" not in data and "base_model_relation" not in data
    assert data["lines"]["parents"] == [
        {"role": "base", "path": str(base), "fingerprint": weights_fingerprint(base)},
        {"role": "fine-tuned", "path": str(ft), "fingerprint": weights_fingerprint(ft), "weight": 1.0},
    ]
    assert data["library_name"] == "transformers"
    assert {"lines", "merge", "task_arithmetic"} <= set(data["tags"])
    assert data["license"] == "apache-2.0"  # inherited from the base's card
    assert "language" not in data  # only the license travels
    assert data["pipeline_tag"] == "text-generation"
    lines = data["lines"]
    assert (lines["alpha"], lines["beta"], lines["policy"], lines["method"]) == (ALPHA, BETA, "paper", "task_arithmetic")
    assert lines["towers"] == [{"name": "model.layers", "L": 4}]
    assert lines["hf_lines_version"] == json.loads((out / "hf_lines.json").read_text())["hf_lines_version"]

    text = card.text
    assert "# edited" in text and "theta_0 + lambda(i) * tau" in text
    for norm in merger.block_norms():  # one row per block, with its lambda and both norms
        if norm.block is not None:
            assert re.search(rf"\| {norm.block} \| {norm.scale:.4g} \| {norm.before:.4g} \| {norm.after:.4g} \|", text)
    assert f"]({PLOT_NAME})" in text
    assert_png(out / PLOT_NAME)
    assert weights_fingerprint(base) in text and weights_fingerprint(ft) in text
    assert weights_fingerprint(base) != weights_fingerprint(ft)
    assert "not a hash of every byte" in text  # says what the fingerprint covers
    assert f"hf-lines scale {base} {ft} -o edited --alpha {ALPHA} --beta {BETA}" in text
    assert "arXiv:2410.17146" in text and "@inproceedings{wang2025lines" in text
    assert "## Limitations" in text


def test_merged_model_card(family_models, tmp_path):
    base, fts = family_models("bert", n_models=2)
    merger = LinesMerger.from_pretrained(base, fts, alpha=0.3, beta=0.5, weights=[1.0, 0.5])
    out = merger.save_pretrained(tmp_path / "merged", progress=False)
    card = ModelCard.load(out / "README.md")
    assert [p["path"] for p in card.data.lines["parents"]] == [str(base), *map(str, fts)]
    assert card.data.pipeline_tag == "text-classification"
    assert card.data.lines["weights"] == [1.0, 0.5]
    assert "merges 2 fine-tunes" in card.text
    assert "weights=[1.0, 0.5]" in card.text  # the Python recipe
    if (out / "hf_lines_recipe.yaml").exists():  # recipe.py writes it: the card shows it verbatim
        assert (out / "hf_lines_recipe.yaml").read_text().strip() in card.text
        assert "hf-lines merge hf_lines_recipe.yaml -o merged" in card.text


def test_parallel_towers_and_depth_policy(family_models, tmp_path):
    base, (ft,) = family_models("clip")
    merger = LinesMerger.from_pretrained(base, [ft], alpha=0.1, beta=0.9, policy="depth")
    out = merger.save_pretrained(tmp_path / "clip", progress=False)
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == "zero-shot-image-classification"
    assert card.data.lines["towers"] == [{"name": "vision_model.encoder.layers", "L": 4},
                                         {"name": "text_model.encoder.layers", "L": 2}]
    assert "| text_model.encoder.layers | 1 | 1 |" in card.text
    assert "--policy depth" in card.text
    assert_png(out / PLOT_NAME)


def test_card_data_and_early_rejection(licensed, tmp_path):
    base, ft = licensed
    merger = LinesMerger.from_pretrained(base, [ft], alpha=ALPHA, beta=BETA)
    out = merger.save_pretrained(tmp_path / "out", progress=False,
                                 card_data={"tags": ["my-tag"], "license": "mit", "datasets": ["org/data"]})
    data = ModelCard.load(out / "README.md").data
    assert data.license == "mit" and data.datasets == ["org/data"]
    assert data.tags[:3] == ["lines", "merge", "task_arithmetic"] and "my-tag" in data.tags

    for bad, field in (({"license": ["mit", "apache-2.0"]}, "license"), ({"base_model_relation": "fork"}, "relation"),
                       ({"tags": [1, 2]}, "tags"), ({"thumbnail": Path("x.png")}, "thumbnail")):
        with pytest.raises(CardError, match=field):
            merger.save_pretrained(tmp_path / "bad", progress=False, card_data=bad)
        assert not (tmp_path / "bad").exists()  # refused before any weight was written


def test_custom_template(licensed, tmp_path):
    base, ft = licensed
    template = tmp_path / "mine.md.jinja"
    template.write_text(
        "---\n{{ card_data }}\n---\n# {{ model_name }} by the team\n\n"
        "{% for r in rows if r.block is not none %}block {{ r.block }}: {{ '%.2f' | format(r.scale) }}\n{% endfor %}"
    )
    merger = LinesMerger.from_pretrained(base, [ft], alpha=ALPHA, beta=BETA)
    out = merger.save_pretrained(tmp_path / "custom", progress=False, card_template=template)
    card = ModelCard.load(out / "README.md")
    assert card.text.startswith("# custom by the team")
    assert "block 0: 0.25\nblock 3: 0.85" in card.text.replace("block 1: 0.45\nblock 2: 0.65\n", "")
    assert card.data.lines["policy"] == "paper" and card.data.license == "apache-2.0"

    # a template without front matter still yields a card with the metadata
    bare = tmp_path / "bare.md.jinja"
    bare.write_text("Just text for {{ model_name }}.\n")
    out = merger.save_pretrained(tmp_path / "bare", progress=False, card_template=bare)
    card = ModelCard.load(out / "README.md")
    assert card.text.strip() == "Just text for bare." and card.data.lines["alpha"] == ALPHA

    broken = tmp_path / "broken.md.jinja"
    broken.write_text("{% for x in %}")
    with pytest.raises(CardError, match="broken.md.jinja"):
        merger.save_pretrained(tmp_path / "broken", progress=False, card_template=broken)
    assert not (tmp_path / "broken").exists()
    with pytest.raises(CardError, match="not found"):
        merger.save_pretrained(tmp_path / "missing", progress=False, card_template=tmp_path / "nope.jinja")


def test_cli_card_template(licensed, tmp_path, capsys):
    base, ft = licensed
    template = tmp_path / "cli.md.jinja"
    template.write_text("---\n{{ card_data }}\n---\nCLI card, alpha {{ lines.alpha }}\n")
    rc = main(["scale", str(base), str(ft), "-o", str(tmp_path / "out"), "--alpha", "0.2", "--beta", "0.8",
               "-q", "--card-template", str(template)])
    assert rc == 0
    assert "CLI card, alpha 0.2" in (tmp_path / "out" / "README.md").read_text()


def test_hub_parents_are_named_by_id_and_commit_without_network(hub, family_models, tmp_path):
    base, (ft,) = family_models("llama")
    base_id, ft_id = hub.new_repo_id("card-base"), hub.new_repo_id("card-ft")
    files = {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()}
    files["README.md"] = b"---\nlicense: llama3\n---\n# base\n"
    base_commit = hub.emulator.add_commit(base_id, files)
    ft_commit = hub.emulator.add_commit(ft_id, {p.name: p.read_bytes() for p in ft.iterdir() if p.is_file()})

    merger = LinesMerger.from_pretrained(f"{base_id}@main", [ft_id], alpha=ALPHA, beta=BETA)
    assert hub_snapshot(merger.base.checkpoint.path) == (base_id, base_commit.oid)
    out = merger.save_pretrained(tmp_path / "out", progress=False)
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == [base_id, ft_id] and card.data.license == "llama3"
    assert card.data.base_model_relation == "merge"
    assert card.data.lines["parents"][0] == {"role": "base", "id": base_id, "revision": "main", "commit": base_commit.oid}
    assert f"commit `{base_commit.oid[:12]}` (main)" in card.text and f"commit `{ft_commit.oid[:12]}`" in card.text
    assert f"hf-lines scale {base_id}@{base_commit.oid} {ft_id}@{ft_commit.oid}" in card.text

    hub.emulator.reset_requests()
    write_card(tmp_path / "out", merger.describe(), merger.block_norms(),
               parent_folders=[merger.base.checkpoint.path, merger.models[0].checkpoint.path])
    assert hub.emulator.request_count == 0  # the card is written from what is on disk


@pytest.mark.parametrize(
    "config, tag",
    [
        ({"architectures": ["LlamaForCausalLM"]}, "text-generation"),
        ({"architectures": ["GPT2LMHeadModel"]}, "text-generation"),
        ({"architectures": ["BertForSequenceClassification"]}, "text-classification"),
        ({"architectures": ["BertForMaskedLM"]}, "fill-mask"),
        ({"architectures": ["ViTForImageClassification"]}, "image-classification"),
        ({"architectures": ["T5ForConditionalGeneration"], "is_encoder_decoder": True}, "text2text-generation"),
        ({"architectures": ["BartForConditionalGeneration"], "is_encoder_decoder": True}, "text2text-generation"),
        ({"architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper"}, "automatic-speech-recognition"),
        ({"architectures": ["LlavaForConditionalGeneration"], "vision_config": {}}, "image-text-to-text"),
        ({"architectures": ["CLIPModel"], "model_type": "clip"}, "zero-shot-image-classification"),
        ({"architectures": ["BertModel"], "model_type": "bert"}, "feature-extraction"),
        ({"architectures": ["SomethingElse"]}, None),
        ({}, None),
    ],
)
def test_pipeline_tag(config, tag):
    assert pipeline_tag(config) == tag


def test_check_metadata():
    check_metadata({"license": "mit", "tags": ["a"], "base_model": "org/x", "lines": {"alpha": 0.1, "towers": []}})
    with pytest.raises(CardError, match="round trip|plain YAML"):
        check_metadata({"lines": {"towers": ("a", "b")}})


def test_packaged_template_matches_model_cards_folder():
    packaged = (TEMPLATES_DIR / TEMPLATE_NAME).read_text()
    documented = REPO_ROOT / "model_cards" / TEMPLATE_NAME
    assert documented.read_text() == packaged, (
        f"model_cards/{TEMPLATE_NAME} differs from hf_lines/publish/templates/{TEMPLATE_NAME}: edit the packaged "
        "template and copy it to model_cards/"
    )


def test_unknown_save_option_is_refused_before_work(licensed, tmp_path):
    base, ft = licensed
    merger = LinesMerger.from_pretrained(base, [ft], alpha=ALPHA, beta=BETA)
    with pytest.raises(TypeError, match="privat"):
        merger.save_pretrained(tmp_path / "out", progress=False, privat=True)
    assert not (tmp_path / "out").exists()


def test_merged_card_norms_are_not_zero(family_models, tmp_path):
    # float32 inputs: the merge must not write into the base tensor, or every recorded norm reads 0
    base, fts = family_models("llama", n_models=2)
    merger = LinesMerger.from_pretrained(base, fts, alpha=0.3, beta=0.5)
    out = merger.save_pretrained(tmp_path / "merged", progress=False)
    norms = merger.block_norms()
    assert all(n.before > 0 and n.after > 0 for n in norms)
    assert f"| 0 | 0.3 | {norms[0].before:.4g} | {norms[0].after:.4g} |" in (out / "README.md").read_text()


def test_auto_alpha_is_recorded(family_models, tmp_path):
    base, fts = family_models("gpt2", n_models=2)
    merger = LinesMerger.from_pretrained(base, fts, alpha="auto", beta=0.5)
    out = merger.save_pretrained(tmp_path / "auto", progress=False)
    card = ModelCard.load(out / "README.md")
    assert card.data.lines["alpha_setting"] == "auto" and card.data.lines["alpha"] == merger.lines.alpha
    assert f"alpha = {merger.lines.alpha:.6g} (auto:" in card.text and "alpha='auto'" in card.text
