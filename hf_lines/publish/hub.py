"""Pushing an output folder to the Hugging Face Hub: ``create_repo(exist_ok=True)`` then one ``upload_folder`` commit.

The folder is always complete on disk before anything is sent, and it is never touched by a push,
so a failed push loses nothing: ``PushError`` says what failed and the command that retries it.
Tokens are passed to ``HfApi`` only (argument, else ``HF_TOKEN``, else the login cache) and are
scrubbed from every message this module writes.
"""
from __future__ import annotations

import logging
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from hf_lines.errors import CardError, PushError
from hf_lines.redact import scrub

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

log = logging.getLogger(__name__)

PUSH_OPTIONS = ("private", "revision", "create_pr", "commit_message", "token")
DEFAULT_COMMIT_MESSAGE = "Upload model made with hf-lines (LiNeS)"


def check_push_options(options: Mapping[str, Any]) -> None:
    """Refuse keyword arguments that are not push options (a typo must not be silently ignored)."""
    unknown = sorted(set(options) - set(PUSH_OPTIONS))
    if unknown:
        raise TypeError(f"unknown keyword argument(s) {unknown}; the push options are {list(PUSH_OPTIONS)}")


def check_push_request(repo_id: str | None) -> None:
    """Fail fast, before any work, on a missing or malformed repo id."""
    if not repo_id:
        raise PushError("push_to_hub=True needs repo_id='your-name/model-name'")
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except Exception as e:  # HFValidationError
        raise PushError(f"{repo_id!r} is not a valid Hub repo id ({e}); use 'your-name/model-name'") from None


def retry_command(folder: str | Path, repo_id: str, *, private: bool | None = None, revision: str | None = None,
                  create_pr: bool = False, commit_message: str | None = None) -> str:
    """The ``hf-lines push`` command that repeats a push (never with the token)."""
    parts = ["hf-lines", "push", str(folder), repo_id]
    if private:
        parts.append("--private")
    if revision:
        parts += ["--revision", revision]
    if create_pr:
        parts.append("--create-pr")
    if commit_message:
        parts += ["--commit-message", commit_message]
    return shlex.join(parts)


def push_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | bool | None = None,
) -> "CommitInfo":
    """Upload every file of ``folder`` to the model repo ``repo_id`` in one commit; returns the commit info.

    The repo is created if missing (``private`` applies then; None keeps the Hub's default).
    ``revision`` is a branch, created from main if missing. ``create_pr`` opens a pull request
    against the default branch instead of committing (huggingface_hub allows no other target).
    Large files take the client's LFS path. README.md metadata is validated locally, then by the
    Hub, before any file is uploaded. Raises PushError, leaving ``folder`` as it was.
    """
    from huggingface_hub import HfApi, ModelCard, get_token

    folder = Path(folder).expanduser().resolve()
    check_push_request(repo_id)
    retry = retry_command(folder, repo_id, private=private, revision=revision, create_pr=create_pr,
                          commit_message=commit_message)
    secret = token if isinstance(token, str) else get_token() if token is not False else None

    def fail(what: str, error: BaseException | str) -> PushError:
        detail = scrub(str(error), secret).strip().rstrip(".") or type(error).__name__
        status = getattr(getattr(error, "response", None), "status_code", None)
        hint = ""
        if status in (401, 403):
            hint = " Check the token: pass token=..., set HF_TOKEN or run `hf auth login` with a write token."
        return PushError(
            f"pushing {folder} to {repo_id} failed: could not {what}: {detail}.{hint} "
            f"The local folder is complete and was kept; retry with: {retry}"
        )

    if create_pr and revision:  # huggingface_hub opens pull requests against the default branch only
        raise PushError("a pull request (create_pr / --create-pr) always targets the default branch: drop revision, "
                        "or push to the branch without a pull request")
    if not folder.is_dir():
        raise PushError(f"{folder} does not exist or is not a folder; save the model first "
                        "(save_pretrained, hf-lines scale or hf-lines merge)")
    readme = folder / "README.md"
    if readme.is_file():
        from hf_lines.publish.metadata import validate_card_file

        try:
            validate_card_file(readme)
        except CardError as e:
            raise fail("validate the model card locally (fix README.md)", e) from None
    api = HfApi(token=token)
    step = "check the model card metadata with the Hub"
    try:
        if readme.is_file():
            ModelCard.load(readme).validate()  # before create_repo: a bad card must not leave an empty repo
        step = "create the repo"
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model").repo_id
        if revision and not revision.startswith("refs/"):
            step = f"create the branch {revision!r}"
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        step = "upload the files"
        info = api.upload_folder(
            folder_path=folder,
            repo_id=repo_id,
            repo_type="model",
            revision=revision,
            create_pr=create_pr,
            commit_message=commit_message or DEFAULT_COMMIT_MESSAGE,
        )
    except Exception as e:  # HfHubHTTPError, ValueError (card refused), OSError, connection errors...
        # not chained: the Hub's reply (or a proxy's) may echo the request headers, and a traceback prints it whole
        raise fail(step, e) from None
    log.info("pushed %s to %s", folder, info.pr_url or info.commit_url)
    return info
