"""The ``dopa demos`` job: record scripted demonstrations (some of them imperfect) to an HDF5 file.

    dopa demos task=lift n=50 views=[front,wrist] image_size=64 out=data/lift.hdf5
    dopa demos task=door n=20 controller=joint_position video=true

Episode ``i`` uses env seed ``seed + i``. Its imperfection is drawn from ``imperfections`` (weights;
the counts are rounded to whole episodes and shuffled with ``seed``). Recording stops
``post_success_steps`` after success, ``undo_steps`` after an imperfect episode starts undoing its
progress, ``stop_steps`` after a stopped one stops, or at the time limit
(:func:`sim.demos.record_demos` does the work).
"""

from __future__ import annotations

import json
import os

from omegaconf import DictConfig, OmegaConf

from sim.demos import record_demos
from sim.experts import EXPERT_TASKS


def run(cfg: DictConfig) -> int:
    """Record scripted demonstrations (some imperfect) of a robosuite task to an HDF5 file (robomimic
    layout, written atomically), with optional MP4 videos (views side by side, keyframes marked).

    Config keys (configs/demos.yaml): task, n, views, image_size, out, seed, controller, imperfections
    (weights of none/noise/stop/regress), noise_std, max_episode_steps (null: the task's limit, doubled
    for joint_position), post_success_steps, undo_steps, stop_steps, video, video_dir (null: next to
    out, ``<out without .hdf5>_videos/``), fps.

    Raises:
        SystemExit: no scripted expert for ``task``; ``video=true`` without views.
        ValueError: the checks of :func:`sim.demos.record_demos`.
    """
    task = str(cfg.task)
    if task not in EXPERT_TASKS:
        raise SystemExit(f"dopa demos: error: no scripted expert for task {task!r}; experts exist for: "
                         f"{', '.join(EXPERT_TASKS)}")
    views = [str(v) for v in (cfg.views or [])]
    out = str(cfg.out)
    video_dir = None
    if cfg.video:
        if not views:
            raise SystemExit("dopa demos: video=true needs at least one view (views=[front])")
        video_dir = str(cfg.video_dir) if cfg.video_dir else os.path.splitext(out)[0] + "_videos"
    successes = record_demos(
        task, cfg.n, out, views=views, image_size=int(cfg.image_size), seed=int(cfg.seed),
        controller=str(cfg.controller), imperfections=OmegaConf.to_container(cfg.imperfections, resolve=True),
        noise_std=cfg.noise_std, max_episode_steps=cfg.max_episode_steps,
        post_success_steps=cfg.post_success_steps, undo_steps=cfg.undo_steps, stop_steps=cfg.stop_steps,
        video_dir=video_dir, fps=cfg.fps)
    summary = {k: f"{sum(v)}/{len(v)}" for k, v in successes.items() if v}
    n = sum(len(v) for v in successes.values())
    print(f"wrote {n} episodes of {task!r} to {out}; success by imperfection: {json.dumps(summary)}")
    if video_dir:
        print(f"videos in {video_dir}/")
    return 0
