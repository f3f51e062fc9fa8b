"""What every benchmark ends with: its figures stamped with the date and the machine,
printed and, with ``--json``, written (RESULTS.md quotes the file)."""

from __future__ import annotations

import json
import os
import platform
import time


def record(results: dict, path: str | None) -> dict:
    results["hardware"] = {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    results["date"] = time.strftime("%Y-%m-%d")
    print(json.dumps(results, indent=2))
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
    return results
