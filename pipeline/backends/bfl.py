"""``bfl-api``: the hosted FLUX Outpainting API as a backend (no GPUs), written against
the API's documented contract (docs/contracts.md, "The hosted API").

One task per row (variants are separate tasks): the planned canvas and the visible
reference (base64), its offsets, mode and prompt; the returned ``polling_url`` is polled
as given; ``result.sample`` is downloaded at once (it expires ten minutes after the task
finished). The usual paste-back, seams, encoding, labels and metadata follow in the
write stage.

- **Global concurrency**: the run's one API actor owns the conversation; a semaphore of
  ``model.api.max_active`` slots is held from a task's submission until it is finished,
  so the account's limit is never exceeded from this run. 429 waits (``Retry-After`` or
  a backoff) and retries without losing the row.
- **Never paying twice**: each submitted task is journaled in the output store
  (``_api/tasks/{key}.json``: row id, request hash, task id, polling URL, time) right
  after the API accepted it, and its result saved (``_api/results/{key}``) as soon as it
  is downloaded. A rerun after a crash uses the saved result, or polls the journaled task
  while it is retrievable, and submits only what was lost. An ambiguous submission (5xx,
  a connection lost after sending) is not blindly repeated: the row fails saying the task
  may exist (``model.api.retry_ambiguous_submit: true`` repeats it once and records that
  the row may have been charged twice).
- **Outcomes**: moderation -> ``moderated``; ``Error`` or a timeout -> ``generation_failed``
  with the API's detail; 422 -> ``invalid_request`` (rejected) with the server's ``msg``;
  402 or ``model.api.max_cost_credits`` reached -> ``insufficient_credits`` /
  ``budget_exhausted`` for this row and every later one (nothing more is submitted).
- **Secrets**: the key is read from ``model.api.key_env`` in the actor's environment and
  sent only as the ``x-key`` header; it is never logged, stored or put in a message.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import numpy as np
from PIL import Image

from ..common import retries
from . import BACKENDS, Job, RowError
from .bfl_client import SUBMIT_PATH, TERMINAL, ApiClient, Journal, Reply, _detail, api_key


class BflApiBackend:
    spec = BACKENDS["bfl-api"]

    @classmethod
    def from_config(cls, model_cfg, context) -> BflApiBackend:
        out = context.output
        return cls(
            model_cfg, journal=Journal(out.uri, out.storage_options) if out is not None else None
        )

    def __init__(self, model_cfg, journal: Journal | None = None, client: ApiClient | None = None):
        self.cfg = model_cfg.api
        self.client = client or ApiClient(self.cfg, api_key(self.cfg))
        self.journal = journal
        self.slots = threading.BoundedSemaphore(self.cfg.max_active)
        self.lock = threading.Lock()
        self.active = 0  # tasks of this run in flight at the API
        self.committed = 0.0  # credits of tasks in flight (charged only if Ready)
        self.spent = 0.0  # credits of Ready tasks
        self.last_cost = 0.0
        self.stopped: tuple[str, str] | None = (
            None  # (code, message) once nothing more may be submitted
        )
        self.counts = {
            "submitted": 0,
            "ready": 0,
            "moderated": 0,
            "errors": 0,
            "resumed": 0,
            "reused": 0,
        }

    # ---------------------------------------------------------------- the backend interface
    def outpaint(self, jobs) -> list:
        """Each job on its own thread (each waits on its task; the slots bound how many run);
        a row's failure is its ``RowError`` in the list, never the batch's."""
        if len(jobs) == 1:
            return [self._guarded(jobs[0])]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(len(jobs), self.cfg.max_active + 8)) as pool:
            return list(pool.map(self._guarded, jobs))

    def _guarded(self, job: Job):
        try:
            return self.one(job)
        except RowError as e:
            return e

    def snapshot(self) -> tuple[int, float]:
        with self.lock:
            return self.active, round(self.spent, 4)

    # ---------------------------------------------------------------- one row
    def one(self, job: Job) -> np.ndarray:
        job.fill_color = "api"
        job.info = {"api_task_id": None, "cost_credits": None, "api_note": None}
        key = job.key or f"{job.x0}-{job.y0}-{job.width}x{job.height}-{job.seed}"
        saved = self.journal.result(key) if self.journal else None
        if saved is not None:  # downloaded by an earlier run that stopped before writing the image
            entry = self.journal.task(key) or {}
            job.info.update(
                api_task_id=entry.get("id"),
                cost_credits=entry.get("cost"),
                api_note="result reused from an earlier run (not paid again)",
            )
            with self.lock:
                self.counts["reused"] += 1
            return self._image(saved, job)
        entry = self.journal.task(key) if self.journal else None
        if entry is not None:
            with self.slots:  # a journaled task still counts against the account's limit
                with self.lock:
                    self.active += 1
                    self.counts["resumed"] += 1
                try:
                    got = self._follow(entry, job, key, resumed=True)
                finally:
                    with self.lock:
                        self.active -= 1
            if got is not None:
                return got
            job.info["api_note"] = (
                "an earlier run's task was no longer retrievable: submitted again"
            )
        return self._submit_and_follow(job, key)

    def _submit_and_follow(self, job: Job, key: str) -> np.ndarray:
        with self.slots:
            with self.lock:
                if self.stopped:
                    raise RowError(*self.stopped)
                budget = self.cfg.max_cost_credits
                if budget is not None and self.spent + self.committed + self.last_cost > budget:
                    self.stopped = (
                        "budget_exhausted",
                        f"model.api.max_cost_credits = {budget:g} reached "
                        f"({self.spent:g} spent, {self.committed:g} in flight): nothing more is submitted; "
                        "raise the budget and run again to continue",
                    )
                    raise RowError(*self.stopped)
                self.active += 1
            try:
                task = self._submit(job, key)
                return self._follow(task, job, key, resumed=False)
            finally:
                with self.lock:
                    self.active -= 1

    def _payload(self, job: Job) -> dict:
        buf = io.BytesIO()
        fmt = self.cfg.upload_format
        Image.fromarray(job.ref).save(
            buf,
            format="PNG" if fmt == "png" else "JPEG",
            **({"quality": 95} if fmt == "jpeg" else {}),
        )
        body = {
            "input_image": base64.b64encode(buf.getvalue()).decode(),
            "width": job.width,
            "height": job.height,
            "reference_offset_x": job.x0,
            "reference_offset_y": job.y0,
            "mode": job.mode,
            "output_format": self.cfg.result_format,
            "safety_tolerance": self.cfg.safety_tolerance,
        }
        if job.prompt:
            body["prompt"] = job.prompt
        return body

    def _submit(self, job: Job, key: str) -> dict:
        """POST the row's task; its journaled task. 429s and an unreachable API are waited
        out within ``max_wait_s``; a POST that may have reached the API is repeated at most
        once, and only with ``retry_ambiguous_submit``."""
        body = self._payload(job)
        url = self.client.endpoint + SUBMIT_PATH
        started = time.monotonic()
        repeated = []  # the one ambiguous repeat allowed, once spent

        def ambiguous(what: str, note: str, error: RowError) -> retries.RetryLater:
            if not self.cfg.retry_ambiguous_submit or repeated:
                raise error
            repeated.append(True)
            job.info["api_note"] = f"submitted twice after {note}: may have been charged twice"
            return retries.RetryLater(error, 0.0 if what == "lost" else None)

        def attempt(_):
            try:
                r = self.client.call("POST", url, body)
            except ConnectionError as e:
                if getattr(e, "sent", False):  # it may have been received: no blind second POST
                    raise ambiguous(
                        "lost",
                        "a lost answer",
                        RowError(
                            "generation_failed",
                            f"the submission's answer was lost ({e}): the task may exist and be "
                            "charged, so it was not submitted again; a rerun submits it "
                            "(model.api.retry_ambiguous_submit repeats it at once)",
                            {"api_note": "maybe submitted, not repeated"},
                        ),
                    ) from None
                error = RowError("generation_failed", f"the API could not be reached: {e}")
                raise retries.RetryLater(error) from None
            if r.status == 200 and r.body.get("id") and r.body.get("polling_url"):
                return self._submitted(r.body, job, key)
            if r.status == 429:
                waited = time.monotonic() - started
                error = RowError(
                    "generation_failed",
                    f"the API kept answering 429 (too many active tasks) for {waited:.0f} s; "
                    "lower model.api.max_active or run again",
                )
                raise retries.RetryLater(
                    error, retries.retry_after(retries.header(r.headers, "Retry-After"))
                )
            if r.status >= 500:  # it may have been received: no blind second POST
                raise ambiguous(
                    "5xx",
                    "a 5xx",
                    RowError(
                        "generation_failed",
                        f"the API answered {r.status} to the submission ({_detail(r.body)}): the task "
                        "may exist and be charged, so it was not submitted again; a rerun submits it",
                        {"api_note": "maybe submitted, not repeated"},
                    ),
                )
            raise self._refused(r)

        policy = retries.Policy(base=0.5, cap=10.0, max_wait_s=self.cfg.max_wait_s)
        return retries.call(attempt, policy)

    def _submitted(self, body: dict, job: Job, key: str) -> dict:
        """The accepted task, journaled before any poll: a crash from here on never pays again."""
        task = {
            "id": body["id"],
            "polling_url": body["polling_url"],
            "cost": body.get("cost"),
            "key": key,
            "row": job.row_id,
            "time": time.time(),
        }
        if self.journal is not None:
            self.journal.write_task(key, task)
        with self.lock:
            self.counts["submitted"] += 1
            cost = float(task["cost"] or 0.0)
            self.committed += cost
            self.last_cost = max(self.last_cost, cost)
        job.info.update(api_task_id=task["id"])
        return task

    def _refused(self, r: Reply) -> RowError:
        """A final answer other than a task: the row's error (402 and a refused key stop the run's submissions)."""
        if r.status == 422:
            return RowError("invalid_request", f"the API rejected the request: {_detail(r.body)}")
        if r.status == 402:
            with self.lock:
                self.stopped = (
                    "insufficient_credits",
                    f"the API answered 402 ({_detail(r.body)}): the account's credits are spent; "
                    "nothing more is submitted; top up and run again",
                )
            return RowError(*self.stopped)
        if r.status in (401, 403):
            with self.lock:
                self.stopped = (
                    "generation_failed",
                    f"the API refused the key ({r.status}: {_detail(r.body)}); "
                    f"check model.api.key_env ({self.cfg.key_env})",
                )
            return RowError(*self.stopped)
        return RowError("generation_failed", f"the API answered {r.status}: {_detail(r.body)}")

    def _follow(self, task: dict, job: Job, key: str, resumed: bool) -> np.ndarray | None:
        """Poll ``polling_url`` as given until the task ends; its image, or None when an
        earlier run's task can no longer be had (the caller submits again)."""
        job.info.update(api_task_id=task["id"], cost_credits=task.get("cost"))
        cost = float(task.get("cost") or 0.0)
        start, interval = time.time(), self.cfg.poll_interval_s
        outcome: dict = {}
        try:
            while True:
                time.sleep(interval)
                try:
                    r = self.client.call("GET", task["polling_url"])
                except ConnectionError:  # polling is safe to repeat
                    r = Reply(599, {}, {})
                status = r.body.get("status") if r.status == 200 else None
                if status in TERMINAL:
                    outcome = r.body
                    break
                if r.status in (401, 403):
                    raise RowError(
                        "generation_failed",
                        f"polling the task was refused ({r.status}); check "
                        f"model.api.key_env ({self.cfg.key_env})",
                    )
                if time.time() - start > self.cfg.task_timeout_s:
                    raise RowError(
                        "generation_failed",
                        f"task {task['id']} was still {status or 'unanswered'} after "
                        f"{self.cfg.task_timeout_s:g} s (model.api.task_timeout_s); it stays journaled: "
                        "a rerun polls it again instead of paying twice",
                    )
                interval = min(self.cfg.poll_max_interval_s, interval * 1.5)
            status = outcome["status"]
            if status == "Ready":
                try:
                    data = self.client.download(outcome["result"]["sample"])
                except Exception as e:  # noqa: BLE001 - an expired or lost result
                    if resumed:
                        return None
                    raise RowError(
                        "generation_failed",
                        f"task {task['id']} was Ready but its result could not be downloaded ({e})",
                    ) from None
                if self.journal is not None:
                    self.journal.write_result(key, data)
                with self.lock:
                    self.counts["ready"] += 1
                    self.spent += cost
                return self._image(data, job)
            if status == "Task not found":
                if resumed:
                    return None
                raise RowError(
                    "generation_failed",
                    f"the API no longer knows task {task['id']} (Task not found)",
                )
            job.info["cost_credits"] = 0.0  # moderated and failed tasks are not charged
            if status in ("Request Moderated", "Content Moderated"):
                with self.lock:
                    self.counts["moderated"] += 1
                raise RowError(
                    "moderated",
                    f"the API's moderation refused the {'input' if 'Request' in status else 'output'}"
                    f" ({status}; not charged): change the image or prompt, or model.api.safety_tolerance",
                )
            with self.lock:
                self.counts["errors"] += 1
            details = outcome.get("details")
            raise RowError(
                "generation_failed",
                f"the API reported Error for task {task['id']}"
                + (f": {json.dumps(details)[:300]}" if details else ""),
            )
        finally:
            with self.lock:
                self.committed = max(0.0, self.committed - cost)

    @staticmethod
    def _image(data: bytes, job: Job) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            rgb = im.convert("RGB")
            if rgb.size != (
                job.width,
                job.height,
            ):  # the canvas was planned exactly; never trust, resize
                rgb = rgb.resize((job.width, job.height), Image.LANCZOS)
            return np.asarray(rgb)
