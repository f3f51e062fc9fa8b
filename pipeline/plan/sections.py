"""The config sections planning reads (``PlanSections``): what the plan stage, the
triage and the load stage's re-planning hold and are pickled with."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import (
    Config,
    Defaults,
    InputConfig,
    LimitsConfig,
    ModelConfig,
    OutputConfig,
    RuntimeConfig,
    SizingConfig,
)


@dataclass(frozen=True)
class PlanSections:
    """The config sections planning reads, and nothing else: the manifest's sources
    (``input``), the row defaults, sizing, the source caps (``limits``), the model (its
    grid, steps, route and the request hash), the output (passthrough columns, the request
    hash) and the run seed (``runtime.seed``: per-row seeds). What a planning task is
    handed and pickled with, instead of the whole config (serve keys, plan estimates,
    quality thresholds)."""

    input: InputConfig
    defaults: Defaults
    sizing: SizingConfig
    limits: LimitsConfig
    model: ModelConfig
    output: OutputConfig
    runtime: RuntimeConfig

    @classmethod
    def of(cls, cfg: Config | PlanSections) -> PlanSections:
        if isinstance(cfg, PlanSections):
            return cfg
        return cls(
            cfg.input, cfg.defaults, cfg.sizing, cfg.limits, cfg.model, cfg.output, cfg.runtime
        )
