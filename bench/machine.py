"""What every benchmark records about the machine it ran on, beside its figures."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("unknown" where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine(**extra: Any) -> dict[str, Any]:
    """Cores, CPU model, Python version and the 1-minute load average now (these machines are
    shared: the load says how far absolute figures can be trusted), plus ``extra`` (library
    versions, thread counts)."""
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        **extra,
    }


def run_facts(module: str, **extra: Any) -> dict[str, Any]:
    """How a result was made: the command that reproduces it (this run's arguments), the
    machine (``extra`` as for ``machine``) and when, in UTC."""
    return {
        "command": " ".join([f".venv/bin/python -m {module}", *sys.argv[1:]]),
        "machine": machine(**extra),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
