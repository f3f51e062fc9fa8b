"""The output folder: one URI, its filesystem, and the one recipe every write follows,
so that nothing under the output ever appears half written (datatrove's ``DataFolder``
shape: the images, the metadata parts and the done state are built on top of it, and
nobody else touches its filesystem).

The recipe: on local disk, write under ``_tmp/`` and rename into place (same
filesystem: atomic); on object stores, one PUT or one multipart upload, which is
atomic at the key.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import uuid
from collections.abc import Callable, Iterator

from ..common import storage
from ..config import ConfigError

TMP = "_tmp"  # staging for atomic local writes; never under images/ or metadata/


class OutputFolder:
    """Storage for one output URI. Picklable (fsspec filesystems are), so workers receive
    it and write straight to storage."""

    def __init__(self, uri: str, storage_options: dict | None = None):
        self.uri = uri.rstrip("/")
        self.options = dict(storage_options or {})
        self.fs, self.root = storage.filesystem(self.uri, self.options)
        self.local = storage.is_local(self.uri) or type(self.fs).__name__ == "LocalFileSystem"

    def path(self, *parts: str) -> str:
        """A path under the folder, as its filesystem takes it."""
        return storage.join(self.root, *parts)

    def uri_of(self, *parts: str) -> str:
        """A path under the folder as a full URI (metadata, messages, links)."""
        return storage.join(self.uri, *parts)

    # ---------------------------------------------------------------- writing
    def put(self, name: str, data: bytes) -> str:
        """Write ``name`` whole so that it only ever appears complete; its URI."""
        final = self.path(name)
        if self.local:
            tmp = self.path(TMP, f"{posixpath.basename(name)}.{uuid.uuid4().hex}.part")
            self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
            self.fs.makedirs(self.path(TMP), exist_ok=True)
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, final)
        else:
            storage.retry(self.fs.pipe_file, final, data)
        return self.uri_of(name)

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator:
        """A binary file to stream ``name`` into; it appears complete when the block ends
        (a failure inside leaves nothing at ``name``)."""
        final = self.path(name)
        self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
        if not self.local:  # a multipart upload: committed on close
            with self.fs.open(final, "wb") as f:
                yield f
            return
        self.fs.makedirs(self.path(TMP), exist_ok=True)
        tmp = self.path(TMP, f"{posixpath.basename(name)}.{uuid.uuid4().hex}.part")
        try:
            with self.fs.open(tmp, "wb") as f:
                yield f
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(tmp)
            raise
        self.fs.mv(tmp, final)

    def write_json(self, name: str, obj) -> None:
        """A small JSON file (run.json, a task's counts): one PUT, or a local write."""
        if self.local:
            self.fs.makedirs(posixpath.dirname(self.path(name)), exist_ok=True)
        data = json.dumps(obj, indent=2, default=str).encode()
        storage.retry(self.fs.pipe_file, self.path(name), data)

    # ---------------------------------------------------------------- reading
    def read_bytes(self, name: str) -> bytes:
        return storage.retry(self.fs.cat_file, self.path(name))

    def reading(self, name: str):
        """``name`` opened to stream from (a file too big to read whole)."""
        return self.fs.open(self.path(name), "rb")

    def read_json(self, name: str):
        return json.loads(self.read_bytes(name))

    def take_jsons(self, prefix: str) -> list:
        """Every ``{prefix}*.json`` (one listing), read and then removed."""
        parent, stem = posixpath.split(self.path(prefix))
        try:
            self.fs.invalidate_cache()
            found = [
                p
                for p in self.fs.ls(parent, detail=False)
                if posixpath.basename(p).startswith(stem)
            ]
        except FileNotFoundError:
            return []
        out = [json.loads(storage.retry(self.fs.cat_file, p)) for p in sorted(found)]
        for p in found:
            self.fs.rm_file(p)
        return out

    def exists(self, name: str) -> bool:
        return bool(storage.retry(self.fs.exists, self.path(name)))

    def names(self, directory: str) -> list[str]:
        """The file names directly under ``directory`` (none when it is missing)."""
        try:
            self.fs.invalidate_cache()
            return [posixpath.basename(p) for p in self.fs.ls(self.path(directory), detail=False)]
        except (FileNotFoundError, OSError):
            return []

    def find(self, directory: str, keep: Callable[[str], bool] = lambda name: True) -> list[str]:
        """Paths of the files under ``directory`` (recursively) whose base name ``keep``
        accepts, sorted; none when it is missing."""
        try:
            self.fs.invalidate_cache()
            return sorted(
                p for p in self.fs.find(self.path(directory)) if keep(posixpath.basename(p))
            )
        except FileNotFoundError:
            return []

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(name))

    def remove_path(self, path: str) -> None:
        """A path this folder handed out (``find``)."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(path)

    # ---------------------------------------------------------------- checks
    def check_writable(self) -> None:
        """Fail fast, in one line, on unreachable storage or missing permissions."""
        probe = self.path(TMP, f".probe-{uuid.uuid4().hex}")
        try:
            self.fs.makedirs(self.path(TMP), exist_ok=True)
            self.fs.pipe_file(probe, b"ok")
            self.fs.rm_file(probe)
        except Exception as e:  # noqa: BLE001 - any storage error means "cannot run here"
            raise ConfigError(
                f"output.uri {self.uri} is not writable: {type(e).__name__}: {e}"
            ) from None
