"""What a diffusers checkpoint declares, read without its weights: its pipeline class
(``model_index.json``), its VAE's scale (``vae/config.json``) and its licence (the model
card's ``README.md`` front matter). Read once per path and process, by the driver when the
config is validated (a wrong checkpoint fails before any work) and by the planner.

``model.path`` is a local directory, an object-storage URI (only these small files are
read here; the actors sync the whole checkpoint) or a Hugging Face id already in the local
cache (never a download)."""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, field

import yaml

from ..common import storage


class CheckpointUnreadable(ValueError):
    """``model.path`` has no readable ``model_index.json``."""


def _local_hf(path: str, name: str) -> str | None:
    """``name`` of a Hugging Face id in the offline cache, or None."""
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(path, name, local_files_only=True)
    except Exception:  # noqa: BLE001 - not in the cache (or not an id at all)
        return None


def read_file(path: str, name: str, storage_options: dict | None = None) -> str | None:
    """The text of ``name`` inside the checkpoint ``path`` (None where it is absent)."""
    local = path[len("file://") :] if path.startswith("file://") else path
    if not storage.has_scheme(path) or path.startswith("file://"):
        if os.path.isdir(local):
            uri = os.path.join(local, name)
        else:
            uri = _local_hf(local, name)
            if uri is None:
                return None
    else:
        uri = storage.join(path, name)
    try:
        fs, p = storage.filesystem(uri, storage_options)
        with fs.open(p, "rb") as f:
            return f.read().decode("utf-8")
    except (FileNotFoundError, IsADirectoryError, PermissionError, UnicodeDecodeError):
        return None


def card_front_matter(text: str | None) -> dict:
    """A model card's YAML front matter (between the first two ``---`` lines); {} without one."""
    if not text or not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    try:
        data = yaml.safe_load(text[3:end])
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint's declaration: what the backend and the planner need before loading it."""

    class_name: str
    components: tuple[str, ...]  # the sub-models it lists (unet, transformer, vae...)
    config: dict = field(default_factory=dict)  # the pipeline's own registered config
    vae_scale: int = 8  # pixels per latent cell
    card: dict = field(default_factory=dict)  # model card front matter

    @property
    def license(self) -> str | None:
        """The card's licence id, reduced to an id's characters (a card is not trusted to
        hold no markup or terminal escapes: the plan prints it, the report shows it)."""
        value = self.card.get("license")
        if value == "other" and self.card.get("license_name"):
            value = self.card["license_name"]
        if not value:
            return None
        return re.sub(r"[^a-z0-9._+-]", "", str(value).strip().lower())[:100] or None

    @property
    def license_link(self) -> str | None:
        link = str(self.card.get("license_link") or "")
        return link[:300] if link and re.fullmatch(r"[\x21-\x7e]+", link) else None


@functools.lru_cache(maxsize=32)
def _describe(path: str, options_json: str) -> Checkpoint:
    options = json.loads(options_json)
    text = read_file(path, "model_index.json", options)
    if text is None:
        raise CheckpointUnreadable(
            f"no model_index.json at {path!r}: point model.path at a diffusers pipeline "
            "directory (one saved with save_pretrained), a Hugging Face id in the local cache "
            "or an object-storage URI of such a directory"
        )
    try:
        index = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointUnreadable(f"{path}/model_index.json is not JSON: {e}") from None
    components = tuple(
        k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[0]
    )
    config = {k: v for k, v in index.items() if not k.startswith("_") and not isinstance(v, list)}
    vae_scale = 8
    vae = read_file(path, "vae/config.json", options)
    if vae:
        try:
            vae_cfg = json.loads(vae)
            if "temperal_downsample" in vae_cfg:  # Qwen-Image's video VAE: one flag a stage
                vae_scale = 2 ** len(vae_cfg["temperal_downsample"])
            else:
                vae_scale = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
        except (ValueError, KeyError, TypeError):
            pass
    card = card_front_matter(read_file(path, "README.md", options))
    return Checkpoint(str(index.get("_class_name", "")), components, config, vae_scale, card)


def describe(path: str, storage_options: dict | None = None) -> Checkpoint:
    """The checkpoint at ``path`` (cached per path and options). Raises
    ``CheckpointUnreadable`` where no ``model_index.json`` can be read."""
    return _describe(path, json.dumps(storage_options or {}, sort_keys=True, default=str))


def card_license(
    path: str | None, storage_options: dict | None = None
) -> tuple[str | None, str | None]:
    """(licence id, link) from the model card at ``path``; (None, None) without a card."""
    if not path:
        return None, None
    try:
        ckpt = describe(path, storage_options)
    except CheckpointUnreadable:
        card = card_front_matter(read_file(path, "README.md", storage_options))
        ckpt = Checkpoint("", (), card=card)
    return ckpt.license, ckpt.license_link
