"""Point huggingface_hub at the emulator, once per process, through the environment variables it reads.

The client reads HF_ENDPOINT and friends when it is first imported, so `configure_environment()` must run
before anything imports huggingface_hub, transformers or peft (the top of tests/conftest.py).
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import threading
import types

from .auth import DEFAULT_TOKEN, DEFAULT_USER
from .server import HubEmulator

# Kept outside this package's globals so that importing it twice (as `hub_emulator` and as
# `tests.hub_emulator`) still gives one server per process.
_REGISTRY = sys.modules.setdefault("_hf_hub_emulator_registry", types.ModuleType("_hf_hub_emulator_registry"))
_REGISTRY_LOCK = getattr(_REGISTRY, "lock", None) or threading.Lock()
_REGISTRY.lock = _REGISTRY_LOCK

# Environment variables that would send the client elsewhere (cache, token, offline mode) than the emulator.
_ENV_TO_UNSET = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE",
                 "HUGGINGFACE_ASSETS_CACHE", "HF_TOKEN_PATH", "HF_XET_CACHE", "HF_HUB_DISABLE_IMPLICIT_TOKEN",
                 "HUGGING_FACE_HUB_TOKEN", "HF_HUB_ENABLE_HF_TRANSFER")


def configure_environment(token: str = DEFAULT_TOKEN, user: str = DEFAULT_USER) -> HubEmulator:
    """Start the process-wide emulator (once) and point huggingface_hub at it through the environment.

    Must run before huggingface_hub is first imported (it reads these variables at import time).
    """
    with _REGISTRY_LOCK:
        emulator = getattr(_REGISTRY, "emulator", None)
        if emulator is None:
            emulator = HubEmulator(token=token, user=user).start()
            atexit.register(emulator.stop)
            hf_home = tempfile.mkdtemp(prefix="hf-emulator-home-")
            atexit.register(shutil.rmtree, hf_home, True)
            for name in _ENV_TO_UNSET:
                os.environ.pop(name, None)
            os.environ.update({
                "HF_ENDPOINT": emulator.endpoint,
                "HF_HUB_DISABLE_XET": "1",
                "HF_TOKEN": emulator.token,
                "HF_HOME": hf_home,
                "HF_HUB_DISABLE_TELEMETRY": "1",  # also keeps the client from asking /api/agent-harnesses
                "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            })
            for name in ("NO_PROXY", "no_proxy"):
                hosts = [h for h in os.environ.get(name, "").split(",") if h]
                os.environ[name] = ",".join(dict.fromkeys(hosts + ["127.0.0.1", "localhost"]))
            _REGISTRY.emulator = emulator
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and getattr(constants, "ENDPOINT", None) != emulator.endpoint:
        raise RuntimeError(
            "huggingface_hub was imported before configure_environment(), so it talks to "
            f"{constants.ENDPOINT} instead of the emulator. Call configure_environment() at the very top of "
            "tests/conftest.py, before anything imports huggingface_hub, transformers or peft."
        )
    return emulator
