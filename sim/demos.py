"""Scripted demonstrations (some of them imperfect) recorded to an HDF5 episode file: what the
``dopa demos`` job (jobs/demos.py) runs.

    >>> record_demos("lift", 50, "data/lift.hdf5", views=("front", "wrist"), image_size=64)

Episode ``i`` uses env seed ``seed + i``. Its imperfection is drawn from ``imperfections`` (weights;
the counts are rounded to whole episodes and shuffled with ``seed``). Recording stops
``post_success_steps`` after success, ``undo_steps`` after an imperfect episode starts undoing its
progress, ``stop_steps`` after a stopped one stops, or at the time limit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
from tqdm import tqdm

from basics.checks import check_float, check_int, check_seed
from sim import make_env
from sim.episodes import Episode, EpisodeWriter
from sim.experts import EXPERT_TASKS, IMPERFECTIONS, ScriptedExpert
from sim.tasks import get_task
from sim.video import write_episode_video

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


#: weights of the imperfections when none are given (configs/demos.yaml's defaults)
DEFAULT_IMPERFECTIONS = {"none": 0.7, "noise": 0.1, "stop": 0.1, "regress": 0.1}


def record_demos(task: str, n: int, out, *, views: Sequence[str] = (), image_size: int = 64, seed: int = 0,
                 controller: str = "osc_pose", imperfections: Mapping[str, float] | None = None,
                 noise_std: float = 0.3, max_episode_steps: int | None = None, post_success_steps: int = 10,
                 undo_steps: int = 25, stop_steps: int = 20, video_dir=None, fps: int = 20) -> dict[str, list[bool]]:
    """Record ``n`` scripted demonstrations (some imperfect) of a robosuite task to the HDF5 file ``out``
    (robomimic layout, :class:`sim.episodes.EpisodeWriter`: written atomically), with one MP4 per
    episode in ``video_dir`` (views side by side, keyframes marked) when given.

    Args:
        task: a task with a scripted expert (:data:`sim.experts.EXPERT_TASKS`).
        n: episodes (>= 1); episode ``i`` uses env seed ``seed + i``.
        out: the ``.hdf5`` file to write (not a folder).
        views: camera views stored per frame (``()``: state only); image_size: their pixels per side.
        seed: env seed of episode 0; also shuffles the imperfection plan and seeds the expert's noise.
        controller: ``osc_pose`` | ``joint_position``.
        imperfections: weights of ``none/noise/stop/regress`` (default :data:`DEFAULT_IMPERFECTIONS`);
            counts are rounded to whole episodes (:func:`allocate_imperfections`).
        noise_std: Gaussian action noise of ``noise`` episodes (action units, >= 0).
        max_episode_steps: most actions per episode (``None``: the task's time limit, doubled for
            ``joint_position``).
        post_success_steps / undo_steps / stop_steps: steps kept after success / after a ``regress``
            episode starts undoing / after a ``stop`` episode stops (>= 0).
        video_dir: folder of the MP4s (``None``: no videos); needs at least one view. fps: their frame rate.
    Returns:
        ``{imperfection: [success of each of its episodes]}`` in recording order.
    Raises:
        ValueError: no expert for ``task``; a bad count, weight, step limit or noise; ``out`` is a
            folder; videos without views; the messages of :func:`sim.make_env`.
    """
    if task not in EXPERT_TASKS:
        raise ValueError(f"no scripted expert for task {task!r}; experts exist for: {', '.join(EXPERT_TASKS)}")
    n = check_int("n", n, 1)
    seed = check_seed(seed, count=n)  # episode i: seed + i, stored as a uint32 attribute
    views = [str(v) for v in views]
    spec = get_task(task)
    limit = max_episode_steps
    if limit is None:
        limit = spec.max_episode_steps * (2 if controller == "joint_position" else 1)
    limit = check_int("max_episode_steps", limit, 1)
    check_float("noise_std", noise_std, low=0.0)
    steps = {key: check_int(key, value, 0) for key, value in
             (("post_success_steps", post_success_steps), ("undo_steps", undo_steps), ("stop_steps", stop_steps))}
    if video_dir is not None:
        check_int("fps", fps, 1)
        if not views:
            raise ValueError("videos need at least one view")
    out = os.fspath(out)
    if os.path.isdir(out):
        raise ValueError(f"out={out!r} is a folder; out is the .hdf5 file to write")
    plan = allocate_imperfections(n, DEFAULT_IMPERFECTIONS if imperfections is None else imperfections, int(seed))
    env_kwargs = {"controller": str(controller), "max_episode_steps": limit + 1, "terminate_on_success": False}
    env = make_env(task, num_envs=1, views=tuple(views), image_size=int(image_size), seed=int(seed), **env_kwargs)
    successes = {k: [] for k in IMPERFECTIONS}
    try:
        expert = ScriptedExpert(env, seed=int(seed), noise_std=float(noise_std))
        with EpisodeWriter(out, task, env_kwargs, views, int(image_size)) as writer:
            bar = tqdm(range(n), desc=f"demos {task}", unit="ep")
            for i in bar:
                ep = record_episode(env, expert, seed=int(seed) + i, imperfection=plan[i], max_steps=limit, **steps)
                ep.name = writer.add(ep)
                successes[ep.imperfection].append(ep.success)
                if video_dir is not None:
                    write_episode_video(ep, os.path.join(os.fspath(video_dir), f"{ep.name}.mp4"),
                                        subtasks=spec.subtasks, fps=int(fps))
                clean = successes["none"]
                bar.set_postfix(T=ep.num_steps, ok=f"{sum(clean)}/{len(clean)}")
    finally:
        env.close()
    return successes
