"""The Slurm dry run of a multirun (``hydra/launcher=slurm hydra.launcher.dry_run=true``).

Hydra instantiates launchers only from its ``hydra_plugins`` package, so the Slurm launcher is
hydra-submitit-launcher's own (``configs/hydra/launcher/slurm.yaml``) and the dry run wraps it:
:func:`slurm_dry_run` lets Submitit's ``SlurmExecutor`` build the sweep's sbatch job-array script
exactly as for a real submission, prints it, and stops before ``sbatch`` runs (nothing is
submitted; the job pickles Submitit writes first stay in ``<sweep dir>/.submitit/``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock

__all__ = ["slurm_dry_run", "DryRunDone", "DRY_RUN_HEADER", "DRY_RUN_KEY"]

#: the line printed before a dry run's sbatch script
DRY_RUN_HEADER = "# sbatch script (dry run, nothing submitted):"
#: the override that asks for a dry run (read by ``dopa``, not passed to the launcher)
DRY_RUN_KEY = "hydra.launcher.dry_run"


class DryRunDone(Exception):
    """Raised in place of the submission once the script is printed: nothing reaches sbatch."""


@contextlib.contextmanager
def slurm_dry_run(scripts: list[str] | None = None, out=print) -> Iterator[list[str]]:
    """Within the block, a Submitit Slurm submission prints its sbatch script (after
    :data:`DRY_RUN_HEADER`) and raises :class:`DryRunDone` instead of calling ``sbatch``; neither
    ``srun`` nor ``sbatch`` needs to exist.

    Args:
        scripts: a list the scripts are appended to (default: a new one, yielded).
    Yields:
        The list of scripts.
    """
    from submitit.slurm.slurm import SlurmExecutor  # third-party; only a dry run patches it

    scripts = [] if scripts is None else scripts

    def show(executor, command: str):
        script = executor._make_submission_file_text(command, "dry-run")
        scripts.append(script)
        out(DRY_RUN_HEADER)
        out(script)
        raise DryRunDone

    # srun is looked for when the executor is made, sbatch when it submits: neither runs here
    with mock.patch.object(SlurmExecutor, "affinity", classmethod(lambda cls: 1)), \
            mock.patch.object(SlurmExecutor, "_submit_command", show):
        yield scripts
