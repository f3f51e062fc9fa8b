"""The hosted FLUX Outpainting API's request contract, as this server checks it.

A request passes two checks, in the hosted API's order: its body's shape (fields, types,
enums; unknown fields refused, with the hint the manifest reader gives for names from
other tools), then the batch planner itself on a one-row table (``PlanStage``: the same
geometry rules, codes and messages as ``outpaint run``). Both answer FastAPI-style 422
details: ``{"loc": ["body", field], "msg": ..., "type": ...}``; a geometry or image
rule's ``type`` is the planner's code (``out_of_bounds``, ``image_unreadable``...).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..common.codes import GEOMETRY_CODES, IMAGE_CODES
from ..io.manifest import HINTS

PATH = "/v1/flux-tools/outpainting-v1"
MODE_RULES = ("reference_too_small", "reference_aspect", "aligned_canvas_too_large")
_ASCII_SPACE = re.compile(rb"[ \t\r\n]+")
INT32 = 2**31
MAX_DEPTH = 32  # nesting of a request body: the documented one is flat
MAX_DIGITS = 20  # of a JSON number: 32-bit fields need 11
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)  # a JSON string (unrolled: runs at C speed)
OPEN, CLOSE = (ord("["), ord("{")), (ord("]"), ord("}"))


class OutpaintRequest(BaseModel):
    """The documented body of ``POST /v1/flux-tools/outpainting-v1``. Geometry (sizes,
    offsets, the 4 MP limit, fast mode's rules) is not checked here but by the planner."""

    # strict: integers are JSON integers and booleans are booleans, as documented ("1024",
    # 1024.0 or true for a width, "yes" or 1 for auto_crop are 422s, never guessed at)
    model_config = ConfigDict(extra="forbid", strict=True)

    input_image: str = Field(description="base64 of the encoded reference image")
    # 32-bit bounds only (the planner's columns): the 64-px minimum and the 4 MP limit are
    # the planner's rules, answered with its codes
    width: int = Field(ge=-INT32, lt=INT32)
    height: int = Field(ge=-INT32, lt=INT32)
    reference_offset_x: int | None = Field(None, ge=-INT32, lt=INT32)
    reference_offset_y: int | None = Field(None, ge=-INT32, lt=INT32)
    auto_crop: bool = False
    mode: Literal["high", "fast"] = "high"
    output_format: Literal["png", "jpeg", "webp"] = "png"
    prompt: str | None = None
    safety_tolerance: int = Field(2, ge=0, le=5)


def error(field: str | None, msg: str, kind: str) -> dict:
    loc = ["body", field] if field else ["body"]
    return {"loc": loc, "msg": msg, "type": kind}


def decode(body: bytes) -> tuple[object, list[dict]]:
    """The body as JSON, or the 422 details saying why not: not UTF-8, not JSON, nested
    deeper than ``MAX_DEPTH``, a number longer than ``MAX_DIGITS`` digits, NaN/Infinity, a
    string holding a lone surrogate (not text: no encoder downstream takes it). Bounded
    before parsing, so no body can exhaust the parser's stack or the int conversion."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, [error(None, f"body is not UTF-8 (byte {e.start})", "json_invalid")]
    depth = _depth(text)
    if depth > MAX_DEPTH:
        return None, [
            error(None, f"JSON nested {depth} deep (at most {MAX_DEPTH})", "json_invalid")
        ]

    def number(kind):
        def parse_number(s: str):
            if len(s) > MAX_DIGITS:
                raise ValueError(f"a number of {len(s)} characters (at most {MAX_DIGITS})")
            return kind(s)

        return parse_number

    def constant(name: str):
        raise ValueError(f"{name} is not JSON")

    try:
        data = json.loads(
            text, parse_int=number(int), parse_float=number(float), parse_constant=constant
        )
    except json.JSONDecodeError as e:
        return None, [error(None, f"JSON decode error: {e.msg}", "json_invalid")]
    except (ValueError, RecursionError) as e:
        return None, [error(None, f"JSON decode error: {e}", "json_invalid")]
    bad = _not_text(data)
    if bad is not None:
        return None, [error(bad, "a string that is not text (a lone surrogate)", "string_type")]
    return data, []


def _depth(text: str) -> int:
    """How deep ``[`` and ``{`` nest outside strings: the strings cut out by one regular
    expression (C speed over a megabyte of base64), then a running count in NumPy."""
    import numpy as np

    skeleton = _STRING.sub('""', text).encode("utf-8", "replace")
    chars = np.frombuffer(skeleton, np.uint8)
    step = np.isin(chars, OPEN).astype(np.int64) - np.isin(chars, CLOSE).astype(np.int64)
    return int(np.cumsum(step).max(initial=0))


def _not_text(data) -> str | None:
    """The field (or key) of the first string that does not encode as UTF-8, if any."""
    items = (
        data.items()
        if isinstance(data, dict)
        else enumerate(data if isinstance(data, list) else [])
    )
    for key, value in items:
        for s in (key, value):
            if isinstance(s, str):
                try:
                    s.encode("utf-8")
                except UnicodeEncodeError:
                    return str(key).encode("utf-8", "replace").decode()
        if isinstance(value, (dict, list)) and _not_text(value) is not None:
            return str(key).encode("utf-8", "replace").decode()
    return None


def parse(body: object) -> tuple[OutpaintRequest | None, list[dict]]:
    """The body as a request, or FastAPI-style details of what is wrong with it. The
    details never echo a value back (``input_image`` is megabytes, and untrusted)."""
    try:
        return OutpaintRequest.model_validate(body), []
    except ValidationError as e:
        details = []
        for err in e.errors():
            loc, msg = ["body", *err["loc"]], err["msg"]
            name = str(err["loc"][0]) if err["loc"] else ""
            if err["type"] == "extra_forbidden" and name.lower() in HINTS:
                msg = f"{msg}: {_api_hint(name)}"
            details.append({"loc": loc, "msg": msg, "type": err["type"]})
        return None, details


def _api_hint(name: str) -> str:
    """The manifest reader's hint, in this endpoint's words (its fields, not columns)."""
    hint = HINTS[name.lower()]
    return hint.replace("use image", "use input_image").replace(
        "use aspect_ratio", "use width, height"
    )


def image_bytes(value: str) -> tuple[bytes | None, list[dict]]:
    """``input_image`` decoded, or the 422 detail saying why not."""
    if value.startswith(("http://", "https://")):
        msg = "this server takes the image itself, base64-encoded, not a URL"
        return None, [error("input_image", msg, "url_not_accepted")]
    try:
        data = base64.b64decode(_ASCII_SPACE.sub(b"", value.encode("ascii")), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None, [error("input_image", "not valid base64", "base64_decode")]
    if not data:
        return None, [error("input_image", "empty image", "image_unreadable")]
    return data, []


REQUEST_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("image_bytes", pa.binary()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("reference_offset_x", pa.int64()),
        ("reference_offset_y", pa.int64()),
        ("auto_crop", pa.bool_()),
        ("mode", pa.string()),
        ("output_format", pa.string()),
        ("prompt", pa.string()),
        ("manifest_row", pa.int64()),
    ]
)


def request_table(task_id: str, req: OutpaintRequest, data: bytes) -> pa.Table:
    """The request as a one-row manifest for the planner (null offsets: its anchor places)."""
    return pa.Table.from_pylist(
        [{**manifest_row(task_id, req, data), "manifest_row": 0}], REQUEST_SCHEMA
    )


def manifest_row(task_id: str, req: OutpaintRequest, data: bytes) -> dict:
    return {
        "id": task_id,
        "image_bytes": data,
        "width": req.width,
        "height": req.height,
        "reference_offset_x": req.reference_offset_x,
        "reference_offset_y": req.reference_offset_y,
        "auto_crop": req.auto_crop,
        "mode": req.mode,
        "output_format": req.output_format,
        "prompt": req.prompt,
    }


def plan_errors(planned: pa.Table) -> list[dict]:
    """The planner's verdict on a one-row table as 422 details (empty: accepted)."""
    row = planned.slice(0, 1).to_pylist()[0]
    code = row["error_code"]
    if not code:
        return []
    message = row["error_message"].replace("image_bytes", "input_image")
    return [error(field_of(code, row), message, code)]


def field_of(code: str, row: dict) -> str | None:
    """The request field a planner code is about."""
    if code in IMAGE_CODES:
        return "input_image"
    if code == "prompt_too_long":
        return "prompt"
    if code == "canvas_too_small":
        return "width" if (row["canvas_width"] or 0) < 64 else "height"
    if code in ("canvas_too_large", "preset_too_small"):
        return "width"
    if code in MODE_RULES:
        return "mode"
    if code in GEOMETRY_CODES:  # out_of_bounds, no_overlap: the axis that is off
        x_ok = _inside(row) if code == "out_of_bounds" else _overlaps(row)
        return "reference_offset_y" if x_ok else "reference_offset_x"
    return None


def _inside(row: dict) -> bool:
    """The reference's columns all on the canvas."""
    x, w, W = row["offset_x"], row["reference_width"], row["canvas_width"]
    return None not in (x, w, W) and x >= 0 and x + w <= W


def _overlaps(row: dict) -> bool:
    """Some of the reference's columns on the canvas."""
    x, w, W = row["offset_x"], row["reference_width"], row["canvas_width"]
    return None not in (x, w, W) and x < W and x + w > 0
