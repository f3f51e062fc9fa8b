"""The Ray Serve application: an ingress that speaks the hosted API's contract and a
model deployment that runs the pipeline's own stages in batches.

- ``Api`` (FastAPI ingress, async): checks the key, the body and, through the batch
  planner, the geometry; accepts the task (its state in the output store), hands the
  planned row to the model deployment and follows it to the end; answers polls, credits
  and the signed result URLs.
- ``Outpainter``: ``@serve.batch`` gathers concurrent tasks into one call of the same
  load -> route -> outpaint -> write stages ``outpaint run`` uses (the backend groups a
  batch by generated shape: one model call per shape). Replicas, GPUs and the autoscaling
  range come from the config's ``serve`` section.

``application(cfg)`` builds it for ``outpaint serve``; ``build({"config": URI})`` is the
import path for ``serve run`` and a KubeRay ``RayService`` (docs/serving.md).
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations as
# objects (serve.ingress copies the class, so names would not resolve later)

import asyncio
import collections
import logging
import math
import os
import time

import pyarrow as pa
import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve

from ..backends import spec_of
from ..config import Config, dump, from_dict
from ..config.serve import LOOPBACK
from ..io.outputs import new_run_id
from ..run.cluster import model_resources
from . import contract
from .keys import FORBIDDEN, Keys, load_digests
from .tasks import ERROR, NOT_FOUND, PENDING, READY, Signer, TaskStore, is_task_id, new_task_id

log = logging.getLogger("ray.serve")
MEDIA = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}
KEPT = ("status", "error_code", "error_message", "output_uri", "canvas_width", "canvas_height")
KEPT += ("route", "digital_source_type", "seed", "generate_ms")
RECENT = 10_000  # finished tasks a replica answers from memory

app = FastAPI(title="outpaint serve", description="The hosted FLUX Outpainting API's contract")


# helpers first: serve.ingress copies the class when it decorates it, with the
# module's names as they are then


class Stalled(Exception):
    """A request body that stopped arriving (408)."""


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes | None:
    """The body, or None past ``limit`` bytes (read no further: a client cannot make the
    server buffer more than it allows); ``Stalled`` when no byte came for ``timeout_s``."""
    length = request.headers.get("content-length")
    if length and length.isascii() and length.isdigit() and int(length) > limit:
        return None
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), timeout_s)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise Stalled from None
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


# Serve pickles the deployments when they are declared: what their methods call is defined
# above them
def owner_tag(digest: str) -> str:
    """What a task records of the key that made it: a fingerprint of the key's digest
    (never the key), enough to tell its owner from every other key."""
    return digest[:16]


def _short(e: BaseException) -> str:
    if isinstance(e, asyncio.TimeoutError):
        return "the model did not answer within serve.task_timeout_s"
    first = (str(e).strip().splitlines() or [""])[0][:300]
    return f"the model deployment failed: {type(e).__name__}: {first}"


def _metrics() -> dict:
    """Prometheus metrics (Ray's metrics port), beside those Ray Serve keeps per route."""
    from ray.serve import metrics

    return {
        "tasks": metrics.Counter(
            "outpaint_serve_tasks", "tasks finished, by status", tag_keys=("status",)
        ),
        "seconds": metrics.Histogram(
            "outpaint_serve_task_seconds",
            "submit to finish",
            boundaries=[0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300],
        ),
    }


# --------------------------------------------------------------------------- the model


@serve.deployment
class Outpainter:
    """The pipeline's image stages for a batch of planned requests."""

    def __init__(self, config: dict, run_id: str, max_batch_size: int, batch_wait_s: float):
        from ..run.stages import stages

        self.stages = stages(from_dict(config), run_id)
        outpaint = self.stages.Outpaint
        self.model = outpaint(*self.stages.outpaint_args) if self.stages.needs_actor else None
        self.run.set_max_batch_size(max_batch_size)
        self.run.set_batch_wait_timeout_s(batch_wait_s)
        self.calls = 0

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.05)
    async def run(self, tables: list[pa.Table]) -> list[dict]:
        return await asyncio.to_thread(self._run, tables)

    def _run(self, tables: list[pa.Table]) -> list[dict]:
        self.calls += 1
        batch = pa.concat_tables(tables, promote_options="permissive")
        s = self.stages
        if self.model is None:
            out = s.process(batch)
        else:
            out = s.write(self.model(s.route(s.load(batch))))
        by_id = {row["id"]: row for row in out.select(["id", *KEPT]).to_pylist()}
        return [by_id[t.column("id")[0].as_py()] for t in tables]

    def stats(self) -> dict:
        """Model calls so far: how many batches the requests made (tests, benchmarks)."""
        return {"calls": self.calls}


# --------------------------------------------------------------------------- the ingress


# the ingress reserves no CPU: it waits on I/O, and a batch run may share the cluster
@serve.deployment(max_ongoing_requests=1000, ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class Api:
    def __init__(
        self,
        model,
        config: dict,
        run_id: str,
        key_digests: list[str],
        signing_secret: bytes,
        verbose: bool = False,
    ):
        from ..io.folder import OutputFolder
        from ..plan.stage import PlanStage

        cfg = from_dict(config)
        self.cfg, self.serve, self.model = cfg, cfg.serve, model
        self.planner = PlanStage(cfg, identify=True)
        self.keys = Keys(key_digests)
        folder = OutputFolder(cfg.output.uri, cfg.output.storage_options)
        self.tasks = TaskStore(folder, run_id, self.serve.task_timeout_s)
        self.signer = Signer(signing_secret, self.serve.result_ttl_s)
        self.verbose = verbose
        self.active: collections.Counter = collections.Counter()  # key digest -> pending tasks
        self.live: dict[str, dict] = {}  # this replica's pending tasks
        self.recent: collections.OrderedDict = collections.OrderedDict()
        self.following: set[asyncio.Task] = set()
        self.task_s = 5.0  # a running mean of task durations: Retry-After's estimate
        self.max_body = self.serve.max_body_bytes or (
            4 * math.ceil(cfg.limits.max_source_bytes / 3) + 65_536
        )
        self.metrics = _metrics()
        self.draining = False
        self.stopped: set[str] = set()  # tasks the drain gave up on
        lost = self.tasks.recover()
        if lost:
            log.warning("outpaint serve: %d task(s) of an earlier start ended Error", lost)

    # ------------------------------------------------------------------ submit
    @app.post(contract.PATH)
    async def submit(self, request: Request):
        """Refused in the documented order: 403 (key), 413 (size), 408 (a stalled body),
        422 (the body's shape, its image, then the planner), 429 (the key's limit)."""
        if self.draining:  # shutting down: finishing what it accepted, taking nothing new
            why = "the server is shutting down; submit again (another replica or its restart)"
            return JSONResponse({"detail": why}, 503, headers={"Retry-After": "5"})
        owner = self.keys.owner(request.headers.get("x-key"))
        if owner is None:
            return JSONResponse(FORBIDDEN, 403)
        base = self._base(request)
        if base is None:
            why = (
                "this Host is not one the server answers for: set serve.public_url or list it "
                "in serve.allowed_hosts"
            )
            return JSONResponse({"detail": why}, 400)
        try:
            body = await _read_body(request, self.max_body, self.serve.read_timeout_s)
        except Stalled:
            why = f"the request body stalled (serve.read_timeout_s = {self.serve.read_timeout_s:g})"
            return JSONResponse({"detail": why}, 408)
        if body is None:
            why = f"request body over {self.max_body:,} bytes (serve.max_body_bytes)"
            return JSONResponse({"detail": why}, 413)
        data, details = contract.decode(body)
        if details:
            return JSONResponse({"detail": details}, 422)
        req, details = contract.parse(data)
        if details:
            return JSONResponse({"detail": details}, 422)
        image, details = contract.image_bytes(req.input_image)
        if details:
            return JSONResponse({"detail": details}, 422)
        # the key's slot is taken before planning (no await between the check and the
        # count: concurrent submissions cannot all pass it) and given back on any refusal
        reserved = self._reserve(owner)
        try:
            task_id = new_task_id()
            planned = await asyncio.to_thread(self._plan, task_id, req, image)
            details = contract.plan_errors(planned)
            if details:
                return JSONResponse({"detail": details}, 422)
            if not reserved:
                return self._too_many()
            accepted = await self._accept(base, task_id, req, planned, owner)
            reserved = False  # the task holds the slot now, until it finishes
            return accepted
        finally:
            if reserved:
                self.active[owner] -= 1

    def _base(self, request: Request) -> str | None:
        """The address URLs are built on: ``serve.public_url``, else the request's own when
        its Host is a loopback name or in ``serve.allowed_hosts`` (a Host header never
        poisons a link otherwise); None: refuse."""
        if self.serve.public_url:
            return self.serve.public_url
        host = request.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if name in LOOPBACK or host in self.serve.allowed_hosts or name in self.serve.allowed_hosts:
            return str(request.base_url)
        return None

    def _reserve(self, owner: str) -> bool:
        """One of the key's ``serve.max_active_per_key`` slots, if one is free. The count is
        this ingress replica's (one by default): with several, each holds its own share."""
        if self.active[owner] >= self.serve.max_active_per_key:
            return False
        self.active[owner] += 1
        return True

    def _plan(self, task_id: str, req: contract.OutpaintRequest, image: bytes) -> pa.Table:
        return self.planner(contract.request_table(task_id, req, image))

    def _too_many(self) -> JSONResponse:
        detail = (
            f"more than serve.max_active_per_key = {self.serve.max_active_per_key} active "
            "tasks for this key; retry after one finishes"
        )
        wait = str(max(1, math.ceil(self.task_s)))
        return JSONResponse({"detail": detail}, 429, headers={"Retry-After": wait})

    async def _accept(self, base: str, task_id, req, planned: pa.Table, owner: str):
        row = planned.select(["source_width", "source_height", "canvas_width", "canvas_height"])
        row = row.to_pylist()[0]
        task = {
            "id": task_id,
            "status": PENDING,
            "submitted_at": time.time(),
            "width": row["canvas_width"],
            "height": row["canvas_height"],
            "output_format": req.output_format,
            "base": base,
            "owner": owner_tag(owner),  # a task is its key's alone
        }
        await asyncio.to_thread(self.tasks.accepted, task)
        self.live[task_id] = task
        follow = asyncio.create_task(self._follow(task, planned, owner))
        self.following.add(follow)
        follow.add_done_callback(self.following.discard)
        return {
            "id": task_id,
            "polling_url": f"{task['base'].rstrip('/')}/v1/get_result?id={task_id}",
            "cost": 0.0,
            "input_mp": round(row["source_width"] * row["source_height"] / 1e6, 4),
            "output_mp": round(row["canvas_width"] * row["canvas_height"] / 1e6, 4),
        }

    async def _follow(self, task: dict, planned: pa.Table, owner: str) -> None:
        """The task to its end: its final state in the store, the key's slot freed."""
        failure = None
        try:
            result = await asyncio.wait_for(self._call(planned), self.serve.task_timeout_s)
            final = self._final(task, result)
        except Exception as e:  # noqa: BLE001 - the task ends Error, the server goes on
            failure = ("generation_failed", _short(e))
            if self.draining:  # the model went away under the drain
                failure = ("server_stopped", f"the server stopped: {failure[1]}")
            final = {**task, "status": ERROR, "finished_at": time.time()}
            final["details"] = {"code": failure[0], "message": failure[1]}
        try:
            if task["id"] in self.stopped:  # the drain recorded it Error: drop what came late
                await asyncio.to_thread(self.tasks.drop_image, task)
                final = await asyncio.to_thread(self.tasks.get, task["id"]) or final
            elif failure is not None:  # the model may have written its image before it failed
                final = await asyncio.to_thread(self.tasks.stopped, task, failure[1], failure[0])
            else:
                await asyncio.to_thread(self.tasks.finished, final)
        finally:
            self.active[owner] -= 1
            self.live.pop(task["id"], None)
            self._remember(final)
        seconds = final["finished_at"] - task["submitted_at"]
        self.task_s = 0.9 * self.task_s + 0.1 * seconds
        self.metrics["tasks"].inc(tags={"status": final["status"]})
        self.metrics["seconds"].observe(seconds)
        if self.verbose:
            code = (final.get("details") or {}).get("code") or "-"
            log.info(
                "task %s %s %s %sx%s route=%s %.2f s",
                task["id"],
                final["status"],
                code,
                task["width"],
                task["height"],
                final.get("route"),
                seconds,
            )

    async def _call(self, planned: pa.Table) -> dict:
        return await self.model.run.remote(planned)

    async def drain(self) -> int:
        """Stop: take no new task (503), finish those accepted within ``serve.drain_s``,
        record each, and end the rest ``Error`` (``server_stopped``) with no image left
        behind; the count of the latter. ``outpaint serve`` calls it on SIGTERM or SIGINT
        before it deletes the application, while the model deployment is still up."""
        self.draining = True
        end = time.monotonic() + self.serve.drain_s
        while self.live and time.monotonic() < end:
            await asyncio.sleep(0.05)
        message = (
            f"the server stopped before this task finished (serve.drain_s = "
            f"{self.serve.drain_s:g} s); submit it again (not charged)"
        )
        stopped = [t for i, t in list(self.live.items()) if i not in self.stopped]
        for task in stopped:
            self.stopped.add(task["id"])
            await asyncio.to_thread(self.tasks.stopped, task, message)
        if stopped:
            log.warning("outpaint serve: %d task(s) stopped unfinished", len(stopped))
        return len(stopped)

    async def __del__(self):
        """Serve's shutdown of this replica (a RayService's rolling update, ``serve
        delete``): the same drain, unless ``outpaint serve`` drained it already."""
        await self.drain()

    def _final(self, task: dict, result: dict) -> dict:
        final = {**task, "finished_at": time.time(), "route": result.get("route")}
        if result["status"] == "ok":
            name = result["output_uri"].rsplit("/", 1)[-1]
            return {**final, "status": READY, "result_name": name, "seed": result.get("seed")}
        # the client's names in messages: its field is input_image, not the planner's column
        message = (result["error_message"] or "").replace("image_bytes", "input_image")
        details = {"code": result["error_code"], "message": message}
        return {**final, "status": ERROR, "details": details}

    def _remember(self, task: dict) -> None:
        self.recent[task["id"]] = task
        while len(self.recent) > RECENT:
            self.recent.popitem(last=False)

    # ------------------------------------------------------------------ poll
    @app.get("/v1/get_result")
    async def get_result(self, request: Request, id: str | None = None):
        owner = self.keys.owner(request.headers.get("x-key"))
        if owner is None:
            return JSONResponse(FORBIDDEN, 403)
        task = None
        if is_task_id(id):
            task = self.live.get(id) or self.recent.get(id)
            task = task or await asyncio.to_thread(self.tasks.get, id)
        if task is not None and task.get("owner") not in (None, owner_tag(owner)):
            task = None  # another key's task: the same answer as an unknown id
        return self._answer(id, task)

    def _answer(self, task_id, task: dict | None) -> dict:
        out = {"id": task_id, "status": NOT_FOUND, "result": None, "progress": None}
        out.update(details=None, preview=None)
        if task is None:
            return out
        out["status"] = task["status"]
        if task["status"] == READY:
            url = self.signer.url(task["base"], task["result_name"], task["finished_at"])
            out["result"] = {
                "sample": url,
                "width": task["width"],
                "height": task["height"],
                "seed": task.get("seed"),
                "route": task.get("route"),
                "start_time": task["submitted_at"],
                "end_time": task["finished_at"],
                "duration": task["finished_at"] - task["submitted_at"],
            }
        elif task["status"] == ERROR:
            out["details"] = task.get("details")
        return out

    @app.get("/v1/credits")
    async def credits(self, request: Request):
        if self.keys.owner(request.headers.get("x-key")) is None:
            return JSONResponse(FORBIDDEN, 403)
        return {"credits": self.serve.credits}

    # ------------------------------------------------------------------ delivery
    @app.get("/v1/delivery/{name}")
    async def delivery(self, name: str, exp: str | None = None, sig: str | None = None):
        why = self.signer.check(name, exp, sig)
        if why:
            return JSONResponse({"detail": why}, 403)
        data = await asyncio.to_thread(self.tasks.image, name)
        if data is None:
            return JSONResponse({"detail": "Not Found"}, 404)
        return Response(data, media_type=MEDIA[name.rsplit(".", 1)[-1]])


# --------------------------------------------------------------------------- building


def application(cfg: Config, verbose: bool = False):
    """The application for ``cfg``: keys read here (they go no further than digests)."""
    s = cfg.serve
    digests = load_digests(s)
    secret = os.environ.get(s.signing_key_env, "").encode() or os.urandom(32)
    run_id = new_run_id()
    config = dump(cfg)
    max_batch = s.max_batch_size or cfg.runtime.batch_size
    resources = model_resources(
        ray,
        cfg.model,
        cfg.runtime,
        spec_of(cfg.model),
        cpus=s.cpus_per_replica,
        gpus=s.gpus_per_replica,
    )
    replicas = (
        {"num_replicas": s.max_replicas}
        if s.min_replicas == s.max_replicas
        else {
            "autoscaling_config": {
                "min_replicas": s.min_replicas,
                "max_replicas": s.max_replicas,
                "target_ongoing_requests": s.target_ongoing_requests,
            }
        }
    )
    # the drain: Serve waits this long for a replica's shutdown (the ingress's __del__
    # finishing its tasks, the model replica's calls in flight) before it kills it
    grace = {"graceful_shutdown_timeout_s": s.drain_s + 10, "graceful_shutdown_wait_loop_s": 0.5}
    model = Outpainter.options(
        ray_actor_options=resources.options(),
        max_ongoing_requests=max(2 * max_batch, 8),
        **replicas,
        **grace,
    ).bind(config, run_id, max_batch, s.batch_wait_s)
    return Api.options(**grace).bind(model, config, run_id, digests, secret, verbose)


def build(args: dict):
    """``serve run pipeline.serve.app:build config=CONFIG`` / a RayService's import path:
    args ``config`` (a URI), optional ``set`` (a list of ``key.path=value``)."""
    from ..config import serve_config

    sets = args.get("set") or []
    cfg = serve_config(args["config"], [sets] if isinstance(sets, str) else list(sets))
    return application(cfg, verbose=bool(args.get("verbose")))
