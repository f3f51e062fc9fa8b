"""The Python API: everything the command line does, for notebooks and for Ray Data
pipelines of your own (docs/python-api.md). The ``outpaint`` command is a thin layer
over these functions; what is here is the stable surface, the rest of the package is
not.

    from pipeline import api as outpaint

    cfg = outpaint.load_config("configs/example.yaml")
    table = outpaint.plan(None, cfg)            # a pyarrow.Table: one planned row per manifest row
    result = outpaint.outpaint(None, cfg)       # run the job; None = the config's own manifest
    result = outpaint.outpaint(ds, cfg)         # or a Ray Dataset / table / DataFrame of manifest rows
    stages = outpaint.stages(cfg)               # the stages, for ds.map_batches on your own dataset
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from . import storage
from .config import Config, ConfigError, apply_overrides, dump, from_dict, load
from .io import manifest as manifest_io

ManifestLike = Any  # None (the config's), a URI, a pyarrow Table, a pandas DataFrame, rows (dicts), a Ray Dataset
IN_MEMORY = "<in-memory manifest>"  # input.manifest of a config whose rows come from the caller


# ------------------------------------------------------------------ config


def load_config(
    source: str | os.PathLike | Mapping | Config,
    overrides: Sequence[str] = (),
    storage_options: dict | None = None,
    base: dict | None = None,
) -> Config:
    """A validated config from a YAML file (any fsspec URI), a dict or a ``Config``, with
    ``key.path=value`` overrides (as ``--set``). A dict may leave ``input`` out when the
    rows are handed to ``plan``/``outpaint`` directly. ``base``: sections a file may leave
    out. Raises ``ConfigError`` naming the key."""
    if isinstance(source, Config):
        if not overrides:
            return source
        source = dump(source)
    if isinstance(source, (str, os.PathLike)):
        return load(os.fspath(source), list(overrides), storage_options, base)
    data = copy.deepcopy(dict(source))
    data.setdefault("input", {}).setdefault("manifest", IN_MEMORY)
    return from_dict(apply_overrides(data, list(overrides)), "(dict)")


def _with_manifest(cfg: Config, uri: str) -> Config:
    data = dump(cfg)
    data["input"]["manifest"] = uri
    return from_dict(data)


# ------------------------------------------------------------------ validate


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


# ------------------------------------------------------------------ manifests from data


def _is_dataset(obj) -> bool:
    return type(obj).__name__ in ("Dataset", "MaterializedDataset") and hasattr(
        obj, "write_parquet"
    )


def as_table(rows) -> pa.Table:
    """Manifest rows as a pyarrow Table: a Table, a pandas DataFrame, a dict of columns or
    a list of row dicts."""
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, pa.RecordBatch):
        return pa.Table.from_batches([rows])
    if type(rows).__name__ == "DataFrame":
        return pa.Table.from_pandas(rows, preserve_index=False)
    if isinstance(rows, Mapping):
        return pa.table(dict(rows))
    if isinstance(rows, Iterable):
        rows = list(rows)
        names = list(
            dict.fromkeys(k for row in rows for k in row)
        )  # every row's keys, not the first's
        return pa.table({k: [row.get(k) for row in rows] for k in names})
    raise TypeError(
        f"a manifest must be a URI, a pyarrow Table, a pandas DataFrame, rows or a Ray Dataset, "
        f"not {type(rows).__name__}"
    )


def stage_manifest(rows: ManifestLike, cfg: Config) -> tuple[Config, str | None]:
    """The config to run ``rows`` with: ``rows`` written as Parquet under the output's
    ``_tmp/`` (a Ray Dataset by Ray Data's own parallel writer, never through this
    process), then read like any manifest, at catalogue scale. Returns the config and the
    staged directory (to remove after), or the config unchanged for ``None`` / a URI."""
    if rows is None:
        if cfg.input.manifest == IN_MEMORY:
            raise ConfigError("no manifest: give rows to plan()/outpaint() or set input.manifest")
        return cfg, None
    if isinstance(rows, (str, os.PathLike)):
        return _with_manifest(cfg, os.fspath(rows)), None
    fs, root = storage.filesystem(cfg.output.uri, cfg.output.storage_options)
    if _is_dataset(rows):
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        key = hashlib.sha256(repr(rows).encode() + os.urandom(8)).hexdigest()[:12]
        path = storage.join(root, "_tmp", f"manifest-{key}")
        rows.write_parquet(path, filesystem=PyFileSystem(FSSpecHandler(fs)))
    else:
        table = as_table(rows)
        manifest_io.check_schema(table.schema, cfg, "(rows)")
        key = hashlib.sha256(
            repr(table.schema).encode() + str(table.num_rows).encode() + os.urandom(8)
        ).hexdigest()
        path = storage.join(root, "_tmp", f"manifest-{key[:12]}")
        fs.makedirs(path, exist_ok=True)
        import pyarrow.parquet as pq

        pq.write_table(table, storage.join(path, "part-0.parquet"), filesystem=fs)
    return _with_manifest(cfg, storage.unstrip(fs, path)), path


def _remove_staged(cfg: Config, path: str | None) -> None:
    if path is None:
        return
    fs, _ = storage.filesystem(cfg.output.uri, cfg.output.storage_options)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=True)


# ------------------------------------------------------------------ plan


def plan(manifest: ManifestLike, config) -> pa.Table:
    """The dry run: one planned row per manifest row (geometry, status, code, message),
    as a pyarrow Table in manifest order. Reads image headers where sizes are not in the
    manifest; generates nothing and writes nothing but a staged copy of in-memory rows."""
    from .plan.stage import plan_manifest

    cfg = load_config(config)
    if (
        manifest is not None
        and not isinstance(manifest, (str, os.PathLike))
        and not _is_dataset(manifest)
    ):
        table = as_table(manifest)
        manifest_io.check_schema(table.schema, cfg, "(rows)")
        if manifest_io.ROW_INDEX not in table.column_names:
            table = table.append_column(
                manifest_io.ROW_INDEX, pa.array(range(table.num_rows), pa.int64())
            )
        return plan_manifest(cfg, table)
    cfg, staged = stage_manifest(manifest, cfg)
    try:
        manifest_io.read_schema(cfg)
        return plan_manifest(cfg, manifest_io.read(cfg))
    finally:
        _remove_staged(cfg, staged)


def plan_summary(table: pa.Table, config) -> dict:
    """Counts per status and code, output megapixels, rows mostly generated, and for
    flux-fill the generated shapes and estimated GPU time (what ``outpaint plan`` prints)."""
    from .plan.summary import summarise

    return summarise(table, load_config(config))


def format_plan_summary(summary: dict) -> str:
    from .plan.summary import format_summary

    return format_summary(summary)


# ------------------------------------------------------------------ run


@dataclass
class RunResult:
    """What a run did (``run.json``, whole, in ``summary``)."""

    summary: dict
    output_uri: str
    storage_options: dict = field(default_factory=dict, repr=False)

    @property
    def run_id(self) -> str:
        return self.summary["run_id"]

    @property
    def rows(self) -> int:
        return self.summary["rows"]

    @property
    def by_status(self) -> dict[str, int]:
        """Every manifest row's latest status: ok / rejected / failed."""
        return dict(self.summary["manifest"]["by_status"])

    @property
    def by_code(self) -> dict[str, int]:
        return dict(self.summary["manifest"]["by_code"])

    @property
    def images_written(self) -> int:
        return self.summary["images_written"]

    @property
    def skipped(self) -> int:
        return self.summary["counts"]["skipped"]

    def metadata(self, columns: list[str] | None = None) -> pa.Table:
        """The output's metadata: one row per manifest row (latest run's wins)."""
        from .io.outputs import OutputStore

        table = OutputStore(self.output_uri, self.storage_options).metadata.read(columns)
        return table if table is not None else pa.table({})


def outpaint(
    manifest: ManifestLike, config, *, progress: str = "auto", quiet: bool = False, out=None
) -> RunResult:
    """Run the job over ``manifest`` (``None``: the config's ``input.manifest``; or a URI,
    a pyarrow Table, a pandas DataFrame, row dicts, a Ray Dataset) and return what it did.
    Resumes like ``outpaint run``: rows already done with the same request are skipped.
    ``progress``: ``auto`` (a bar in a terminal or notebook, lines in logs), ``bar``,
    ``line`` or ``none``."""
    from .run.runner import run as run_job

    cfg = load_config(config)
    cfg, staged = stage_manifest(manifest, cfg)
    try:
        summary = run_job(
            cfg,
            quiet=quiet,
            out=out if out is not None else sys.stderr,
            progress="none" if quiet else progress,
        )
    finally:
        _remove_staged(cfg, staged)
    return RunResult(summary, cfg.output.uri, dict(cfg.output.storage_options))


def run(config, **kwargs) -> RunResult:
    """``outpaint(None, config)``: the config's own manifest."""
    return outpaint(None, config, **kwargs)


# ------------------------------------------------------------------ the stages, for your own Ray Data pipeline


@dataclass
class Stages:
    """The pipeline's stages for ``ds.map_batches`` over a dataset of your own (pyarrow
    batches): ``plan`` (geometry, codes, request hash), then either ``process`` (load,
    route, outpaint and write in one CPU task: the CPU backends) or ``load`` -> ``route``
    (plain backdrops continued without the model) -> ``Outpaint`` (a class, for an actor
    pool: ``fn_constructor_args=stages.outpaint_args``) -> ``write``.
    Each takes a pyarrow Table and returns one, and is callable without Ray. The write
    stages write images under ``output.uri`` and return the metadata rows (every row,
    whatever its fate): write those wherever you like, e.g. ``ds.write_parquet``."""

    config: Config
    plan: Any
    load: Any
    route: Any
    write: Any
    process: Any
    Outpaint: type
    outpaint_args: tuple
    needs_actor: bool

    def apply(self, ds, *, batch_size: int | None = None, concurrency: int = 1):
        """The whole chain on a Ray Dataset of manifest rows; returns the metadata dataset."""
        manifest_io.check_schema(
            ds.schema().base_schema
            if hasattr(ds.schema(), "base_schema")
            else pa.schema(zip(ds.schema().names, ds.schema().types)),
            self.config,
        )
        task = dict(batch_format="pyarrow", batch_size=None)
        ds = ds.map_batches(self.plan, **task)
        if not self.needs_actor:
            return ds.map_batches(self.process, **task)
        import ray

        ds = ds.map_batches(self.load, **task)
        ds = ds.map_batches(self.route, **task)
        ds = ds.map_batches(
            self.Outpaint,
            fn_constructor_args=self.outpaint_args,
            batch_format="pyarrow",
            batch_size=batch_size or self.config.runtime.batch_size,
            compute=ray.data.ActorPoolStrategy(size=concurrency),
        )
        return ds.map_batches(self.write, **task)


def stages(config, run_id: str | None = None) -> Stages:
    """The stages of ``config`` (``run_id`` tags the metadata rows; default: a new one)."""
    from .backends import BuildContext, spec_of, warmup_shapes
    from .io.outputs import OutputStore, new_run_id
    from .plan.stage import PlanStage
    from .run.stages import BackdropStage, LoadStage, OutpaintStage, ProcessStage, WriteStage

    cfg = load_config(config)
    store = OutputStore(cfg.output.uri, cfg.output.storage_options)
    run_id = run_id or new_run_id()
    context = BuildContext(None, warmup_shapes(cfg), cfg.runtime.batch_size, cfg.output)
    return Stages(
        cfg,
        PlanStage(cfg, identify=True),
        LoadStage.from_config(cfg),
        BackdropStage.from_config(cfg),
        WriteStage.from_config(cfg, store, run_id),
        ProcessStage.from_config(cfg, store, run_id),
        OutpaintStage,
        (cfg.model, context, cfg.output.color_intent),
        spec_of(cfg.model).actor,
    )


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
    from .backdrop import Tolerances
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
    from .backdrop import Tolerances
    from .io import manifest as manifest_io
    from .io.analyze import AnalyzeStage, with_analysis
    from .io.catalogue import write
    from .io.headers import SourceLimits
    from .plan.rows import resolve_images

    cfg = load_config(config)
    table = manifest_io.read(cfg)
    table = table.drop_columns([c for c in manifest_io.INTERNAL if c in table.column_names])
    images = resolve_images(table.column("image").cast(pa.string()), cfg.input.image_root)
    distinct = pa.table({"image": pc.unique(images.drop_null()).cast(pa.string())})
    stage = AnalyzeStage(
        cfg.input, SourceLimits.of(cfg.limits), Tolerances.of(cfg.model.backdrop), threads
    )
    if on_ray is None:
        on_ray = bool(cfg.runtime.ray_address or os.environ.get("RAY_ADDRESS"))
    found = _analyze_on_ray(stage, distinct, cfg) if on_ray else stage(distinct)
    at = pc.index_in(images, value_set=found.column("image"))
    table = with_analysis(table, found.take(at))
    if out is not None:
        write(table, out, cfg.input.storage_options)
    return table


def _analyze_on_ray(stage, distinct: pa.Table, cfg: Config) -> pa.Table:
    """The stage as Ray Data tasks: the sources spread over the cluster's CPUs (blocks of
    ``runtime.block_rows``), the results back here (a few columns a source)."""
    from .run.cluster import ensure_ray

    ray = ensure_ray(cfg.runtime)
    ds = ray.data.from_arrow(distinct).repartition(
        max(1, -(-distinct.num_rows // cfg.runtime.block_rows))
    )
    found = ds.map_batches(stage, batch_format="pyarrow", batch_size=None)
    return pa.concat_tables(ray.get(found.to_arrow_refs()))


def submit(config, address: str, **kwargs) -> tuple[str, str]:
    """Run the config as a Ray job on a cluster (``outpaint submit``): idempotent, logs
    streamed; returns (submission id, final status). Keywords as ``run.submit.submit``:
    wait, timeout_s, strict, job_id, stop_on_exit."""
    from .run.submit import submit as submit_job

    cfg = load_config(config)
    manifest_io.read_schema(cfg)  # a bad manifest fails here, not on the cluster
    return submit_job(cfg, address, **kwargs)


def bench(config, **kwargs) -> dict:
    """Time the configured backend on synthetic canvases (``outpaint bench``): s/image,
    images/hour, MFU, peak memory. Keywords: size, images, modes, ref_fraction,
    random_weights, batch_sizes."""
    from .run.bench import bench as bench_backend

    return bench_backend(load_config(config), **kwargs)


def serve_config(source, overrides: Sequence[str] = ()) -> Config:
    """A config for ``serve``: the same YAML as ``outpaint run``, ``input`` optional (a
    file, as a dict always may: the requests bring the rows)."""
    return load_config(source, overrides, base={"input": {"manifest": IN_MEMORY}})


def serve(config, *, ready=None, block: bool = True):
    """Run ``outpaint serve``: the hosted API's contract on Ray Serve, at
    ``serve.host:serve.port``, until interrupted (``block=False``: return once it is up).
    ``ready(url, backend)`` is called when it answers. Keys: docs/serving.md."""
    import signal
    import time

    try:
        from ray import serve as ray_serve

        from .serve.app import application
    except ImportError as e:  # ray[data] alone has no Serve, FastAPI or uvicorn
        raise ConfigError(
            f"outpaint serve needs Ray Serve ({e.name or e} is missing): "
            'pip install -c constraints.txt -e ".[serve]"'
        ) from None

    from .run.cluster import ensure_ray
    from .serve.contract import PATH
    from .serve.keys import load_digests

    cfg = serve_config(config)
    load_digests(cfg.serve)  # no keys: fail here, before Ray starts
    ensure_ray(cfg.runtime)
    app = application(cfg, verbose=cfg.runtime.verbose)
    ray_serve.start(http_options={"host": cfg.serve.host, "port": cfg.serve.port})
    ray_serve.run(app, name="outpaint", route_prefix="/")
    if ready is not None:
        ready(f"http://{cfg.serve.host}:{cfg.serve.port}{PATH}", cfg.model.backend)
    if not block:
        return

    def stop(signum, frame):
        raise KeyboardInterrupt

    # SIGTERM (kill, Kubernetes, a supervisor) stops it as Ctrl-C does; so does SIGINT where
    # a shell started it in the background with SIGINT ignored
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        ray_serve.shutdown()


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
    "as_table",
    "format_plan_summary",
    "load_config",
    "make_manifest",
    "make_test_model",
    "outpaint",
    "plan",
    "plan_summary",
    "report",
    "run",
    "stages",
    "submit",
    "bench",
    "validate",
]
