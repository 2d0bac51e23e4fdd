"""The ``dopa tasks`` job."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
from omegaconf import DictConfig

from basics.atomic import atomic_file
from sim import TASKS, get_task, make_env


def run_tasks(cfg: DictConfig) -> int:
    """List the simulation tasks (family, views, time limit, text); with ``task=<name>``, also its
    state layout and action size; with ``render=true``, save a PNG of every view after reset
    (``[image_size, n_views * image_size, 3] uint8``, written to a temp file beside ``out`` and
    renamed onto it, so ``out`` is never half-written)."""
    if cfg.task is None and cfg.render:
        raise ValueError("render=true needs task=<name> (the task whose views are rendered); 'dopa tasks' lists them")
    if cfg.task is None:
        print(f"{'task':<18} {'family':<10} {'steps':>5}  {'views':<26} text")
        for spec in TASKS.values():
            print(f"{spec.name:<18} {spec.family:<10} {spec.max_episode_steps:>5}  "
                  f"{','.join(spec.cameras):<26} {spec.text}")
        return 0
    spec = get_task(str(cfg.task))
    env = make_env(spec.name, num_envs=1, seed=int(cfg.seed))
    try:
        obs, _ = env.reset()
        print(f"{spec.name}: {spec.text!r} ({spec.family}, time limit {spec.max_episode_steps} steps)")
        print(f"action: float32 [B, {env.action_dim}] in [-1, 1]")
        print(f"state: float32 [B, {env.state_dim}], layout:")
        start = 0
        for key, size in env.state_layout:
            print(f"  [{start}:{start + size}] {key}")
            start += size
        print("views: " + ", ".join(f"{v} -> camera '{c}'" for v, c in spec.cameras.items()))
        if cfg.render:
            frames = env.render(tuple(spec.cameras), image_size=int(cfg.image_size))
            grid = np.concatenate([frames[v][0].numpy() for v in spec.cameras], axis=1)
            out = Path(str(cfg.out))
            if out.is_dir():
                raise IsADirectoryError(f"out={str(cfg.out)!r} is a folder; give a file path for the image, "
                                        "e.g. out=views.png")
            with atomic_file(out, out.suffix or ".png") as tmp:  # temp file beside out, then os.replace
                iio.imwrite(tmp, grid)
            print(f"saved {cfg.out} ({', '.join(spec.cameras)}, left to right)")
    finally:
        env.close()
    return 0
