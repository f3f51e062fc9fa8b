"""How a run shows its progress over the work rows: a progress bar where a person
watches (a terminal, a notebook), one line every ``runtime.progress_interval_s`` where
a log records it (a file, a cluster job's log), or nothing (``--quiet``)."""

from __future__ import annotations

import sys
import time

KINDS = ("auto", "bar", "line", "none")


def in_notebook() -> bool:
    """A Jupyter kernel (IPython's ZMQ shell) is running this process."""
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and type(shell.get_ipython()).__name__ == "ZMQInteractiveShell"
    except Exception:  # noqa: BLE001 - no IPython, or an unusual one: not a notebook
        return False


def choose(kind: str, out) -> str:
    """``auto``: a bar on a terminal or in a notebook, lines anywhere else."""
    if kind not in KINDS:
        raise ValueError(f"progress must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind != "auto":
        return kind
    isatty = getattr(out, "isatty", None)
    return "bar" if in_notebook() or (isatty is not None and isatty()) else "line"


class Progress:
    """Fed the run's tally after every block of work rows."""

    def __init__(self, kind: str, total: int, out, interval_s: float):
        self.kind = choose(kind, out) if total else "none"
        self.out = out
        self.interval_s = interval_s
        self.last = time.time()
        self.bar = None
        if self.kind == "bar":
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="row", desc="outpaint", file=out, dynamic_ncols=True)

    def update(self, tally) -> None:
        if self.bar is not None:
            self.bar.n = tally.done
            self.bar.set_postfix_str(tally.postfix(), refresh=False)
            self.bar.refresh()
        elif self.kind == "line" and time.time() - self.last >= self.interval_s:
            print(tally.line(), file=self.out, flush=True)
            self.last = time.time()

    def close(self, tally) -> None:
        if self.bar is not None:
            self.update(tally)
            self.bar.close()
        elif self.kind == "line" and tally.done and time.time() - self.last > 0.5:
            print(tally.line(), file=self.out, flush=True)
