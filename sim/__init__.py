"""Simulation: every task behind one batched API, ``sim.make_env``.

    >>> env = sim.make_env("lift", num_envs=2, views=("front", "wrist"), image_size=64, seed=0)
    >>> obs, info = env.reset()
    >>> obs["state"].shape, obs["images"]["front"].shape     # float32 [2, D], uint8 [2, 64, 64, 3]
    >>> obs, reward, terminated, truncated, info = env.step(torch.zeros(2, env.action_dim))
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

from sim.tasks import TASKS, TaskSpec, check_seed, get_task, task_text  # noqa: E402

BACKENDS = ("cpu", "warp")

__all__ = ["make_env", "TASKS", "TaskSpec", "get_task", "task_text", "BACKENDS"]


def make_env(name: str, num_envs: int = 1, views=(), image_size: int = 64, seed: int = 0,
             backend: str = "cpu", vectorization: str = "sync", device: str | None = None, **task_kwargs):
    """Make ``num_envs`` copies of task ``name`` behind Gymnasium's vector API with torch tensors.

    Args:
        name: task name, e.g. ``"cartpole-swingup"``, ``"lift"`` (see ``sim.TASKS``).
        num_envs: batch size B >= 1.
        views: named camera views to return in every observation (e.g. ``("front", "wrist")``);
            empty for state only. ``env.render(views)`` renders on demand either way.
        image_size: pixels per side of rendered views (square).
        seed: non-negative int; sub-env ``i`` is seeded with ``seed + i``.
        backend: ``"cpu"`` (MuJoCo through dm_control / robosuite) or ``"warp"`` (MuJoCo Warp,
            all envs as worlds of one batched simulation on ``device``; dm_control tasks
            ``sim.warp_env.supported_tasks()``; state only, no views; returns
            ``sim.warp_env.WarpEnv``).
        vectorization: ``"sync"`` (a loop in this process) or ``"async"`` (a worker process per env).
        device: ``backend="warp"`` only: ``"cuda"``, ``"cuda:N"`` or ``"cpu"`` (Warp's CPU device);
            default ``"cuda"`` when available, else ``"cpu"``.
        **task_kwargs: passed to the task: ``max_episode_steps``, ``max_force`` (N),
            ``max_torque`` (N m); robosuite: ``controller`` (``osc_pose`` | ``joint_position``),
            ``reward_shaping``, ``terminate_on_success``; dm_control: the suite's task kwargs.

    Returns:
        sim.vector.BatchedEnv
    Raises:
        ValueError: unknown task, view, backend or vectorization; bad num_envs, image_size or seed.
            Messages list the allowed values.
    """
    spec = get_task(name)
    from sim.render import check_mujoco_gl, gl_guard

    check_mujoco_gl()
    with gl_guard():  # MuJoCo loads its GL backend at import
        import mujoco  # noqa: F401
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    from sim.vector import VECTORIZATIONS, BatchedEnv

    if vectorization not in VECTORIZATIONS:
        raise ValueError(f"unknown vectorization {vectorization!r}; known: {', '.join(VECTORIZATIONS)}")
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not 8 <= image_size <= 1024:
        raise ValueError(f"image_size must be an int in [8, 1024], got {image_size!r}")
    seed = check_seed(seed)
    views = (views,) if isinstance(views, str) else tuple(views)
    for v in views:
        if v not in spec.cameras:
            raise ValueError(f"unknown view {v!r} for task {name!r}; known: {', '.join(spec.cameras)}")
    if len(set(views)) != len(views):
        raise ValueError(f"views repeat a name: {list(views)}")
    if backend == "warp":
        from sim.warp_env import OPTIONS, WarpEnv, supported_tasks

        if name not in supported_tasks():
            raise ValueError(f"task {name!r} is not supported by backend 'warp'; supported: "
                             f"{', '.join(supported_tasks())} (use backend='cpu' for the others)")
        if views:
            raise ValueError(f"backend 'warp' renders no images (views {list(views)} asked for); "
                             "use backend='cpu' for camera views")
        for k in task_kwargs:
            if k not in OPTIONS:
                raise ValueError(f"unknown option {k!r} for backend 'warp'; known: {', '.join(OPTIONS)}")
        return WarpEnv(spec, num_envs, seed=seed, device=device, image_size=image_size, **task_kwargs)
    if device not in (None, "cpu"):
        raise ValueError(f"device {device!r} needs backend='warp'; backend {backend!r} runs on the CPU")
    if "controller" in task_kwargs and spec.family != "robosuite":
        raise ValueError(f"task {name!r} has no controller option (only robosuite tasks do)")
    if spec.family == "robosuite":
        from sim.robosuite_env import CONTROLLERS

        ctrl = task_kwargs.get("controller", "osc_pose")
        if ctrl not in CONTROLLERS:
            raise ValueError(f"unknown controller {ctrl!r}; known: {', '.join(CONTROLLERS)}")
    return BatchedEnv(spec, num_envs, views, image_size, seed, vectorization, **task_kwargs)
