"""Where a FLUX Fill checkpoint comes from and what it declares, read without its
weights where possible: the alignment grid (for the planner), a local directory for
``model.path`` (a directory, an object-storage URI synced once per node, or a Hugging
Face id in the offline cache), the fill it was trained on; and the busy clock a model
actor reports."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

from .testmodel import PROFILE_FILE

# FLUX.1's values; a checkpoint's own come from its configs (``FluxFillBackend.__init__``)
VAE_SCALE = 8  # pixels per latent cell: 2 ** (len(vae.block_out_channels) - 1)
GRID = 16  # VAE scale x 2: latents are packed 2 x 2 into the transformer's tokens


def model_grid(path: str | None, storage_options: dict | None = None) -> int:
    """The alignment grid of a diffusers checkpoint, from ``vae/config.json`` alone (no
    weights): 2 x the VAE's scale factor. FLUX.1's 16 when the config cannot be read."""
    from ..common import storage

    if not path:
        return GRID
    try:
        local = path[len("file://") :] if path.startswith("file://") else path
        if not storage.has_scheme(path) and not os.path.isdir(local):
            from huggingface_hub import snapshot_download

            local = snapshot_download(
                local, local_files_only=True, allow_patterns=["vae/config.json"]
            )
        uri = storage.join(local if not storage.has_scheme(path) else path, "vae", "config.json")
        fs, p = storage.filesystem(uri, storage_options)
        with fs.open(p, "r") as f:
            blocks = json.load(f)["block_out_channels"]
        return 2 * 2 ** (len(blocks) - 1)
    except Exception:  # noqa: BLE001 - unreadable here (the actor will check its own)
        return GRID


# ---------------------------------------------------------------- model location


def resolve_model_path(
    path: str, storage_options: dict | None = None, cache_dir: str | None = None
) -> str:
    """A local directory for ``model.path``: a directory as is; an object-storage URI
    synced once per node into the cache (a lock, then a completion marker); otherwise a
    Hugging Face id resolved from the local cache only (never a download)."""
    from ..common import storage

    if storage.has_scheme(path) and not path.startswith("file://"):
        return _sync_uri(path, storage_options or {}, cache_dir)
    local = path[len("file://") :] if path.startswith("file://") else path
    if os.path.isdir(local):
        return local
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(local, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means: not available offline
        raise FileNotFoundError(
            f"model.path {path!r} is neither a local directory, an object-storage URI, nor a Hugging Face id "
            f"in the local cache (no downloads at run time): {type(e).__name__}: {e}"
        ) from None


def _sync_uri(uri: str, storage_options: dict, cache_dir: str | None) -> str:
    import fcntl

    from ..common import storage

    root = (
        cache_dir
        or os.environ.get("OUTPAINT_MODEL_CACHE")
        or os.path.expanduser("~/.cache/outpaint/models")
    )
    local = os.path.join(root, hashlib.sha256(uri.encode()).hexdigest()[:16])
    done = os.path.join(local, ".outpaint-complete")
    if os.path.exists(done):
        return local
    os.makedirs(root, exist_ok=True)
    with open(local + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one copy per node, however many actors start
        if not os.path.exists(done):
            fs, path = storage.filesystem(uri, storage_options)
            tmp = local + ".partial"
            fs.get(path.rstrip("/") + "/", tmp, recursive=True)
            if os.path.exists(local):
                import shutil

                shutil.rmtree(local)
            os.replace(tmp, local)
            with open(done, "w") as f:
                f.write(uri)
    return local


def profile_fill(model_dir: str) -> str:
    """The fill a checkpoint was trained on: ``outpaint_profile.json`` beside the weights,
    else FLUX.1-Fill-dev's convention (masked pixels zeroed = grey)."""
    p = os.path.join(model_dir, PROFILE_FILE)
    if os.path.exists(p):
        with open(p) as f:
            return json.load(f).get("fill", "grey")
    return "grey"


class BusyClock:
    """How busy the model was: denoising-loop seconds over the seconds since the first
    call began. Near 1 means the GPU never waited for input (the ``GPUs busy`` figure a
    run reports per actor); well below means the stages around it starve it."""

    def __init__(self):
        self._lock = threading.Lock()
        self.first: float | None = None
        self.loop_s = 0.0

    def start(self) -> None:
        with self._lock:
            if self.first is None:
                self.first = time.time()

    def add(self, loop_s: float) -> None:
        with self._lock:
            self.loop_s += loop_s

    def snapshot(self) -> tuple[float, float]:
        """(loop seconds, seconds since the first call), cumulative."""
        with self._lock:
            return self.loop_s, (time.time() - self.first) if self.first is not None else 0.0
