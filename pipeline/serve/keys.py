"""The server's API keys: read once where the application is built (the environment
variable ``serve.keys_env`` names, or ``serve.keys_file``), and from then on held only as
SHA-256 digests, so no key travels to a replica, a log or the output store."""

from __future__ import annotations

import hashlib
import hmac
import os

from ..common import storage
from ..config import ConfigError, ServeConfig

FORBIDDEN = {"detail": "Not authenticated - Invalid Authentication"}


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_digests(cfg: ServeConfig) -> list[str]:
    """The accepted keys' digests; a server without keys does not start."""
    if cfg.keys_file:
        fs, path = storage.filesystem(cfg.keys_file)
        text = fs.cat_file(path).decode()
        keys, where = text.splitlines(), f"serve.keys_file ({cfg.keys_file})"
    else:
        keys, where = os.environ.get(cfg.keys_env, "").split(","), f"${cfg.keys_env}"
    keys = [k.strip() for k in keys if k.strip() and not k.strip().startswith("#")]
    if not keys:
        raise ConfigError(
            f"serve: no API keys in {where}; set {cfg.keys_env}=key1,key2 in the server's "
            "environment or point serve.keys_file at a file with one key a line"
        )
    return sorted({digest(k) for k in keys})


class Keys:
    def __init__(self, digests: list[str]):
        self.digests = list(digests)

    def owner(self, key: str | None) -> str | None:
        """The key's digest when it is one of ours (compared in constant time), else None."""
        if not key:
            return None
        mine = digest(key)
        found = None
        for d in self.digests:  # every digest compared: the time says nothing about which
            if hmac.compare_digest(d, mine):
                found = d
        return found
