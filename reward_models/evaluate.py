"""How well a GRM tracks progress on episode files (``dopa reward-eval`` reports these).

    dopa reward-eval checkpoint=runs/grm data=[data/lift_test.hdf5] out=runs/grm_eval

Per task: VOC (value-order correlation, GVL's metric: the Spearman rank correlation between the
tracked progress and the time index, averaged over successful episodes), completion-judgement
accuracy (an episode is judged complete when its final tracked progress is >= the completion
threshold; right when that agrees with the episode's ``success``, so imperfect episodes count),
and the mean absolute error between tracked and ground-truth step-wise progress over all frames.
Plots of tracked vs true progress per episode (imperfect ones included) go to ``out/`` as PNG.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from basics.atomic import atomic_file
from reward_models.grm import check_grm_checkpoint  # noqa: F401  (its old home; it lives in grm.py)
from reward_models.tracker import GRMBackend, ProgressTracker, reference_from_episodes, resolve_fusion

__all__ = ["voc", "track_episodes", "evaluate_episodes", "evaluate_checkpoint", "plot_curves", "print_table",
           "task_references"]


def voc(progress) -> float:
    """Value-order correlation: Spearman rank correlation of ``progress`` [T] with time (GVL).

    Returns 0.0 for a constant curve (no order information); NaN never.
    Raises:
        ValueError: fewer than 2 values, or NaN progress.
    """
    from scipy.stats import spearmanr

    p = np.asarray(progress, dtype=np.float64).ravel()
    if p.size < 2:
        raise ValueError(f"VOC needs at least 2 progress values, got {p.size}")
    if np.isnan(p).any():
        raise ValueError("progress holds NaN")
    if np.all(p == p[0]):
        return 0.0
    return float(spearmanr(p, np.arange(p.size)).statistic)


def track_episodes(backend, episodes, task_text: str, ref_start: dict, ref_goal: dict, fusion: str = "auto",
                   completion_threshold: float = 0.95, batch: int = 64, anchors: list | None = None,
                   **tracker_kwargs) -> list[np.ndarray]:
    """Run the progress tracker over whole episodes, ``batch`` episodes at a time.

    Args:
        anchors: when a list, one bool per episode is appended to it: whether the tracker kept
            its start/goal anchors for that episode (:attr:`ProgressTracker.anchors_ok` after
            the reset; False when the goal looked like the start and it tracked incrementally).
    Returns:
        one float32 [T_i + 1] progress curve per episode (frame 0 is 0, the reset).
    """
    curves = []
    views = tuple(backend.views)
    for s in range(0, len(episodes), batch):
        chunk = episodes[s:s + batch]
        lengths = [e.num_frames for e in chunk]
        tmax = max(lengths)
        tr = ProgressTracker(backend, task_text, ref_start, ref_goal, len(chunk), fusion=fusion,
                             completion_threshold=completion_threshold, **tracker_kwargs)
        frames = {v: [torch.from_numpy(np.ascontiguousarray(e.frames[v])) for e in chunk] for v in views}

        def obs_at(t, frames=frames):
            return {"images": {v: torch.stack([x[min(t, x.shape[0] - 1)] for x in frames[v]]) for v in views}}

        tr.reset(torch.arange(len(chunk)), obs_at(0))
        if anchors is not None:
            anchors += [bool(x) for x in tr.anchors_ok.tolist()]
        out = np.zeros((len(chunk), tmax), np.float32)
        for t in range(1, tmax):
            phi, _ = tr(obs_at(t))
            out[:, t] = phi.numpy()
        curves += [out[i, :n] for i, n in enumerate(lengths)]
    return curves


def evaluate_episodes(backend, episodes, task_text: str, ref_start: dict, ref_goal: dict, fusion: str = "auto",
                      completion_threshold: float = 0.95) -> dict:
    """VOC, completion accuracy and progress MAE of one task's episodes.

    Returns:
        {"voc": mean VOC over successful episodes (NaN if none), "voc_all": [per successful
        episode], "completion_accuracy" (final progress >= threshold agrees with the file's
        success flag), "mae": mean |tracked - true| over frames of episodes with ground truth
        (NaN if none), "episodes": n, "successful": n, "curves": [float32 [T+1]],
        "anchors_off": n episodes tracked without anchors, "anchors_off_episodes": [their names],
        "skipped": {metric: why} for the metrics that could not be computed}.
    """
    anchors: list[bool] = []
    curves = track_episodes(backend, episodes, task_text, ref_start, ref_goal, fusion, completion_threshold,
                            anchors=anchors)
    vocs = [voc(c) for c, e in zip(curves, episodes, strict=False) if e.success]
    judged = [bool(c[-1] >= completion_threshold) == bool(e.success) for c, e in zip(curves, episodes, strict=False)]
    errs = [np.abs(c - e.progress).mean() for c, e in zip(curves, episodes, strict=False) if e.progress is not None]
    skipped = {}
    if not errs:
        skipped["mae"] = "no episode has ground-truth progress (the file has no progress dataset)"
    elif len(errs) < len(episodes):
        skipped["mae"] = f"over the {len(errs)} of {len(episodes)} episodes with ground-truth progress only"
    if not vocs:
        skipped["voc"] = "no successful episode (VOC is the rank correlation over successful episodes)"
    off = [e.name or f"seed {e.seed}" for e, ok in zip(episodes, anchors, strict=False) if not ok]
    return {"voc": float(np.mean(vocs)) if vocs else float("nan"), "voc_all": vocs,
            "completion_accuracy": float(np.mean(judged)), "mae": float(np.mean(errs)) if errs else float("nan"),
            "episodes": len(episodes), "successful": int(sum(e.success for e in episodes)), "curves": curves,
            "anchors_off": len(off), "anchors_off_episodes": off, "skipped": skipped}


def plot_curves(path: str | os.PathLike, episodes, curves, title: str, max_plots: int = 16) -> Path:
    """Save a PNG grid of tracked (solid) vs true (dashed) progress, one panel per episode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(len(episodes), max_plots)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for i in range(rows * cols):
        ax = axes[i // cols][i % cols]
        if i >= n:
            ax.axis("off")
            continue
        e, c = episodes[i], curves[i]
        ax.plot(c, label="tracked")
        if e.progress is not None:
            ax.plot(e.progress, "--", label="true")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(f"seed {e.seed} {e.imperfection}{' ok' if e.success else ' fail'}", fontsize=8)
        if i == 0:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return path


def task_references(meta: dict, episodes, views, reference: dict | None = None) -> tuple[str, dict, dict]:
    """Task text and reference frames for a list of one task's episodes: those of an explicit
    reference (``reference``: {task: [episodes of a ``reference=`` file]}, its first successful
    episode) or the checkpoint's stored ones; never the episodes under evaluation.

    Raises:
        ValueError: neither holds the task (names it and the tasks the checkpoint holds).
    """
    task = episodes[0].task
    if reference and reference.get(task):
        s, g = reference_from_episodes(reference[task], views)
        return episodes[0].task_text or reference[task][0].task_text, s, g
    ref = meta["references"].get(task)
    if ref is not None:
        return ref["text"], {v: ref["start"][i].numpy() for i, v in enumerate(views)}, \
            {v: ref["goal"][i].numpy() for i, v in enumerate(views)}
    raise ValueError(f"no reference start/goal frames for task {task!r}: the checkpoint holds "
                     f"{sorted(meta['references']) or 'none'}; give reference=<episode file of {task}> (its first "
                     "successful episode), or adapt the checkpoint to the task (dopa reward-adapt)")


def evaluate_checkpoint(model, meta, episodes, fusion="auto", completion_threshold=0.95, out=None,
                        tag: str = "", reference: dict | None = None, log=print) -> dict:
    """Per-task metrics (and plots into ``out`` when given) for a loaded GRM. Returns {task: metrics},
    each with the ``fusion`` used (``auto`` resolved: ``precision``).

    Reference frames come from ``reference`` ({task: episodes}, a ``reference=`` file) or the
    checkpoint (:func:`task_references`); every episode whose anchors the tracker switched off is
    reported through ``log`` (one line each).

    Raises:
        ValueError: a task with no reference frames (before anything is tracked).
    """
    fusion = resolve_fusion(str(fusion), has_distribution=True)
    backend = GRMBackend(model, {r["text"]: r["text_emb"] for r in meta["references"].values()})
    by_task: dict[str, list] = {}
    for e in episodes:
        by_task.setdefault(e.task, []).append(e)
    refs = {task: task_references(meta, eps, model.views, reference) for task, eps in by_task.items()}
    results = {}
    for task, eps in by_task.items():
        text, rs, rg = refs[task]
        r = evaluate_episodes(backend, eps, text, rs, rg, fusion, completion_threshold)
        for name in r["anchors_off_episodes"]:
            log(f"warning: {task}{tag} {name}: start/goal anchors switched off (the model's hop from the first "
                f"frame to the reference goal was below 0.5, or the goal looks like the start); tracked incrementally")
        if out is not None:
            r["plot"] = str(plot_curves(Path(out) / f"progress_{task}{tag}.png", eps, r["curves"],
                                        f"{task}{tag}: VOC {r['voc']:.3f}, MAE {r['mae']:.3f} (fusion={fusion})"))
        results[task] = {**r, "fusion": fusion}
    return results


def print_table(results: dict) -> None:
    """Print one row per task: episodes, successful ones, VOC, completion accuracy, MAE, episodes
    tracked without anchors; then one line per skipped metric and why."""
    print(f"{'task':<16} {'episodes':>8} {'success':>7} {'VOC':>7} {'complete acc':>12} {'MAE':>7} {'anchors off':>11}")
    for task, r in results.items():
        print(f"{task:<16} {r['episodes']:>8} {r['successful']:>7} {r['voc']:>7.3f} "
              f"{r['completion_accuracy']:>12.3f} {r['mae']:>7.3f} {r.get('anchors_off', 0):>11}")
    for task, r in results.items():
        for metric, why in r.get("skipped", {}).items():
            print(f"{task}: {metric} {'skipped' if 'only' not in why else 'computed'}: {why}")
