"""Secrets stay secret: which config values are credentials, and how they are kept out of
everything a run writes or says (``run.json``, the metadata, the review page, logs,
error messages, a submitted job's config).

Two ways, both always on:

- by name: any value under a key that names a credential (``key``, ``secret``,
  ``token``, ``password``, ``sas_token``, ``Authorization``...) in any mapping of the
  config (``storage_options``, ``input.http.headers``) is replaced by ``***``;
- by value: the values found that way, and the keys read from the environment
  (``model.api.key_env``, ``output.c2pa.key_env``), are replaced wherever they appear in
  text, and so is the user:password part of any URL.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable

MASK = "***"
# names whose values are credentials (compared lower-cased, '-' read as '_')
SECRET_NAMES = frozenset(
    {
        "key", "secret", "token", "password", "passwd", "credential", "credentials",
        "account_key", "sas_token", "client_secret", "session_token", "access_key", "secret_key",
        "aws_secret_access_key", "aws_session_token", "private_key", "api_key", "apikey",
        "authorization", "proxy_authorization", "cookie", "x_key", "x_api_key", "connection_string",
        "service_account_info", "token_uri_secret",
    }
)  # fmt: skip
SECRET_SUFFIXES = ("_secret", "_token", "_password", "_api_key", "_access_key", "_account_key")
_USERINFO = r"://[^/@\s:]+:[^/@\s]+@"  # a URL's user:password (RE2 and re alike)
MIN_LENGTH = 4  # shorter values would mask ordinary words


def is_secret_name(name: str) -> bool:
    n = str(name).lower().replace("-", "_")
    return n in SECRET_NAMES or n.endswith(SECRET_SUFFIXES)


def redact(data):
    """A copy of ``data`` (dicts, lists, strings) with every credential-named value masked
    and every known secret value scrubbed from its strings."""
    if isinstance(data, dict):
        return {
            k: MASK if is_secret_name(k) and v not in (None, "", {}) else redact(v)
            for k, v in data.items()
        }
    if isinstance(data, (list, tuple)):
        return [redact(v) for v in data]
    if isinstance(data, str):
        return scrub(data)
    return data


def values_in(data) -> set[str]:
    """The credential-named values anywhere in ``data``."""
    found: set[str] = set()
    if isinstance(data, dict):
        for k, v in data.items():
            if is_secret_name(k) and isinstance(v, (str, int)) and len(str(v)) >= MIN_LENGTH:
                found.add(str(v))
            elif isinstance(v, (dict, list, tuple)):
                found |= values_in(v)
    elif isinstance(data, (list, tuple)):
        for v in data:
            found |= values_in(v)
    return found


class _Known:
    """The secret values this process has seen (config values, keys from the environment),
    longest first so a secret containing another is masked whole."""

    def __init__(self):
        self._lock = threading.Lock()
        self._values: tuple[str, ...] = ()

    def add(self, values: Iterable[str]) -> None:
        new = {v for v in values if v and len(v) >= MIN_LENGTH}
        with self._lock:
            self._values = tuple(sorted(set(self._values) | new, key=len, reverse=True))

    @property
    def values(self) -> tuple[str, ...]:
        return self._values


KNOWN = _Known()


def remember(config_data: dict) -> None:
    """Learn the secrets of a config (as a dict): its credential-named values and the keys
    its ``*.key_env`` settings name, read from this process's environment."""
    KNOWN.add(values_in(config_data))
    KNOWN.add(os.environ.get(env, "") for env in _key_envs(config_data))


def _key_envs(data) -> list[str]:
    out = []
    if isinstance(data, dict):
        for k, v in data.items():
            if k == "key_env" and isinstance(v, str):
                out.append(v)
            else:
                out += _key_envs(v)
    return out


def scrub(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with every known secret value and URL password masked."""
    if not text:
        return text
    for value in (*KNOWN.values, *extra):
        if value in text:
            text = text.replace(value, MASK)
    return re.sub(_USERINFO, f"://{MASK}@", text)


class Scrubber:
    """``scrub`` with a fixed set of values: picklable, so workers that never loaded the
    config (Ray tasks) mask what the driver knew."""

    def __init__(self, values: Iterable[str] = ()):
        self.values = tuple(
            sorted({v for v in values if v and len(v) >= MIN_LENGTH}, key=len, reverse=True)
        )

    @classmethod
    def current(cls) -> Scrubber:
        return cls(KNOWN.values)

    def __call__(self, text):
        if not isinstance(text, str):
            return text
        return scrub(text, self.values)

    def column(self, array):
        """A string column scrubbed (Arrow kernels; only for the values this holds)."""
        import pyarrow.compute as pc

        for value in self.values:
            array = pc.replace_substring(array, value, MASK)
        return pc.replace_substring_regex(array, _USERINFO, f"://{MASK}@")
