"""The hosted FLUX Outpainting API's conversation (``../shared/bfl-api.md``), apart from
the backend that uses it: the key (from the environment only), the HTTP client, and the
journal of submitted tasks under the output (``_api/``) that keeps a rerun from paying
twice."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ..common import storage

SUBMIT_PATH = "/v1/flux-tools/outpainting-v1"
TERMINAL = ("Ready", "Error", "Request Moderated", "Content Moderated", "Task not found")
JOURNAL = "_api"  # under output.uri


class ApiError(Exception):
    """An API answer that is not a task outcome (bad key, unreachable)."""


def api_key(api_cfg) -> str:
    key = os.environ.get(api_cfg.key_env, "").strip()
    if not key:
        raise ApiError(
            f"model.api.key_env: the environment variable {api_cfg.key_env} (the API key) is not set"
        )
    return key


@dataclass
class Reply:
    status: int
    body: dict
    headers: dict


class ApiClient:
    """The API's HTTP conversation (urllib3; one pool, keep-alive)."""

    def __init__(self, api_cfg, key: str):
        import urllib3

        self.cfg = api_cfg
        self.endpoint = api_cfg.endpoint.rstrip("/")
        self.urllib3 = urllib3
        self._key = key
        self.pool = urllib3.PoolManager(
            num_pools=8,
            maxsize=api_cfg.max_active + 8,
            retries=False,
            block=False,
            timeout=urllib3.Timeout(total=api_cfg.request_timeout_s),
        )

    def call(self, method: str, url: str, body: dict | None = None) -> Reply:
        """One request; connection problems raise ``ConnectionError`` saying whether the
        request may have reached the server (``sent``)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"x-key": self._key, "accept": "application/json"}
        if data is not None:
            headers["content-type"] = "application/json"
        try:
            r = self.pool.request(
                method, url, body=data, headers=headers, preload_content=True, redirect=False
            )
        except self.urllib3.exceptions.NewConnectionError as e:
            raise ConnectionError(
                f"cannot connect to {url.split('?')[0]}: {type(e).__name__}"
            ) from None
        except self.urllib3.exceptions.ConnectTimeoutError:
            raise ConnectionError(f"connecting to {url.split('?')[0]} timed out") from None
        except (self.urllib3.exceptions.HTTPError, OSError) as e:
            err = ConnectionError(
                f"{url.split('?')[0]}: the connection was lost ({type(e).__name__})"
            )
            err.sent = True  # the request may have been received
            raise err from None
        try:
            parsed = json.loads(r.data) if r.data else {}
        except ValueError:
            parsed = {"detail": r.data[:200].decode("utf-8", "replace")}
        return Reply(
            r.status, parsed if isinstance(parsed, dict) else {"detail": parsed}, dict(r.headers)
        )

    def download(self, url: str) -> bytes:
        """A signed result URL: no key (it is another host)."""
        r = self.pool.request("GET", url, preload_content=True, redirect=True)
        if r.status != 200:
            raise FileNotFoundError(f"result download answered {r.status}")
        return r.data

    def credits(self) -> float:
        r = self.call("GET", f"{self.endpoint}/v1/credits")
        if r.status in (401, 403):
            raise ApiError(
                f"the API refused the key in {self.cfg.key_env} ({r.status}: "
                f"{_detail(r.body)}); check model.api.key_env and model.api.endpoint"
            )
        if r.status != 200 or "credits" not in r.body:
            raise ApiError(f"GET /v1/credits answered {r.status}: {_detail(r.body)}")
        return float(r.body["credits"])


def _detail(body: dict) -> str:
    d = body.get("detail")
    if isinstance(d, list):  # FastAPI validation errors
        return "; ".join(
            f"{'.'.join(str(x) for x in e.get('loc', [])[1:]) or 'body'}: {e.get('msg')}" for e in d
        )
    return str(d if d is not None else body)[:300]


class Journal:
    """Submitted tasks and downloaded results, in the output store, keyed by the row's
    request (hash + variant): what a rerun needs to never pay twice."""

    def __init__(self, uri: str, storage_options: dict | None = None):
        self.storage = storage
        self.fs, self.root = storage.filesystem(uri.rstrip("/") + "/" + JOURNAL, storage_options)
        self.local = storage.is_local(uri)
        self.tasks, self.results = self._listed("tasks"), self._listed("results")

    def _listed(self, kind: str) -> dict[str, str]:
        try:
            self.fs.invalidate_cache()
            return {
                p.rsplit("/", 1)[-1].split(".")[0]: p
                for p in self.fs.ls(f"{self.root}/{kind}", detail=False)
            }
        except (FileNotFoundError, OSError):
            return {}

    def _write(self, kind: str, name: str, data: bytes) -> str:
        path = f"{self.root}/{kind}/{name}"
        if self.local:
            self.fs.makedirs(f"{self.root}/{kind}", exist_ok=True)
            tmp = path + ".part"
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, path)
        else:
            self.storage.retry(self.fs.pipe_file, path, data)
        return path

    def task(self, key: str) -> dict | None:
        path = self.tasks.get(key)
        if path is None:
            return None
        try:
            return json.loads(self.storage.retry(self.fs.cat_file, path))
        except (FileNotFoundError, ValueError):
            return None

    def write_task(self, key: str, entry: dict) -> None:
        self.tasks[key] = self._write("tasks", f"{key}.json", json.dumps(entry).encode())

    def result(self, key: str) -> bytes | None:
        path = self.results.get(key)
        if path is None:
            return None
        try:
            return self.storage.retry(self.fs.cat_file, path)
        except FileNotFoundError:
            return None

    def write_result(self, key: str, data: bytes) -> None:
        self.results[key] = self._write("results", f"{key}.bin", data)

    def forget(self, requests: list[str]) -> int:
        """Remove the entries of these requests (and their variants): their rows are written."""
        wanted = set(requests)
        paths = [
            p
            for entries in (self.tasks, self.results)
            for key, p in entries.items()
            if key.split("-")[0] in wanted
        ]
        if paths:
            self.storage.retry(self.fs.rm, paths)
        return len(paths)
