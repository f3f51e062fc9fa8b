"""``docs/configuration.md``, generated from the config's pydantic models, so the page
cannot drift from what the code accepts (a test regenerates it and compares).

    python -m pipeline.config.doc > docs/configuration.md
"""

from __future__ import annotations

import json
import sys
import types
import typing
from typing import Literal, Union

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from . import Config

HEADER = """\
# Configuration

<!-- generated from pipeline/config/ by `python -m pipeline.config.doc`; do not edit by hand -->

One YAML file per run. Only `input.manifest` and `output.uri` are required; every other
key has the default shown. Unknown keys and bad values stop the run before any work, with
one line naming the key. Any key can be set on the command line:
`outpaint run CONFIG --set runtime.seed=7 --set defaults.aspect_ratio=4:5`.
`configs/reference.yaml` lists every key with its default, as YAML.
"""


def _sub_model(annotation) -> type[BaseModel] | None:
    """The section model a field holds (also inside ``Optional[...]``)."""
    for t in (annotation, *typing.get_args(annotation)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def type_name(annotation) -> str:
    """A field's type as a reader of YAML sees it."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(f"`{a}`" for a in args)
    if origin in (Union, types.UnionType):
        names = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is dict:
        return "mapping"
    if origin is list:
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is tuple:
        return f"[{', '.join(type_name(a) for a in args)}]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(
        annotation, str(annotation)
    )


def _bounds(field: FieldInfo) -> str:
    """The field's numeric range, as ``1 ≤ x ≤ 256``."""
    low = high = ""
    for m in field.metadata:
        if isinstance(m, Ge):
            low = f"≥ {m.ge:,}"
        elif isinstance(m, Gt):
            low = f"> {m.gt:,}"
        elif isinstance(m, Le):
            high = f"≤ {m.le:,}"
        elif isinstance(m, Lt):
            high = f"< {m.lt:,}"
    return ", ".join(b for b in (low, high) if b)


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, tuple):
        value = list(value)
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _doc(model: type[BaseModel]) -> str:
    doc = (model.__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split()) if doc and not doc.startswith("!!!") else ""


def section(model: type[BaseModel], path: str, level: int = 2) -> list[str]:
    """One section's table, then its sub-sections."""
    lines = [f"{'#' * level} `{path}`", ""]
    if _doc(model):
        lines += [_doc(model), ""]
    lines += ["| key | type | default | what it does |", "|---|---|---|---|"]
    subs = []
    for name, field in model.model_fields.items():
        sub = _sub_model(field.annotation)
        kind = type_name(field.annotation)
        bounds = _bounds(field)
        kind += f" ({bounds})" if bounds else ""
        described = _cell(field.description or "")
        key = f"{path}.{name}"
        default = default_text(field) if sub is None else f"see [`{key}`](#{key.replace('.', '')})"
        lines.append(f"| `{key}` | {'section' if sub else _cell(kind)} | {default} | {described} |")
        if sub is not None:
            subs.append((sub, f"{path}.{name}"))
    lines.append("")
    for sub, sub_path in subs:
        lines += section(sub, sub_path, min(level + 1, 4))
    return lines


def render() -> str:
    lines = [HEADER]
    top = []
    for name, field in Config.model_fields.items():
        model = _sub_model(field.annotation)
        if model is None:  # a top-level key, not a section (preset)
            top.append((name, field))
            continue
        lines += section(model, name)
    if top:
        lines += [
            "## top level",
            "",
            "| key | type | default | what it does |",
            "|---|---|---|---|",
        ]
        for name, field in top:
            kind = _cell(type_name(field.annotation))
            described = _cell(field.description or "")
            lines.append(f"| `{name}` | {kind} | {default_text(field)} | {described} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
