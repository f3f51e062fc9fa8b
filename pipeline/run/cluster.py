"""Where a run executes: the Ray session (local or a cluster's), quiet unless asked,
the versions it runs with, and the model actors' resources."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import os
from dataclasses import dataclass

from ..backends import BackendSpec
from ..config import ConfigError, ModelConfig, RuntimeConfig

# the model actor's own environment: quiet model libraries; it also makes the actor's
# remote args differ from the CPU stages', so Ray never fuses decoding into it
MODEL_ACTOR_ENV = {
    "OUTPAINT_MODEL_ACTOR": "1",
    "DIFFUSERS_VERBOSITY": "error",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "PYTHONWARNINGS": "ignore::FutureWarning",
}
VERSIONED = (
    "outpaint",
    "ray",
    "torch",
    "diffusers",
    "transformers",
    "pyarrow",
    "numpy",
    "pillow",
    "fsspec",
    "s3fs",
    "opencv-python-headless",
    "pydantic",
)
SUPPORTED_RAY = ((2, 40), (2, 64))  # >= first, < second: as pyproject's ray pin


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def quiet_logs(verbose: bool) -> None:
    """Ray's and Ray Data's start-up, executor and progress chatter only with --verbose:
    our own progress line says what a user needs."""
    import ray.data  # noqa: F401 - it configures its loggers on import: set ours after

    level = logging.INFO if verbose else logging.ERROR
    names = ("ray", "ray.data", "ray._private", "ray.data._internal.execution.streaming_executor")
    for name in names:
        logging.getLogger(name).setLevel(level)


def ensure_ray(runtime: RuntimeConfig):
    """Ray, started (local) or joined (``runtime.ray_address``, or the cluster a Ray job runs on)."""
    import ray

    quiet_logs(runtime.verbose)
    if not ray.is_initialized():
        # workers' output reaches the terminal only with --verbose; row errors are in the metadata
        level = logging.INFO if runtime.verbose else logging.ERROR
        common = {"logging_level": level, "log_to_driver": runtime.verbose}
        # inside a Ray job (outpaint submit) RAY_ADDRESS names the cluster it runs on
        address = runtime.ray_address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, **common)
        else:
            local = {
                "num_cpus": runtime.num_cpus,
                "object_store_memory": runtime.object_store_memory,
            }
            ray.init(address="local", include_dashboard=False, **local, **common)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = runtime.ray_progress_bars
    ctx.print_on_execution_start = runtime.ray_progress_bars
    return ray


def check_versions(out) -> dict | None:
    """On a cluster (``outpaint submit``): the client's versions against this side's.
    Ray outside the supported range fails at start; a different Ray than the client's is
    one line (the job runs entirely on the cluster's Ray, with the client's outpaint)."""
    client = os.environ.get("OUTPAINT_CLIENT_VERSIONS")
    if not client:
        return None
    want = json.loads(client)
    have = package_versions()
    ray_v = tuple(int(p) for p in (have["ray"] or "0.0").split(".")[:2])
    if not SUPPORTED_RAY[0] <= ray_v < SUPPORTED_RAY[1]:
        low, high = (".".join(map(str, v)) for v in SUPPORTED_RAY)
        raise ConfigError(
            f"the cluster runs Ray {have['ray']}; outpaint {have['outpaint']} needs Ray >= {low}, < {high}"
        )
    skew = {
        k: {"client": want.get(k), "cluster": have.get(k)}
        for k in ("ray", "outpaint")
        if want.get(k) != have.get(k)
    }
    if skew:
        parts = (f"{k} client {v['client']} / cluster {v['cluster']}" for k, v in skew.items())
        print("[outpaint] version skew: " + ", ".join(parts), file=out, flush=True)
    return {"client": want, "skew": skew}


@dataclass(frozen=True)
class Resources:
    """What one model actor (a batch run's) or replica (a server's) reserves."""

    num_cpus: float
    num_gpus: float

    def options(self) -> dict:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}


def model_resources(
    ray,
    model: ModelConfig,
    runtime: RuntimeConfig,
    spec: BackendSpec,
    *,
    cpus: float | None = None,
    gpus: float | None = None,
) -> Resources:
    """The one place a model actor's resources are decided, for ``outpaint run``,
    ``outpaint submit`` (the same run on a cluster) and ``outpaint serve`` alike: ``cpus``/
    ``gpus`` as given (the server's ``serve.*_per_replica``), else the config's
    ``runtime.num_*_per_actor``, else what the backend declares (``BackendSpec.gpu``,
    ``actor_cpus``)."""
    if cpus is None:
        cpus = spec.actor_cpus if spec.actor_cpus is not None else runtime.num_cpus_per_actor
    if gpus is None:
        gpus = _gpus(ray, model, runtime, spec)
    return Resources(cpus, gpus)


def _gpus(ray, model: ModelConfig, runtime: RuntimeConfig, spec: BackendSpec) -> float:
    """``runtime.num_gpus_per_actor``, or by the backend: a GPU per model actor wherever
    GPUs are or may come (a cluster's autoscaler adds GPU nodes only for actors that ask
    for one); none for CPU backends, ``model.device: cpu``, or a local Ray without GPUs."""
    if runtime.num_gpus_per_actor is not None:
        return runtime.num_gpus_per_actor
    if not spec.gpu or model.device == "cpu":
        return 0.0
    on_cluster = bool(runtime.ray_address or os.environ.get("RAY_ADDRESS"))
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    return 1.0 if model.device == "cuda" or on_cluster or has_gpus else 0.0


def actor_pool(
    ray, model: ModelConfig, runtime: RuntimeConfig, spec: BackendSpec, rows_to_generate: int
):
    """The model actors: an autoscaling range, never more than the work can keep busy;
    ``actor_concurrency`` calls run at once in each (one in the GPU loop, the next
    preparing), with more batches' inputs already fetched (``actor_tasks_in_flight``)."""
    if spec.one_conversation:  # one process owns the API conversation: the account's task limit
        calls = (
            model.api.max_active + 4
        )  # is held in it; a few more calls wait on a slot, inputs ready
        return ray.data.ActorPoolStrategy(
            size=1,
            max_concurrent_calls_per_actor=calls,
            enable_true_multi_threading=True,
            max_tasks_in_flight_per_actor=2 * calls,
        )
    most = max(1, min(runtime.num_actors, math.ceil(rows_to_generate / runtime.batch_size)))
    # CUDA graph trees are recorded per thread: one caller thread, or they are recorded twice
    calls = 1 if model.optimize.cuda_graphs else runtime.actor_concurrency
    return ray.data.ActorPoolStrategy(
        min_size=min(runtime.min_actors or most, most),
        max_size=most,
        max_concurrent_calls_per_actor=calls,
        enable_true_multi_threading=calls > 1,
        max_tasks_in_flight_per_actor=runtime.actor_tasks_in_flight or 2 * calls,
    )
