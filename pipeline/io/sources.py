"""Source objects: reading a row's image, and learning its identity, at the fewest requests.

A source's identity is what changes when the object changes: its size plus ETag /
generation / mtime (``headers.identity_of``), the same string however it was learnt —
a listing, a HEAD, or the GET that loads the image. It goes into the request hash.

- ``fetch``: one GET, which also yields the identity (S3: the GET's own ETag and
  length; HTTP: its ETag / Last-Modified; local files: a stat). No HEAD before it.
- ``identities``: the identities of many rows without their bytes. Rows of an object
  store directory are looked up in one listing (1,000 keys a request) when that costs
  fewer requests than a HEAD a row; listing stops past a budget (``input.listing_budget``
  pages per row looked up), so a few rows in a prefix of millions cost their HEADs, not
  a walk of the prefix. Local files: a stat each. HTTP: a HEAD each (no listing exists).
- HTTP(S) goes through one urllib3 pool per process (fsspec's HTTP filesystem exposes
  neither a GET's headers nor ``Retry-After``): at most
  ``input.http.max_connections_per_host`` connections per host, 429/503 honour
  ``Retry-After`` within ``input.http.max_wait_s`` in all, 404 is a missing image,
  401/403 refused access.
"""

from __future__ import annotations

import io
import json
import posixpath
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..common import retries, storage
from .headers import Header, identity_of, inspect
from .imageio import ImageError
from .netguard import NetPolicy, SourceRefused, guarded_pool_manager

HTTP_SCHEMES = ("http://", "https://")


def is_http(uri: str | None) -> bool:
    return bool(uri) and uri.startswith(HTTP_SCHEMES)


# ------------------------------------------------------------------ HTTP


class Refused(PermissionError):
    """A source the job may not reach (a private address, a scheme it may not follow)."""


class HTTPStatusError(OSError):
    def __init__(self, url: str, status: int, reason: str = ""):
        super().__init__(f"HTTP {status} {reason} for {url}".replace("  ", " "))
        self.status = status


REDIRECTS = (301, 302, 303, 307, 308)


class HttpClient:
    """One pool of keep-alive connections per process (thread-safe), per-host limited,
    that reaches only what the network policy allows (``netguard``) and follows
    redirects itself, checking every hop."""

    _lock = threading.Lock()
    _clients: dict[tuple, HttpClient] = {}

    def __init__(self, http_cfg):
        import urllib3

        self.urllib3 = urllib3
        self.max_wait_s = http_cfg.max_wait_s
        self.max_redirects = http_cfg.max_redirects
        self.pool = guarded_pool_manager(
            NetPolicy.of(http_cfg),
            num_pools=256,
            maxsize=http_cfg.max_connections_per_host,
            block=True,
            retries=False,
            timeout=urllib3.Timeout(total=http_cfg.timeout_s),
            headers=dict(http_cfg.headers),
        )

    @classmethod
    def get(cls, http_cfg) -> HttpClient:
        key = json.dumps(http_cfg.model_dump(mode="json"), sort_keys=True)
        with cls._lock:
            client = cls._clients.get(key)
            if client is None:
                client = cls._clients[key] = cls(http_cfg)
        return client

    def request(self, method: str, url: str):
        """The response (body read), after following redirects (each hop checked, at most
        ``max_redirects``), waiting out 429/503 (``Retry-After``) and retrying 5xx /
        connection errors, within ``max_wait_s`` in all; raises FileNotFoundError
        (404/410), PermissionError (401/403, or a source the policy refuses),
        HTTPStatusError (others)."""
        for _ in range(self.max_redirects + 1):
            r = self._once(method, url)
            if r.status not in REDIRECTS:
                return r
            url = self._next_hop(url, r.headers.get("Location"))
        raise HTTPStatusError(
            url, 310, f"more than input.http.max_redirects = {self.max_redirects} redirects"
        )

    @staticmethod
    def _next_hop(url: str, location: str | None) -> str:
        if not location:
            raise HTTPStatusError(url, 502, "a redirect without a Location")
        target = urljoin(url, location)
        if not is_http(target):
            raise Refused(
                f"{url} redirects to a {target.split(':', 1)[0]}: URL; only http(s) redirects are followed"
            )
        return target

    def _once(self, method: str, url: str):
        started = time.monotonic()

        def attempt(_):
            try:
                r = self.pool.request(method, url, preload_content=True, redirect=False)
            except SourceRefused as e:
                raise Refused(f"{url}: {e}") from None
            except (self.urllib3.exceptions.HTTPError, OSError) as e:
                raise retries.RetryLater(
                    ConnectionError(f"{url}: {type(e).__name__}: {e}")
                ) from None
            if r.status < 400:
                return r
            if r.status in (404, 410):
                raise FileNotFoundError(url)
            if r.status in (401, 403):
                raise PermissionError(f"HTTP {r.status} for {url}")
            if r.status not in (429, 500, 502, 503, 504):
                raise HTTPStatusError(url, r.status, r.reason or "")
            waited = time.monotonic() - started
            error = ConnectionError(
                f"HTTP {r.status} for {url}, still after {waited:.0f} s of retries "
                f"(input.http.max_wait_s = {self.max_wait_s:g})"
            )
            asked = r.headers.get("Retry-After") if r.status in (429, 503) else None
            raise retries.RetryLater(error, retries.retry_after(asked))

        return retries.call(attempt, retries.Policy(base=0.2, cap=8.0, max_wait_s=self.max_wait_s))


def _http_identity(headers, size: int | None) -> str:
    return identity_of(
        {"size": size, "ETag": headers.get("ETag"), "LastModified": headers.get("Last-Modified")}
    )


# ------------------------------------------------------------------ one source


def _s3_get(fs, path: str) -> tuple[bytes, dict]:
    """One GET of an S3 object: its bytes and, from the same response, what a HEAD says."""
    from fsspec.asyn import sync

    async def go():
        bucket, key, version = fs.split_path(path)
        resp = await fs._call_s3(
            "get_object", Bucket=bucket, Key=key, **({"VersionId": version} if version else {})
        )
        body = resp["Body"]
        try:
            data = await body.read()
        finally:
            body.close()
        return data, {
            "size": resp.get("ContentLength", len(data)),
            "ETag": resp.get("ETag"),
            "LastModified": resp.get("LastModified"),
        }

    return sync(fs.loop, go)


def _s3_head(fs, path: str) -> dict:
    """One HEAD of an S3 object (s3fs's ``info`` adds a listing when the key is missing,
    to tell a directory apart)."""
    from fsspec.asyn import sync

    async def go():
        bucket, key, version = fs.split_path(path)
        resp = await fs._call_s3(
            "head_object", Bucket=bucket, Key=key, **({"VersionId": version} if version else {})
        )
        return {
            "size": resp.get("ContentLength"),
            "ETag": resp.get("ETag"),
            "LastModified": resp.get("LastModified"),
        }

    return sync(fs.loop, go)


_resolvers: dict[str, storage.Resolver] = {}
_resolvers_lock = threading.Lock()


def _filesystem(uri: str, options: dict):
    """One filesystem instance per scheme and storage options per process (a new client
    per row costs more than the request it makes)."""
    import json

    key = json.dumps(options, sort_keys=True, default=str)
    with _resolvers_lock:
        resolve = _resolvers.get(key)
        if resolve is None:
            resolve = _resolvers[key] = storage.Resolver(options)
    return resolve(uri)


def _is_s3(fs) -> bool:
    return hasattr(fs, "_call_s3") and hasattr(fs, "_iterdir")


def fetch(uri: str, input_cfg) -> tuple[bytes, str]:
    """(bytes, identity) of a source URI in one request; ``ImageError`` with the row's code."""
    try:
        if is_http(uri):
            r = HttpClient.get(input_cfg.http).request("GET", uri)
            return r.data, _http_identity(r.headers, len(r.data))
        fs, path = _filesystem(uri, input_cfg.storage_options)
        if _is_s3(fs):
            data, info = storage.retry(_s3_get, fs, path)
        else:
            data = storage.retry(fs.cat_file, path)
            info = storage.retry(fs.info, path)  # local: a stat; other stores: their HEAD
        return data, identity_of(info)
    except Exception as e:  # noqa: BLE001 - mapped to the row's code below
        raise source_error(uri, e) from None


def read(uri: str, input_cfg) -> bytes:
    """A source's bytes in one GET, when its identity is not wanted (the review page)."""
    try:
        if is_http(uri):
            return HttpClient.get(input_cfg.http).request("GET", uri).data
        fs, path = _filesystem(uri, input_cfg.storage_options)
        return (
            storage.retry(_s3_get, fs, path)[0] if _is_s3(fs) else storage.retry(fs.cat_file, path)
        )
    except Exception as e:  # noqa: BLE001
        raise source_error(uri, e) from None


def head(uri: str, input_cfg) -> str:
    """The identity of a source URI without its bytes (a HEAD, or a stat)."""
    try:
        if is_http(uri):
            r = HttpClient.get(input_cfg.http).request("HEAD", uri)
            length = r.headers.get("Content-Length")
            return _http_identity(r.headers, int(length) if length and length.isdigit() else None)
        fs, path = _filesystem(uri, input_cfg.storage_options)
        info = storage.retry(_s3_head, fs, path) if _is_s3(fs) else storage.retry(fs.info, path)
        if info.get("type") == "directory":
            raise IsADirectoryError(uri)
        return identity_of(info)
    except Exception as e:  # noqa: BLE001
        raise source_error(uri, e) from None


def http_header(uri: str, input_cfg, limits, want_header: bool = True):
    """``headers.probe_many``'s probe for an http(s) source: a HEAD for its identity, or
    one GET for its header and identity, through the guarded client."""
    if not want_header:
        try:
            return Header(identity=head(uri, input_cfg))
        except ImageError as e:
            return Header(code=e.code, message=e.message)
    try:
        data, identity = fetch(uri, input_cfg)
    except ImageError as e:
        return Header(code=e.code, message=e.message)
    found = inspect(io.BytesIO(data), len(data), uri, limits)
    found.identity = identity
    return found


def source_error(uri: str, e: BaseException) -> ImageError:
    if isinstance(e, ImageError):
        return e
    if isinstance(e, FileNotFoundError):
        return ImageError(
            "image_not_found", f"{uri} does not exist; check the path and input.image_root"
        )
    if isinstance(e, IsADirectoryError):
        return ImageError("image_not_found", f"{uri} is a directory, not an image file")
    if isinstance(e, Refused):
        return ImageError("image_access_denied", f"refused: {str(e)[:400]}")
    if isinstance(e, PermissionError):
        return ImageError(
            "image_access_denied",
            f"{uri}: access denied ({str(e)[:160]}); check the credentials "
            "(input.storage_options, input.http.headers) or the object's permissions",
        )
    if isinstance(e, ImportError):
        return ImageError("image_not_found", f"{uri}: {e}")
    return ImageError(
        "image_not_found",
        f"{uri} could not be read after retries: {type(e).__name__}: {str(e)[:200]}",
    )


# ------------------------------------------------------------------ many sources


@dataclass
class IdentityStats:
    """How a batch of rows got their identities (summed over triage, printed once)."""

    listed: int = 0  # rows found in a listing
    listing_pages: int = 0  # listing requests
    prefixes: int = 0  # directories listed
    head: int = 0  # rows looked up one by one (HEAD or stat)
    failed: int = 0  # rows whose source could not be found
    decisions: dict = field(default_factory=dict)  # why, per kind of store

    def add(self, other: IdentityStats) -> None:
        for k in ("listed", "listing_pages", "prefixes", "head", "failed"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.decisions.update(other.decisions)

    def as_dict(self) -> dict:
        return {
            k: getattr(self, k)
            for k in ("listed", "listing_pages", "prefixes", "head", "failed", "decisions")
        }


def _directory(uris: pa.Array) -> pa.Array:
    return pc.replace_substring_regex(uris, r"/[^/]*$", "")


def _common_prefix(names: list[str]) -> str:
    return posixpath.commonprefix(names) if names else ""


def _list_s3(
    fs, dir_path: str, wanted: set[str], max_items: int
) -> tuple[dict[str, str], int, bool]:
    """Identities of ``wanted`` paths under ``dir_path`` (one directory level) from a
    listing narrowed to their common name prefix, stopping after ``max_items`` keys:
    (found, pages, complete)."""
    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(dir_path)
    names = [p[len(dir_path) + 1 :] for p in wanted]
    prefix = (key.rstrip("/") + "/" if key else "") + _common_prefix(names)

    async def go():
        found, seen = {}, 0
        async for obj in fs._iterdir(bucket, max_items=max_items, delimiter="/", prefix=prefix):
            if obj.get("type") != "file":
                continue
            seen += 1
            if obj["name"] in wanted:
                found[obj["name"]] = identity_of(obj)
        return found, seen

    found, seen = storage.retry(sync, fs.loop, go)
    return found, max(1, -(-seen // 1000)), seen < max_items


def identities(
    uris: pa.Array, input_cfg, threads: int = 32
) -> tuple[np.ndarray, list, IdentityStats]:
    """Identities of the (non-null, non-inline) source URIs: from listings where cheaper
    (object stores), else one HEAD/stat each. Returns (identity object array, per-row
    ImageError or None, stats)."""
    n = len(uris)
    ident = np.full(n, None, dtype=object)
    errors: list = [None] * n
    stats = IdentityStats()
    if n == 0:
        return ident, errors, stats
    mode = input_cfg.identity
    todo = np.ones(n, bool)
    dirs = _directory(uris).dictionary_encode()
    groups = dirs.indices.to_numpy(zero_copy_only=False)
    # rows grouped by directory in one sort (a directory per SKU: as many groups as rows)
    order = np.argsort(groups, kind="stable")
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    by_group = {int(groups[rows[0]]): rows for rows in np.split(order, bounds)}
    resolve = storage.Resolver(input_cfg.storage_options)
    values = uris.to_pylist()
    for g, d in enumerate(dirs.dictionary.to_pylist()):
        rows = by_group.get(g)
        if rows is None:
            continue
        if is_http(d) or mode == "head":
            stats.decisions["http" if is_http(d) else "head"] = (
                "HEAD a row" if is_http(d) else "input.identity: head"
            )
            continue
        fs, dir_path = resolve(d)
        if storage.is_local_fs(fs) and mode != "listing":
            stats.decisions["local"] = "a stat a row (local files)"
            continue
        budget = max(1, int(len(rows) * input_cfg.listing_budget)) if mode == "auto" else 10**9
        if not _is_s3(fs):
            if mode == "listing" or len(rows) >= 1000:  # no bounded listing here: all or nothing
                entries = storage.retry(fs.ls, dir_path, detail=True)
                found = {e["name"]: identity_of(e) for e in entries if e.get("type") == "file"}
                pages, complete = max(1, -(-len(entries) // 1000)), True
            else:
                stats.decisions[type(fs).__name__] = (
                    "HEAD a row (fewer than 1,000 rows in a directory)"
                )
                continue
        else:
            found, pages, complete = _list_s3(
                fs, dir_path, {resolve(values[i])[1] for i in rows}, budget * 1000
            )
        stats.prefixes += 1
        stats.listing_pages += pages
        for i in rows:
            path = resolve(values[i])[1]
            if path in found:
                ident[i], todo[i] = found[path], False
                stats.listed += 1
            elif complete:  # a complete listing without it: the object does not exist
                errors[i] = source_error(values[i], FileNotFoundError(values[i]))
                todo[i] = False
                stats.failed += 1
        stats.decisions["listing"] = (
            f"listed when cheaper than a HEAD a row (at most {input_cfg.listing_budget:g} "
            "listing pages per row looked up)"
        )
    rest = np.flatnonzero(todo)

    def one(i):
        try:
            return i, head(values[i], input_cfg), None
        except ImageError as e:
            return i, None, e

    local = all(storage.is_local(values[i]) for i in rest)
    for i, value, err in storage.map_io(one, list(rest), threads, local):
        ident[i], errors[i] = value, err
        stats.head += 1
        stats.failed += err is not None
    return ident, errors, stats
