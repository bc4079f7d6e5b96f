"""The Hub emulator works end to end with the real huggingface_hub client."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from huggingface_hub import (
    CommitOperationAdd,
    HfApi,
    ModelCard,
    ModelCardData,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

BIG = 10 * 1024 * 1024 + 4096  # just over the Hub's 10 MB limit for regular files


def _safetensors_bytes() -> bytes:
    header = b'{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + b"\x00" * 8


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("upload")
    (root / "notes.txt").write_text("hello hub\n")
    (root / "big.dat").write_bytes(os.urandom(BIG))
    (root / "model.safetensors").write_bytes(_safetensors_bytes())
    (root / "sub" / "dir").mkdir(parents=True)
    (root / "sub" / "dir" / "config.json").write_text('{"model_type": "llama"}')
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".cache" not in p.parts}


def test_environment_points_to_emulator(hub):
    from huggingface_hub import constants

    assert constants.ENDPOINT == hub.endpoint
    assert constants.HF_HUB_DISABLE_XET and not constants.HF_HUB_OFFLINE
    assert os.environ["HF_TOKEN"] == hub.token


def test_whoami(hub):
    assert HfApi().whoami()["name"] == hub.user


def test_create_repo_exist_ok(hub, hub_repo_id):
    api = HfApi()
    url = api.create_repo(hub_repo_id, private=True)
    assert url.repo_id == hub_repo_id and url.endpoint == hub.endpoint
    assert api.create_repo(hub_repo_id, exist_ok=True).repo_id == hub_repo_id
    with pytest.raises(HfHubHTTPError) as info:
        api.create_repo(hub_repo_id)
    assert info.value.response.status_code == 409
    repo = api.repo_info(hub_repo_id)
    assert repo.private and [s.rfilename for s in repo.siblings] == [".gitattributes"]
    assert len(repo.sha) == 40


def test_create_repo_outside_namespace_is_refused(hub):
    with pytest.raises(HfHubHTTPError) as info:
        HfApi().create_repo("somebody-else/model")
    assert info.value.response.status_code == 403


def test_upload_folder_lfs_roundtrip(hub, hub_repo_id, folder, tmp_path):
    api, emu = HfApi(), hub.emulator
    api.create_repo(hub_repo_id, exist_ok=True)
    emu.reset_requests()
    info = api.upload_folder(folder_path=folder, repo_id=hub_repo_id, commit_message="Upload model")

    assert info.oid == emu.head(hub_repo_id).oid and emu.head(hub_repo_id).title == "Upload model"
    assert info.commit_url == f"{hub.endpoint}/{hub_repo_id}/commit/{info.oid}"
    # preupload routed by size (big.dat) and by .gitattributes (*.safetensors); the rest went inline
    assert emu.file_entry(hub_repo_id, "big.dat").lfs
    assert emu.file_entry(hub_repo_id, "model.safetensors").lfs
    assert not emu.file_entry(hub_repo_id, "notes.txt").lfs
    assert emu.count("lfs_upload") == 2 and emu.count("lfs_verify") == 2 and emu.count("commit") == 1
    assert not emu.unhandled and not emu.server_errors

    expected = _files(folder)
    assert sorted(api.list_repo_files(hub_repo_id)) == sorted([".gitattributes", *expected])
    siblings = {s.rfilename: s for s in api.model_info(hub_repo_id, files_metadata=True).siblings}
    assert siblings["big.dat"].lfs.size == BIG and siblings["notes.txt"].lfs is None

    snapshot = Path(snapshot_download(hub_repo_id, cache_dir=tmp_path / "cache"))
    got = _files(snapshot)
    assert got.pop(".gitattributes") == emu.read_file(hub_repo_id, ".gitattributes")
    assert got == expected

    one = hf_hub_download(hub_repo_id, "sub/dir/config.json", cache_dir=tmp_path / "cache2")
    assert Path(one).read_bytes() == expected["sub/dir/config.json"]

    # Same content again: preupload returns the remote oids, the client sees no change and sends no commit.
    commits = emu.count("commit")
    again = api.upload_folder(folder_path=folder, repo_id=hub_repo_id)
    assert again.oid == info.oid and emu.count("commit") == commits


def test_hf_hub_download_local_dir_and_missing_file(hub, hub_repo_id, tmp_path):
    hub.emulator.add_commit(hub_repo_id, {"a/b.txt": "x" * 10, "w.bin": b"\x00\x01" * 50})
    assert not hub.emulator.file_entry(hub_repo_id, "a/b.txt").lfs
    assert hub.emulator.file_entry(hub_repo_id, "w.bin").lfs
    path = hf_hub_download(hub_repo_id, "w.bin", local_dir=tmp_path / "out")
    assert Path(path).read_bytes() == b"\x00\x01" * 50
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(hub_repo_id, "nope.txt", cache_dir=tmp_path / "c")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(hub.emulator.new_repo_id("missing"), "x.txt", cache_dir=tmp_path / "c")


def test_create_pr(hub, hub_repo_id, tmp_path):
    api = HfApi()
    api.create_repo(hub_repo_id)
    info = api.upload_file(path_or_fileobj=b"proposal", path_in_repo="pr.txt", repo_id=hub_repo_id,
                           create_pr=True, commit_message="Propose a file")
    assert info.pr_url == f"{hub.endpoint}/{hub_repo_id}/discussions/1"
    assert info.pr_revision == "refs/pr/1" and info.pr_num == 1
    pr = hub.emulator.pull_requests(hub_repo_id)[0]
    assert (pr.title, pr.target_branch, pr.ref) == ("Propose a file", "main", "refs/pr/1")
    assert "pr.txt" not in api.list_repo_files(hub_repo_id)
    assert "pr.txt" in api.list_repo_files(hub_repo_id, revision=info.pr_revision)
    got = hf_hub_download(hub_repo_id, "pr.txt", revision=info.pr_revision, cache_dir=tmp_path)
    assert Path(got).read_bytes() == b"proposal"
    second = api.upload_file(path_or_fileobj=b"2", path_in_repo="two.txt", repo_id=hub_repo_id, create_pr=True)
    assert second.pr_revision == "refs/pr/2"


def test_branches(hub, hub_repo_id):
    api = HfApi()
    api.create_repo(hub_repo_id)
    with pytest.raises(RevisionNotFoundError):
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=hub_repo_id, revision="dev")
    api.create_branch(hub_repo_id, branch="dev")
    api.create_branch(hub_repo_id, branch="dev", exist_ok=True)
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=hub_repo_id, revision="dev")
    assert {b.name for b in api.list_repo_refs(hub_repo_id).branches} == {"main", "dev"}
    assert "x.txt" in api.list_repo_files(hub_repo_id, revision="dev")
    assert "x.txt" not in api.list_repo_files(hub_repo_id)
    assert [c.title for c in api.list_repo_commits(hub_repo_id, revision="dev")] == [
        "Upload x.txt with huggingface_hub", "initial commit"]


def test_model_card_validation(hub, hub_repo_id):
    good = ModelCard.from_template(ModelCardData(license="apache-2.0", tags=["lines"], base_model="org/base"))
    good.validate()
    bad = ModelCard("---\nlicense:\n- mit\n- apache-2.0\n---\n# Card\n")
    with pytest.raises(ValueError, match="license"):
        bad.validate()
    with pytest.raises(ValueError, match="license"):
        ModelCard("---\nlicense: not-a-license\n---\n# Card\n").validate()

    HfApi().create_repo(hub_repo_id)
    good.push_to_hub(hub_repo_id)
    assert HfApi().model_info(hub_repo_id).card_data.license == "apache-2.0"
    # create_commit validates README.md metadata before uploading anything
    with pytest.raises(ValueError, match="Invalid metadata"):
        HfApi().create_commit(hub_repo_id, [CommitOperationAdd("README.md", str(bad).encode())],
                              commit_message="bad card")


def test_fail_next_commit(hub, hub_repo_id):
    api, emu = HfApi(), hub.emulator
    api.create_repo(hub_repo_id)
    emu.fail_next_commit = True
    with pytest.raises(HfHubHTTPError) as info:
        api.upload_file(path_or_fileobj=b"1", path_in_repo="f.txt", repo_id=hub_repo_id)
    assert type(info.value) is HfHubHTTPError and info.value.response.status_code == 500
    assert not emu.fail_next_commit
    api.upload_file(path_or_fileobj=b"1", path_in_repo="f.txt", repo_id=hub_repo_id)
    assert emu.read_file(hub_repo_id, "f.txt") == b"1"


def test_wrong_token_is_401(hub, hub_repo_id):
    hub.emulator.create_repo(hub_repo_id)
    for call in (lambda api: api.whoami(), lambda api: api.model_info(hub_repo_id)):
        with pytest.raises(HfHubHTTPError) as info:
            call(HfApi(token="hf_wrong"))
        assert info.value.response.status_code == 401
        assert not isinstance(info.value, RepositoryNotFoundError)


def test_tree_pagination(hub, hub_repo_id, monkeypatch):
    files = {f"d{i % 3}/f{i}.txt": str(i) for i in range(7)}
    hub.emulator.add_commit(hub_repo_id, files)
    monkeypatch.setattr(hub.emulator, "tree_page_size", 2)
    hub.emulator.reset_requests()
    assert sorted(HfApi().list_repo_files(hub_repo_id)) == sorted([".gitattributes", *files])
    assert hub.emulator.count("tree") > 3
    top = {e.path for e in HfApi().list_repo_tree(hub_repo_id)}
    assert top == {".gitattributes", "d0", "d1", "d2"}


def test_multipart_upload_and_cdn_redirect(hub, hub_repo_id, monkeypatch, tmp_path):
    monkeypatch.setattr(hub.emulator, "lfs_multipart_chunk_size", 1 << 20)
    monkeypatch.setattr(hub.emulator, "redirect_lfs_downloads", True)
    data = os.urandom(2_500_000)
    (tmp_path / "w.safetensors").write_bytes(data)
    api = HfApi()
    api.create_repo(hub_repo_id)
    hub.emulator.reset_requests()
    api.upload_file(path_or_fileobj=tmp_path / "w.safetensors", path_in_repo="w.safetensors", repo_id=hub_repo_id)
    assert hub.emulator.count("lfs_upload_part") == 3 and hub.emulator.count("lfs_complete") == 1
    got = hf_hub_download(hub_repo_id, "w.safetensors", cache_dir=tmp_path / "cache")
    assert Path(got).read_bytes() == data and hub.emulator.count("cdn") == 1


def test_dataset_repo(hub, hub_repo_id, tmp_path):
    api = HfApi()
    api.create_repo(hub_repo_id, repo_type="dataset")
    api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="data.csv", repo_id=hub_repo_id, repo_type="dataset")
    got = hf_hub_download(hub_repo_id, "data.csv", repo_type="dataset", cache_dir=tmp_path)
    assert Path(got).read_bytes() == b"a,b\n1,2\n"
    assert not hub.emulator.repo_exists(hub_repo_id)  # the model namespace is separate
