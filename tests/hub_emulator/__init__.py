"""An in-process emulator of the Hugging Face Hub HTTP API, for the test suite.

The real ``huggingface_hub`` client talks to it over 127.0.0.1, so tests exercise the same code paths as a
push to huggingface.co: whoami, repo creation, preupload (regular vs LFS), the LFS batch API with upload and
verify, ndjson commits (branches and pull requests), tree listings, ``/resolve`` downloads and card validation.

Stdlib only (``http.server``), plus PyYAML for card metadata, which huggingface_hub already depends on.

Two layers. The store (``store``, ``blobs``, ``model``, ``paths``, ``cards``, ``auth``) is the Hub's state and
rules in plain Python. The HTTP layer (``wire``, ``routes``, ``api_repos``, ``api_files``, ``server``) maps
requests onto it; ``journal`` logs requests and injects failures; ``environment`` points the client here.

Simplifications, on purpose: one user and one token (plus the organisations in ``auth.DEFAULT_ORGS``),
model and dataset repos only, LFS objects stored once per process but owned per repo, no Xet
(``HF_HUB_DISABLE_XET=1``), no tags, deletions or discussions API beyond what ``create_pr=True`` needs.
"""
from .environment import configure_environment
from .server import HubEmulator

__all__ = ["HubEmulator", "configure_environment"]
