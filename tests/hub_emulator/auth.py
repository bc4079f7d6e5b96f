"""Who may do what: the one user, token and organisations the emulated Hub knows, and signed URLs.

Pre-signed URLs (LFS uploads, the "CDN") carry no token, as on the Hub, so they are checked by an HMAC
signature instead; the secret is new in every process.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

from .model import HubError

DEFAULT_TOKEN = "hf_emulator_write_token"
DEFAULT_USER = "emulator-user"
DEFAULT_ORGS = ("emulator-org",)


class Credentials:
    """One token for one user (plus organisations); the secret signing pre-signed URLs is new per process."""

    def __init__(self, token: str = DEFAULT_TOKEN, user: str = DEFAULT_USER, orgs=DEFAULT_ORGS):
        self.token, self.user, self.orgs = token, user, list(orgs)
        self._secret = secrets.token_bytes(16)

    def check(self, authorization: str | None, required: bool) -> None:
        """Accept the token (or no header where `required` is False); 401 otherwise."""
        if authorization is None:
            if required:
                raise HubError(401, "Authorization header is required: pass a token (HF_TOKEN)")
            return
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), self.token):
            # This exact message makes the client raise a plain HfHubHTTPError, not RepositoryNotFoundError.
            raise HubError(401, "Invalid credentials in Authorization header")

    def check_namespace(self, namespace: str, repo_type: str) -> None:
        if namespace not in (self.user, *self.orgs):
            raise HubError(403, f"You don't have the rights to create a {repo_type} "
                                f"under the namespace \"{namespace}\"")

    def whoami(self) -> dict:
        return {
            "type": "user", "id": hashlib.sha1(self.user.encode()).hexdigest()[:24], "name": self.user,
            "fullname": "Hub Emulator User", "email": f"{self.user}@example.com", "emailVerified": True,
            "canPay": False, "isPro": False, "periodEnd": None, "avatarUrl": "",
            "orgs": [{"type": "org", "name": org, "fullname": org, "roleInOrg": "admin"} for org in self.orgs],
            "auth": {"type": "access_token", "accessToken": {"displayName": "hub-emulator", "role": "write",
                                                               "createdAt": "2024-01-01T00:00:00.000Z"}},
        }

    def sign(self, *parts: str) -> str:
        return hmac.new(self._secret, "\0".join(parts).encode(), hashlib.sha256).hexdigest()[:32]

    def check_signature(self, signature: str | None, *parts: str) -> None:
        if not hmac.compare_digest(signature or "", self.sign(*parts)):
            raise HubError(403, "Request signature does not match")
