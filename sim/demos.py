"""The ``dopa demos`` job: record scripted demonstrations (some of them imperfect) to an HDF5 file.

    dopa demos task=lift n=50 views=[front,wrist] image_size=64 out=data/lift.hdf5
    dopa demos task=door n=20 controller=joint_position video=true

Episode ``i`` uses env seed ``seed + i``. Its imperfection is drawn from ``imperfections`` (weights;
the counts are rounded to whole episodes and shuffled with ``seed``). Recording stops
``post_success_steps`` after success, ``undo_steps`` after an imperfect episode starts undoing its
progress, ``stop_steps`` after a stopped one stops, or at the time limit.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from sim.episodes import Episode, EpisodeWriter
from sim.experts import EXPERT_TASKS, IMPERFECTIONS, ScriptedExpert

log = logging.getLogger(__name__)


def allocate_imperfections(n: int, weights: dict, seed: int) -> list[str]:
    """``n`` imperfection names in proportion to ``weights`` (largest remainder), shuffled by ``seed``.

    Raises:
        ValueError: an unknown name, a negative or non-finite weight, or all weights zero.
    """
    names = list(weights)
    for k in names:
        if k not in IMPERFECTIONS:
            raise ValueError(f"unknown imperfection {k!r}; known: {', '.join(IMPERFECTIONS)}")
    w = np.asarray([float(weights[k]) for k in names], dtype=np.float64)
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"imperfection weights must be finite, >= 0 and not all 0, got {dict(weights)}")
    share = w / w.sum() * n
    counts = np.floor(share).astype(int)
    for j in np.argsort(-(share - counts), kind="stable")[: n - counts.sum()]:
        counts[j] += 1
    out = [name for name, c in zip(names, counts, strict=True) for _ in range(c)]
    np.random.default_rng(seed).shuffle(out)
    return out


def record_episode(env, expert: ScriptedExpert, seed: int, imperfection: str = "none",
                   max_steps: int | None = None, post_success_steps: int = 10, undo_steps: int = 25,
                   stop_steps: int = 20) -> Episode:
    """Run one expert episode in sub-env 0 of ``env`` and return it with every frame.

    Args:
        env: ``sim.make_env(task, num_envs=1, views=..., terminate_on_success=False,
            max_episode_steps > max_steps)`` (sync): the env's own time limit must not end the
            episode, since its autoreset would replace the last state before progress is read.
        expert: a :class:`sim.experts.ScriptedExpert` on ``env``.
        seed: env seed of this episode.
        imperfection: one of :data:`sim.experts.IMPERFECTIONS`.
        max_steps: most actions to record (default: the task's time limit).
        post_success_steps / undo_steps / stop_steps: steps kept after success / after undoing
            begins / after stopping.
    Returns:
        :class:`sim.episodes.Episode` (frames for ``env.views``).
    Raises:
        ValueError: ``env`` has more than one sub-env, or its time limit is not above ``max_steps``.
    """
    if env.num_envs != 1:
        raise ValueError(f"record_episode needs num_envs=1, got {env.num_envs}")
    max_steps = int(max_steps or env.spec.max_episode_steps)
    limit = env.envs[0].max_episode_steps
    if limit <= max_steps:
        raise ValueError(f"env time limit {limit} must exceed max_steps {max_steps} (make the env with "
                         f"max_episode_steps={max_steps + 1} or more)")
    expert.set_imperfection(imperfection)
    obs, _ = env.reset(seed=int(seed))
    expert.reset()
    views = env.views
    frames = {v: [obs["images"][v][0].numpy()] for v in views}
    states = [obs["state"][0].numpy()]
    progress = [expert.progress(0)]
    actions, rewards, successes = [], [], []
    for t in range(1, max_steps + 1):
        action = expert.act()
        obs, reward, terminated, truncated, info = env.step(action)
        expert.observe_step()
        if bool(terminated[0] or truncated[0]):  # cannot happen with the limits checked above
            raise RuntimeError("the env ended the episode itself; raise its max_episode_steps")
        actions.append(action[0].numpy())
        rewards.append(float(reward[0]))
        successes.append(bool(info["success"][0]))
        for v in views:
            frames[v].append(obs["images"][v][0].numpy())
        states.append(obs["state"][0].numpy())
        progress.append(expert.progress(0))
        sf, uf, st = expert.success_frame(0), expert.undone(0), expert.stopped(0)
        if imperfection == "regress" and uf is not None:
            if t - uf >= undo_steps:
                break
        elif imperfection == "stop" and st is not None:
            if t - st >= stop_steps:
                break
        elif imperfection != "regress" and sf is not None and t - sf >= post_success_steps:
            break
    T = len(actions)
    dones = np.zeros(T, dtype=np.uint8)
    dones[-1] = 1
    kf = expert.keyframes(0)
    names = list(env.spec.subtasks[: len(kf)])
    return Episode(
        frames={v: np.stack(f).astype(np.uint8) for v, f in frames.items()},
        states=np.stack(states).astype(np.float32), actions=np.stack(actions).astype(np.float32),
        rewards=np.asarray(rewards, dtype=np.float32), dones=dones,
        progress=np.clip(np.asarray(progress, dtype=np.float32), 0.0, 1.0),
        keyframes=np.asarray(kf, dtype=np.int64), keyframe_names=names, success=successes[-1],
        imperfection=imperfection, seed=int(seed), task=env.task, task_text=env.spec.text)


def run(cfg) -> int:
    """Record scripted demonstrations (some imperfect) of a robosuite task to an HDF5 file (robomimic
    layout, written atomically), with optional MP4 videos (views side by side, keyframes marked).

    Config keys: task, n, views, image_size, out, seed, controller, imperfections (weights of
    none/noise/stop/regress), noise_std, max_episode_steps (null: the task's limit, doubled for
    joint_position), post_success_steps, undo_steps, stop_steps, video, video_dir, fps.
    """
    from omegaconf import OmegaConf
    from tqdm import tqdm

    import sim

    task = str(cfg.task)
    if task not in EXPERT_TASKS:
        raise SystemExit(f"dopa demos: no scripted expert for task {task!r}; experts exist for: "
                         f"{', '.join(EXPERT_TASKS)}")
    from basics.checks import check_float, check_int

    n = check_int("n", cfg.n, 1)
    views = [str(v) for v in (cfg.views or [])]
    spec = sim.get_task(task)
    limit = cfg.max_episode_steps
    if limit is None:
        limit = spec.max_episode_steps * (2 if cfg.controller == "joint_position" else 1)
    limit = check_int("max_episode_steps", limit, 1)
    check_float("noise_std", cfg.noise_std, low=0.0)
    for key in ("post_success_steps", "undo_steps", "stop_steps"):
        check_int(key, cfg[key], 0)
    if cfg.video:
        check_int("fps", cfg.fps, 1)
    if os.path.isdir(str(cfg.out)):
        raise ValueError(f"out={str(cfg.out)!r} is a folder; out is the .hdf5 file to write")
    weights = OmegaConf.to_container(cfg.imperfections, resolve=True)
    plan = allocate_imperfections(n, weights, int(cfg.seed))
    env_kwargs = {"controller": str(cfg.controller), "max_episode_steps": limit + 1,
                  "terminate_on_success": False}
    env = sim.make_env(task, num_envs=1, views=tuple(views), image_size=int(cfg.image_size),
                       seed=int(cfg.seed), **env_kwargs)
    expert = ScriptedExpert(env, seed=int(cfg.seed), noise_std=float(cfg.noise_std))
    out = str(cfg.out)
    video_dir = None
    if cfg.video:
        if not views:
            raise SystemExit("dopa demos: video=true needs at least one view (views=[front])")
        video_dir = str(cfg.video_dir) if cfg.video_dir else os.path.splitext(out)[0] + "_videos"
    from sim.video import write_episode_video

    successes = {k: [] for k in IMPERFECTIONS}
    try:
        with EpisodeWriter(out, task, env_kwargs, views, int(cfg.image_size)) as writer:
            bar = tqdm(range(n), desc=f"demos {task}", unit="ep")
            for i in bar:
                ep = record_episode(env, expert, seed=int(cfg.seed) + i, imperfection=plan[i], max_steps=limit,
                                    post_success_steps=int(cfg.post_success_steps),
                                    undo_steps=int(cfg.undo_steps), stop_steps=int(cfg.stop_steps))
                name = writer.add(ep)
                ep.name = name
                successes[ep.imperfection].append(ep.success)
                if video_dir:
                    write_episode_video(ep, os.path.join(video_dir, f"{name}.mp4"), subtasks=spec.subtasks,
                                        fps=int(cfg.fps))
                clean = successes["none"]
                bar.set_postfix(T=ep.num_steps, ok=f"{sum(clean)}/{len(clean)}")
    finally:
        env.close()
    summary = {k: f"{sum(v)}/{len(v)}" for k, v in successes.items() if v}
    print(f"wrote {n} episodes of {task!r} to {out}; success by imperfection: {json.dumps(summary)}")
    if video_dir:
        print(f"videos in {video_dir}/")
    return 0
