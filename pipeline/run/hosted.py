"""The hosted API around a run: its key checked before any work, and after the image
stages the balance left and the journal of tasks that ended cleared."""

from __future__ import annotations

from ..config import ApiConfig, ConfigError, OutputConfig
from .counts import ApiCounts


def check_key(api: ApiConfig, out, quiet: bool) -> float:
    """The key from ``model.api.key_env``, checked against GET /v1/credits (exit 2
    naming the key's variable, never its value); returns the balance, printed."""
    from ..backends.bfl_client import ApiClient, ApiError, api_key

    try:
        balance = ApiClient(api, api_key(api)).credits()
    except ApiError as e:
        raise ConfigError(str(e)) from None
    except ConnectionError as e:
        raise ConfigError(f"model.api.endpoint: {e}") from None
    if not quiet:
        budget = f", budget {api.max_cost_credits:g} credits" if api.max_cost_credits else ""
        print(
            f"[outpaint] bfl-api {api.endpoint}: key from {api.key_env} accepted, balance "
            f"{balance:,.2f} credits; at most {api.max_active} tasks at once{budget}",
            file=out,
            flush=True,
        )
    return balance


def finish(api: ApiConfig, output: OutputConfig, counts: ApiCounts) -> dict:
    """``run.json``'s ``api``: the run's tasks, the balance left, and how many journal
    entries of ended tasks were removed (unfinished ones stay for the next run)."""
    from ..backends.bfl_client import ApiClient, ApiError, Journal, api_key

    out = counts.as_dict()
    try:
        out["credits_left"] = ApiClient(api, api_key(api)).credits()
    except (ApiError, ConnectionError):
        out["credits_left"] = None
    out["journal_removed"] = Journal(output.uri, output.storage_options).forget(counts.ended)
    return out
