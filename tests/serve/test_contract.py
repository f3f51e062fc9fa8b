"""The server's request contract without a server: the body's shape, base64, the planner's
codes as 422 fields, keys held as digests, signed URLs, task state in the output store."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from pipeline import api
from pipeline.config import ConfigError, ServeConfig
from pipeline.io.folder import OutputFolder
from pipeline.plan.stage import PlanStage
from pipeline.serve import contract
from pipeline.serve.keys import Keys, digest, load_digests
from pipeline.serve.tasks import ERROR, PENDING, READY, Signer, TaskStore, is_task_id, new_task_id


def png(w: int, h: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def body(data: bytes, **fields) -> dict:
    return {"input_image": base64.b64encode(data).decode(), **fields}


def test_unknown_fields_are_422_with_the_hint_and_no_echo():
    req, details = contract.parse(body(png(8, 8), width=64, height=64, bbox_x1=3, seed=7))
    assert req is None
    by_field = {d["loc"][1]: d for d in details}
    assert set(by_field) == {"bbox_x1", "seed"}
    assert by_field["bbox_x1"]["type"] == "extra_forbidden"
    assert "use reference_offset_x" in by_field["bbox_x1"]["msg"]
    assert all("input" not in d for d in details)  # megabytes of base64 are never echoed


@pytest.mark.parametrize(
    "fields,field,kind",
    [
        ({"height": 64}, "width", "missing"),
        ({"width": "wide", "height": 64}, "width", "int_type"),  # strict: a string is no int
        ({"width": 64, "height": 64, "mode": "slow"}, "mode", "literal_error"),
        ({"width": 64, "height": 64, "output_format": "gif"}, "output_format", "literal_error"),
        ({"width": 64, "height": 64, "safety_tolerance": 6}, "safety_tolerance", "less_than_equal"),
        ({"width": 10**30, "height": 64}, "width", "less_than"),  # never an overflow (500)
        (
            {"width": 64, "height": 64, "reference_offset_y": -(10**12)},
            "reference_offset_y",
            "greater_than_equal",
        ),
    ],
)
def test_the_body_shape(fields, field, kind):
    _, details = contract.parse(body(png(8, 8), **fields))
    assert [(d["loc"], d["type"]) for d in details] == [(["body", field], kind)]


def test_input_image_must_be_base64_of_bytes_not_a_url():
    data = png(20, 10)
    wrapped = base64.encodebytes(data).decode()  # with newlines, as many encoders write it
    assert contract.image_bytes(wrapped) == (data, [])
    for bad, kind in [("not base64!", "base64_decode"), ("", "image_unreadable")]:
        got, details = contract.image_bytes(bad)
        assert (
            got is None
            and details[0]["type"] == kind
            and details[0]["loc"] == ["body", "input_image"]
        )
    _, details = contract.image_bytes("https://example.com/a.png")
    assert details[0]["type"] == "url_not_accepted"


def planned(cfg, data: bytes, **fields) -> pa.Table:
    req, details = contract.parse(body(data, **fields))
    assert not details
    return PlanStage(cfg, identify=True)(contract.request_table(new_task_id(), req, data))


@pytest.mark.parametrize(
    "src,fields,field,code",
    [
        ((64, 64), dict(width=63, height=64), "width", "canvas_too_small"),
        ((64, 64), dict(width=64, height=63), "height", "canvas_too_small"),
        ((64, 64), dict(width=2049, height=2048), "width", "canvas_too_large"),
        (
            (64, 64),
            dict(width=100, height=100, reference_offset_x=37),
            "reference_offset_x",
            "out_of_bounds",
        ),
        (
            (64, 64),
            dict(width=100, height=100, reference_offset_y=-1),
            "reference_offset_y",
            "out_of_bounds",
        ),
        (
            (200, 100),
            dict(
                width=300, height=300, reference_offset_x=0, reference_offset_y=300, auto_crop=True
            ),
            "reference_offset_y",
            "no_overlap",
        ),
        (
            (63, 200),
            dict(width=1024, height=1024, reference_offset_x=0, reference_offset_y=0, mode="fast"),
            "mode",
            "reference_too_small",
        ),
        (
            (801, 100),
            dict(width=1024, height=1024, reference_offset_x=0, reference_offset_y=0, mode="fast"),
            "mode",
            "reference_aspect",
        ),
        (
            (1000, 1000),
            dict(width=2048, height=2048, mode="fast"),
            "mode",
            "aligned_canvas_too_large",
        ),
        ((64, 64), dict(width=100, height=100, prompt="x" * 2001), "prompt", "prompt_too_long"),
    ],
)
def test_planner_codes_name_the_request_field(tmp_path, src, fields, field, code):
    cfg = api.serve_config({"output": {"uri": str(tmp_path)}})
    details = contract.plan_errors(planned(cfg, png(*src), **fields))
    assert [(d["loc"], d["type"]) for d in details] == [(["body", field], code)]
    assert details[0]["msg"]  # the planner's own message


def test_an_accepted_request_has_no_details(tmp_path):
    cfg = api.serve_config({"output": {"uri": str(tmp_path)}})
    out = planned(
        cfg, png(64, 64), width=100, height=100, reference_offset_x=36, reference_offset_y=36
    )
    assert contract.plan_errors(out) == []
    row = out.to_pylist()[0]
    assert (row["canvas_width"], row["offset_x"], row["visible_x1"]) == (100, 36, 100)


def test_a_non_image_is_422_on_input_image(tmp_path):
    """What the header says is checked at submit; a body truncated after a valid header
    fails when decoded, as the task's Error (tests/serve/test_serve.py)."""
    cfg = api.serve_config({"output": {"uri": str(tmp_path)}})
    details = contract.plan_errors(
        planned(cfg, b"%PDF-1.7 not an image" * 20, width=100, height=100)
    )
    assert details[0]["loc"] == ["body", "input_image"] and details[0]["type"] == "image_unreadable"
    assert "input_image" in details[0]["msg"] and "image_bytes" not in details[0]["msg"]


# ------------------------------------------------------------------ keys


def test_keys_from_the_environment_or_a_file_held_as_digests(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_KEYS", " k1 , k2,,")
    held = load_digests(ServeConfig(keys_env="MY_KEYS"))
    assert held == sorted([digest("k1"), digest("k2")]) and "k1" not in repr(held)
    keys = Keys(held)
    assert keys.owner("k2") == digest("k2")
    assert keys.owner("k3") is None and keys.owner("") is None and keys.owner(None) is None
    f = tmp_path / "keys.txt"
    f.write_text("# ops rotates these\nfile-key\n\n")
    assert load_digests(ServeConfig(keys_file=str(f))) == [digest("file-key")]
    monkeypatch.delenv("MY_KEYS")
    with pytest.raises(ConfigError, match=r"no API keys in \$MY_KEYS.*serve.keys_file"):
        load_digests(ServeConfig(keys_env="MY_KEYS"))


# ------------------------------------------------------------------ signed URLs, task state


def test_signed_urls_expire_and_refuse_tampering():
    signer = Signer(b"s" * 32, ttl_s=600)
    name = f"{new_task_id()}.png"
    url = signer.url("http://h:1/", name, finished_at=time.time())
    assert url.startswith(f"http://h:1/v1/delivery/{name}?exp=")
    query = dict(p.split("=") for p in url.split("?")[1].split("&"))
    assert signer.check(name, query["exp"], query["sig"]) is None
    assert signer.check(name, str(int(query["exp"]) + 1), query["sig"]) == "Invalid signature"
    assert (
        signer.check(name.replace(".png", ".jpg"), query["exp"], query["sig"])
        == "Invalid signature"
    )
    assert Signer(b"t" * 32, 600).check(name, query["exp"], query["sig"]) == "Invalid signature"
    assert signer.check("../../etc/passwd", query["exp"], query["sig"]) == "Invalid signature"
    old = signer.url("http://h:1", name, finished_at=time.time() - 601)
    q = dict(p.split("=") for p in old.split("?")[1].split("&"))
    assert signer.check(name, q["exp"], q["sig"]) == "Request has expired"


def test_task_state_survives_a_restart_and_lost_tasks_end_error(tmp_path):
    folder = OutputFolder(str(tmp_path))
    first = TaskStore(folder, "start-1", timeout_s=900)
    done, lost = new_task_id(), new_task_id()
    now = time.time()
    for tid in (done, lost):
        first.accepted({"id": tid, "status": PENDING, "submitted_at": now})
    first.finished({"id": done, "status": READY, "submitted_at": now, "finished_at": now})
    assert first.get(lost)["status"] == PENDING
    second = TaskStore(folder, "start-2", timeout_s=900)
    assert second.recover() == 1
    assert second.get(done)["status"] == READY
    gone = second.get(lost)
    assert gone["status"] == ERROR and gone["details"]["code"] == "server_restarted"
    assert folder.names("serve/pending") == []
    # a task of this start that never finishes reads Error once past the timeout
    stuck = new_task_id()
    second.accepted({"id": stuck, "status": PENDING, "submitted_at": now - 901})
    assert second.get(stuck)["status"] == ERROR
    assert second.get(new_task_id()) is None


def test_only_ids_this_server_makes_reach_the_store():
    assert is_task_id(new_task_id())
    for bad in ("../x", "a" * 36, None, 5, new_task_id() + "/../../x", new_task_id().upper()):
        assert not is_task_id(bad)


def test_decode_bounds_what_it_parses():
    from pipeline.serve.contract import MAX_DEPTH, decode

    assert decode(b'{"width": 300}') == ({"width": 300}, [])
    for raw, why in (
        (b"\xe9", "not UTF-8"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested"),
        (b'{"width": 1' + b"0" * 30 + b"}", "characters"),
        (b'{"x": NaN}', "not JSON"),
        (b'{"prompt": "a\\ud800b"}', "not text"),
        (b"{", "JSON decode error"),
    ):
        data, details = decode(raw)
        assert data is None and why in details[0]["msg"], (raw[:20], details)
    # brackets inside strings are text, not nesting
    deep_text = b'{"prompt": "' + b"[" * 100 + b'"}'
    assert decode(deep_text)[1] == []


def test_integers_are_integers_and_booleans_booleans():
    from pipeline.serve.contract import parse

    base = {"input_image": "eA==", "width": 300, "height": 300}
    assert parse(base)[1] == []
    for field, value in (("width", "300"), ("width", 300.0), ("height", True), ("auto_crop", 1)):
        _, details = parse({**base, field: value})
        assert details and details[0]["loc"] == ["body", field], (field, value, details)


def test_a_delivery_exp_is_ascii_digits():
    from pipeline.serve.tasks import Signer

    signer = Signer(b"k" * 32, 600)
    for exp in ("²", "①", "9" * 5000, "-1", " 1"):
        assert (
            signer.check("0123456789abcdef0123456789abcdef.png", exp, "ab") == "Invalid signature"
        )


def test_a_task_the_drain_gave_up_on_leaves_no_image(tmp_path):
    """Ended ``server_stopped``; an image the model replica writes after the process is
    gone is removed by the next start; a Ready task's image is never touched."""
    from pipeline.io.folder import OutputFolder
    from pipeline.serve.tasks import ERROR, PENDING, READY, TaskStore, new_task_id

    folder = OutputFolder(str(tmp_path))
    store = TaskStore(folder, "start-1", 900)
    stopped = {"id": new_task_id(), "status": PENDING, "submitted_at": 1.0, "output_format": "png"}
    ready = {**stopped, "id": new_task_id()}
    for task in (stopped, ready):
        store.accepted(task)
        folder.put(f"images/{task['id']}.png", b"png")
    store.finished({**ready, "status": READY, "result_name": f"{ready['id']}.png"})
    store.stopped(stopped, "stopped")
    assert store.get(stopped["id"])["details"]["code"] == "server_stopped"
    assert store.get(stopped["id"])["status"] == ERROR
    assert not (tmp_path / "images" / f"{stopped['id']}.png").exists()
    folder.put(f"images/{stopped['id']}.png", b"late")  # the model replica, after the drain
    TaskStore(folder, "start-2", 900).recover()
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [f"{ready['id']}.png"]
    assert not list((tmp_path / "serve" / "stopped").iterdir())
