"""The written images under ``images/`` (published) or ``held/`` (held by the quality
gate for a reviewer): written whole (``OutputFolder.put``), listed as hashed names in one
streaming listing, or looked up one request each."""

from __future__ import annotations

import os
import posixpath

import numpy as np
import pyarrow as pa

from ..common import storage
from .done import hash64
from .folder import OutputFolder
from .imageio import EXTENSIONS

IMAGES = "images"
HELD = "held"  # outputs the quality gate held for a reviewer: never under images/


def image_name(row_id: str, fmt: str, variant: int | None = None) -> str:
    suffix = f"-{variant}" if variant is not None else ""
    return f"{row_id}{suffix}.{EXTENSIONS[fmt]}"


class ImageFiles:
    """``images/`` (or ``held/``) of one output folder."""

    def __init__(self, folder: OutputFolder, directory: str = IMAGES):
        self.folder = folder
        self.directory = directory

    def write(self, name: str, data: bytes) -> str:
        """``{directory}/{name}``, appearing only complete; its URI."""
        return self.folder.put(storage.join(self.directory, name), data)

    def uri_of(self, name: str) -> str:
        return self.folder.uri_of(self.directory, name)

    def read(self, name: str) -> bytes:
        return self.folder.read_bytes(storage.join(self.directory, name))

    def any(self) -> bool:
        found: list = []
        self.each_batch(found.append, batch=1, stop_after=1)
        return bool(found)

    def listed_name_hashes(self) -> np.ndarray:
        """``hash64`` of every name under images/, sorted: one listing, hashed in batches as
        it streams (8 bytes a name; never a Python set or list of every name)."""
        chunks: list[np.ndarray] = []
        self.each_batch(lambda names: chunks.append(hash64(pa.array(names, pa.string()))))
        out = np.concatenate(chunks) if chunks else np.zeros(0, np.uint64)
        chunks.clear()
        out.sort()
        return out

    def each_batch(self, take, batch: int = 10_000, stop_after: int | None = None) -> None:
        """Hand the names under images/ to ``take`` in batches (object stores: page by page)."""
        out: list[str] = []
        seen = 0

        def add(name: str) -> bool:
            nonlocal out, seen
            out.append(name)
            seen += 1
            if len(out) >= batch:
                take(out)
                out = []
            return stop_after is not None and seen >= stop_after

        self._walk(add, stop_after)
        if out:
            take(out)

    def _walk(self, add, stop_after: int | None) -> None:
        """``add(name)`` for every name until it returns True."""
        fs, path = self.folder.fs, self.folder.path(self.directory)
        if self.folder.local:
            try:
                with os.scandir(path) as it:  # the path the storage entry point resolved
                    for e in it:
                        if e.is_file() and add(e.name):
                            break
            except FileNotFoundError:
                pass
        elif hasattr(fs, "_iterdir"):  # s3fs: stream the pages
            from fsspec.asyn import sync

            bucket, key, _ = fs.split_path(path)

            async def go():
                prefix = key.rstrip("/") + "/"
                async for obj in fs._iterdir(
                    bucket, delimiter="", prefix=prefix, max_items=stop_after
                ):
                    if obj.get("type") == "file" and add(obj["name"].rsplit("/", 1)[-1]):
                        return

            storage.retry(sync, fs.loop, go)
        else:
            for p in self.folder.find(self.directory):
                if add(posixpath.basename(p)):
                    break

    def exist(self, names: list[str | None], threads: int = 32) -> list[bool]:
        """Whether ``{directory}/{name}`` exists, one request each (on a thread pool for
        object stores)."""
        self.folder.fs.invalidate_cache()

        def one(name):
            return bool(name) and self.folder.exists(storage.join(self.directory, name))

        return storage.map_io(one, names, threads, self.folder.local)

    def remove(self, names: list[str]) -> None:
        for name in names:
            self.folder.remove(storage.join(self.directory, name))
