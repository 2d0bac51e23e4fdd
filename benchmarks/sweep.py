"""One Hydra multirun per benchmark: the (arm, seed) runs of a benchmark as the jobs of a sweep.

:func:`multirun` runs ``task`` once per combination of the comma lists in ``overrides`` through a
Hydra launcher of ``configs/hydra/launcher/`` (``local``: parallel processes on this machine, the
default; ``slurm``: an sbatch job array; ``slurm_local``: Submitit's local executor), with the
benchmark's own config (``benchmarks/<name>.yaml``). Each job writes its own result file, which
the benchmark skips when it exists and aggregates afterwards; a job that fails does not stop the
others (the failures are returned, one line each).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["multirun"]


def multirun(config_name: str, task, overrides: list[str], launcher: str = "local", n_jobs: int | None = None,
             extra: list[str] | None = None) -> list[str]:
    """Run the Hydra multirun of ``benchmarks/<config_name>.yaml`` with ``task`` as its task function.

    Args:
        task: a picklable callable ``task(cfg) -> None`` (a module-level function) that writes its
            result file.  overrides: the sweep, e.g. ``["method=expo,sac", "seed=0,1,2"]``.
        launcher: ``local`` | ``slurm`` | ``slurm_local`` (or a plugin's own name).
        n_jobs: the local launcher's parallel jobs (None: its default, one per core).
        extra: more Hydra overrides (``hydra.launcher.partition=gpu``, ...).
    Returns:
        One line per failed job (``"<overrides>: <error>"``); empty when every job succeeded.
    """
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    folder = Path(__file__).resolve().parent
    args = [f"hydra/launcher={launcher}", *overrides, *(extra or [])]
    if n_jobs is not None and launcher in ("local", "joblib"):
        args.append(f"hydra.launcher.n_jobs={int(n_jobs)}")
    GlobalHydra.instance().clear()
    hydra = Hydra.create_main_hydra2(task_name=config_name, config_search_path=create_config_search_path(str(folder)))
    failures = []
    try:
        returns = hydra.multirun(config_name=config_name, task_function=_Guarded(task), overrides=args)
        for batch in returns or []:
            for r in batch:
                if isinstance(r.return_value, str):
                    failures.append(f"{' '.join(r.overrides)}: {r.return_value}")
    finally:
        GlobalHydra.instance().clear()
    return failures


class _Guarded:
    """``task`` with its exception turned into a one-line return value (the sweep goes on)."""

    def __init__(self, task):
        self.task = task

    def __call__(self, cfg):
        import traceback

        from hydra.core.global_hydra import GlobalHydra

        # the task may compose configs itself (jobs.cli.compose): the sweep's Hydra steps aside meanwhile
        outer = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
        GlobalHydra.instance().clear()
        try:
            self.task(cfg)
            return None
        except Exception as exc:  # noqa: BLE001 - reported by multirun(), the other jobs go on
            traceback.print_exc()
            text = str(exc).strip()
            return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
        finally:
            GlobalHydra.instance().clear()
            if outer is not None:
                GlobalHydra.instance().initialize(outer)
