"""``outpaint serve`` in the foreground: Ray Serve started on ``serve.host:serve.port``
with the application of ``app``, until SIGINT or SIGTERM; then the drain, in this order:
the ingress stops taking tasks and finishes the accepted ones while the model deployment
is still up (``Api.drain``), then the application is deleted, then Serve and Ray stop.
The command runs this in a session of its own (``supervise``), so that no signal to the
command's process group reaches Ray's processes before the drain has finished."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable

from ..config import Config, ConfigError
from ..run.cluster import ensure_ray
from .contract import PATH
from .keys import load_digests


def serve(cfg: Config, *, ready: Callable[[str, str], None] | None = None, block: bool = True):
    """Start the server; ``ready(url, backend)`` once it answers; with ``block``, serve
    until interrupted, then shut Serve down."""
    try:
        from ray import serve as ray_serve

        from .app import application
    except ImportError as e:  # ray[data] alone has no Serve, FastAPI or uvicorn
        raise ConfigError(
            f"outpaint serve needs Ray Serve ({e.name or e} is missing): "
            'pip install -c constraints.txt -e ".[serve]"'
        ) from None

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
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        drain(ray_serve, cfg.serve.drain_s)
        ray_serve.delete("outpaint", _blocking=True)  # the replicas' own drain: nothing left
        ray_serve.shutdown()


def drain(ray_serve, drain_s: float) -> None:
    """The ingress's drain while everything else is up: the tasks it accepted finish and
    are recorded (serve.drain_s), the rest end Error (server_stopped). Should the call
    fail, the application's deletion drains all the same (``Api.__del__``)."""
    try:
        ray_serve.get_app_handle("outpaint").drain.remote().result(timeout_s=drain_s + 30)
    except Exception as e:  # noqa: BLE001 - the deletion below drains in any case
        print(f"outpaint serve: drain: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
