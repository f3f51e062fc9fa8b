"""``outpaint submit CONFIG --address http://HEAD:8265``: a run as a Ray job on a cluster,
through Ray's Job Submission API, safe to retry.

- Idempotent: the submission id is derived from the config and output URI (or given);
  a job with that id still running is attached to, never submitted twice. Once it has
  ended, the next submit (tomorrow's run, a retry of a failed one) gets the next id in
  the series (``-r2``, ``-r3``...), so a CronJob's retries and pod evictions never start
  a second job on the same output.
- The package travels with the job (``py_modules``: this very ``pipeline`` package), so
  workers need only Ray and the dependencies; client and job run the same outpaint.
  Ray's version on the cluster is compared with the client's at start.
- Credentials never travel: secret-looking ``storage_options`` keys are left out of the
  shipped config; the cluster's environment (a Secret via ``envFrom``, a service
  account) provides them.
- Logs stream while waiting; SIGTERM/Ctrl-C stops the job (``--stop-on-exit``, the
  default when waiting); transient job-server errors are retried with a one-line note.

Exit codes: 0 the job succeeded; 1 it failed or was stopped; 2 bad input or the job
server unreachable (one line, before anything is submitted); 3 still running when
``--timeout`` passed (the job goes on; submitting again attaches to it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sys
import tempfile
import time

import yaml

from ..common import retries, secrets, storage
from ..config import Config, ConfigError, dump

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
EXIT = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 1}
EXIT_STILL_RUNNING = 3
_TRANSIENT = (
    "No available agent",
    "status code 5",
    "Connection refused",
    "Connection reset",
    "Max retries exceeded",
    "timed out",
    "Temporary failure",
    "Remote end closed",
)


def strip_secrets(data: dict) -> tuple[dict, list[str]]:
    """The config without any credential-named value (``storage_options``' keys and
    tokens, ``input.http.headers``' Authorization...: ``secrets.is_secret_name``); the key
    paths left out. The cluster's environment provides them."""
    removed: list[str] = []

    def clean(value, path):
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if secrets.is_secret_name(k) and v not in (None, "", {}):
                    removed.append(".".join(path + [k]))
                    continue
                out[k] = clean(v, path + [k])
            return out
        return value

    return clean(data, []), removed


def submission_id(shipped: dict) -> str:
    """Deterministic: the same config (as shipped) and output give the same id."""
    key = json.dumps(
        {"config": shipped, "output": shipped["output"]["uri"]}, sort_keys=True, default=str
    )
    return "outpaint-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _transient(e: BaseException) -> bool:
    text = f"{type(e).__name__}: {e}"
    return any(t in text for t in _TRANSIENT) or isinstance(e, (ConnectionError, TimeoutError))


def call(fn, *args, what: str, out, attempts: int = 6, base: float = 1.0, **kwargs):
    """A job-server call, retried on transient errors (a busy or restarting head) with a
    one-line note each time; a permanent error, or one that outlasts the retries, is a
    ``ConfigError`` (exit 2)."""

    def attempt(_):
        try:
            return fn(*args, **kwargs)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - classified here
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            error = ConfigError(f"job server: {what} failed: {first}")
            if not _transient(e):
                raise error from None
            raise retries.RetryLater(error) from None

    def note(n: int, wait: float, error: BaseException) -> None:
        first = str(error).split(" failed: ", 1)[-1]
        print(
            f"[outpaint] job server busy ({first[:120]}); {what}: retry {n + 1} in {wait:.1f}s",
            file=out,
            flush=True,
        )

    return retries.call(attempt, retries.Policy(base=base, cap=30.0, attempts=attempts), note)


def _status(client, job_id: str, out) -> str | None:
    """The job's status, or None if there is no such job."""

    def get():
        try:
            return str(client.get_job_info(job_id).status).split(".")[-1]
        except RuntimeError as e:
            if "404" in str(e) or "does not exist" in str(e):
                return None
            raise

    return call(get, what=f"status of {job_id}", out=out)


def find_or_submit(
    client, base: str, entry: str, runtime_env: dict, metadata: dict, out
) -> tuple[str, bool]:
    """(job id, attached): the first id of the series that is not a finished job."""
    for k in range(1, 10_000):
        job_id = base if k == 1 else f"{base}-r{k}"
        status = _status(client, job_id, out)
        if status is not None and status not in TERMINAL:
            return job_id, True
        if status is None:
            try:
                call(
                    client.submit_job,
                    entrypoint=entry,
                    submission_id=job_id,
                    runtime_env=runtime_env,
                    metadata=metadata,
                    what="submit",
                    out=out,
                )
                return job_id, False
            except ConfigError as e:
                if "already exists" in str(e):  # another submit of the same run won the race
                    return job_id, True
                raise
    raise ConfigError(f"job server: every id of the series {base}-r* is taken")


def submit(
    cfg: Config,
    address: str,
    *,
    wait: bool = True,
    timeout_s: float = 24 * 3600,
    strict: bool = False,
    job_id: str | None = None,
    stop_on_exit: bool | None = None,
    out=sys.stderr,
) -> tuple[str, str]:
    """Submit (or attach); with ``wait``, stream logs to a terminal state. Returns (job id, status)."""
    import ray
    from ray.job_submission import JobSubmissionClient

    import pipeline

    if storage.is_local(cfg.output.uri):
        raise ConfigError(
            f"output.uri {cfg.output.uri} is a local path: on a cluster the workers would write to "
            "their own disks; use object storage (s3://, gs://, az://)"
        )
    data = dump(cfg)
    data["runtime"]["ray_address"] = "auto"  # the job's driver joins the cluster it runs on
    shipped, removed = strip_secrets(data)
    base = job_id or submission_id(shipped)
    client = call(JobSubmissionClient, address, what=f"connect to {address}", out=out, attempts=3)
    if removed:
        print(
            f"[outpaint] not shipped (credentials come from the cluster's environment): {', '.join(removed)}",
            file=out,
            flush=True,
        )
    from .runner import package_versions

    with tempfile.TemporaryDirectory(prefix="outpaint-job-") as work:
        with open(os.path.join(work, "config.yaml"), "w") as f:
            yaml.safe_dump(shipped, f, sort_keys=False)
        entry = "python -m pipeline run config.yaml" + (" --strict" if strict else "")
        runtime_env = {
            "working_dir": work,
            "py_modules": [os.path.dirname(pipeline.__file__)],
            "env_vars": {
                "OUTPAINT_CLIENT_VERSIONS": json.dumps(
                    {"ray": ray.__version__, "outpaint": package_versions()["outpaint"]}
                )
            },
        }
        job, attached = find_or_submit(
            client, base, entry, runtime_env, {"tool": "outpaint", "output": cfg.output.uri}, out
        )
    verb = "attached to the running job" if attached else "submitted"
    print(f"[outpaint] {verb} {job} on {address}: {entry}", file=out, flush=True)
    if not wait:
        return job, _status(client, job, out) or "PENDING"
    return job, follow(client, job, timeout_s, stop_on_exit is not False, out)


def follow(client, job: str, timeout_s: float, stop_on_exit: bool, out) -> str:
    """Stream the job's logs until it ends, ``timeout_s`` passes or a signal arrives."""
    loop = asyncio.new_event_loop()
    stopped: list[int] = []

    async def tail():
        async for lines in client.tail_job_logs(job):
            out.write(lines)
            out.flush()

    async def main() -> str:
        task = asyncio.ensure_future(tail())
        stop = asyncio.Event()
        if stop_on_exit:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, lambda s=sig: (stopped.append(s), stop.set()))
        waiter = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait(
            {task, waiter}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        for t in (task, waiter):
            t.cancel()
        if stopped:
            return "SIGNAL"
        if task in done and task.exception() is None:
            return "ENDED"
        return "TIMEOUT" if not done else "ENDED"

    try:
        how = loop.run_until_complete(main())
    finally:
        loop.close()
    if how == "SIGNAL":
        print(
            f"[outpaint] {signal.Signals(stopped[0]).name}: stopping job {job}",
            file=out,
            flush=True,
        )
        call(client.stop_job, job, what=f"stop {job}", out=out)
        deadline = time.time() + 60
        status = _status(client, job, out)
        while status not in TERMINAL and time.time() < deadline:
            time.sleep(1)
            status = _status(client, job, out)
        print(f"[outpaint] job {job}: {status}", file=out, flush=True)
        return status or "STOPPED"
    status = _status(client, job, out)
    while how == "ENDED" and status not in TERMINAL:  # the log stream can end a moment early
        time.sleep(1)
        status = _status(client, job, out)
    if how == "TIMEOUT":
        print(
            f"[outpaint] job {job} still {status} after {timeout_s:.0f}s; it keeps running on the cluster "
            "(outpaint submit again attaches to it; `ray job stop` stops it)",
            file=out,
            flush=True,
        )
        return status or "RUNNING"
    print(f"[outpaint] job {job}: {status}", file=out, flush=True)
    return status


def exit_code(status: str) -> int:
    return EXIT.get(status, EXIT_STILL_RUNNING)
