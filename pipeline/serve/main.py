"""``outpaint serve`` in the foreground: Ray Serve started on ``serve.host:serve.port``
with the application of ``app``, until SIGINT or SIGTERM."""

from __future__ import annotations

import signal
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
        # the application first, waiting for its replicas' drain (serve.drain_s: the tasks
        # accepted finish and are recorded), then Serve itself
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        ray_serve.delete("outpaint", _blocking=True)
        ray_serve.shutdown()
