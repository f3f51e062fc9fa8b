"""Task state and result URLs, kept in the output store (not only in a replica's memory),
so a restarted server still answers for every task it accepted.

Layout under ``output.uri``: ``serve/pending/{id}.json`` while a task runs (written when it
is accepted), ``serve/tasks/{id}.json`` once it ends (Ready or Error), the image in
``images/`` as ``outpaint run`` writes it. A start marks every task an earlier start
left pending ``Error`` (it will never finish: its process is gone); a pending task older
than ``serve.task_timeout_s`` reads as ``Error`` too, so nothing stays ``Pending`` forever.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import posixpath
import re
import time
import uuid
from urllib.parse import urlencode

from ..io.folder import OutputFolder
from ..io.images import HELD, IMAGES, image_name

PENDING, READY, ERROR, NOT_FOUND = "Pending", "Ready", "Error", "Task not found"
TASK_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
RESULT_NAME = re.compile(r"^([0-9a-f-]{36})\.(png|jpg|webp)$")
DELIVERY = "/v1/delivery"


def new_task_id() -> str:
    return str(uuid.uuid4())


def is_task_id(value: object) -> bool:
    """Only ids this server could have made reach the store (no path from a client)."""
    return isinstance(value, str) and TASK_ID.match(value) is not None


class TaskStore:
    """``serve/`` of one output folder."""

    def __init__(self, folder: OutputFolder, server_id: str, timeout_s: float):
        self.folder = folder
        self.server_id = server_id  # this start of the server: its pending tasks are live
        self.timeout_s = timeout_s

    def accepted(self, task: dict) -> None:
        self._put(self._pending(task["id"]), {**task, "server": self.server_id})

    def finished(self, task: dict) -> None:
        """The task's final state, then its pending marker gone (a crash in between leaves
        both: the final one wins when read)."""
        self._put(self._final(task["id"]), task)
        self.folder.remove(self._pending(task["id"]))

    def _put(self, name: str, task: dict) -> None:
        # put: a reader never sees half a file (local: write then rename)
        self.folder.put(name, json.dumps(task).encode())

    def get(self, task_id: str) -> dict | None:
        for name in (self._final(task_id), self._pending(task_id)):
            try:
                return self._expire(self.folder.read_json(name))
            except FileNotFoundError:
                continue
        return None

    def _expire(self, task: dict) -> dict:
        overdue = time.time() - task.get("submitted_at", 0) > self.timeout_s
        if task["status"] == PENDING and overdue:
            return self.failed(task, "server_restarted", self._lost(task))
        return task

    def _lost(self, task: dict) -> str:
        return (
            f"the task did not finish within serve.task_timeout_s = {self.timeout_s:g} s "
            "(the server restarted or the model stalled); submit it again (not charged)"
        )

    def failed(self, task: dict, code: str, message: str) -> dict:
        """The task ends ``Error``; an image the model wrote for it is removed (nothing
        stays under images/ that no Ready task points to)."""
        done = {**task, "status": ERROR, "finished_at": time.time()}
        done["details"] = {"code": code, "message": message}
        self.finished(done)
        self.drop_image(task)
        return done

    def drop_image(self, task: dict) -> None:
        if task.get("output_format"):
            name = image_name(task["id"], task["output_format"])
            for directory in (IMAGES, HELD):
                self.folder.remove(posixpath.join(directory, name))

    def stopped(self, task: dict, message: str, code: str = "server_stopped") -> dict:
        """A task that ended before the model answered (the server stopped, the model
        failed): ``Error`` (``code``), and first a marker, so an image the model replica
        writes after this (or after the process is gone) is removed by the next start."""
        self._put(posixpath.join("serve", "stopped", f"{task['id']}.json"), task)
        return self.failed(task, code, message)

    def recover(self) -> int:
        """Tasks an earlier start of the server left pending end ``Error``, and images
        written for the tasks it stopped are removed; the count of the former."""
        for name in self.folder.names(posixpath.join("serve", "stopped")):
            marker = posixpath.join("serve", "stopped", name)
            self.drop_image(self.folder.read_json(marker))
            self.folder.remove(marker)
        lost = 0
        for name in self.folder.names(posixpath.join("serve", "pending")):
            task = self.folder.read_json(posixpath.join("serve", "pending", name))
            if task.get("server") != self.server_id and task["status"] == PENDING:
                message = (
                    "the server restarted before this task finished; submit it again (not charged)"
                )
                self.failed(task, "server_restarted", message)
                lost += 1
        return lost

    def image(self, name: str) -> bytes | None:
        """A result's bytes: under images/, or held/ where the quality gate held it (the
        API's client asked for it and decides what to publish)."""
        for directory in (IMAGES, HELD):
            try:
                return self.folder.read_bytes(posixpath.join(directory, name))
            except FileNotFoundError:
                continue
        return None

    @staticmethod
    def _pending(task_id: str) -> str:
        return posixpath.join("serve", "pending", f"{task_id}.json")

    @staticmethod
    def _final(task_id: str) -> str:
        return posixpath.join("serve", "tasks", f"{task_id}.json")


class Signer:
    """HMAC-signed, expiring result URLs (as the hosted API's delivery URLs are)."""

    def __init__(self, secret: bytes, ttl_s: float):
        self.secret = secret
        self.ttl_s = ttl_s

    def _sig(self, name: str, expires: int) -> str:
        msg = f"{name}\n{expires}".encode()
        return hmac.new(self.secret, msg, hashlib.sha256).hexdigest()

    def url(self, base: str, name: str, finished_at: float) -> str:
        expires = math.ceil(finished_at + self.ttl_s)
        query = urlencode({"exp": expires, "sig": self._sig(name, expires)})
        return f"{base.rstrip('/')}{DELIVERY}/{name}?{query}"

    def check(self, name: str, exp: str | None, sig: str | None) -> str | None:
        """None when the URL is genuine and current; else why not (403)."""
        # ASCII digits only, and few: str.isdigit() takes "²" and "①", which int() refuses
        if not exp or not sig or not (exp.isascii() and exp.isdigit() and len(exp) <= 12):
            return "Invalid signature"
        if RESULT_NAME.match(name) is None:
            return "Invalid signature"
        if not hmac.compare_digest(self._sig(name, int(exp)), sig):
            return "Invalid signature"
        if int(exp) < time.time():
            return "Request has expired"
        return None
