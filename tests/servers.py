"""Loopback servers for tests and benchmarks (127.0.0.1 only; they stop with their owner):

- ``CountingProxy``: an HTTP proxy in front of the moto S3 server that counts the
  requests it relays, by kind (GET, list, HEAD, PUT, ...), so tests and benchmarks
  can assert how many storage requests a run cost.
- ``ImageServer``: images served from a folder the way a CDN does: ``ETag`` and
  ``Last-Modified`` on GET and HEAD, ``If-None-Match`` / ``If-Modified-Since`` answered
  304, counting requests; and faults on demand: 429 with ``Retry-After``, 401, 403, 404.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .conftest import relay


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 (a free port), stopped by ``close``."""

    def _start(self, handler) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class CountingProxy(LoopbackServer):
    def __init__(self, target: str):
        host, port = target.replace("http://", "").split(":")
        self.counts: Counter = Counter()
        self.paths: list[tuple[str, str]] = []
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                query = urlsplit(self.path).query
                kind = (
                    "LIST"
                    if self.command == "GET" and ("list-type" in query or "prefix=" in query)
                    else self.command
                )
                with lock:
                    proxy.counts[kind] += 1
                    proxy.paths.append((kind, self.path))
                relay(self, host, int(port), body, timeout=60)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        self._start(Handler)

    def reset(self) -> Counter:
        """The counts so far, and start again from zero."""
        out = Counter(self.counts)
        self.counts.clear()
        self.paths.clear()
        return out


class ImageServer(LoopbackServer):
    def __init__(self, root, *, etag: bool = True, last_modified: bool = True):
        self.root = Path(root)
        self.counts: Counter = Counter()
        self.paths: list[tuple[str, str]] = []
        self.throttle: dict[
            str, tuple[int, str]
        ] = {}  # path -> (429 answers left, Retry-After value)
        self.status: dict[str, int] = {}  # path -> fixed status (401, 403, 404...)
        self.redirects: dict[str, str] = {}  # path -> where a 302 sends it
        self.active = 0
        self.max_active = 0
        lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status: int, headers: dict, body: bytes = b"") -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header(
                    "Content-Length", str(len(body))
                )  # HEAD: the length a GET would have
                self.end_headers()
                if self.command != "HEAD" and status != 304:
                    self.wfile.write(body)

            def _serve(self):
                path = unquote(urlsplit(self.path).path).lstrip("/")
                with lock:
                    server.counts[self.command] += 1
                    server.paths.append((self.command, path))
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                try:
                    if path in server.status:
                        return self._send(server.status[path], {})
                    if path in server.redirects:
                        return self._send(302, {"Location": server.redirects[path]})
                    left, after = server.throttle.get(path, (0, ""))
                    if left > 0:
                        server.throttle[path] = (left - 1, after)
                        return self._send(
                            429, {"Retry-After": after} if after else {}, b"slow down"
                        )
                    file = server.root / path
                    if not file.is_file():
                        return self._send(404, {}, b"not found")
                    data = file.read_bytes()
                    tag = '"' + hashlib.md5(data).hexdigest() + '"'
                    modified = email.utils.formatdate(os.stat(file).st_mtime, usegmt=True)
                    headers = {"Content-Type": "application/octet-stream"}
                    if etag:
                        headers["ETag"] = tag
                    if last_modified:
                        headers["Last-Modified"] = modified
                    if (etag and self.headers.get("If-None-Match") == tag) or (
                        not etag
                        and last_modified
                        and self.headers.get("If-Modified-Since") == modified
                    ):
                        return self._send(304, headers)  # no body
                    return self._send(200, headers, data)
                finally:
                    with lock:
                        server.active -= 1

            do_GET = do_HEAD = _serve

        self._start(Handler)

    def url(self, name: str) -> str:
        return f"{self.endpoint}/{name}"

    def reset(self) -> Counter:
        out = Counter(self.counts)
        self.counts.clear()
        self.paths.clear()
        return out


def counted_options(storage_options: dict, proxy: CountingProxy) -> dict:
    """s3fs options that go through ``proxy`` (a fresh filesystem instance: nothing cached)."""
    return {
        **storage_options,
        "skip_instance_cache": True,
        "client_kwargs": {**storage_options["client_kwargs"], "endpoint_url": proxy.endpoint},
    }
