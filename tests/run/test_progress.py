"""How a run shows progress: a bar where a person watches, lines in logs."""

from __future__ import annotations

import io

import pytest

from pipeline.run import progress


def test_progress_is_a_bar_on_a_terminal_and_lines_in_logs():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert progress.choose("auto", io.StringIO()) == "line"
    assert progress.choose("auto", Tty()) == "bar"
    with pytest.raises(ValueError, match="progress must be"):
        progress.choose("fancy", io.StringIO())

    class Tally:
        done, total = 0, 8

        def postfix(self):
            return f"ok {self.done}"

        def line(self):
            return f"[outpaint] {self.done}/8"

    out, tally = Tty(), Tally()
    bar = progress.Progress("auto", 8, out, 1.0)
    for tally.done in range(1, 9):
        bar.update(tally)
    bar.close(tally)
    assert "8/8" in out.getvalue() and "ok 8" in out.getvalue()
    logs = io.StringIO()
    lines = progress.Progress("auto", 8, logs, 0.0)
    tally.done = 3
    lines.update(tally)
    assert logs.getvalue() == "[outpaint] 3/8\n"
