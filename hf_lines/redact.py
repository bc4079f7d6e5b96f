"""One scrubber for every message that can carry a server's reply or a request header.

``scrub`` is applied where a Hub (or proxy) error becomes an hf-lines message, and
``install_log_filter`` applies it to log records, so a server that echoes the request
headers back cannot put the token in a message, a log line or a traceback.
"""
from __future__ import annotations

import logging
import os
import re

_HIDDEN = "***"
# Hugging Face user and organisation tokens: anything token-shaped, known or not.
_TOKEN_SHAPED = re.compile(r"\b(?:hf_|api_org_)[A-Za-z0-9]{20,}\b")
# An authorization header's value, with or without its scheme, however it is echoed:
# "Authorization: Bearer x", "'authorization': 'Bearer x'" (a printed dict), "authorization=x".
_AUTH_VALUE = re.compile(r"(?i)(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?\s*(?:[a-z]+\s+)?)[^\s\"',;}\])]+")
# A bearer credential on its own ("Bearer x" without the header name); "bearer" is rare in prose.
_BEARER_VALUE = re.compile(r"(?i)(\bbearer\s+)[^\s\"',;}\])]+")


def known_secrets() -> list[str]:
    """Tokens this process could send: HF_TOKEN, the login cache."""
    found = [os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")]
    try:
        from huggingface_hub import get_token

        found.append(get_token())
    except Exception:  # no huggingface_hub config readable: nothing more to hide
        pass
    return [s for s in found if s]


def scrub(text: object, *secrets: object) -> str:
    """``text`` with every token replaced by ``***``: the ones given, the known ones, and anything token-shaped.

    Non-string ``secrets`` (``token=True``, None) are ignored. Longer secrets go first, so one
    that contains another is hidden whole.
    """
    return _scrub_with(str(text), (*secrets, *known_secrets()))


def _scrub_with(text: str, secrets: tuple[object, ...]) -> str:
    given = {s for s in secrets if isinstance(s, str) and len(s) >= 4}
    for secret in sorted(given, key=len, reverse=True):
        text = text.replace(secret, _HIDDEN)
    text = _TOKEN_SHAPED.sub(_HIDDEN, text)
    text = _AUTH_VALUE.sub(lambda m: m.group(1) + _HIDDEN, text)
    return _BEARER_VALUE.sub(lambda m: m.group(1) + _HIDDEN, text)


class SecretFilter(logging.Filter):
    """Scrubs a record before any handler formats it: the message with its arguments, traceback and stack.

    The known tokens are read once, when the filter is made: reading the login cache for every
    record would cost a file read each, and could log from inside logging.
    """

    def __init__(self, *secrets: str):
        super().__init__()
        self.secrets = (*secrets, *known_secrets())

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: logging reports it as usual
            return True
        record.msg, record.args = _scrub_with(message, self.secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            # Formatters print exc_text when set; dropping exc_info keeps handlers that format it themselves off it.
            record.exc_text, record.exc_info = _scrub_with(record.exc_text, self.secrets), None
        if record.stack_info:
            record.stack_info = _scrub_with(record.stack_info, self.secrets)
        return True


def install_log_filter(*handlers: logging.Handler, secrets: tuple[str, ...] = ()) -> SecretFilter:
    """Attach a ``SecretFilter`` to ``handlers`` (default: the root logger's, and logging's last resort).

    Call it once logging is configured: a filter on a handler sees every record that reaches it,
    whichever logger made it (a filter on a logger would miss its children's). Handlers that have
    one already are left as they are. Returns the filter, to remove it with ``handler.removeFilter``.
    """
    secret_filter = SecretFilter(*secrets)
    targets = list(handlers) or [*logging.getLogger().handlers, logging.lastResort]
    for handler in targets:
        if handler is not None and not any(isinstance(f, SecretFilter) for f in handler.filters):
            handler.addFilter(secret_filter)
    return secret_filter
