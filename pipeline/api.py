"""The Python API: everything the command line does, for notebooks and for Ray Data
pipelines of your own (docs/python-api.md). The ``outpaint`` command is a thin layer
over these functions; what is here is the stable surface, the rest of the package is
not. Each function is a documented call into ``config``, ``io``, ``plan``, ``run`` or
``serve``; the work is done there.

    from pipeline import api as outpaint

    cfg = outpaint.load_config("configs/example.yaml")
    table = outpaint.plan(None, cfg)            # a pyarrow.Table: one planned row per manifest row
    result = outpaint.outpaint(None, cfg)       # run the job; None = the config's own manifest
    result = outpaint.outpaint(ds, cfg)         # or a Ray Dataset / table / DataFrame of manifest rows
    stages = outpaint.stages(cfg)               # the stages, for ds.map_batches on your own dataset
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

import pyarrow as pa

from .common import storage
from .config import Config, ConfigError, load_config, serve_config
from .io import manifest as manifest_io
from .io.staging import ManifestLike, as_table

if TYPE_CHECKING:  # the heavy halves load when first called, not when the API is imported
    from .run.result import RunResult
    from .run.stages import Stages


def __getattr__(name: str):
    # the result and stage types live in run/, which imports Ray Data's side of the house
    if name in ("RunResult", "Stages"):
        from .run import result, stages

        return {"RunResult": result.RunResult, "Stages": stages.Stages}[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------ validate and plan


@dataclass
class Validation:
    """What ``validate`` found: the manifest's files, rows and columns."""

    files: list[str]
    rows: int
    columns: list[str]


def validate(config) -> Validation:
    """The config and the manifest's schema, nothing else (no image is read)."""
    cfg = load_config(config)
    index = manifest_io.scan(cfg)
    fs, paths = manifest_io.files(cfg)
    return Validation([storage.unstrip(fs, p) for p in paths], index.rows, list(index.schema.names))


def plan(manifest: ManifestLike, config) -> pa.Table:
    """The dry run: one planned row per manifest row (geometry, status, code, message),
    as a pyarrow Table in manifest order. ``manifest``: ``None`` (the config's), a URI, a
    pyarrow Table, a pandas DataFrame, row dicts or a Ray Dataset. Reads image headers
    where sizes are not in the manifest; generates nothing."""
    from .plan.dryrun import plan as dry_run

    return dry_run(manifest, load_config(config))


def plan_summary(table: pa.Table, config) -> dict:
    """Counts per status and code, output megapixels, rows mostly generated, and for
    flux-fill the generated shapes and estimated GPU time (what ``outpaint plan`` prints)."""
    from .plan.summary import summarise

    return summarise(table, load_config(config))


def format_plan_summary(summary: dict) -> str:
    from .plan.summary import format_summary

    return format_summary(summary)


def plan_sample(table: pa.Table, config, rows: int) -> dict:
    """Route ``rows`` of the plan's rows that are decided once loaded (backdrop fill,
    scene fill under ``model.route: cascade``, or the model), drawn with the run's seed and
    loaded as a run loads them; the shares with 95 % intervals and the model rows they
    project to (what ``outpaint plan --sample`` prints). Writes nothing."""
    from .run.estimate import sample_routes

    return sample_routes(table, load_config(config), rows)


def format_plan_sample(sample: dict) -> str:
    from .run.estimate import format_sample

    return format_sample(sample)


# ------------------------------------------------------------------ run


def outpaint(
    manifest: ManifestLike,
    config,
    *,
    progress: str = "auto",
    quiet: bool = False,
    out: TextIO | None = None,
    redo: bool = False,
) -> RunResult:
    """Run the job over ``manifest`` (``None``: the config's ``input.manifest``; or a URI,
    a pyarrow Table, a pandas DataFrame, row dicts, a Ray Dataset) and return what it did.
    Resumes like ``outpaint run``: rows already done with the same request are skipped.
    ``progress``: ``auto`` (a bar in a terminal or notebook, lines in logs), ``bar``,
    ``line`` or ``none``; ``out``: where progress goes (standard error); ``redo``: only
    the rows a reviewer rejected, regenerated with their next attempt's seed."""
    from .run.result import run_manifest

    cfg = load_config(config)
    return run_manifest(manifest, cfg, progress=progress, quiet=quiet, out=out, redo=redo)


def run(
    config,
    *,
    progress: str = "auto",
    quiet: bool = False,
    out: TextIO | None = None,
    redo: bool = False,
) -> RunResult:
    """``outpaint(None, config)``: the config's own manifest."""
    return outpaint(None, config, progress=progress, quiet=quiet, out=out, redo=redo)


def stages(config, run_id: str | None = None) -> Stages:
    """The stages of ``config``, for ``ds.map_batches`` on your own dataset (``run_id``
    tags the metadata rows; default: a new one). See ``Stages``."""
    from .run.stages import stages as build

    return build(load_config(config), run_id)


# ------------------------------------------------------------------ the other commands


def report(output_uri: str, config=None) -> tuple[str, dict]:
    """Rebuild ``report.html`` of an output; returns its URI and the summary."""
    from .io.outputs import OutputStore
    from .review import report as report_mod

    out_opts, src_opts = {}, None
    if config is not None:
        cfg = load_config(config)
        out_opts, src_opts = cfg.output.storage_options, cfg.input.storage_options
    try:
        return report_mod.write(OutputStore(output_uri, out_opts), src_opts)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None


def make_manifest(
    sources: Sequence[str],
    out: str,
    *,
    aspect_ratios: Sequence[str] = (),
    size: tuple[int, int] | None = None,
    mode: str | None = None,
    output_format: str | None = None,
    storage_options: dict | None = None,
    http: dict | None = None,
    analyze: bool = False,
) -> tuple[pa.Table, str]:
    """A manifest from folders, globs or bucket prefixes of images (``outpaint manifest``):
    one row per image and target; returns the table and the written file's URI.
    ``analyze``: decode each image once for the product-photo columns (``analyze_manifest``)."""
    from .io.backdrop import Tolerances
    from .io.catalogue import Target, build, write

    targets = [Target(aspect_ratio=r) for r in aspect_ratios]
    if size is not None:
        targets.append(Target(width=size[0], height=size[1]))
    table = build(
        list(sources),
        targets,
        mode=mode,
        output_format=output_format,
        storage_options=storage_options,
        http=http,
        analyze=Tolerances() if analyze else None,
    )
    return table, write(table, out, storage_options)


def analyze_manifest(
    config, out: str | None = None, threads: int = 16, on_ray: bool | None = None
) -> pa.Table:
    """The config's manifest with the product-photo columns (docs/product-photos.md):
    ``backdrop_kind``, ``backdrop_color``, ``backdrop_sides`` and the product's box
    ``subject_x0`` .. ``subject_y1``, from one decode per distinct source, judged by the
    config's ``model.backdrop`` tolerances; written to ``out`` (by its extension) if given.
    ``outpaint plan`` then routes and places those rows without decoding them.
    ``on_ray``: decode as Ray Data tasks over the cluster (default: when the config or the
    environment names one: ``runtime.ray_address``, ``RAY_ADDRESS``), else threads here."""
    from .run.analyze import analyze_manifest as analyze

    return analyze(load_config(config), out, threads, on_ray)


def score(
    source: str,
    out: str | None = None,
    *,
    config=None,
    storage_options: dict | None = None,
    threads: int = 8,
) -> pa.Table:
    """The quality score (``outpaint score``) of images made by anything: ``source`` is a
    table (Parquet/CSV/TSV/JSONL with ``id``, ``image``, ``visible_x0`` .. ``visible_y1``) or
    a run's output URI (its generated rows rescored in place). Returns the scores (``id``,
    ``quality_distance``, ``quality_pass``, ``quality_defect``, per-defect columns,
    ``score_error``), also written to ``out`` (Parquet) if given. ``config``: its
    ``quality.thresholds`` and output storage options."""
    from .review.rescore import score as rescore

    thresholds = None
    if config is not None:
        cfg = load_config(config)
        thresholds = cfg.quality.thresholds
        storage_options = storage_options or cfg.output.storage_options
    return rescore(
        source, out, thresholds=thresholds, storage_options=storage_options, threads=threads
    )


def review(
    output_uri: str,
    *,
    approve: Sequence[str] = (),
    reject: Sequence[str] = (),
    reviewer: str | None = None,
    config=None,
) -> list[dict]:
    """Cast verdicts from a script (``outpaint review OUTPUT --approve ID... --reject
    ID...``): approved rows are published (moved from ``held/`` to ``images/``), rejected
    ones unpublished until ``outpaint run CONFIG --redo`` regenerates them. Returns the
    verdicts as persisted under ``review/verdicts/``."""
    from .io.outputs import OutputStore
    from .review import verdicts

    options = load_config(config).output.storage_options if config is not None else {}
    store = OutputStore(output_uri, options)
    try:
        made = verdicts.cast(store, approve, verdicts.APPROVE, reviewer) if approve else []
        if reject:
            made += verdicts.cast(store, reject, verdicts.REJECT, reviewer)
    except verdicts.VerdictError as e:
        raise ConfigError(str(e)) from None
    return made


def review_server(
    output_uri: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8770,
    config=None,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the review page of an output (``outpaint review OUTPUT``) until interrupted:
    held rows first, then by quality distance; approve/reject with buttons or keys, each
    verdict persisted as it is cast. ``ready(url)`` once it listens."""
    from .io.outputs import OutputStore
    from .review.app import Review, serve

    cfg = load_config(config) if config is not None else None
    store = OutputStore(output_uri, cfg.output.storage_options if cfg else {})
    serve(Review(store, cfg.input if cfg else None), host, port, ready)


def submit(
    config,
    address: str,
    *,
    wait: bool = True,
    timeout_s: float = 24 * 3600,
    strict: bool = False,
    job_id: str | None = None,
    stop_on_exit: bool | None = None,
) -> tuple[str, str]:
    """Run the config as a Ray job on a cluster (``outpaint submit``): idempotent (a second
    submit of the same run attaches to it), logs streamed while ``wait``; returns
    (submission id, final status). ``stop_on_exit``: stop the job when this process is
    interrupted (default: when waiting)."""
    from .run.submit import submit as submit_job

    cfg = load_config(config)
    manifest_io.read_schema(cfg)  # a bad manifest fails here, not on the cluster
    return submit_job(
        cfg,
        address,
        wait=wait,
        timeout_s=timeout_s,
        strict=strict,
        job_id=job_id,
        stop_on_exit=stop_on_exit,
    )


def bench(
    config,
    *,
    size: tuple[int, int] | None = None,
    images: int = 8,
    modes: Sequence[str] = ("high", "fast"),
    ref_fraction: float = 0.75,
    random_weights: bool = False,
    batch_sizes: Sequence[int] = (),
) -> dict:
    """Time the configured backend on synthetic canvases (``outpaint bench``): s/image,
    images/hour, MFU, peak memory. ``size`` (W, H; default the config's), ``images`` per
    mode, ``ref_fraction`` of each side the reference covers, ``random_weights``: FLUX.1
    Fill's architecture at full size without weights, ``batch_sizes``: also time these."""
    from .run.bench import bench as bench_backend

    return bench_backend(
        load_config(config),
        size=size,
        images=images,
        modes=modes,
        ref_fraction=ref_fraction,
        random_weights=random_weights,
        batch_sizes=batch_sizes,
    )


def serve(config, *, ready: Callable[[str, str], None] | None = None, block: bool = True) -> None:
    """Run ``outpaint serve``: the hosted API's contract on Ray Serve, at
    ``serve.host:serve.port``, until interrupted (``block=False``: return once it is up).
    ``ready(url, backend)`` is called when it answers. Keys: docs/serving.md."""
    from .serve.main import serve as serve_forever

    serve_forever(serve_config(config), ready=ready, block=block)


def make_test_model(directory: str | os.PathLike, seed: int = 0, fill: str | None = None) -> str:
    """A tiny FLUX Fill pipeline with random weights (real diffusers classes), for trials."""
    from .backends.testmodel import make_test_model as make

    return make(os.fspath(directory), seed=seed, fill=fill)


__all__ = [
    "Config",
    "ConfigError",
    "RunResult",
    "Stages",
    "Validation",
    "analyze_manifest",
    "as_table",
    "bench",
    "format_plan_sample",
    "format_plan_summary",
    "load_config",
    "make_manifest",
    "make_test_model",
    "outpaint",
    "plan",
    "plan_sample",
    "plan_summary",
    "report",
    "review",
    "review_server",
    "run",
    "score",
    "serve",
    "serve_config",
    "stages",
    "submit",
    "validate",
]
