"""``outpaint serve``'s drain, whichever way the stop comes: SIGTERM to the main process
alone (Kubernetes), SIGTERM to its whole process group (systemd's ``KillMode=
control-group``, ``docker stop`` through a shell entrypoint), SIGINT to the group (a
terminal's Ctrl-C). Each delivery five times in one run, tasks in flight every time (some
in the model, some waiting for their batch): every accepted task ends Ready, nothing stays
Pending, and no image is left under images/ that no Ready task points to. Past
``serve.drain_s`` the tasks end Error ``server_stopped``, their images removed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.io.folder import OutputFolder
from pipeline.serve.tasks import ERROR, PENDING, READY, TaskStore

from ..conftest import _free_port
from .test_serve import PATH, ROOT, b64, call, encoded

pytestmark = [pytest.mark.ray, pytest.mark.slow]
DELIVERIES = {
    "main-process-sigterm": (False, signal.SIGTERM),
    "process-group-sigterm": (True, signal.SIGTERM),
    "process-group-sigint": (True, signal.SIGINT),
}
REPEATS = 5
TASKS = 8


@pytest.fixture(scope="module")
def photo(photos) -> np.ndarray:
    img = np.asarray(Image.open(photos["coffee"]).convert("RGB"))
    return np.ascontiguousarray(img[100:292, 150:406])  # 256 x 192


def stop_once(out: Path, photo: np.ndarray, group: bool, signum: int, **serve) -> dict:
    """Start ``outpaint serve``, submit ``TASKS`` at once, deliver the signal while they
    are in flight; what the server left, then what its next start finds."""
    port = _free_port()
    sets = {"max_batch_size": 4, "batch_wait_s": 0.5, **serve}
    args = [sys.executable, "-m", "pipeline", "serve", "configs/serve.yaml", "--port", str(port)]
    args += ["--set", f"output.uri={out}", "--set", "runtime.num_cpus=2"]
    for key, value in sets.items():
        args += ["--set", f"serve.{key}={value}"]
    env = {**os.environ, "OUTPAINT_SERVE_KEYS": "drain-key", "RAY_ADDRESS": ""}
    out.mkdir(parents=True)
    with open(out.parent / f"{out.name}.log", "w") as log:
        # a group of its own, as a shell job or a service has: the test is not in it
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
            start_new_session=True,
        )  # fmt: skip
        try:
            line = proc.stdout.readline()
            assert line.startswith("outpaint serve:"), (line, proc.poll())
            body = {"input_image": b64(encoded(photo)), "width": 768, "height": 576}
            url = f"http://127.0.0.1:{port}{PATH}"
            with ThreadPoolExecutor(TASKS) as pool:
                answers = list(
                    pool.map(lambda _: call("POST", url, body, key="drain-key"), range(TASKS))
                )
            assert [s for s, _, _ in answers] == [200] * TASKS
            ids = [a["id"] for _, a, _ in answers]
            if group:
                os.killpg(proc.pid, signum)
            else:
                proc.send_signal(signum)
            code = proc.wait(timeout=240)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    store = TaskStore(OutputFolder(str(out)), "the-next-start", 900)
    left = _orphans(out, store, ids)
    store.recover()
    tasks = {i: store.get(i) for i in ids}
    return {
        "exit": code,
        "ready": sum(t["status"] == READY for t in tasks.values()),
        "errors": sorted(t["details"]["code"] for t in tasks.values() if t["status"] == ERROR),
        "pending": sum(t["status"] == PENDING for t in tasks.values()),
        "orphans_left": left,
        "orphans": _orphans(out, store, ids),
        "pending_files": len(list((out / "serve" / "pending").glob("*.json"))),
    }


def _orphans(out: Path, store: TaskStore, ids: list[str]) -> int:
    """Images under images/ that no Ready task points to."""
    tasks = [store.get(i) for i in ids]
    named = {t["result_name"] for t in tasks if t and t["status"] == READY}
    images = {p.name for p in (out / "images").glob("*")} if (out / "images").exists() else set()
    return len(images - named)


@pytest.mark.parametrize("delivery", list(DELIVERIES))
def test_every_accepted_task_is_finished_whichever_way_the_stop_comes(delivery, tmp_path, photo):
    group, signum = DELIVERIES[delivery]
    figures = [stop_once(tmp_path / f"run{i}", photo, group, signum) for i in range(REPEATS)]
    print(f"\ndrain {delivery}: {json.dumps(figures)}")
    for f in figures:
        assert f["exit"] == 0, figures
        assert f["ready"] == TASKS and f["errors"] == [], figures
        assert f["pending"] == f["pending_files"] == 0, figures
        assert f["orphans_left"] == f["orphans"] == 0, figures


def test_past_drain_s_the_tasks_end_server_stopped_and_leave_no_image(tmp_path, photo):
    """No time to drain (drain_s 0, the batch still waiting): each task Error with the code
    that says the server stopped; an image the model writes after that is removed by the
    next start at the latest."""
    for i in range(2):
        f = stop_once(tmp_path / f"run{i}", photo, True, signal.SIGTERM, drain_s=0, batch_wait_s=3)
        print(f"\ndrain past drain_s: {json.dumps(f)}")
        assert f["exit"] == 0 and f["ready"] == 0, f
        assert f["errors"] == ["server_stopped"] * TASKS, f
        assert f["pending"] == f["pending_files"] == f["orphans"] == 0, f
