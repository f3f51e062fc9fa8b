"""What every config section shares: the error a bad config raises and the base model
that forbids unknown keys and validates assignments."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A bad config or manifest schema: the run stops before any work."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
