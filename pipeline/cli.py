"""``outpaint`` command line: a thin layer over ``pipeline.api``. Each command is its
handler and, beside it, the arguments it takes."""

from __future__ import annotations

import argparse
import json
import sys

import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import api
from . import config as config_mod
from .common import secrets, storage
from .config import ConfigError


def _load(args) -> config_mod.Config:
    cfg = api.load_config(args.config, getattr(args, "set", []))
    if getattr(args, "verbose", False):
        cfg.runtime.verbose = True
    return cfg


def _with_config(sub, name: str, help_: str) -> argparse.ArgumentParser:
    sp = sub.add_parser(name, help=help_)
    sp.add_argument("config", help="YAML config (any fsspec URI)")
    sp.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set runtime.seed=7 (repeatable)",
    )
    return sp


# ------------------------------------------------------------------ manifest


def add_manifest(sub) -> None:
    sp = sub.add_parser(
        "manifest",
        help="write a manifest from a folder, glob or bucket prefix of images (--analyze: with "
        "each image's backdrop and product box)",
    )
    sp.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="folder (recursive), glob or prefix, any fsspec URI",
    )
    sp.add_argument(
        "--analyze",
        action="store_true",
        help="decode each image once and add backdrop_kind, backdrop_color, backdrop_sides and "
        "subject_x0..subject_y1 (docs/product-photos.md)",
    )
    sp.add_argument(
        "--from",
        dest="from_config",
        metavar="CONFIG",
        help="with --analyze: the manifest of this config, analysed, instead of SOURCEs",
    )
    sp.add_argument(
        "--ray",
        action="store_true",
        help="with --from: decode as Ray Data tasks (the config's runtime.ray_address, or a "
        "local Ray; the default whenever the config or RAY_ADDRESS names a cluster)",
    )
    sp.add_argument(
        "--out", required=True, help="manifest to write: .parquet, .csv, .tsv or .jsonl"
    )
    sp.add_argument(
        "--aspect-ratio",
        action="append",
        metavar="W:H",
        help="a target ratio (repeatable: one row per image and ratio, ids suffixed with the ratio)",
    )
    sp.add_argument("--width", type=int, help="an explicit canvas width (with --height)")
    sp.add_argument("--height", type=int, help="an explicit canvas height (with --width)")
    sp.add_argument("--mode", choices=["high", "fast"], help="mode column (default: the config's)")
    sp.add_argument("--format", choices=["png", "jpeg", "jpg", "webp"], help="output_format column")
    sp.add_argument("--storage-options", help="fsspec options for SOURCE and --out, as JSON")
    sp.add_argument(
        "--allow-private-networks",
        action="store_true",
        help="http(s) sources may be on private networks (as input.http.allow_private_networks)",
    )
    sp.set_defaults(func=cmd_manifest)


def cmd_manifest(args) -> int:
    from .io.catalogue import Target, summary_line

    if args.from_config is not None:
        if not args.analyze or args.sources:
            raise ConfigError("--from CONFIG goes with --analyze and no SOURCE")
        table = api.analyze_manifest(args.from_config, args.out, on_ray=args.ray or None)
        print(analysis_line(table, args.out))
        return 0
    if not args.sources:
        raise ConfigError("give a SOURCE (a folder, glob or prefix), or --analyze --from CONFIG")
    if (args.width is None) != (args.height is None):
        raise ConfigError("--width and --height go together")
    size = (args.width, args.height) if args.width is not None else None
    opts = json.loads(args.storage_options) if args.storage_options else {}
    ratios = args.aspect_ratio or []
    table, written = api.make_manifest(
        args.sources,
        args.out,
        aspect_ratios=ratios,
        size=size,
        mode=args.mode,
        output_format=args.format,
        storage_options=opts,
        http={"allow_private_networks": args.allow_private_networks},
        analyze=args.analyze,
    )
    targets = [Target(aspect_ratio=r) for r in ratios]
    if size:
        targets.append(Target(width=size[0], height=size[1]))
    print(summary_line(table, written, targets))
    if args.analyze:
        print(analysis_line(table, written))
    return 0


def analysis_line(table, out: str) -> str:
    """How many rows' sources are on a plain backdrop, and have a product box."""
    import pyarrow.compute as pc

    kinds = {k["values"]: k["counts"] for k in pc.value_counts(table["backdrop_kind"]).to_pylist()}
    boxed = table.num_rows - table["subject_x0"].null_count
    shown = ", ".join(f"{kinds.get(k, 0):,} {k}" for k in ("flat", "gradient", "scene"))
    unread = kinds.get(None, 0)
    tail = f", {unread:,} not judged (unreadable, or transparent)" if unread else ""
    return f"analysed: {out}: {shown}{tail}; {boxed:,} rows with a product box"


# ------------------------------------------------------------------ validate, plan, run


def add_validate(sub) -> None:
    _with_config(
        sub, "validate", "check the config and the manifest schema; nothing else"
    ).set_defaults(func=cmd_validate)


def cmd_validate(args) -> int:
    found = api.validate(_load(args))
    print(f"config ok: {args.config}")
    columns = ", ".join(found.columns)
    print(f"manifest ok: {len(found.files)} file(s), {found.rows:,} rows, columns: {columns}")
    return 0


def add_plan(sub) -> None:
    sp = _with_config(sub, "plan", "dry run: geometry, status and code per row, and a summary")
    sp.add_argument("--out", help="write plan.parquet and summary.json under this directory/URI")
    sp.add_argument(
        "--sample",
        type=int,
        default=0,
        metavar="N",
        help="load and route N of the rows decided once loaded (backdrop, scene, model): "
        "their shares, before any work",
    )
    sp.set_defaults(func=cmd_plan)


def cmd_plan(args) -> int:
    cfg = _load(args)
    plan = api.plan(None, cfg)
    summary = api.plan_summary(plan, cfg)
    if args.sample > 0:
        summary["sample"] = api.plan_sample(plan, cfg, args.sample)
    if args.out:
        fs, path = storage.filesystem(args.out, cfg.output.storage_options)
        fs.makedirs(path, exist_ok=True)
        pq.write_table(plan, storage.join(path, "plan.parquet"), filesystem=fs)
        with fs.open(storage.join(path, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        print(f"plan: {storage.join(args.out, 'plan.parquet')} ({plan.num_rows:,} rows)")
    print(api.format_plan_summary(summary))
    if "sample" in summary:
        print(api.format_plan_sample(summary["sample"]))
    return 0


def add_run(sub) -> None:
    sp = _with_config(
        sub, "run", "run the job: outpaint every row, write images + metadata (resumes by default)"
    )
    sp.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 if any row was rejected or failed, or held by the quality gate",
    )
    sp.add_argument("--quiet", action="store_true", help="no progress or summary table")
    sp.add_argument(
        "--redo",
        action="store_true",
        help="regenerate only the rows a reviewer rejected (outpaint review), each with its "
        "next attempt's seed; no other row is touched",
    )
    sp.add_argument(
        "--progress",
        choices=["auto", "bar", "line", "none"],
        default="auto",
        help="auto: a progress bar on a terminal, a line every runtime.progress_interval_s in logs",
    )
    sp.add_argument(
        "--verbose",
        action="store_true",
        help="also Ray's and the model libraries' logs and warnings",
    )
    sp.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    result = api.run(_load(args), quiet=args.quiet, progress=args.progress, redo=args.redo)
    bad = result.by_status.get("rejected", 0) + result.by_status.get("failed", 0)
    held = result.by_review.get("held", 0)
    if args.strict and (bad or held):
        message = (
            f"outpaint: --strict: {bad:,} rows were rejected or failed, {held:,} held by the "
            "quality gate (see metadata/ and run.json)"
        )
        print(message, file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------ submit, report


def add_submit(sub) -> None:
    sp = _with_config(
        sub,
        "submit",
        "run the config as a job on a Ray cluster (idempotent; exit 0 succeeded, "
        "1 failed/stopped, 2 bad input/unreachable, 3 still running at --timeout)",
    )
    sp.add_argument(
        "--address", required=True, help="the cluster's job server, e.g. http://HEAD:8265"
    )
    sp.add_argument("--no-wait", action="store_true", help="return once submitted (or attached)")
    sp.add_argument(
        "--timeout",
        type=float,
        default=24 * 3600,
        help="seconds to wait; past it exit 3 and the job keeps running",
    )
    sp.add_argument(
        "--strict", action="store_true", help="the job fails if any row was rejected or failed"
    )
    sp.add_argument(
        "--submission-id",
        help="the job's id (default: derived from the config and output.uri; "
        "a running job with it is attached to)",
    )
    sp.add_argument(
        "--stop-on-exit",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="stop the job on SIGTERM/Ctrl-C while waiting (default: on)",
    )
    sp.set_defaults(func=cmd_submit)


def cmd_submit(args) -> int:
    from .run.submit import exit_code

    _, status = api.submit(
        _load(args),
        args.address,
        wait=not args.no_wait,
        timeout_s=args.timeout,
        strict=args.strict,
        job_id=args.submission_id,
        stop_on_exit=args.stop_on_exit,
    )
    return 0 if args.no_wait else exit_code(status)


def add_report(sub) -> None:
    sp = sub.add_parser("report", help="rebuild report.html of an output and print its summary")
    sp.add_argument("output_uri", help="the run's output.uri")
    sp.add_argument("--config", help="take storage options from this config (remote outputs)")
    sp.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help=argparse.SUPPRESS
    )
    sp.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    uri, summary = api.report(args.output_uri, _load(args) if args.config else None)
    print(f"report: {uri}")
    statuses = "  ".join(f"{k} {v:,}" for k, v in summary["by_status"].items())
    print(f"rows: {summary['rows']:,}  {statuses}  output {summary['output_megapixels']:,} MP")
    for k, v in summary["by_code"].items():
        print(f"  {k:<26} {v:>10,}")
    return 0


# ------------------------------------------------------------------ score, review


def add_score(sub) -> None:
    sp = sub.add_parser(
        "score",
        help="the quality score of images made by anything, or of a run (rescored in place)",
    )
    sp.add_argument(
        "source",
        help="a table (Parquet/CSV/TSV/JSONL: id, image, visible_x0..visible_y1) or a run's "
        "output URI",
    )
    sp.add_argument("--out", required=True, help="where the scores go (Parquet)")
    sp.add_argument("--config", help="thresholds (quality.thresholds) and storage options")
    sp.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help=argparse.SUPPRESS
    )
    sp.add_argument("--threads", type=int, default=8, help="images decoded and scored at once")
    sp.set_defaults(func=cmd_score)


def cmd_score(args) -> int:
    table = api.score(
        args.source, args.out, config=_load(args) if args.config else None, threads=args.threads
    )
    scored = table.filter(pc.is_null(table.column("score_error")))
    passed = sum(1 for v in scored.column("quality_pass").to_pylist() if v)
    print(
        f"scored {scored.num_rows:,} of {table.num_rows:,} rows: {passed:,} pass, "
        f"{scored.num_rows - passed:,} fail; {table.num_rows - scored.num_rows:,} not scored "
        f"(score_error) -> {args.out}"
    )
    return 0


def add_review(sub) -> None:
    sp = sub.add_parser(
        "review",
        help="approve or reject generated rows: a local review page, or --approve/--reject",
    )
    sp.add_argument("output_uri", help="the run's output.uri")
    sp.add_argument("--approve", nargs="+", default=[], metavar="ID", help="publish these rows")
    sp.add_argument(
        "--reject", nargs="+", default=[], metavar="ID", help="unpublish these rows for --redo"
    )
    sp.add_argument("--reviewer", help="a name recorded with each verdict")
    sp.add_argument(
        "--host", default="127.0.0.1", help="where the page listens (default: loopback)"
    )
    sp.add_argument("--port", type=int, default=8770, help="its port (0: any free one)")
    sp.add_argument("--config", help="storage options for the output and the sources")
    sp.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help=argparse.SUPPRESS
    )
    sp.set_defaults(func=cmd_review)


def cmd_review(args) -> int:
    cfg = _load(args) if args.config else None
    if args.approve or args.reject:
        done = api.review(
            args.output_uri, approve=args.approve, reject=args.reject,
            reviewer=args.reviewer, config=cfg,
        )  # fmt: skip
        for v in done:
            print(f"{v['verdict']:>8} {v['id']}")
        return 0

    def ready(url: str) -> None:
        print(f"outpaint review: {url} (Ctrl-C to stop); verdicts are saved as they are cast")

    api.review_server(args.output_uri, host=args.host, port=args.port, config=cfg, ready=ready)
    return 0


# ------------------------------------------------------------------ bench, make-test-model


def _size(text: str) -> tuple[int, int]:
    m = config_mod.SHAPE.match(text)
    limit = config_mod.MAX_PIXELS_CEILING
    if not m or int(m[1]) * int(m[2]) > limit or 0 in (int(m[1]), int(m[2])):
        raise argparse.ArgumentTypeError(f"{text!r}: expected WxH with at most {limit:,} pixels")
    return int(m[1]), int(m[2])


def add_bench(sub) -> None:
    sp = _with_config(
        sub,
        "bench",
        "time the configured model on synthetic canvases: s/image, images/hour, MFU, memory",
    )
    sp.add_argument(
        "--size",
        type=_size,
        help="canvas WxH (default: the defaults' width x height, else 1024x1024)",
    )
    sp.add_argument("--images", type=int, default=8, help="images timed per mode (after warm-up)")
    sp.add_argument("--modes", default="high,fast", help="high, fast or high,fast")
    sp.add_argument(
        "--ref-fraction", type=float, default=0.75, help="reference size as a fraction of each side"
    )
    sp.add_argument("--json", help="also write the figures as JSON here (any fsspec URI)")
    sp.add_argument(
        "--batch-sizes",
        help="flux-fill: also time these batch sizes, e.g. 1,2,4 (for runtime.batch_size)",
    )
    sp.add_argument(
        "--random-weights",
        action="store_true",
        help="flux-fill: FLUX.1 Fill's full-size architecture with random weights (same speed; "
        "size hardware before the weights are there)",
    )
    sp.set_defaults(func=cmd_bench)


def _batch_sizes(text: str | None) -> list[int]:
    try:
        sizes = [int(b) for b in text.split(",") if b.strip()] if text else []
    except ValueError:
        sizes = [0]
    if any(b < 1 for b in sizes):
        raise ConfigError(f"--batch-sizes {text!r}: give positive integers, e.g. 1,2,4")
    return sizes


def cmd_bench(args) -> int:
    from .run.bench import format_result

    cfg = _load(args)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in ("high", "fast") for m in modes):
        raise ConfigError(f"--modes {args.modes!r}: give high, fast or high,fast")
    result = api.bench(
        cfg,
        size=args.size,
        images=args.images,
        modes=modes,
        ref_fraction=args.ref_fraction,
        random_weights=args.random_weights,
        batch_sizes=_batch_sizes(args.batch_sizes),
    )
    print(format_result(result))
    if args.json:
        fs, path = storage.filesystem(args.json, cfg.output.storage_options)
        with fs.open(path, "w") as f:
            json.dump(result, f, indent=2)
    return 0


def add_make_test_model(sub) -> None:
    sp = sub.add_parser(
        "make-test-model",
        help="write a tiny pipeline with random weights (FLUX Fill or an inpainting family; tests, trials)",
    )
    sp.add_argument("dir", help="output directory")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument(
        "--family",
        choices=["flux-fill", "sdxl", "z-image", "flux2-klein"],
        default="flux-fill",
        help="flux-fill (model.backend flux-fill) or an inpainting family (model.backend diffusers)",
    )
    sp.add_argument(
        "--fill",
        choices=["grey", "contrast", "green", "blue", "magenta"],
        help="record the fill this 'checkpoint' was trained on (outpaint_profile.json)",
    )
    sp.set_defaults(func=cmd_make_test_model)


def cmd_make_test_model(args) -> int:
    if args.family != "flux-fill":
        from .backends.tinyinpaint import make_tiny_inpaint

        out = make_tiny_inpaint(args.dir, args.family, seed=args.seed)
        print(
            f"tiny {args.family} inpainting pipeline (random weights) written to {out}; use "
            f"model.backend: diffusers, model.path: {out}, model.dtype: float32 on CPU"
        )
        return 0
    out = api.make_test_model(args.dir, seed=args.seed, fill=args.fill)
    print(
        f"tiny FLUX Fill pipeline (random weights) written to {out}; use model.backend: flux-fill, "
        f"model.path: {out}, model.dtype: float32 on CPU"
    )
    return 0


# ------------------------------------------------------------------ serve


def add_serve(sub) -> None:
    sp = _with_config(
        sub,
        "serve",
        "serve the hosted FLUX Outpainting API's contract on Ray Serve (docs/serving.md)",
    )
    sp.add_argument("--host", help="address to listen on (default serve.host: 127.0.0.1)")
    sp.add_argument("--port", type=int, help="HTTP port (default serve.port: 8000)")
    sp.add_argument("--verbose", action="store_true", help="one log line per task, Ray's logs")
    sp.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    cfg = api.serve_config(args.config, args.set)
    if args.host:
        cfg.serve.host = args.host
    if args.port:
        cfg.serve.port = args.port
    if args.verbose:
        cfg.runtime.verbose = True

    from .serve import supervise

    if not supervise.is_worker():
        # a bad config or no keys fails here, exit 2, before any process starts; then the
        # server runs as a child in a session of its own, where a signal to this process's
        # group cannot reach its Ray (pipeline/serve/supervise.py)
        from .serve.keys import load_digests

        load_digests(cfg.serve)
        return supervise.supervise(args.argv)

    def ready(url: str, backend: str) -> None:
        print(f"outpaint serve: {url} ({backend} backend); Ctrl-C stops it", flush=True)

    api.serve(cfg, ready=ready)
    return 0


COMMANDS = (
    add_manifest,
    add_validate,
    add_plan,
    add_run,
    add_submit,
    add_bench,
    add_report,
    add_score,
    add_review,
    add_serve,
    add_make_test_model,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="outpaint", description="Batch outpainting of image catalogues on Ray Data."
    )
    sub = p.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # as given: ``serve`` runs the server with it as a child
    try:
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"outpaint: {secrets.scrub(str(e))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
