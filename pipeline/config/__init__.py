"""Run configuration: YAML -> validated, typed model.

Validated once, at start: unknown keys and bad values raise ``ConfigError`` whose
message names the key path and what is allowed, before any work is done. The sections
live beside this file, one module per concern (``source``, ``model``, ``output``,
``runtime``, ``serve``); everything is importable from here, with ``load_config`` (a
file, a dict or a Config) and ``serve_config``; ``doc`` renders the configuration page.
``checkpoints``, ``families`` and ``licenses`` read what a diffusers checkpoint declares
(class, recipe, licence) so a wrong one fails here, before any work.

May import: ``common``. Every other layer imports this one.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from ..common import secrets, storage
from . import presets
from .base import ConfigError
from .base import Section as _Section
from .model import (
    ATTENTION_BACKENDS,
    SHAPE,
    ApiConfig,
    BackdropConfig,
    ModelConfig,
    OptimizeConfig,
    SceneConfig,
)
from .output import DIGITAL_SOURCE_TYPES, NEWSCODES, C2paConfig, ImageEncoding, OutputConfig
from .quality import QualityConfig, QualityThresholds
from .runtime import PlanConfig, RuntimeConfig
from .serve import ServeConfig
from .source import (
    ANCHORS,
    GRID,
    MAX_PIXELS_CEILING,
    Anchor,
    Defaults,
    HttpConfig,
    InputConfig,
    LimitsConfig,
    Mode,
    OutputFormat,
    SizingConfig,
    parse_ratio,
)

__all__ = [
    "ANCHORS",
    "ATTENTION_BACKENDS",
    "DIGITAL_SOURCE_TYPES",
    "GRID",
    "MAX_PIXELS_CEILING",
    "NEWSCODES",
    "SHAPE",
    "Anchor",
    "ApiConfig",
    "BackdropConfig",
    "SceneConfig",
    "C2paConfig",
    "Config",
    "ConfigError",
    "Defaults",
    "Fraction",
    "HttpConfig",
    "ImageEncoding",
    "InputConfig",
    "LimitsConfig",
    "Mode",
    "ModelConfig",
    "OptimizeConfig",
    "OutputConfig",
    "OutputFormat",
    "PlanConfig",
    "RuntimeConfig",
    "ServeConfig",
    "QualityConfig",
    "QualityThresholds",
    "SizingConfig",
    "apply_overrides",
    "dump",
    "from_dict",
    "load",
    "parse_ratio",
    "parse_yaml",
]


class Config(_Section):
    """One run: YAML, validated once at start."""

    input: InputConfig = Field(description="the manifest and the sources")
    defaults: Defaults = Field(
        default_factory=Defaults, description="row values a manifest column overrides"
    )
    sizing: SizingConfig = Field(
        default_factory=SizingConfig, description="canvas sizes and placement"
    )
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="caps on sources")
    model: ModelConfig = Field(default_factory=ModelConfig, description="the backend")
    output: OutputConfig = Field(description="where outputs go and how they are encoded")
    runtime: RuntimeConfig = Field(
        default_factory=RuntimeConfig, description="Ray, actors, progress"
    )
    plan: PlanConfig = Field(default_factory=PlanConfig, description="outpaint plan's estimates")
    quality: QualityConfig = Field(
        default_factory=QualityConfig, description="the score's thresholds, the gate, holding"
    )
    serve: ServeConfig = Field(
        default_factory=ServeConfig, description="outpaint serve only: keys, limits, replicas"
    )
    preset: str | None = Field(
        None,
        description="a marketplace preset (amazon-main, google-shopping, instagram-portrait, "
        "banner-16x9): documented keys under the config's own (docs/product-photos.md)",
    )


# --------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1's base-60 numbers: ``aspect_ratio: 16:9`` must stay
    the string "16:9", not the integer 969."""


# PyYAML's int/float patterns with the sexagesimal alternatives removed.
_INT = re.compile(
    r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"""
)
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"""
    r"""|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"""
)
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in rs if tag not in _NUMBER_TAGS]
    for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def parse_yaml(text: str):
    return yaml.load(text, Loader=_Loader)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        kind = e["type"]
        if kind == "extra_forbidden":
            parent = loc.rsplit(".", 1)[0] if "." in loc else ""
            allowed = _allowed_keys(parent)
            msg = f"unknown key `{loc}`" + (
                f"; allowed here: {', '.join(allowed)}" if allowed else ""
            )
        elif kind == "missing":
            msg = f"`{loc}` is required"
        else:
            got = e.get("input")
            got_s = "" if isinstance(got, dict) else f" (got {got!r})"
            text = e["msg"].removeprefix("Value error, ")
            msg = f"`{loc}`: {text}{got_s}" if loc else text
        lines.append(msg)
    head = f"invalid config {source}: " if source else "invalid config: "
    return head + "; ".join(lines)


def _allowed_keys(section_path: str) -> list[str]:
    model: Any = Config
    for part in [p for p in section_path.split(".") if p]:
        field = model.model_fields.get(part)
        if (
            field is None
            or not isinstance(field.annotation, type)
            or not issubclass(field.annotation, BaseModel)
        ):
            return []
        model = field.annotation
    return list(model.model_fields)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """``a.b=c`` strings onto a nested dict; values parsed as YAML (``5``, ``true``, ``[a]``)."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set {item!r}: empty key")
        node = data
        for p in parts[:-1]:
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {key}: `{p}` is a value, not a section")
            node = child
        try:
            node[parts[-1]] = parse_yaml(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}: value is not valid YAML ({e.problem})") from None
    return data


def from_dict(data: Any, source: str = "") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config {source}: the top level must be a mapping of sections")
    secrets.remember(data)  # its credentials are masked wherever this process writes or says
    data = presets.expand(data)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(secrets.scrub(_format_errors(e, source))) from None


def load(
    uri: str,
    overrides: list[str] | None = None,
    storage_options: dict | None = None,
    base: dict | None = None,
) -> Config:
    """Read a YAML config from any fsspec URI, apply ``--set`` overrides, validate.
    ``base``: sections the file may leave out (``outpaint serve`` reads no manifest)."""
    try:
        fs, path = storage.filesystem(uri, storage_options)
        with fs.open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config {uri}: file not found") from None
    try:
        data = parse_yaml(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"config {uri}: not valid YAML{where}: {getattr(e, 'problem', e)}"
        ) from None
    if isinstance(data, dict):
        data = {**(base or {}), **data}
    return from_dict(apply_overrides(data, overrides or []), uri)


def dump(cfg: Config) -> dict:
    return cfg.model_dump(mode="json")


# input.manifest of a config whose rows come from the caller (the Python API, a server)
IN_MEMORY = "<in-memory manifest>"


def load_config(
    source: str | os.PathLike | Mapping | Config,
    overrides: Sequence[str] = (),
    storage_options: dict | None = None,
    base: dict | None = None,
) -> Config:
    """A validated config from a YAML file (any fsspec URI), a dict or a ``Config``, with
    ``key.path=value`` overrides (as ``--set``). A dict may leave ``input`` out when the
    rows are handed over directly. ``base``: sections a file may leave out. Raises
    ``ConfigError`` naming the key."""
    if isinstance(source, Config):
        if not overrides:
            return source
        source = dump(source)
    if isinstance(source, (str, os.PathLike)):
        return load(os.fspath(source), list(overrides), storage_options, base)
    data = copy.deepcopy(dict(source))
    data.setdefault("input", {}).setdefault("manifest", IN_MEMORY)
    return from_dict(apply_overrides(data, list(overrides)), "(dict)")


def serve_config(source, overrides: Sequence[str] = ()) -> Config:
    """A config for ``outpaint serve``: the same YAML as ``outpaint run``, ``input``
    optional (a file, as a dict always may: the requests bring the rows)."""
    return load_config(source, overrides, base={"input": {"manifest": IN_MEMORY}})


def with_manifest(cfg: Config, uri: str) -> Config:
    """``cfg`` reading its rows from ``uri``."""
    data = dump(cfg)
    data["input"]["manifest"] = uri
    return from_dict(data)
