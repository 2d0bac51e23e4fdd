"""What kind of artefact a path holds: the one check behind every job's "this is a X, not a Y".

dopa writes five kinds of artefact, each recognised by the files it holds (never by its name)::

    policy checkpoint   <dir>/pretrained_model/           (control.checkpoint.save_checkpoint)
    run folder          <dir>/checkpoints/step_*/         (dopa train)
    deploy policy       <dir>/policy.json + policy.safetensors   (control.export.save_policy)
    GRM checkpoint      <dir>/config.json + model.safetensors    (reward_models.grm.save_checkpoint)
    episode file        <file>.hdf5                       (sim.episodes.EpisodeWriter)
"""

from __future__ import annotations

import os
from pathlib import Path

POLICY_CHECKPOINT = "policy checkpoint"
RUN_FOLDER = "run folder"
DEPLOY_POLICY = "deploy policy"
GRM_CHECKPOINT = "GRM checkpoint"
EPISODE_FILE = "episode file"
MISSING = "nothing"

#: the job that takes each kind, for messages that point the user to it
TAKEN_BY = {POLICY_CHECKPOINT: "dopa eval / dopa deploy", RUN_FOLDER: "dopa eval / dopa train resume=",
            DEPLOY_POLICY: "dopa deploy / dopa eval", GRM_CHECKPOINT: "dopa reward-eval / reward-adapt / "
            "train reward.checkpoint=", EPISODE_FILE: "dopa reward-train / reward-eval / train offline_data="}


def what_is(path: str | os.PathLike) -> str:
    """The kind of artefact at ``path``.

    Returns:
        One of ``"policy checkpoint"``, ``"run folder"``, ``"deploy policy"``, ``"GRM checkpoint"``,
        ``"episode file"``, ``"nothing"`` (no such path), or a plain description of anything else
        (``"an empty folder"``, ``"a folder of something else"``, ``"a file of something else"``).
        Never raises for a path that cannot be read: it is described instead.
    """
    p = Path(os.fspath(path))
    try:
        if not p.exists():
            return MISSING
        if p.is_file():
            return EPISODE_FILE if p.suffix in (".hdf5", ".h5") else "a file of something else"
        if (p / "pretrained_model").is_dir():
            return POLICY_CHECKPOINT
        ck = p / "checkpoints"
        if ck.is_dir() and any((c / "pretrained_model").is_dir() for c in ck.glob("step_*")):
            return RUN_FOLDER
        if (p / "policy.json").is_file():
            return DEPLOY_POLICY
        if (p / "config.json").is_file() and (p / "model.safetensors").is_file():
            return GRM_CHECKPOINT
        return "an empty folder" if not any(p.iterdir()) else "a folder of something else"
    except OSError as exc:
        return f"unreadable ({exc.strerror})"


def describe(path: str | os.PathLike) -> str:
    """``what_is`` in words for an error message: ``"a GRM checkpoint (dopa reward-eval / ... take it)"``."""
    kind = what_is(path)
    if kind in TAKEN_BY:
        return f"a {kind} ({TAKEN_BY[kind]} take it)"
    return "nothing (no such path)" if kind == MISSING else kind
