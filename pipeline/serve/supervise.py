"""``outpaint serve``'s own process: a small supervisor, the server a child of it in a
session of its own.

A stop signal reaches the main process alone (Kubernetes, ``kill PID``) or its whole
process group (systemd's default ``KillMode=control-group``, a terminal's Ctrl-C, ``docker
stop`` through a shell entrypoint). Ray's processes (GCS, raylet, the replicas' workers)
are started by the process that starts Ray and share its process group: a group signal
ends them while the server drains, and the tasks it accepted are lost. So the command runs
the server in a new session, Ray with it, where no group signal of ours reaches; this
process only forwards: each SIGTERM, SIGINT or SIGHUP it receives becomes a SIGTERM to the
server, which drains (``serve.drain_s``: the model still up while it does) and exits; its
exit status is this one's. The server gets SIGTERM too when this process dies, even by
SIGKILL (Linux's ``PR_SET_PDEATHSIG``), and drains then as well.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

WORKER_ENV = "OUTPAINT_SERVE_WORKER"  # set in the server's environment: it is the child
# the stop signals this platform has (Windows has no SIGHUP)
FORWARDED = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, n))
PR_SET_PDEATHSIG = 1


def is_worker() -> bool:
    return os.environ.get(WORKER_ENV) == "1"


def _stop_with(parent: int):
    """Run in the child between fork and exec: SIGTERM when ``parent`` dies (Linux; as
    Ray arms its own processes). The library is loaded here, before the fork."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arm():
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def supervise(argv: list[str]) -> int:
    """Run ``outpaint`` ``argv`` as the server in a new session; forward stop signals to it
    until it exits; its exit status (128 + the signal's number when a signal ended it)."""
    env = {**os.environ, WORKER_ENV: "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *argv],
        env=env,
        start_new_session=True,
        preexec_fn=_stop_with(os.getpid()),
    )

    def forward(signum, frame):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    code = child.wait()  # retried after each handler (PEP 475)
    return 128 - code if code < 0 else code
