"""Episodes of any task for the reward-model jobs: task text, keyframes and labels where a file lacks them.

An episode file of a task the stack has no simulation for (:mod:`sim.importers`, or written by hand
in the documented layout) may lack the task text (the jobs' ``task=`` gives it), keyframes
(``keyframes=[[...], ...]`` gives them per episode) and the ground-truth progress. Hop labels then
come from, in this order: the ground-truth progress; the keyframes (every sub-task worth 1/N,
Robo-Dopamine Eq. 1); time-uniform progress i/M over a successful episode (the paper's labels for a
demonstration without sub-task annotations). A failed episode with neither ground truth nor
keyframes has no labels (how far it got is unknown): it is left out of training and adaptation,
and evaluation uses it for the completion check only.
"""

from __future__ import annotations

import numpy as np

from reward_models.text import check_task_text

__all__ = ["apply_task_text", "apply_keyframes", "label_source", "labelled", "LABEL_SOURCES"]

LABEL_SOURCES = ("ground truth", "keyframes", "time-uniform", "none")


def _where(ep) -> str:
    return f"{ep.task} {ep.name or 'episode'}"


def apply_task_text(episodes, text=None, key: str = "task", hint: str | None = None) -> None:
    """Give every episode whose file states no task text ``text`` (the ``task=`` value), in place.

    Args:
        episodes: :class:`sim.episodes.Episode` list.  text: the ``task=`` value or None.
        key: the config key giving it.  hint: what to do instead (default: give ``key=``).
    Raises:
        ValueError: an episode with no task text and no ``text`` (names the task and the key).
    """
    if text is not None:
        text = check_task_text(str(text))
    for ep in episodes:
        if text is not None and not ep.task_text:
            ep.task_text = text
        if not ep.task_text:
            raise ValueError(f"episodes of task {ep.task!r} have no task text (the file has no task_text "
                             f"attribute): " + (hint or f"give it with {key}='<what the robot does>'"))


def apply_keyframes(episodes, keyframes, key: str = "keyframes") -> None:
    """Set the episodes' keyframes from the command line, in place.

    Args:
        episodes: the episodes read, in order.
        keyframes: None (keep the files'), a list of ints (one episode), or a list with one list of
            frame indices per episode (strictly increasing, in [1, T]).
    Raises:
        ValueError: a count that does not match the episodes, or bad indices (named by position).
    """
    if keyframes is None:
        return
    kfs = list(keyframes)
    if kfs and all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in kfs):
        kfs = [kfs]
    if len(kfs) != len(episodes):
        raise ValueError(f"{key} gives {len(kfs)} keyframe list(s) for {len(episodes)} episode(s); give one list "
                         f"per episode, e.g. {key}=[[12,30],[10,28]]")
    counts = []
    for i, (ep, k) in enumerate(zip(episodes, kfs, strict=True)):
        try:
            arr = np.asarray([int(x) for x in k], dtype=np.int64)
        except (TypeError, ValueError):
            raise ValueError(f"{key}[{i}] must be a list of frame indices, got {k!r}") from None
        T = ep.num_frames - 1
        if arr.size and (arr.min() < 1 or arr.max() > T or np.any(np.diff(arr) <= 0)):
            raise ValueError(f"{key}[{i}] ({_where(ep)}) must be strictly increasing frame indices in [1, {T}], "
                             f"got {arr.tolist()}")
        ep.keyframes = arr
        ep.keyframe_names = [f"step {j + 1}" for j in range(arr.size)]
        counts.append((ep, arr.size))
    # a task whose file states no sub-tasks: N is the most keyframes a successful episode has
    for task in {ep.task for ep, _ in counts}:
        n = max([c for ep, c in counts if ep.task == task and ep.success] or [0])
        for ep, c in counts:
            if ep.task == task and not ep.subtasks and n:
                ep.subtasks = tuple(f"step {j + 1}" for j in range(max(n, c)))


def label_source(ep) -> str:
    """Where an episode's hop labels come from: one of :data:`LABEL_SOURCES`."""
    if ep.progress is not None:
        return "ground truth"
    if len(ep.keyframes):
        return "keyframes"
    return "time-uniform" if ep.success else "none"


def labelled(episodes, what: str = "training") -> list:
    """The episodes that have hop labels (see the module docstring); prints one line per kind of
    label used and the number left out.

    Raises:
        ValueError: none is left.
    """
    by = {}
    for ep in episodes:
        by.setdefault(label_source(ep), []).append(ep)
    parts = [f"{len(v)} with {k} progress" for k, v in by.items() if k != "none"]
    if by.get("none"):
        parts.append(f"{len(by['none'])} failed episode(s) without ground truth or keyframes left out")
    print(f"{what} labels: " + "; ".join(parts))
    kept = [ep for ep in episodes if label_source(ep) != "none"]
    if not kept:
        raise ValueError(f"no {what} episode has labels: give ground-truth progress, keyframes=[...], or a "
                         "successful episode")
    return kept
