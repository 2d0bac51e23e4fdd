"""Shared helpers for benchmark scripts: the result file format of DESIGN.md and machine facts."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

from basics.atomic import atomic_file, write_json

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """A short description of this machine: CPU model, core count, OS, Python, torch threads."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def write_result(name: str, metrics: dict, targets: dict, met: dict) -> Path:
    """Write ``benchmarks/results/<name>.json`` atomically in the format of DESIGN.md.

    Returns the path written.
    """
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
        "metrics": metrics,
        "targets": targets,
        "met": met,
    }
    return write_json(RESULTS / f"{name}.json", payload)


def save_figure(fig, path, dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG at ``path`` atomically (:func:`basics.atomic.atomic_file`).
    Returns the path."""
    path = Path(path)
    with atomic_file(path, ".png") as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def arm_when_fresh(node, timeout_s: float = 30.0, warmup_s: float = 1.0) -> None:
    """Bring a spinning ``ros.policy_node`` node to commanding: configure, activate, wait up to
    ``timeout_s`` seconds until its watchdog sees fresh observations, arm it, then let ``warmup_s``
    seconds pass (excluded from the measurement by the caller, who clears its counters after).

    Raises:
        RuntimeError: configure failed.
    """
    import time

    if node.trigger_configure().to_label() != "transition_success":
        raise RuntimeError("policy node configure failed")
    node.trigger_activate()
    end = time.monotonic() + float(timeout_s)
    while node.core.watchdog.check(node.now()) is not None and time.monotonic() < end:
        time.sleep(0.05)
    node.armed = True
    time.sleep(float(warmup_s))
