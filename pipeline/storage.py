"""The one storage entry point: URI + options -> (fsspec filesystem, path).

Everything that touches bytes (manifests, images, outputs) goes through here, so
local paths, ``s3://``, ``gs://``, ``az://`` and ``memory://`` behave alike and a
storage option set once in the config reaches every access.
"""

from __future__ import annotations

import posixpath
from typing import Any, Mapping

from fsspec.core import url_to_fs

_SCHEME_SEP = "://"


def filesystem(uri: str, storage_options: Mapping[str, Any] | None = None):
    """Return ``(fs, path)`` for ``uri``; ``path`` is what ``fs`` methods take."""
    return url_to_fs(uri, **dict(storage_options or {}))


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


def resolve(uri: str, root: str | None) -> str:
    """A manifest ``image`` value: absolute URIs and paths as given, others under ``root``."""
    if has_scheme(uri) or posixpath.isabs(uri) or not root:
        return uri
    return join(root, uri)


def unstrip(fs, path: str) -> str:
    """Turn a filesystem-relative path back into a full URI for messages and metadata."""
    return fs.unstrip_protocol(path)


def expand(uri: str, storage_options: Mapping[str, Any] | None = None, suffix: str = ".parquet"):
    """Expand a file, a directory (recursively, files ending in ``suffix``) or a glob.

    Returns ``(fs, [paths])`` sorted, so that runs over the same input see rows in the
    same order. Raises ``FileNotFoundError`` with the URI when nothing matches.
    """
    fs, path = filesystem(uri, storage_options)
    if any(c in path for c in "*?["):
        paths = [p for p in fs.glob(path) if fs.isfile(p)]
    elif fs.isdir(path):
        paths = [p for p in fs.find(path) if p.endswith(suffix)
                 and not posixpath.basename(p).startswith((".", "_"))]
    elif fs.exists(path):
        paths = [path]
    else:
        raise FileNotFoundError(f"{uri}: no such file, directory or glob match")
    if not paths:
        raise FileNotFoundError(f"{uri}: matched no {suffix} files")
    return fs, sorted(paths)
