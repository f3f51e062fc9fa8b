"""Marketplace presets: ``preset: NAME`` at the top of a config stands for documented
keys (docs/product-photos.md lists each one's numbers and the page they come from).
The config's own keys win over the preset's, so a preset is a starting point, not a lock;
``forbid`` names settings a preset cannot honour at all."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from .base import ConfigError

TARGET_KEYS = ("width", "height", "aspect_ratio")


@dataclass(frozen=True)
class Preset:
    keys: dict
    source: str  # the page the numbers come from
    says: str  # what that page asks, in a line
    forbid: dict = field(default_factory=dict)  # "section.key" -> values the preset rules out


PRESETS: dict[str, Preset] = {
    "amazon-main": Preset(
        keys={
            "defaults": {
                "aspect_ratio": "1:1",
                "anchor": "subject",
                "auto_crop": True,
                "output_format": "jpeg",
            },
            "sizing": {"subject_fill": 0.85, "require_subject_fill": True, "min_side": 1600},
            "model": {
                "route": "backdrop",
                "backdrop": {"color": [255, 255, 255], "max_color_distance": 3.0},
            },
        },
        source="https://sellercentral.amazon.com/help/hub/reference/external/G1881",
        says="main image: pure white background (RGB 255, 255, 255), the product filling 85 % "
        "of the frame, 1,000 px or more on the longest side for zoom (1,600 recommended), square "
        "recommended, JPEG preferred",
    ),
    "google-shopping": Preset(
        keys={
            "defaults": {"aspect_ratio": "1:1"},
            "sizing": {"min_side": 250},
            "model": {"route": "auto"},
        },
        source="https://support.google.com/merchants/answer/6324350",
        says="image_link: at least 100 x 100 px (apparel 250 x 250), at most 64 MP; no added "
        "borders, watermarks or promotional overlays",
        forbid={"model.backend": ("solid",)},  # a solid margin is an added border
    ),
    "instagram-portrait": Preset(
        keys={"defaults": {"width": 1080, "height": 1350}},
        source="https://help.instagram.com/1631821640426723",
        says="portrait posts: 4:5, 1080 x 1350 px",
    ),
    "banner-16x9": Preset(
        keys={"defaults": {"width": 1920, "height": 1080}},
        source="https://www.itu.int/rec/R-REC-BT.709",
        says="a 16:9 banner at 1920 x 1080, the HDTV picture of ITU-R BT.709",
    ),
}


def _merge(base: dict, over: dict) -> dict:
    """``over`` onto ``base``, section by section (the config's keys win)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def expand(data: dict) -> dict:
    """A config with ``preset:`` -> the preset's keys under the config's own; the preset's
    name stays (``Config.preset``: run.json and the messages of rows that miss it)."""
    name = data.get("preset")
    if name is None:
        return data
    preset = PRESETS.get(name) if isinstance(name, str) else None
    if preset is None:
        raise ConfigError(f"`preset`: {name!r} is not a preset; one of {', '.join(PRESETS)}")
    keys = copy.deepcopy(preset.keys)
    own = data.get("defaults") or {}
    if isinstance(own, dict) and any(own.get(k) is not None for k in TARGET_KEYS):
        for k in TARGET_KEYS:  # the config's own target replaces the preset's
            keys.get("defaults", {}).pop(k, None)
    merged = _merge(keys, data)
    for path, banned in preset.forbid.items():
        section, key = path.split(".")
        value = (merged.get(section) or {}).get(key)
        if value in banned:
            raise ConfigError(
                f"`{path}`: {value!r} does not meet preset {name} ({preset.says}); "
                "choose another backend or drop the preset"
            )
    return merged
