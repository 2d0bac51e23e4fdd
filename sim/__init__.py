"""Simulation: every task behind one batched API, ``sim.make_env``, and its typed config, ``sim.EnvConfig``.

    >>> env = sim.make_env("lift", num_envs=2, views=("front", "wrist"), image_size=64, seed=0)
    >>> obs, info = env.reset()
    >>> obs["state"].shape, obs["images"]["front"].shape     # float32 [2, D], uint8 [2, 64, 64, 3]
    >>> obs, reward, terminated, truncated, info = env.step(torch.zeros(2, env.action_dim))

    >>> cfg = sim.EnvConfig("cartpole-swingup", kwargs={"max_episode_steps": 100})   # validated here
    >>> env = cfg.make(num_envs=4, seed=0)                                          # THE env builder
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports MuJoCo

import dataclasses  # noqa: E402
import importlib  # noqa: E402
import inspect  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402

import numpy as np  # noqa: E402

from basics.checks import check_seed, check_threads  # noqa: E402
from sim import limits  # noqa: E402
from sim.render import check_mujoco_gl, gl_guard  # noqa: E402
from sim.tasks import CONTROLLERS, TASKS, TaskSpec, get_task, task_text  # noqa: E402
from sim.vector import VECTORIZATIONS, BatchedEnv  # noqa: E402
from sim.warp_env import OPTIONS as WARP_OPTIONS  # noqa: E402
from sim.warp_env import WarpEnv, supported_tasks  # noqa: E402

BACKENDS = ("cpu", "warp", "mujoco")

__all__ = ["make_env", "EnvConfig", "TASKS", "TaskSpec", "get_task", "task_text", "BACKENDS", "VECTORIZATIONS",
           "CONTROLLERS", "check_image_size", "tasks_with_progress", "check_has_progress", "task_options",
           "SCALE_RANGE", "gravity_tilt"]

#: the one rule for rendered sizes (:func:`sim.limits.check_image_size`: an int in [8, 1024])
check_image_size = limits.check_image_size
SCALE_RANGE = limits.SCALE_RANGE
gravity_tilt = limits.gravity_tilt

#: options every CPU task takes (sim.base.TaskEnv)
_COMMON_OPTIONS = ("max_episode_steps", "max_force", "max_torque")
#: robosuite.make arguments sim.robosuite_env.RobosuiteEnv sets itself (or the task class fixes)
_ROBOSUITE_FIXED = ("self", "robots", "controller_configs", "has_renderer", "has_offscreen_renderer",
                    "use_camera_obs", "hard_reset", "ignore_done", "reward_shaping", "control_freq", "seed",
                    "single_object_mode", "object_type")


def task_options(name: str, backend: str = "cpu") -> tuple[str, ...]:
    """The keyword options ``make_env(name, backend=backend, **options)`` accepts for this task.

    CPU: ``max_episode_steps``, ``max_force``, ``max_torque``, then dm_control: the suite task
    function's own arguments (``time_limit``, ``environment_kwargs``; ``random`` is the seed);
    robosuite: ``controller``, ``reward_shaping``, ``terminate_on_success`` and the task class's
    ``robosuite.make`` arguments that the env does not set itself. Warp: ``sim.warp_env.OPTIONS``.

    Raises:
        ValueError: unknown task or backend.
    """
    spec = get_task(name)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    if backend == "warp":
        return tuple(WARP_OPTIONS)
    _import_mujoco()
    if backend == "mujoco":
        from sim import mujoco_batched  # lazy: imports MuJoCo (GL backend checked above)

        return tuple(mujoco_batched.OPTIONS)
    if spec.family == "dmc":
        with gl_guard():  # dm_control sets up its GL platform at import
            module = importlib.import_module(f"dm_control.suite.{spec.source[0]}")
        params = inspect.signature(module.SUITE[spec.source[1]]).parameters
        own = [p for p in params if p != "random"]
    else:
        from sim import robosuite_env  # lazy: imports robosuite, which loads its GL backend at import

        robosuite_env._quiet_robosuite()
        with gl_guard():
            from robosuite.environments.base import REGISTERED_ENVS
        cls, params = REGISTERED_ENVS[spec.source[0]], {}
        for klass in cls.__mro__:  # the first __init__ naming its arguments (PickPlaceCan takes **kwargs)
            params = inspect.signature(klass.__init__).parameters
            if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
                break
        own = ["controller", "reward_shaping", "terminate_on_success"] + [p for p in params
                                                                          if p not in _ROBOSUITE_FIXED]
    return _COMMON_OPTIONS + tuple(own)


def _check_task_options(spec: TaskSpec, backend: str, task_kwargs: Mapping) -> None:
    """Unknown options: one line listing the ones this task takes on this backend."""
    allowed = task_options(spec.name, backend)
    for k in task_kwargs:
        if k not in allowed:
            raise ValueError(f"unknown option {k!r} for task {spec.name!r} (backend {backend!r}); "
                             f"known: {', '.join(allowed)}")


def _import_mujoco() -> None:
    """Check ``MUJOCO_GL`` and import MuJoCo under :func:`sim.render.gl_guard`, so a broken GL setup
    gives one :class:`sim.render.RenderingError` (MuJoCo loads its GL backend at import)."""
    check_mujoco_gl()
    with gl_guard():
        import mujoco  # noqa: F401  (lazy: MuJoCo loads its GL backend at import; checked just above)


def _check_choices(backend, vectorization) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    if vectorization not in VECTORIZATIONS:
        raise ValueError(f"unknown vectorization {vectorization!r}; known: {', '.join(VECTORIZATIONS)}")


def _check_warp(name: str, views: tuple, task_kwargs: Mapping) -> None:
    """Backend ``"warp"``: a supported dm_control task, no views, only Warp's options."""
    _import_mujoco()  # supported_tasks() reads sim.dmc_rewards, which imports MuJoCo
    if name not in supported_tasks():
        raise ValueError(f"task {name!r} is not supported by backend 'warp'; supported: "
                         f"{', '.join(supported_tasks())} (use backend='cpu' for the others)")
    if views:
        raise ValueError(f"backend 'warp' renders no images (views {list(views)} asked for); "
                         "use backend='cpu' for camera views")
    for k in task_kwargs:
        if k not in WARP_OPTIONS:
            raise ValueError(f"unknown option {k!r} for backend 'warp'; known: {', '.join(WARP_OPTIONS)}")
    limits.check_wrench_bounds(task_kwargs.get("max_force", 50.0), task_kwargs.get("max_torque", 10.0))


def _check_mujoco(name: str, task_kwargs: Mapping, vectorization: str = "sync") -> None:
    """Backend ``"mujoco"``: a supported dm_control task, only its options, a thread count in [1, cores]."""
    if vectorization != "sync":
        raise ValueError(f"vectorization {vectorization!r} needs backend='cpu'; backend 'mujoco' steps its envs in "
                         "threads of this process (kwargs.threads)")
    _import_mujoco()
    from sim import mujoco_batched  # lazy: imports MuJoCo (GL backend checked above)

    if name not in mujoco_batched.supported_tasks():
        raise ValueError(f"task {name!r} is not supported by backend 'mujoco'; supported: "
                         f"{', '.join(mujoco_batched.supported_tasks())} (use backend='cpu' for the others)")
    for k in task_kwargs:
        if k not in mujoco_batched.OPTIONS:
            raise ValueError(f"unknown option {k!r} for backend 'mujoco'; known: {', '.join(mujoco_batched.OPTIONS)}")
    limits.check_wrench_bounds(task_kwargs.get("max_force", 50.0), task_kwargs.get("max_torque", 10.0))
    check_threads(task_kwargs.get("threads", 1))


def _check_controller(spec: TaskSpec, task_kwargs: Mapping) -> None:
    """The CPU backend's task options: a known controller, known option names, wrench bounds."""
    if "controller" in task_kwargs and spec.family != "robosuite":
        raise ValueError(f"task {spec.name!r} has no controller option (only robosuite tasks do)")
    _check_task_options(spec, "cpu", task_kwargs)
    limits.check_wrench_bounds(task_kwargs.get("max_force", 50.0), task_kwargs.get("max_torque", 10.0))
    if spec.family == "robosuite":
        ctrl = task_kwargs.get("controller", "osc_pose")
        if ctrl not in CONTROLLERS:
            raise ValueError(f"unknown controller {ctrl!r}; known: {', '.join(CONTROLLERS)}")


def tasks_with_progress() -> tuple[str, ...]:
    """Tasks whose ground-truth step-wise progress the simulator can report (``make_env(progress=True)``):
    the robosuite tasks with a scripted expert (``TaskSpec.subtasks``)."""
    return tuple(n for n, s in TASKS.items() if s.subtasks)


def check_has_progress(name: str, backend: str = "cpu") -> str:
    """``name`` when the simulator reports its ground-truth progress (:func:`tasks_with_progress`).

    Raises:
        ValueError: ``"task 'cartpole-swingup' has no ground-truth progress; tasks with it: lift, ..."``,
            or backend ``"warp"`` (no progress functions there).
    """
    if name not in tasks_with_progress():
        raise ValueError(f"task {name!r} has no ground-truth progress; tasks with it: "
                         f"{', '.join(tasks_with_progress())}")
    if backend != "cpu":
        raise ValueError(f"ground-truth progress needs backend 'cpu' (robosuite), got backend {backend!r}")
    return name


def make_env(name: str, num_envs: int = 1, views=(), image_size: int = 64, seed: int = 0,
             backend: str = "cpu", vectorization: str = "sync", device: str | None = None,
             progress: bool = False, **task_kwargs):
    """Make ``num_envs`` copies of task ``name`` behind Gymnasium's vector API with torch tensors.

    Args:
        name: task name, e.g. ``"cartpole-swingup"``, ``"lift"`` (see ``sim.TASKS``).
        num_envs: batch size B >= 1.
        views: named camera views to return in every observation (e.g. ``("front", "wrist")``);
            empty for state only. ``env.render(views)`` renders on demand either way.
        image_size: pixels per side of rendered views (square), an int in [8, 1024].
        seed: an int with ``0 <= seed`` and ``seed + num_envs - 1 < 2**32``; sub-env ``i`` is
            seeded with ``seed + i`` (:func:`basics.checks.check_seed`).
        backend: ``"cpu"`` (MuJoCo through dm_control / robosuite) or ``"warp"`` (MuJoCo Warp,
            all envs as worlds of one batched simulation on ``device``; dm_control tasks
            ``sim.warp_env.supported_tasks()``; state only, no views; returns
            ``sim.warp_env.WarpEnv``) or ``"mujoco"`` (the same dm_control tasks, one MjModel and
            MjData per env stepped in ``threads`` native threads, observations and rewards batched;
            returns ``sim.mujoco_batched.MujocoBatchedEnv``).
        vectorization: ``"sync"`` (a loop in this process) or ``"async"`` (a worker process per env).
        device: ``backend="warp"`` only: ``"cuda"``, ``"cuda:N"`` or ``"cpu"`` (Warp's CPU device);
            default ``"cuda"`` when available, else ``"cpu"``.
        progress: add ``obs["progress"]`` (float32 [B] in [0, 1]), the ground-truth step-wise
            progress of :class:`sim.experts.ProgressFunction` (robosuite tasks with a scripted
            expert: those with ``TaskSpec.subtasks``), privileged state for the oracle potential.
        **task_kwargs: passed to the task (:func:`task_options` lists them): ``max_episode_steps``,
            ``max_force`` (N), ``max_torque`` (N m), each a finite real number >= 0 (defaults 50 N,
            10 N m); robosuite: ``controller`` (``osc_pose`` | ``joint_position``),
            ``reward_shaping``, ``terminate_on_success``; dm_control: the suite's task kwargs.

    Returns:
        sim.vector.BatchedEnv (``sim.warp_env.WarpEnv`` for ``backend="warp"``)
    Raises:
        ValueError: unknown task, view, backend, vectorization or option (the message lists the
            task's options); bad num_envs, image_size, seed, max_force or max_torque; a repeated
            view; ``progress`` for a task without ground-truth progress. Messages list the allowed values.
        sim.render.RenderingError: ``MUJOCO_GL`` names no working GL backend.
    """
    spec = get_task(name)
    if progress:
        check_has_progress(name, backend)
    _import_mujoco()
    _check_choices(backend, vectorization)
    if isinstance(num_envs, np.integer) and not isinstance(num_envs, np.bool_):
        num_envs = int(num_envs)
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
    check_image_size(image_size)
    seed = check_seed(seed, count=num_envs)
    views = (views,) if isinstance(views, str) else tuple(views)
    for v in views:
        if v not in spec.cameras:
            raise ValueError(f"unknown view {v!r} for task {name!r}; known: {', '.join(spec.cameras)}")
    if views:
        views = tuple(limits.check_views(views, spec.cameras))  # no repeats
    if backend == "warp":
        _check_warp(name, views, task_kwargs)
        return WarpEnv(spec, num_envs, seed=seed, device=device, image_size=image_size, **task_kwargs)
    if device not in (None, "cpu"):
        raise ValueError(f"device {device!r} needs backend='warp'; backend {backend!r} runs on the CPU")
    if backend == "mujoco":
        _check_mujoco(name, task_kwargs, vectorization)
        from sim.mujoco_batched import MujocoBatchedEnv  # lazy: imports MuJoCo (GL backend checked above)

        return MujocoBatchedEnv(spec, num_envs, views, image_size, seed, **task_kwargs)
    _check_controller(spec, task_kwargs)
    if progress:
        task_kwargs = {**task_kwargs, "progress": True}
    return BatchedEnv(spec, num_envs, views, image_size, seed, vectorization, **task_kwargs)


def _plain(value):
    """Mappings -> dict and sequences -> list, recursively (a config loader's containers -> Python's)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


#: make_env's own parameters: set by EnvConfig's fields or by ``make(...)``, never through ``kwargs``
_NOT_TASK_KWARGS = ("name", "num_envs", "views", "image_size", "seed", "backend", "vectorization", "device",
                    "progress")


@dataclasses.dataclass
class EnvConfig:
    """The typed env config (``configs/env/<task>.yaml``, ``_target_: sim.EnvConfig``): what a run's
    env is, validated once here; :meth:`make` is the one env builder.

    One rule for the backend: ``backend``, ``vectorization`` (fields) and ``device`` (an argument of
    :meth:`make`, the learner's device) choose where the env runs; ``kwargs`` are the task's own
    options only and may not hold any of them.

    Raises (``__post_init__``, the messages of :func:`make_env`):
        ValueError: unknown task name, backend, vectorization or controller; image_size outside
            [8, 1024]; a task without a controller given one; backend ``"warp"`` with a task it does
            not support or an option it does not know; ``kwargs`` naming one of make_env's own
            parameters.
    """

    name: str
    """task name (``sim.TASKS``), e.g. ``"lift"``, ``"cartpole-swingup"``"""
    image_size: int = 64
    """pixels per side of rendered views (square), in [8, 1024]"""
    backend: str = "cpu"
    """``"cpu"`` (MuJoCo through dm_control / robosuite) or ``"warp"`` (MuJoCo Warp: all envs as worlds on the
    device given to :meth:`make`; dm_control tasks of ``sim.warp_env.supported_tasks()``, state only) or
    ``"mujoco"`` (those dm_control tasks on the CPU, physics in ``kwargs.threads`` threads, batched)"""
    vectorization: str = "sync"
    """``"sync"`` (sub-envs stepped in this process) or ``"async"`` (a worker process per sub-env; backend cpu)"""
    kwargs: dict = dataclasses.field(default_factory=dict)
    """the task's options, passed to :func:`make_env`: ``max_episode_steps`` (control steps), ``max_force``
    (N), ``max_torque`` (N m); robosuite: ``controller`` (``osc_pose`` | ``joint_position``),
    ``reward_shaping``, ``terminate_on_success``; dm_control: the suite's task kwargs"""

    def __post_init__(self):
        spec = get_task(self.name)
        _check_choices(self.backend, self.vectorization)
        check_image_size(self.image_size)
        if not isinstance(self.kwargs, Mapping):
            raise ValueError(f"kwargs must be a mapping of task options, got {self.kwargs!r}")
        self.kwargs = _plain(self.kwargs)
        for k in _NOT_TASK_KWARGS:
            if k in self.kwargs:
                raise ValueError(f"kwargs.{k} is not a task option: {k} is "
                                 + (f"a field of the env config (env.{k}=...)" if k in ("name", "image_size",
                                    "backend", "vectorization") else "given when the env is built"))
        if self.backend == "warp":
            _check_warp(self.name, (), self.kwargs)
        elif self.backend == "mujoco":
            _check_mujoco(self.name, self.kwargs, self.vectorization)
        else:
            _check_controller(spec, self.kwargs)

    @classmethod
    def from_dict(cls, d: Mapping) -> EnvConfig:
        """The config from a plain mapping, e.g. the ``env`` part of a run's stored config (a
        ``_target_`` key is ignored; a checkpoint written before ``_target_`` existed has none).

        Raises:
            ValueError: a key that is not a field (lists the fields), or the checks of ``__post_init__``.
        """
        fields = [f.name for f in dataclasses.fields(cls)]
        d = {k: v for k, v in _plain(d).items() if k != "_target_"}
        for k in d:
            if k not in fields:
                raise ValueError(f"unknown env config key {k!r}; known: {', '.join(fields)}")
        return cls(**d)

    def make(self, num_envs: int = 1, views=(), seed: int = 0, device: str | None = None, progress: bool = False):
        """Build the env: :func:`make_env` with this config.

        Args:
            num_envs: batch size B >= 1.
            views: camera views returned in every observation (``()``: state only).
            seed: non-negative int; sub-env ``i`` is seeded with ``seed + i``.
            device: the learner's device (``"cpu"``, ``"cuda"``, ``"cuda:N"``); backend ``"warp"``
                places its worlds there (``None``: CUDA when available), backend ``"cpu"`` ignores it
                (MuJoCo runs on the CPU; observations are CPU tensors).
            progress: report ``obs["progress"]``, the ground-truth progress (:func:`make_env`).
        Returns:
            sim.vector.BatchedEnv, or sim.warp_env.WarpEnv for backend ``"warp"``.
        Raises:
            ValueError: bad num_envs, views or seed, or ``progress`` for a task without it
                (messages of :func:`make_env`).
        """
        kwargs = dict(self.kwargs)
        if progress:
            kwargs["progress"] = True
        if self.backend == "warp":
            kwargs["device"] = device
        return make_env(self.name, num_envs=num_envs, views=tuple(views), image_size=self.image_size, seed=seed,
                        backend=self.backend, vectorization=self.vectorization, **kwargs)
