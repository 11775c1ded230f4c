"""What made a number: versions, machine, threads, date, command. Stored beside every result."""
from __future__ import annotations

import datetime as _dt
import platform
import sys

import numpy
import torch

from avae._version import __version__


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(command: list[str] | None = None) -> dict:
    return {
        "command": " ".join(command if command is not None else sys.argv),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "versions": {
            "avae": __version__,
            "torch": torch.__version__,
            "numpy": numpy.__version__,
            "python": platform.python_version(),
        },
        "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(), "platform": platform.platform()},
    }
