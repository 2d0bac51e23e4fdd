"""``dopa <job> -m key=a,b ...``: a Hydra multirun of any job in :data:`jobs.cli.JOBS`.

The sweep (Hydra's basic sweeper: the product of every comma list) runs through a Hydra launcher
(``configs/hydra/launcher/``): ``local`` (the default: hydra-joblib-launcher, local parallel
processes, ``n_jobs`` of them, -1 = one per core), ``slurm_local`` (hydra-submitit-launcher with
Submitit's local executor: each job a subprocess, the same code path as Slurm) or ``slurm``
(hydra-submitit-launcher: an sbatch job array; ``hydra.launcher.dry_run=true``, read by ``dopa``
and not passed on, prints the script and submits nothing: :mod:`jobs.launchers`). The plugins' own ``joblib``, ``submitit_local`` and ``submitit_slurm`` work
too, with the plugins' defaults. Before anything is launched, every combination is composed and checked as ``dopa
<job>`` checks one run (:func:`jobs.cli.check_common`), so a malformed sweep or a bad value is one
line and no job starts.

Each job runs in its own run folder ``<sweep dir>/<job number>/`` (Hydra's ``.hydra/`` config and
log, ``result.json``); output keys (``out``, ``run_dir``, ``log_dir``, ``video_dir``) the sweep does
not set itself are moved into that folder (``run_dir`` always; the others when they have a value),
so jobs never write over each other. A job that fails writes its one-line error into its
``result.json`` and the others go on. At the end :func:`summarize` writes ``<sweep dir>/multirun.json``
(atomically) and prints one row per job: number, status, overrides, final evaluation with its
interval (when the job evaluated: the last line of an ``eval.jsonl``, or an ``eval.json``), run
folder, error.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import json
import shutil
import sys
import traceback
from pathlib import Path

from basics.atomic import write_json
from jobs.cli import (
    JOBS,
    _group_overrides,
    _missing_choice,
    _unknown_key,
    _user_error,
    check_common,
    compose,
    replace_overrides,
)
from jobs.launchers import DRY_RUN_KEY, DryRunDone, slurm_dry_run

__all__ = ["is_multirun", "run_multirun", "expand_sweep", "summarize", "final_eval", "JobTask",
           "SWEEP_ROOT", "OUTPUT_DIR_KEYS"]

#: where a sweep's folder goes unless ``hydra.sweep.dir=`` is given: ``<root>/<job>/<date>_<time>``
SWEEP_ROOT = "runs/multirun"
#: output keys moved into each job's run folder (when the sweep does not set them itself)
OUTPUT_DIR_KEYS = ("out", "run_dir", "log_dir", "video_dir")
_FLAGS = ("-m", "--multirun")
#: the launcher of a multirun that names none (configs/hydra/launcher/local.yaml: joblib)
DEFAULT_LAUNCHER = "local"
#: the launchers that submit to Slurm (sbatch must be on the PATH unless it is a dry run)
SLURM_LAUNCHERS = ("slurm", "submitit_slurm")


def is_multirun(args: list[str]) -> bool:
    """Whether the ``dopa <job>`` arguments ask for a multirun (``-m`` / ``--multirun``)."""
    return any(a in _FLAGS for a in args)


def _is_hydra(override: str) -> bool:
    return override.lstrip("+~").startswith(("hydra.", "hydra/"))


def _launcher(overrides: list[str]) -> str:
    for o in overrides:
        if o.lstrip("+~").startswith("hydra/launcher="):
            return o.split("=", 1)[1]
    return DEFAULT_LAUNCHER


def _value(overrides: list[str], key: str) -> str | None:
    for o in reversed(overrides):
        if o.lstrip("+~").split("=", 1)[0] == key:
            return o.split("=", 1)[1]
    return None


class MalformedSweep(ValueError):
    """An override of the sweep that Hydra cannot parse (exit code 2, as a malformed override)."""


#: the launchers whose ``n_jobs`` is joblib's (an int, not 0; -1 one per core, -2 all but one, ...)
JOBLIB_LAUNCHERS = ("local", "joblib")


def _check_launcher(name: str, job, overrides: list[str], launcher: str) -> None:
    """The ``hydra/launcher`` choice and the ``hydra.*`` keys, composed as Hydra will compose the
    sweep, and joblib's ``n_jobs``, before any job starts.

    Raises:
        MalformedSweep: an unknown launcher or ``hydra.*`` key (the choices or close keys named).
        ValueError: ``hydra.launcher.n_jobs`` not an int or 0.
    """
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException, MissingConfigException
    from hydra.types import RunMode
    from omegaconf.errors import OmegaConfBaseException

    n_jobs = _value(overrides, "hydra.launcher.n_jobs")
    if n_jobs is not None and launcher in JOBLIB_LAUNCHERS:
        try:
            ok = int(n_jobs) != 0
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"hydra.launcher.n_jobs must be an int other than 0 (jobs at a time; -1: one per core, "
                             f"-2: all cores but one), got {n_jobs!r}")
    GlobalHydra.instance().clear()
    try:
        hydra = Hydra.create_main_hydra2(task_name=name, config_search_path=create_config_search_path("pkg://configs"))
        given = overrides if _value(overrides, "hydra/launcher") else [f"hydra/launcher={DEFAULT_LAUNCHER}", *overrides]
        hydra.compose_config(job.config, given, run_mode=RunMode.MULTIRUN)
        return
    except (HydraException, OmegaConfBaseException) as exc:  # MissingConfigException is a HydraException
        error = exc
    finally:
        GlobalHydra.instance().clear()
    if isinstance(error, MissingConfigException):
        raise MalformedSweep(_missing_choice(error))
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    raise MalformedSweep(_unknown_key(job.config, error, name) or f"bad override: {first}")


def expand_sweep(overrides: list[str]) -> list[list[str]]:
    """The jobs of a sweep: Hydra's basic sweeper's product of the comma lists and ranges
    (``seed=range(0,3)`` is seeds 0, 1, 2), in its order (the job numbers). ``hydra.*`` overrides
    are left out.

    Raises:
        MalformedSweep: an override Hydra cannot parse (``seed=0,,1``), with Hydra's message.
        ValueError: a sweep kind the basic sweeper cannot run (an ``interval(..)`` sweep).
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    plain = [o for o in overrides if not _is_hydra(o)]
    try:
        parsed = OverridesParser.create().parse_overrides(plain)
    except HydraException as exc:
        raise MalformedSweep(f"bad sweep: {str(exc).strip().splitlines()[0]}") from None
    try:
        return BasicSweeper.split_arguments(parsed, None)[0]
    except HydraException as exc:
        raise ValueError(f"bad sweep: {str(exc).strip().splitlines()[0]}") from None


def _check_all(name: str, job, combos: list[list[str]]) -> None:
    """Compose and check every job of the sweep as ``dopa <job>`` would (one line, exit 1/2)."""
    for combo in combos:
        if job.composer and _value(combo, "resume") not in (None, "null"):
            raise ValueError(f"resume={_value(combo, 'resume')} continues one run; run it without -m")
        cfg = compose(job.config, combo, job=name)
        try:
            check_common(cfg, compose(job.config, _group_overrides(combo), job=name), job.config)
        except (ValueError, OSError) as exc:
            raise ValueError(f"job {' '.join(combo) or '(no overrides)'}: {exc}") from None


def _sweep_dir(name: str, overrides: list[str]) -> tuple[list[str], Path | None]:
    """The overrides with the sweep folder named (unless the user named it), and that folder
    (None when the user's value needs Hydra to resolve it)."""
    given = _value(overrides, "hydra.sweep.dir")
    if given is None:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        folder = Path(SWEEP_ROOT) / name / stamp
        return [f"hydra.sweep.dir={folder}", *overrides], folder
    return overrides, (None if "$" in given else Path(given))


def run_multirun(name: str, job, args: list[str]) -> int:
    """Run ``dopa <name> -m <args>`` (see the module docstring). Returns the exit code: 0 when
    every job succeeded, 1 when one failed or the sweep was refused, 2 for a malformed override."""
    overrides = [a for a in args if a not in _FLAGS]
    launcher = _launcher(overrides)
    dry_value = _value(overrides, DRY_RUN_KEY)
    overrides = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != DRY_RUN_KEY]
    dry = str(dry_value).lower() == "true"
    try:
        if dry_value is not None and (str(dry_value).lower() not in ("true", "false")
                                      or launcher not in SLURM_LAUNCHERS):
            raise ValueError(f"{DRY_RUN_KEY}={dry_value}: a dry run is true or false, with "
                             f"hydra/launcher=slurm (got hydra/launcher={launcher})")
        if launcher in SLURM_LAUNCHERS and not dry and shutil.which("sbatch") is None:
            raise ValueError(
                f"hydra/launcher={launcher} needs Slurm, but 'sbatch' is not on this machine's PATH; add "
                "hydra/launcher=slurm hydra.launcher.dry_run=true to print the sbatch script instead, or use "
                "hydra/launcher=local (parallel processes on this machine)")
        combos = expand_sweep(overrides)
        _check_all(name, job, combos)
        overrides = replace_overrides(job.config, overrides)  # as compose() reads them (grids={...})
        _check_launcher(name, job, overrides, launcher)
    except MalformedSweep as exc:
        print(f"dopa {name} -m: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"dopa {name} -m: error: {exc}", file=sys.stderr)
        return 1
    if _value(overrides, "hydra/launcher") is None:
        overrides = [f"hydra/launcher={DEFAULT_LAUNCHER}", *overrides]
    overrides, folder = _sweep_dir(name, overrides)
    overrides = ["hydra.job.chdir=false", *overrides]
    print(f"dopa {name} -m: {len(combos)} job(s) through hydra/launcher={launcher}"
          + (" (dry run)" if dry else "") + (f", sweep folder {folder}" if folder else ""), flush=True)
    crash, folder = _launch(name, job, overrides, folder, dry)
    if dry:
        if crash:
            print(f"dopa {name} -m: error: {crash}", file=sys.stderr)
            return 1
        return 0
    if folder is None:
        print(f"dopa {name} -m: error: {crash or 'the sweep folder is unknown'}", file=sys.stderr)
        return 1
    rows = summarize(folder, combos, launcher, crash)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def _launch(name: str, job, overrides: list[str], folder: Path | None,
            dry: bool = False) -> tuple[str | None, Path | None]:
    """Run the sweep through Hydra (``dry``: print the Slurm script, :func:`jobs.launchers.slurm_dry_run`);
    returns (the launcher's one-line error or None, sweep folder)."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    hydra = Hydra.create_main_hydra2(task_name=name, config_search_path=create_config_search_path("pkg://configs"))
    crash = None
    try:
        if folder is None:
            from hydra.types import RunMode
            from omegaconf import OmegaConf

            hcfg = hydra.compose_config(job.config, overrides, run_mode=RunMode.MULTIRUN)
            folder = Path(str(OmegaConf.select(hcfg, "hydra.sweep.dir")))
        with contextlib.ExitStack() as stack:
            if dry:
                stack.enter_context(slurm_dry_run(out=lambda s: print(s, flush=True)))
            hydra.multirun(config_name=job.config, task_function=JobTask(name), overrides=overrides)
    except Exception as exc:  # noqa: BLE001 - a launcher failure (a dead job process) must not lose the others
        if not isinstance(exc, DryRunDone):
            user = _user_error(exc)
            crash = _one_line(user if user is not None else exc)
            if user is None:
                traceback.print_exc()
    finally:
        GlobalHydra.instance().clear()
    return crash, folder


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if not isinstance(exc, (ValueError, OSError)) or not first else first


def final_eval(run_dir) -> dict | None:
    """The last evaluation a job wrote under ``run_dir``: the last line of an ``eval.jsonl``
    (``dopa train``), else an ``eval.json`` (``dopa eval``), as ``{"success_rate", "success_ci",
    "env_steps", "episodes", "file"}`` (keys it lacks are None); None when there is neither."""
    run_dir = Path(run_dir)
    for pattern in ("eval.jsonl", "eval.json"):
        for f in sorted(run_dir.rglob(pattern)):
            try:
                lines = [ln for ln in f.read_text().splitlines() if ln.strip()]
                rec = json.loads(lines[-1]) if pattern.endswith("l") else json.loads("\n".join(lines))
            except (OSError, ValueError, IndexError):
                continue
            if isinstance(rec, dict) and "success_rate" in rec:
                return {"success_rate": rec.get("success_rate"), "success_ci": rec.get("success_ci"),
                        "env_steps": rec.get("env_steps"), "episodes": rec.get("episodes"), "file": str(f)}
    return None


class JobTask:
    """The task function of every job of a multirun (pickled to the job's process).

    Called by Hydra with the job's config; checks it as ``dopa <job>`` does, moves the output keys
    into the job's run folder, runs the job, and writes ``<run folder>/result.json`` (atomically):
    ``{"num", "overrides", "status": "ok"|"failed", "exit_code", "error", "run_dir", "final_eval",
    "wall_s"}``. A failure is recorded, never raised, so the other jobs' results stay.
    """

    def __init__(self, name: str):
        self.name = name

    def __call__(self, cfg) -> dict:
        import time

        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
        run_dir = Path(str(hc.runtime.output_dir))
        overrides = [str(o) for o in hc.overrides.task]
        rec = {"num": int(hc.job.num), "overrides": overrides, "status": "failed", "exit_code": None,
               "error": None, "run_dir": str(run_dir), "final_eval": None, "wall_s": None}
        t0 = time.time()
        try:
            code = self._run(cfg, overrides, run_dir)
            rec["exit_code"] = code
            rec["status"] = "ok" if code == 0 else "failed"
            if code != 0:
                rec["error"] = f"the job returned exit code {code}"
        except Exception as exc:  # noqa: BLE001 - recorded in result.json, the sweep goes on

            user = _user_error(exc)
            if user is None:
                traceback.print_exc()  # into the job's log (Hydra's / Submitit's)
            rec["error"] = _one_line(user if user is not None else exc)
            rec["exit_code"] = 1
            print(f"dopa {self.name}: error: {rec['error']}", file=sys.stderr, flush=True)
        rec["wall_s"] = round(time.time() - t0, 2)
        rec["final_eval"] = final_eval(run_dir)
        write_json(run_dir / "result.json", rec)
        return rec

    def _run(self, cfg, overrides: list[str], run_dir: Path) -> int:
        from hydra import compose as hydra_compose
        from omegaconf import OmegaConf, open_dict


        job = JOBS[self.name]
        OmegaConf.resolve(cfg)
        given = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
        with open_dict(cfg):
            for key in OUTPUT_DIR_KEYS:
                if key in given or key not in cfg:
                    continue
                value = cfg[key]
                if key == "run_dir" and value is None:
                    cfg[key] = str(run_dir / "run")
                elif isinstance(value, str) and value:
                    cfg[key] = str(run_dir / Path(value).name)
        check_common(cfg, hydra_compose(config_name=job.config, overrides=_group_overrides(overrides)), job.config)
        module_name, func_name = job.target.split(":")
        return int(getattr(importlib.import_module(module_name), func_name)(cfg) or 0)


def summarize(folder, combos: list[list[str]], launcher: str = "", crash: str | None = None,
              out=print) -> list[dict]:
    """Collect each job's ``<folder>/<num>/result.json`` into ``<folder>/multirun.json``
    (atomically) and print the table. A job without a result file is failed with ``crash`` (the
    launcher's error) or "no result.json: the job's process died".

    Returns:
        One dict per job (see :class:`JobTask`), in job-number order.
    """
    folder = Path(folder)
    rows = []
    for num, combo in enumerate(combos):
        f = folder / str(num) / "result.json"
        try:
            rows.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            rows.append({"num": num, "overrides": combo, "status": "failed", "exit_code": None,
                         "error": crash or f"no result.json: the job's process died (logs: {folder})",
                         "run_dir": str(folder / str(num)), "final_eval": None, "wall_s": None})
    failed = sum(r["status"] != "ok" for r in rows)
    write_json(folder / "multirun.json", {"launcher": launcher, "folder": str(folder), "jobs": len(rows),
                                          "failed": failed, "results": rows})
    out(format_table(rows))
    out(f"{len(rows) - failed} of {len(rows)} job(s) ok, {failed} failed; summary {folder / 'multirun.json'}")
    return rows


def _eval_text(ev: dict | None) -> str:
    if not ev or ev.get("success_rate") is None:
        return "-"
    ci = ev.get("success_ci")
    band = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
    return f"{ev['success_rate']:.2f}{band}"


def format_table(rows: list[dict]) -> str:
    """The summary table: job number, status, overrides (those not shared by every job), final
    success [95 % CI], run folder, error."""
    head = ("#", "status", "overrides", "final eval [95% CI]", "run folder", "error")
    common = set.intersection(*(set(r["overrides"]) for r in rows)) if len(rows) > 1 else set()
    body = [(str(r["num"]), r["status"], " ".join(o for o in r["overrides"] if o not in common) or "-",
             _eval_text(r.get("final_eval")), r["run_dir"], r.get("error") or "") for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)).rstrip() for b in body]
    return "\n".join(lines)
