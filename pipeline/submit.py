"""``outpaint submit CONFIG --address http://HEAD:8265``: run a config as a Ray job on a
cluster, through Ray's Job Submission API. The validated config travels in the job's
runtime environment (its working directory); the entrypoint is ``outpaint run``."""

from __future__ import annotations

import os
import sys
import tempfile
import time

import yaml

from . import storage
from .config import Config, ConfigError, dump

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def submit(cfg: Config, address: str, *, wait: bool = True, timeout_s: float = 24 * 3600,
           poll_s: float = 2.0, strict: bool = False, out=sys.stderr) -> tuple[str, str]:
    """Submit; with ``wait``, poll to a terminal state. Returns (job id, status)."""
    from ray.job_submission import JobSubmissionClient

    if storage.is_local(cfg.output.uri):
        raise ConfigError(f"output.uri {cfg.output.uri} is a local path: on a cluster the workers would write to "
                          "their own disks; use object storage (s3://, gs://, az://)")
    data = dump(cfg)
    data["runtime"]["ray_address"] = "auto"  # the job's driver joins the cluster it runs on
    try:
        client = JobSubmissionClient(address)
    except Exception as e:  # noqa: BLE001 - unreachable head: one clear line
        raise ConfigError(f"--address {address}: cannot reach the Ray job server: {type(e).__name__}: {e}") from None
    with tempfile.TemporaryDirectory(prefix="outpaint-job-") as work:
        with open(os.path.join(work, "config.yaml"), "w") as f:
            yaml.safe_dump(data, f, sort_keys=False)
        entry = "outpaint run config.yaml" + (" --strict" if strict else "")
        job_id = client.submit_job(entrypoint=entry, runtime_env={"working_dir": work},
                                   metadata={"tool": "outpaint", "output": cfg.output.uri})
    print(f"[outpaint] submitted {job_id} to {address}: {entry}", file=out, flush=True)
    if not wait:
        return job_id, "PENDING"
    deadline = time.time() + timeout_s
    status = "PENDING"
    while time.time() < deadline:
        status = str(client.get_job_status(job_id)).split(".")[-1]
        if status in TERMINAL:
            break
        time.sleep(poll_s)
    logs = client.get_job_logs(job_id)
    tail = "\n".join(logs.strip().splitlines()[-25:])
    print(f"[outpaint] job {job_id}: {status}\n{tail}", file=out, flush=True)
    return job_id, status
