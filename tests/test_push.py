"""Pushing outputs to the Hub (the emulator, through the real huggingface_hub client): round trips,
failures that keep the local folder and say how to retry, and tokens that never leave the client."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
import transformers
from huggingface_hub import HfApi, ModelCard, snapshot_download

import tiny_adapters
from hf_lines import LinesMerger
from hf_lines.publish.card import PLOT_NAME
from hf_lines.cli import main
from hf_lines.errors import PushError
from hf_lines.publish.hub import push_folder
from reference import assert_close_dict, lines_reference, load_folder

ALPHA, BETA = 0.25, 0.6


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".cache" not in p.parts}


def download(repo_id: str, tmp_path: Path, revision: str | None = None) -> dict[str, bytes]:
    got = files_of(Path(snapshot_download(repo_id, revision=revision, cache_dir=tmp_path / "dl-cache")))
    got.pop(".gitattributes")
    return got


def assert_no_token(token: str, *texts: str | bytes, folders: tuple[Path, ...] = ()) -> None:
    needle = token.encode()
    for folder in folders:
        for name, data in files_of(folder).items():
            assert needle not in data, f"token found in {folder / name}"
    for text in texts:
        assert needle not in (text.encode() if isinstance(text, str) else text)


def seed(hub, name: str, folder: Path, extra: dict[str, bytes] | None = None) -> str:
    repo_id = hub.new_repo_id(name)
    hub.emulator.add_commit(repo_id, {**{p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}, **(extra or {})})
    return repo_id


@pytest.fixture
def llama(hub, family_models):
    """Hub ids of the tiny LLaMA base (with an apache-2.0 card) and its fine-tune, and their local folders."""
    base, (ft,) = family_models("llama")
    base_id = seed(hub, "llama-base", base, {"README.md": b"---\nlicense: apache-2.0\n---\n# base\n"})
    return base_id, seed(hub, "llama-ft", ft), base, ft


def test_scaled_model_push_roundtrip(hub, hub_repo_id, llama, tmp_path, caplog, capsys):
    base_id, ft_id, base, ft = llama
    caplog.set_level(logging.DEBUG)
    merger = LinesMerger.from_pretrained(base_id, [ft_id], alpha=ALPHA, beta=BETA, token=hub.token)
    out = merger.save_pretrained(tmp_path / "out", progress=False, push_to_hub=True, repo_id=hub_repo_id,
                                 private=True, token=hub.token)

    local = files_of(out)
    assert {"README.md", PLOT_NAME, "model.safetensors", "config.json", "hf_lines.json"} <= set(local)
    assert download(hub_repo_id, tmp_path) == local  # byte-identical
    assert hub.emulator.file_entry(hub_repo_id, "model.safetensors").lfs  # weights took the LFS path
    assert HfApi().model_info(hub_repo_id).private
    commit = hub.emulator.head(hub_repo_id)
    assert commit.title == f"Upload LiNeS task_arithmetic (alpha={ALPHA:g}, beta={BETA:g}) made with hf-lines"

    snapshot = Path(snapshot_download(hub_repo_id, cache_dir=tmp_path / "dl-cache"))
    model = transformers.LlamaForCausalLM.from_pretrained(snapshot)
    expected = lines_reference(load_folder(base), [load_folder(ft)], [1.0], merger.scales())
    assert_close_dict({k: v for k, v in model.state_dict().items() if k in expected}, expected)

    card = ModelCard.load(snapshot / "README.md")
    assert card.data.base_model == [base_id, ft_id] and card.data.base_model_relation == "merge"
    assert {"lines", "merge", "task_arithmetic"} <= set(card.data.tags)
    assert card.data.lines["alpha"] == ALPHA and card.data.license == "apache-2.0"
    assert card.text.startswith(f"\n# {hub_repo_id}")
    assert HfApi().model_info(hub_repo_id).card_data.base_model_relation == "merge"  # the Hub parsed it

    assert_no_token(hub.token, caplog.text, *capsys.readouterr(), folders=(out, snapshot))


def test_merged_sharded_model_push_after_save(hub, hub_repo_id, family_models, tmp_path):
    base, fts = family_models("qwen2", n_models=2)
    ids = [seed(hub, "qwen-base", base), seed(hub, "qwen-ft0", fts[0])]
    merger = LinesMerger.from_pretrained(ids[0], [ids[1], fts[1]], alpha=0.3, beta=0.5, weights=[0.7, 0.3])
    out = merger.save_pretrained(tmp_path / "merged", progress=False, max_shard_size="30KB")
    assert len(list(out.glob("model-*.safetensors"))) > 1
    hub.emulator.reset_requests()
    info = merger.push_to_hub(hub_repo_id, commit_message="merge v1")
    assert info.oid == hub.emulator.head(hub_repo_id).oid and hub.emulator.head(hub_repo_id).title == "merge v1"
    shards = [p.name for p in out.glob("*.safetensors")]
    assert all(hub.emulator.file_entry(hub_repo_id, name).lfs for name in shards)  # the client's LFS path
    assert hub.emulator.count("lfs_upload") >= len(shards)
    assert hub.emulator.count("commit") == 1
    assert download(hub_repo_id, tmp_path) == files_of(out)

    snapshot = Path(snapshot_download(hub_repo_id, cache_dir=tmp_path / "dl-cache"))
    transformers.Qwen2ForCausalLM.from_pretrained(snapshot)
    card = ModelCard.load(snapshot / "README.md")
    assert card.data.base_model == ids and card.data.lines["weights"] == [0.7, 0.3]  # Hub parents only
    assert card.data.lines["parents"][2]["path"] == str(fts[1])  # the local one is named here, fingerprinted
    assert card.data.lines["parents"][2]["fingerprint"]


def test_push_to_hub_saves_first_when_needed(hub, hub_repo_id, llama, tmp_path, monkeypatch):
    base, ft = llama[0], llama[1]
    monkeypatch.chdir(tmp_path)
    merger = LinesMerger.from_pretrained(base, [ft], alpha=ALPHA, beta=BETA)
    merger.push_to_hub(hub_repo_id, progress=False)
    local = tmp_path / hub_repo_id.split("/")[-1]
    assert merger.saved_to == local.resolve() and (local / "README.md").is_file()
    assert download(hub_repo_id, tmp_path) == files_of(local)


def test_cli_scale_push_and_push_pr(hub, hub_repo_id, llama, tmp_path, capsys):
    base, ft = llama[0], llama[1]
    out = tmp_path / "out"
    rc = main(["scale", str(base), str(ft), "-o", str(out), "--alpha", "0.2", "--beta", "0.8", "-q",
               "--push-to-hub", hub_repo_id, "--token", hub.token])
    assert rc == 0 and f"{hub.endpoint}/{hub_repo_id}/commit/" in capsys.readouterr().out
    assert download(hub_repo_id, tmp_path) == files_of(out)

    # changed files, proposed as a pull request, then committed to a new branch
    (out / "notes.txt").write_text("evaluation notes\n")
    rc = main(["push", str(out), hub_repo_id, "--create-pr", "--commit-message", "add notes"])
    assert rc == 0 and f"{hub_repo_id}/discussions/1" in capsys.readouterr().out
    pr = hub.emulator.pull_requests(hub_repo_id)[0]
    assert (pr.title, pr.target_branch) == ("add notes", "main")
    assert "notes.txt" in hub.emulator.list_files(hub_repo_id, "refs/pr/1")
    assert "notes.txt" not in hub.emulator.list_files(hub_repo_id, "main")
    assert main(["push", str(out), hub_repo_id, "--revision", "dev"]) == 0
    assert "notes.txt" in hub.emulator.list_files(hub_repo_id, "dev")
    assert main(["push", str(out), hub_repo_id, "--revision", "dev", "--create-pr"]) == 2
    assert "always targets the default branch" in capsys.readouterr().err


def test_cli_rejects_bad_repo_id_before_work(llama, tmp_path, capsys):
    base, ft = llama[0], llama[1]
    with pytest.raises(SystemExit):
        main(["scale", str(base), str(ft), "-o", str(tmp_path / "out"), "--alpha", "0.2", "--beta", "0.8",
              "--push-to-hub", "bad//name"])
    assert "not a valid Hub repo id" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_failed_commit_keeps_folder_and_says_how_to_retry(hub, hub_repo_id, llama, tmp_path, capsys):
    base, ft = llama[0], llama[1]
    merger = LinesMerger.from_pretrained(base, [ft], alpha=ALPHA, beta=BETA)
    hub.emulator.fail_next_commit = True
    with pytest.raises(PushError) as info:
        merger.save_pretrained(tmp_path / "out", progress=False, push_to_hub=True, repo_id=hub_repo_id,
                               token=hub.token)
    out = (tmp_path / "out").resolve()
    message = str(info.value)
    assert "could not upload the files" in message and "500" in message
    assert f"retry with: hf-lines push {out} {hub_repo_id}" in message
    assert hub.token not in message
    assert {"README.md", "model.safetensors", "config.json"} <= set(files_of(out))  # complete and kept
    assert merger.saved_to == out
    assert "README.md" not in hub.emulator.list_files(hub_repo_id)

    assert main(["push", str(out), hub_repo_id]) == 0  # the retry the message gives
    assert download(hub_repo_id, tmp_path) == files_of(out)


def test_hub_rejects_card_metadata(hub, hub_repo_id, llama, tmp_path):
    base, ft = llama[0], llama[1]
    merger = LinesMerger.from_pretrained(base, [ft], alpha=ALPHA, beta=BETA)
    # well-typed, so it passes the local checks; the Hub's license list refuses it
    out = merger.save_pretrained(tmp_path / "out", progress=False, card_data={"license": "not-a-license"})
    hub.emulator.reset_requests()
    with pytest.raises(PushError, match=r"(?s)model card metadata with the Hub.*license.*retry with: hf-lines push"):
        merger.push_to_hub(hub_repo_id)
    assert not hub.emulator.repo_exists(hub_repo_id)  # refused before the repo was created
    assert hub.emulator.count("commit") == 0 and (out / "model.safetensors").is_file()


def test_broken_readme_is_caught_before_network(hub, hub_repo_id, llama, tmp_path, capsys):
    base, ft = llama[0], llama[1]
    out = LinesMerger.from_pretrained(base, [ft], alpha=ALPHA, beta=BETA).save_pretrained(tmp_path / "out", progress=False)
    readme = out / "README.md"
    readme.write_text(readme.read_text().replace("license: apache-2.0", "license: [mit, apache-2.0]"))
    hub.emulator.reset_requests()
    assert main(["push", str(out), hub_repo_id]) == 2
    err = capsys.readouterr().err
    assert "validate the model card locally" in err and "'license' must be a string" in err
    assert hub.emulator.request_count == 0


def test_wrong_token_is_clear_and_never_echoed(hub, hub_repo_id, llama, tmp_path):
    base, ft = llama[0], llama[1]
    out = LinesMerger.from_pretrained(base, [ft], alpha=ALPHA, beta=BETA).save_pretrained(tmp_path / "out", progress=False)
    secret = "hf_wrong_secret_token_0123456789"
    with pytest.raises(PushError) as info:
        push_folder(out, hub_repo_id, token=secret)
    message = str(info.value)
    assert "401" in message and "HF_TOKEN" in message and secret not in message
    assert_no_token(secret, folders=(out,))


def test_scaled_adapter_push_roundtrip(hub, hub_repo_id, family_models, tmp_path):
    from peft import PeftModel

    from hf_lines.adapters import scale_adapter

    base, _ = family_models("llama")
    base_id = seed(hub, "adapter-base", base)
    adapter = tiny_adapters.make_adapter("llama", base, tmp_path / "adapter", seed=3, r=4, lora_alpha=8,
                                         target_modules=["q_proj", "v_proj", "down_proj"])
    out = scale_adapter(base_id, adapter, tmp_path / "scaled", alpha=ALPHA, beta=BETA)
    card = ModelCard.load(out / "README.md")  # the adapter writer calls write_card in its staged folder
    assert card.data.library_name == "peft" and card.data.base_model_relation == "adapter"
    assert card.data.base_model == base_id and {"lines", "lora"} <= set(card.data.tags)
    assert card.data.lines["parents"][1]["path"] == str(adapter)
    assert "--output-format adapter" in card.text

    push_folder(out, hub_repo_id)
    assert download(hub_repo_id, tmp_path) == files_of(out)
    snapshot = Path(snapshot_download(hub_repo_id, cache_dir=tmp_path / "dl-cache"))
    assert ModelCard.load(snapshot / "README.md").data.base_model_relation == "adapter"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PeftModel.from_pretrained(tiny_adapters.load_base("llama", base), snapshot)
    assert model.peft_config["default"].r >= 4


def test_cli_scale_adapter_push(hub, hub_repo_id, family_models, tmp_path, capsys):
    base, _ = family_models("llama")
    base_id = seed(hub, "cli-adapter-base", base)
    adapter = tiny_adapters.make_adapter("llama", base, tmp_path / "adapter", seed=5, r=2, target_modules=["q_proj"])
    out = tmp_path / "scaled"
    assert main(["scale", base_id, str(adapter), "-o", str(out), "--alpha", "0.1", "--beta", "0.9",
                 "--push-to-hub", hub_repo_id]) == 0
    assert f"{hub_repo_id}/commit/" in capsys.readouterr().out
    got = download(hub_repo_id, tmp_path)
    assert got == files_of(out) and {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(got)
