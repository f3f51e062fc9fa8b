"""The one storage entry point: URI + options -> (fsspec filesystem, path).

Everything that touches bytes (manifests, images, outputs) goes through here, so
local paths, ``s3://``, ``gs://``, ``az://`` and ``memory://`` behave alike and a
storage option set once in the config reaches every access.
"""

from __future__ import annotations

import errno
import posixpath
from collections.abc import Mapping
from typing import Any

from fsspec.core import url_to_fs

from . import retries

_SCHEME_SEP = "://"


def filesystem(uri: str, storage_options: Mapping[str, Any] | None = None):
    """Return ``(fs, path)`` for ``uri``; ``path`` is what ``fs`` methods take."""
    return url_to_fs(uri, **dict(storage_options or {}))


class Resolver:
    """``filesystem`` for many URIs of a few schemes: one fsspec instance per scheme,
    then only path stripping per URI (``url_to_fs`` per row costs more than a local stat)."""

    def __init__(self, storage_options: Mapping[str, Any] | None = None):
        self.options = dict(storage_options or {})
        self._fs: dict[str, Any] = {}

    def __call__(self, uri: str):
        scheme = uri.split(_SCHEME_SEP, 1)[0] if has_scheme(uri) else ""
        fs = self._fs.get(scheme)
        if fs is None:
            fs, path = filesystem(uri, self.options)
            self._fs[scheme] = fs
            return fs, path
        return fs, fs._strip_protocol(uri)


def is_local_fs(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def map_io(fn, items: list, threads: int, local: bool) -> list:
    """``[fn(x) for x in items]``, on a thread pool where requests wait on a network;
    local calls (a stat, a small read) run faster in order than contending for the GIL."""
    if local or threads <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        return list(pool.map(fn, items))


def has_scheme(uri: str) -> bool:
    return _SCHEME_SEP in uri


def is_local(uri: str) -> bool:
    return not has_scheme(uri) or uri.startswith("file://") or uri.startswith("local://")


def join(root: str, *parts: str) -> str:
    """Join URI parts with ``/`` whatever the scheme (never ``os.path``: object keys)."""
    out = root
    for part in parts:
        if not part:
            continue
        out = out.rstrip("/") + "/" + part.lstrip("/") if out else part
    return out


def unstrip(fs, path: str) -> str:
    """Turn a filesystem-relative path back into a full URI for messages and metadata."""
    return fs.unstrip_protocol(path)


def expand(
    uri: str, storage_options: Mapping[str, Any] | None = None, suffix: str | tuple = ".parquet"
):
    """Expand a file, a directory (recursively, files ending in ``suffix``, one or a tuple) or a glob.

    Returns ``(fs, [paths])`` sorted, so that runs over the same input see rows in the
    same order. Raises ``FileNotFoundError`` with the URI when nothing matches.
    """
    fs, path = filesystem(uri, storage_options)
    if any(c in path for c in "*?["):
        paths = [p for p in fs.glob(path) if fs.isfile(p)]
    elif fs.isdir(path):
        paths = [
            p
            for p in fs.find(path)
            if p.endswith(suffix) and not posixpath.basename(p).startswith((".", "_"))
        ]
    elif fs.exists(path):
        paths = [path]
    else:
        raise FileNotFoundError(f"{uri}: no such file, directory or glob match")
    if not paths:
        wanted = "/".join(suffix) if isinstance(suffix, tuple) else suffix
        raise FileNotFoundError(f"{uri}: matched no {wanted} files")
    return fs, sorted(paths)


# --------------------------------------------------------------------------- retries

_TRANSIENT_CODES = {
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "Throttling",
    "ThrottlingException",
    "RequestTimeTooSkewed",
    "503",
    "500",
    "502",
    "504",
}
_TRANSIENT_ERRNO = {
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ETIMEDOUT,
    errno.EPIPE,
    errno.ECONNABORTED,
    errno.EAGAIN,
    errno.EIO,
}


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: timeouts, resets, 5xx/SlowDown. Not: missing keys, 403, bad requests."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    name = type(exc).__name__
    if name in (
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ServerDisconnectedError",
        "ClientConnectionError",
        "ClientOSError",
        "ClientPayloadError",
        "ResponseStreamingError",
        "IncompleteReadError",
        "ProtocolError",
    ):
        return True
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        err = response.get("Error", {})
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return err.get("Code") in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500)
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNO:
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_transient(cause)


STORAGE_RETRIES = retries.Policy(base=0.2, cap=5.0, attempts=6, full_jitter=True)


def retry(fn, *args, policy: retries.Policy = STORAGE_RETRIES, **kwargs):
    """``fn(*args, **kwargs)``, retried on transient errors (``is_transient``).

    The one retry layer for storage: sources, outputs and metadata all go through it.
    Permanent errors (missing object, access denied) raise at once.
    """

    def attempt(_):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if not is_transient(e):
                raise
            raise retries.RetryLater(e) from None

    return retries.call(attempt, policy)
