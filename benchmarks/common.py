"""Shared helpers for benchmark scripts: the result file format of DESIGN.md and machine facts."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

from basics.atomic import atomic_file, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


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


def write_result(name: str, metrics: dict, targets: dict, met: dict, results_dir=None) -> Path:
    """Write ``<results_dir>/<name>.json`` (default ``benchmarks/results/``) atomically in the format
    of DESIGN.md.

    Returns the path written.
    """
    results_dir = Path(results_dir) if results_dir is not None else RESULTS
    results_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
        "metrics": metrics,
        "targets": targets,
        "met": met,
    }
    return write_json(results_dir / f"{name}.json", payload)


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
    while node.core.watchdog.check() is not None and time.monotonic() < end:
        time.sleep(0.05)
    node.armed = True
    time.sleep(float(warmup_s))


# ---------------------------------------------------------------------------------------------
# Comparisons run as one Hydra app per (arm, seed): shaping_vs_sparse, gorl_vs_ppo, qarl_vs_sac
# ---------------------------------------------------------------------------------------------

def plain(v):
    """A config value as plain Python (``OmegaConf.to_container``, resolved); other values unchanged."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v


def settings_digest(cfg, keys, bench_keys=(), extra: dict | None = None) -> str:
    """10 hex digits of sha256 over the config values of ``keys``, of ``cfg.bench``'s ``bench_keys``
    and of ``extra`` (resolved to plain JSON, sorted keys): the name of the settings every arm of a
    comparison shares, so results of other settings never mix."""
    import hashlib
    import json

    key = {k: plain(cfg.get(k)) for k in keys}
    if bench_keys:
        key["bench"] = {k: plain(cfg.bench.get(k)) for k in bench_keys}
    key.update(extra or {})
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]


def run_config(cfg, run_dir):
    """The ``dopa train`` config of one benchmark run: a copy of the benchmark's composed ``cfg``
    without its ``bench`` and ``hydra`` keys, with ``run_dir`` set (the caller adds its arm's keys
    under ``open_dict``, then ``OmegaConf.resolve``-s it). ``cfg`` is left unchanged."""
    import copy

    from omegaconf import open_dict

    tc = copy.deepcopy(cfg)
    with open_dict(tc):
        tc.pop("bench", None)
        tc.pop("hydra", None)
        tc.run_dir = str(run_dir)
    return tc


def repo_relative(path) -> str:
    """``path`` relative to the repository root when it lies under it, else as given (a result
    file names the folders it came from without the machine's checkout path)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def run_paths(out_dir, record_dir, group: str, arm: str | None = None, seed: int | None = None) -> dict:
    """Where one benchmark group lives.

    Args:
        out_dir: the run folders' root (e.g. ``runs/gorl_vs_ppo``, not tracked: checkpoints, logs).
        record_dir: the per-run result files' root; ``None`` means ``benchmarks/results/runs/<last part
            of out_dir>`` (tracked, so that a sweep built up over several sittings keeps every finished
            run; another ``out_dir``, e.g. a pilot's, gets its own record folder too).
        group: the settings' folder name every arm of a comparison shares.
        arm, seed: one run's arm and seed, or ``None`` for the group alone.

    Returns:
        ``{"group": <out_dir>/<group>, "results": <record_dir>/<group>}`` and, for an (arm, seed),
        ``"run": <out_dir>/<group>/<arm>_seed<seed>`` and ``"result": <record_dir>/<group>/<arm>_seed<seed>.json``
        (a run skips itself when its result file exists).
    """
    record = Path(record_dir) if record_dir is not None else RESULTS / "runs" / Path(out_dir).name
    out = {"group": Path(out_dir) / group, "results": record / group}
    if arm is not None:
        out["run"] = out["group"] / f"{arm}_seed{seed}"
        out["result"] = out["results"] / f"{arm}_seed{seed}.json"
    return out


def load_group(results: Path, arms) -> dict:
    """``{arm: [result dicts sorted by seed]}`` from the result files ``<results>/*.json`` (a
    :func:`run_paths` ``results`` folder), in ``arms`` order; ``{}`` when the folder is missing."""
    import json

    runs: dict = {}
    for f in sorted(Path(results).glob("*.json")):
        r = json.loads(f.read_text())
        runs.setdefault(r["arm"], []).append(r)
    return {a: sorted(runs[a], key=lambda r: r["seed"]) for a in arms if a in runs}


def compose_groups(name: str, argv: list[str]) -> list:
    """The configs of ``--aggregate [overrides]``: ``benchmarks/<name>.yaml`` composed with the
    overrides, one config per value of the one override that may be a comma list (one group per
    value, e.g. ``env=cartpole-swingup,cheetah-run``).

    Raises:
        SystemExit: more than one comma list, naming them.
    """
    from hydra import compose, initialize_config_dir

    sweep = [a for a in argv if "," in a.split("=", 1)[-1] and a.split("=", 1)[-1][:1] not in "[\"'{"]
    if len(sweep) > 1:
        raise SystemExit(f"--aggregate: at most one comma list, got {sweep}")
    fixed = [a for a in argv if a not in sweep]
    variants = [[f"{sweep[0].split('=', 1)[0]}={v}"] for v in sweep[0].split("=", 1)[1].split(",")] if sweep else [[]]
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parent), version_base="1.3"):
        return [compose(config_name=name, overrides=fixed + extra) for extra in variants]
