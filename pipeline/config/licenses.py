"""Whether a checkpoint's licence is known to permit commercial use, from its Hugging
Face licence id (the model card's ``license``, or ``license_name`` under ``license:
other``), or ``model.license`` where the card is absent or wrong.

A table of ids, not legal advice: ``commercial`` means the licence lets a business run the
model in production, under its conditions (attribution, use restrictions); ``non-commercial``
means it does not without a separate licence; anything else is ``unknown`` and said so.
docs/backends.md lists the table with the families."""

from __future__ import annotations

from dataclasses import dataclass

COMMERCIAL = "commercial"
NON_COMMERCIAL = "non-commercial"
UNKNOWN = "unknown"

# id -> (verdict, what it means for a business)
LICENSES: dict[str, tuple[str, str]] = {
    "apache-2.0": (COMMERCIAL, "Apache License 2.0: keep its notices"),
    "mit": (COMMERCIAL, "MIT: keep its notice"),
    "bsd-3-clause": (COMMERCIAL, "BSD 3-Clause: keep its notice"),
    "openrail++": (
        COMMERCIAL,
        "CreativeML Open RAIL++-M: commercial use allowed under its use restrictions (Attachment A)",
    ),
    "creativeml-openrail-m": (
        COMMERCIAL,
        "CreativeML Open RAIL-M: commercial use allowed under its use restrictions",
    ),
    "openrail": (COMMERCIAL, "Open RAIL: commercial use allowed under its use restrictions"),
    "flux-1-dev-non-commercial-license": (
        NON_COMMERCIAL,
        "FLUX.1 [dev] Non-Commercial License: outputs may be used commercially, the model not "
        "for revenue-generating or production use without a licence from Black Forest Labs",
    ),
    "flux-non-commercial-license": (
        NON_COMMERCIAL,
        "FLUX Non-Commercial License: the model not for commercial or production use without a "
        "licence from Black Forest Labs",
    ),
    "cc-by-nc-4.0": (NON_COMMERCIAL, "CC BY-NC 4.0: non-commercial use only"),
    "cc-by-nc-sa-4.0": (NON_COMMERCIAL, "CC BY-NC-SA 4.0: non-commercial use only"),
    "cc-by-nc-nd-4.0": (NON_COMMERCIAL, "CC BY-NC-ND 4.0: non-commercial use only"),
    "cc-by-nc-2.0": (NON_COMMERCIAL, "CC BY-NC 2.0: non-commercial use only"),
    "cc-by-nc-3.0": (NON_COMMERCIAL, "CC BY-NC 3.0: non-commercial use only"),
    "cc-by-nc-sa-2.0": (NON_COMMERCIAL, "CC BY-NC-SA 2.0: non-commercial use only"),
    "cc-by-nc-sa-3.0": (NON_COMMERCIAL, "CC BY-NC-SA 3.0: non-commercial use only"),
}


@dataclass(frozen=True)
class License:
    """A checkpoint's licence as the plan, ``run.json`` and the report state it."""

    id: str | None  # None: no model card and no model.license
    source: str  # "model card", "model.license" or "none"
    verdict: str  # commercial | non-commercial | unknown
    note: str
    link: str | None = None

    @property
    def commercial(self) -> bool:
        return self.verdict == COMMERCIAL

    def line(self) -> str:
        """One line for the plan and the report."""
        if self.id is None:
            return (
                "model licence: unknown (no model card beside the weights; set model.license "
                "to the checkpoint's licence id)"
            )
        where = f" ({self.link})" if self.link else ""
        source = "the model card" if self.source == "model card" else self.source
        head = f"model licence: {self.id}{where}, from {source}: "
        if self.verdict == COMMERCIAL:
            return head + f"known to permit commercial use ({self.note})"
        if self.verdict == NON_COMMERCIAL:
            return head + f"non-commercial ({self.note})"
        return (
            head + "unknown whether it permits commercial use (not in outpaint's table); check it"
        )

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "source": self.source,
            "verdict": self.verdict,
            "note": self.note,
            "link": self.link,
        }


def verdict(license_id: str | None) -> tuple[str, str]:
    """(verdict, note) of a licence id; ``cc-by-nc-*`` ids not listed are non-commercial too."""
    if not license_id:
        return UNKNOWN, "no licence id"
    key = license_id.strip().lower()
    if key in LICENSES:
        return LICENSES[key]
    if key.startswith("cc-by-nc"):
        return NON_COMMERCIAL, f"{key}: a Creative Commons NonCommercial licence"
    return UNKNOWN, "not in outpaint's table of licence ids"


def resolve(override: str | None, card_id: str | None, card_link: str | None) -> License:
    """``model.license`` wins over the card (a cache without the card, a card that is wrong)."""
    if override:
        kind, note = verdict(override)
        return License(override.strip().lower(), "model.license", kind, note)
    if card_id:
        kind, note = verdict(card_id)
        return License(card_id, "model card", kind, note, card_link)
    return License(None, "none", UNKNOWN, "no model card and no model.license")


# the backends that run a checkpoint the user points at (the hosted API's terms are its own)
CHECKPOINT_BACKENDS = ("flux-fill", "diffusers")


def license_of(model_cfg) -> License | None:
    """The licence of the checkpoint ``model.*`` runs; None for a backend without one."""
    if model_cfg.backend not in CHECKPOINT_BACKENDS:
        return None
    from .checkpoints import card_license

    card_id, link = card_license(model_cfg.path, model_cfg.storage_options)
    return resolve(model_cfg.license, card_id, link)
