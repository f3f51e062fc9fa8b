"""Where and how a run executes (``runtime``: Ray, actors, blocks, progress) and what
``outpaint plan`` estimates (``plan``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from .base import Section as _Section


class RuntimeConfig(_Section):
    """Where and how the run executes: Ray, actors, blocks, progress."""

    @model_validator(mode="after")
    def _actors(self):
        if self.min_actors is not None and self.min_actors > self.num_actors:
            raise ValueError(
                "min_actors must not exceed num_actors (the autoscaling range is min..num)"
            )
        return self

    seed: int = Field(
        0,
        ge=0,
        lt=1 << 63,
        description="run seed: per-row seeds derive from (seed, id) unless the row has one",
    )
    ray_address: str | None = Field(
        None, description="existing cluster; default: start a local Ray"
    )
    num_cpus: int | None = Field(
        None, ge=1, description="local Ray only: CPUs to use (default all)"
    )
    num_actors: int = Field(
        1, ge=1, description="model actors (actor backends, e.g. flux-fill): the most"
    )
    min_actors: int | None = Field(
        None, ge=1, description="autoscaling range: min_actors .. num_actors"
    )
    object_store_memory: int | None = Field(
        None, ge=78_643_200, description="local Ray only: bytes"
    )
    actor_restarts: int = Field(
        -1, ge=-1, description="restarts of a dead model actor (-1: always)"
    )
    batch_size: int = Field(4, ge=1, description="rows per model call")
    num_gpus_per_actor: float | None = Field(
        None,
        ge=0,
        description="default: 1 for flux-fill (0 with model.device: cpu, or on a local Ray "
        "without GPUs), 0 for the CPU backends; the autoscaler scales GPU groups by it",
    )
    num_cpus_per_actor: float = Field(1.0, gt=0, description="CPUs reserved by each model actor")
    # Two calls in flight per model actor: while one runs the denoising loop the other
    # uploads and VAE-encodes the next batch (model.optimize.pipelining), and Ray
    # prefetches further batches' inputs (actor_tasks_in_flight).
    actor_concurrency: int = Field(2, ge=1, le=8, description="concurrent calls per model actor")
    actor_tasks_in_flight: int | None = Field(
        None, ge=1, le=64, description="default 2 x actor_concurrency"
    )
    block_rows: int = Field(
        16, ge=1, description="work rows per Ray block through the image stages"
    )
    plan_block_rows: int = Field(
        65_536,
        ge=1,
        description="manifest rows per triage chunk (plan + resume "
        "filter + bulk metadata, columnar); Parquet slices are whole row groups",
    )
    progress_interval_s: float = Field(
        5.0,
        gt=0,
        description="seconds between progress lines (logs; a "
        "terminal or notebook shows a progress bar)",
    )
    ray_progress_bars: bool = Field(False, description="Ray Data's own per-operator progress bars")
    verbose: bool = Field(
        False,
        description="Ray's and the model libraries' logs and warnings (outpaint run --verbose)",
    )


class PlanConfig(_Section):
    """What `outpaint plan` estimates and warns about."""

    # FLUX at 1024x1024 (4096 tokens) costs ~74 TFLOP a step: ~0.093 s on one H100 in bf16
    seconds_per_step_at_1mp: float = Field(
        0.093,
        gt=0,
        description="GPU-time estimate: seconds per denoising "
        "step at 1024x1024 (outpaint bench prints your hardware's)",
    )
    warn_generated_share: float = Field(
        0.75,
        gt=0,
        le=1,
        description="plan warns about rows whose canvas "
        "is more than this share generated (the reference too small for it)",
    )
