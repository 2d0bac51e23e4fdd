"""The batched MuJoCo CPU backend: dm_control suite tasks, physics in native threads, the rest batched.

``sim.make_env(name, num_envs, backend="mujoco", threads=T)`` returns a :class:`MujocoBatchedEnv`
with the API and semantics of :class:`sim.vector.BatchedEnv` (the ``"cpu"`` backend): Gymnasium's
vector API with same-step autoreset, ``info["final_obs"]``, ``info["success"]``, ``info["diverged"]``,
perturbations per env (``apply_force``, ``set_scales``, ``set_gravity``, ``restore_nominal``) and
seeds (sub-env ``i`` seeded ``seed + i``).

What differs is where the time goes. Each env keeps its own dm_control ``Physics`` (one ``MjModel``
and one ``MjData`` per env, so masses, frictions and gravity can differ per env), but a control step
never enters dm_control's Python: the physics of all envs is advanced by MuJoCo's C ``mj_step*``
in a compiled loop (:func:`sim.native_step.step_chunk`: no Python per env, no GIL held), split
over up to ``threads`` chunks stepped at once on numba's threading layer
(:func:`sim.native_step.step_chunks`; the first steps alternate between one thread and the split,
timed, and the faster is kept; a batch whose physics is too cheap to pay for a second thread is not
split at all, see :data:`MIN_SECONDS_PER_THREAD`), each env's state fields are copied with one
``memcpy`` into a ``[B, ...]`` buffer, and rewards are computed for the whole batch at once in float64 numpy by
:mod:`sim.dmc_rewards` (the functions the MuJoCo Warp backend calls on torch tensors; on batches
this small a numpy operation costs a third of a torch one). Observations that are plain copies of
state fields (cheetah, walker, cartpole) are one ``np.take`` of that buffer (found by probing the
task's observation function); hopper's calls the function.
``benchmarks/sim_throughput.py`` also measures ``mujoco.rollout`` (MuJoCo's own thread pool); it
steps with ``mj_step`` from a given state and so cannot reproduce dm_control's step below, and it
was not faster on the 2-core machines measured.

Stepping is dm_control's ``Physics.step`` (``legacy_step``): ``mj_step2``, ``n_sub_steps - 1`` times
``mj_step``, then ``mj_step1`` (RK4 models: ``n_sub_steps`` times ``mj_step``, then ``mj_step1``).
Resets run the suite task's own ``initialize_episode`` in its ``reset_context`` (dm_control's
``Environment.reset``) with its numpy random stream. So for one seed, the same actions, forces and
scales, states match the ``"cpu"`` backend's bit for bit, observations and rewards to float64 round-off.
A MuJoCo fatal error inside the compiled loop (its arena or stack exhausted) ends the process with
MuJoCo's message (exit status 1, ``MUJOCO_LOG.TXT``) where the bindings raise ``mujoco.FatalError``
(see :mod:`sim.native_step`).
"""

from __future__ import annotations

import ctypes
import time
import warnings

import gymnasium as gym
import mujoco
import numpy as np
import torch
from gymnasium.vector.utils import batch_space

from basics.checks import check_seed, check_threads
from sim.limits import check_gravity, check_scales, check_wrench_bounds
from sim.native_step import addresses, parallel_threads, step_chunk, step_chunks
from sim.render import gl_guard, make_renderer, render_camera
from sim.tasks import TaskSpec
from sim.vector import check_actions

OPTIONS = ("max_episode_steps", "max_force", "max_torque", "threads")
#: MuJoCo warnings that mean the state is no longer physical (as the "cpu" backend's ``TaskEnv.step``)
_DIVERGENCE_WARNINGS = (int(mujoco.mjtWarning.mjWARN_BADQPOS), int(mujoco.mjtWarning.mjWARN_BADQVEL),
                        int(mujoco.mjtWarning.mjWARN_BADQACC))
#: the MjData fields the suite tasks read (copied once per env per step, as one contiguous span)
_FIELDS = ("qpos", "qvel", "sensordata", "xpos", "xmat", "xipos")
#: physics seconds per thread below which a further thread is not even tried (launching a split
#: costs a few microseconds on numba's OpenMP layer). Measured on 2 cores, whole env steps, forced
#: split vs one thread (README "Simulation throughput"): cheetah-run (~7 us per env step) 4 envs
#: 92 vs 101 us, 16 envs 176 vs 215 us; hopper-stand (~30 us) 2 envs 147 vs 166 us, 4 envs 231 vs
#: 227 us, 8 envs 320 vs 482 us. Above it the calibration's timing decides. (It was 180 us while the
#: split ran on lock-woken Python threads, which lost at 16 cheetah-run envs.)
MIN_SECONDS_PER_THREAD = 15e-6
#: steps run on one thread and timed first: their median decides whether a split is tried at all
CALIBRATION_WARMUP = 4
#: then steps alternate between the split and one thread, this many each after CALIBRATION_WARMUP
#: pairs left untimed (a new thread's first steps are slow: its stack, caches and core placement are
#: new). Alternating, not one phase after the other, because a task's physics cost changes over an
#: episode's first steps (hopper-stand lands: its contacts multiply), which biased a comparison of
#: consecutive phases against whichever came second
CALIBRATION_STEPS = 16
#: the split is kept only when its median step is this many times faster than one thread's
MIN_THREAD_SPEEDUP = 1.05


def supported_tasks() -> tuple[str, ...]:
    """Names of the tasks the batched MuJoCo backend supports (those of :mod:`sim.dmc_rewards`)."""
    # lazy: sim.dmc_rewards imports MuJoCo, which loads its GL backend at import (sim.make_env checks MUJOCO_GL first)
    from sim.dmc_rewards import SUITE_TASKS

    return tuple(SUITE_TASKS)




def _address(arr: np.ndarray) -> int:
    return int(arr.__array_interface__["data"][0])


class _Span:
    """Where the fields of :data:`_FIELDS` lie in an ``MjData``: one span of float64 from ``qpos`` on.

    MuJoCo allocates these arrays one after another in the ``MjData`` buffer, at the same offsets
    in every ``MjData`` of one model; a view of the span per env lets one copy fetch them all.
    """

    def __init__(self, model: mujoco.MjModel, datas: list[mujoco.MjData]):
        d0 = datas[0]
        base = _address(d0.qpos)
        end = 0
        self.fields = [f for f in _FIELDS if getattr(d0, f).size]  # an empty field points anywhere
        self.offsets = {f: 0 for f in _FIELDS}
        for f in self.fields:
            off = _address(getattr(d0, f)) - base
            if off < 0 or off % 8:
                raise RuntimeError(f"unexpected MjData layout: {f} at byte offset {off} from qpos")
            self.offsets[f] = off // 8
            end = max(end, off + getattr(d0, f).nbytes)
        self.size = end // 8
        if self.size > 1 << 20:
            raise RuntimeError(f"unexpected MjData layout: state fields span {self.size} float64")
        for d in datas[1:]:
            if any(_address(getattr(d, f)) - _address(d.qpos) != 8 * self.offsets[f] for f in self.fields):
                raise RuntimeError("unexpected MjData layout: field offsets differ between MjData of one model")
        self.shapes = {f: getattr(d0, f).shape for f in _FIELDS}
        #: buffer columns holding these fields (not the bytes between them)
        self.columns = np.concatenate([np.arange(self.offsets[f], self.offsets[f] + getattr(d0, f).size)
                                       for f in self.fields])

    def view(self, data: mujoco.MjData) -> np.ndarray:
        """float64 ``[size]`` over ``data``'s memory (valid while ``data`` lives)."""
        return np.frombuffer((ctypes.c_double * self.size).from_address(_address(data.qpos)), dtype=np.float64)

    def field(self, buf: np.ndarray, name: str) -> np.ndarray:
        """The ``[B, *shape]`` view (never a copy) of field ``name`` in a ``[B, size]`` batch buffer."""
        shape = (buf.shape[0], *self.shapes[name])
        n = int(np.prod(shape[1:]))
        off = self.offsets[name]
        out = buf[:, off:off + n].view()
        out.shape = shape  # in place: raises where only a copy could have that shape
        return out


class MujocoBatchedEnv:
    """``num_envs`` copies of a dm_control suite task, stepped in native threads, batched in numpy.

    ``reset(seed) -> obs, info``; ``step(action [B, A]) -> obs, reward [B], terminated [B],
    truncated [B], info`` with ``obs = {"state": float32 [B, D]}`` (plus ``"images": {view: uint8
    [B, H, W, 3]}`` when built with views) as CPU tensors, in the ``"cpu"`` backend's state layout
    (``state_layout``). A sub-env whose episode ended is reset in the same call (``SAME_STEP``
    autoreset): ``obs`` is its new first observation, ``info["final_obs"]`` (all rows; unfinished
    rows repeat ``obs``) the one the step ended in. ``info["success"]`` (bool [B]) is ``reward >=
    TaskSpec.success_threshold`` for this step. The suite tasks never terminate; their time limit is
    truncation after ``max_episode_steps`` control steps or at the suite's own limit (1000).

    A sub-env whose physics diverges (MuJoCo's ``mjWARN_BADQPOS`` / ``BADQVEL`` / ``BADQACC``, which
    dm_control raises as ``PhysicsError``, or a NaN/inf state) raises nothing: its episode is
    truncated (not terminated) with reward 0, success False and its last finite observation as
    ``final_obs``, then reset; ``info["diverged"]`` (bool [B]) marks it and ``num_diverged`` counts
    such steps since construction.

    Args:
        spec: the task (``sim.get_task(name)``); one of :func:`supported_tasks`.
        num_envs: batch size B >= 1.
        views: camera views rendered into every observation (``()``: state only).
        image_size: pixels per side of rendered views.
        seed: non-negative int; sub-env ``i`` is seeded ``seed + i`` (numpy streams of dm_control).
        threads: most physics threads, an int in ``[1, os.cpu_count()]`` (default 1); the env steps the
            first ``CALIBRATION_WARMUP`` on one thread, timing them; where
            ``n = min(threads, B, step seconds / MIN_SECONDS_PER_THREAD)`` is above 1 it then
            alternates steps split over n threads with steps on one (``CALIBRATION_STEPS`` timed
            each) and keeps the split only when its median step is ``MIN_THREAD_SPEEDUP`` times
            faster (``physics_threads``: the split's count from then on, 1 once undone).
        max_episode_steps: time limit in control steps (default: the task's).
        max_force, max_torque: clip of :meth:`apply_force` components (N, N m).
    Raises:
        ValueError: an unsupported task (lists the supported ones), a bad thread count, time limit,
            seed or wrench bound (messages of :mod:`sim.limits`).
    """

    def __init__(self, spec: TaskSpec, num_envs: int, views: tuple[str, ...] = (), image_size: int = 64,
                 seed: int = 0, threads: int = 1, max_episode_steps: int | None = None, max_force: float = 50.0,
                 max_torque: float = 10.0):
        if spec.name not in supported_tasks():
            raise ValueError(f"task {spec.name!r} is not supported by backend 'mujoco'; supported: "
                             f"{', '.join(supported_tasks())} (use backend='cpu' for the others)")
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if max_episode_steps is not None and (isinstance(max_episode_steps, bool)
                                              or not isinstance(max_episode_steps, int) or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps must be an int >= 1, got {max_episode_steps!r}")
        self.threads = check_threads(threads)
        self.max_force, self.max_torque = check_wrench_bounds(max_force, max_torque)
        self.seed = check_seed(seed, count=num_envs)
        # lazy: sim.dmc_rewards imports MuJoCo, which loads its GL backend at import (after sim.make_env's check)
        from sim.dmc_rewards import make_suite_task

        with gl_guard():  # dm_control sets up its GL platform at import
            from dm_control import suite

        self.spec, self.task, self.num_envs = spec, spec.name, int(num_envs)
        self.views, self.image_size = tuple(views), int(image_size)
        self.vectorization = "threads"
        self.device = torch.device("cpu")
        domain, task = spec.source
        self._suite_envs = [suite.load(domain, task, task_kwargs={"random": self.seed + i})
                            for i in range(self.num_envs)]
        host = self._suite_envs[0]
        self.models = [e.physics.model.ptr for e in self._suite_envs]
        self.datas = [e.physics.data.ptr for e in self._suite_envs]
        m = self.models[0]
        self.n_sub_steps = self.physics_steps_per_step = int(host._n_sub_steps)
        self._rk4 = m.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4
        self.suite_step_limit = float(host._step_limit)
        self.max_episode_steps = int(max_episode_steps or spec.max_episode_steps)
        self._limit = min(self.max_episode_steps, self.suite_step_limit)
        aspec = host.action_spec()
        self._a_low, self._a_high = aspec.minimum.astype(np.float64), aspec.maximum.astype(np.float64)
        # low + (clip(a) + 1) * 0.5 * (high - low), with 0.5 * (high - low) taken first: halving is exact,
        # so the product rounds as the "cpu" backend's does
        self._a_half_range = 0.5 * (self._a_high - self._a_low)
        self.state_layout = [(k, int(np.prod(v.shape))) for k, v in host.observation_spec().items()]
        self._suite = make_suite_task(spec.name, m)
        self._body_names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, i) or f"<body {i}>" for i in range(m.nbody)]
        self._nominal = {"body_mass": m.body_mass.copy(), "body_inertia": m.body_inertia.copy(),
                         "geom_friction": m.geom_friction.copy(), "actuator_gainprm": m.actuator_gainprm.copy(),
                         "actuator_biasprm": m.actuator_biasprm.copy(), "gravity": m.opt.gravity.copy()}
        self._scales = np.ones((self.num_envs, 3))  # mass, friction, gain per env

        B = self.num_envs
        self._span = _Span(m, self.datas)
        self._span_views = [self._span.view(d) for d in self.datas]
        self._warn_views = [d.warning.number for d in self.datas]
        self._buf = np.zeros((B, self._span.size))
        self._ctrl = np.zeros((B, m.nu))
        self._bad = np.zeros(B, dtype=bool)
        self._pending_xfrc: np.ndarray | None = None
        # what the compiled stepping loop reads and writes (sim.native_step): addresses made once
        # (MjModel / MjData memory never moves), batch buffers filled in place
        self._addr = {"models": addresses(self.models), "datas": addresses(self.datas),
                      "ctrl": addresses([d.ctrl for d in self.datas]),
                      "span": addresses(self._span_views),
                      "warning": addresses([d.warning.lastinfo for d in self.datas]),
                      "xfrc": addresses([d.xfrc_applied for d in self.datas])}
        self._warnings = np.zeros((B, 2 * len(self.datas[0].warning)), dtype=np.int32)  # mjWarningStat pairs
        self._warn_columns = np.array([2 * w + 1 for w in _DIVERGENCE_WARNINGS])  # their ``number`` fields
        self._no_push = np.zeros((B, m.nbody, 6))
        self._row_sums = np.zeros(B)
        self._state = self._state_views(self._buf, self._ctrl)  # numpy views the task functions read
        self._finite = np.empty((B, len(self._span.columns)), dtype=bool)  # scratch of the divergence check
        self._gathered = np.empty((B, len(self._span.columns)))
        self._split = 1  # chunks of envs stepped in parallel (numba's threading layer); 1: sequential
        #: threads that step the physics: 1 for the first CALIBRATION_WARMUP steps, which time it; then
        #: at most ``threads``, kept if faster (see ``threads`` above; results never depend on it: each
        #: env is stepped alone)
        self.physics_threads = 1
        self._timed: list[float] = []  # seconds per physics step of the calibration phase in progress
        self._calibrated = threads <= 1
        self._closed = False
        self._elapsed = np.zeros(B, dtype=np.int64)
        self._needs_seed = True
        self._last_obs: dict | None = None
        self._renderers: dict[int, mujoco.Renderer] = {}
        self.num_diverged = 0

        self._obs_columns = self._gather_plan()
        self.action_dim = int(aspec.shape[0])
        self.state_dim = int(sum(n for _, n in self.state_layout))
        spaces = {"state": gym.spaces.Box(-np.inf, np.inf, (self.state_dim,), np.float32)}
        if self.views:
            spaces["images"] = gym.spaces.Dict({v: gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3),
                                                                  np.uint8) for v in self.views})
        self.single_observation_space = gym.spaces.Dict(spaces)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (self.action_dim,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, B)
        self.action_space = batch_space(self.single_action_space, B)

    # ---------------------------------------------------------------------------------------------
    # Physics

    def _physics(self, split: int) -> None:
        """One control step of every env (dm_control's legacy ``Physics.step``, compiled:
        :func:`sim.native_step.step_chunk`, without the GIL; ``split > 1``: ``split`` chunks of envs
        at once, :func:`sim.native_step.step_chunks`), their state spans copied into the batch
        buffer, their warning counters into ``_warnings``; a pending push acts for this step only."""
        a, xfrc = self._addr, self._pending_xfrc
        args = (a["models"], a["datas"], a["ctrl"], a["span"], a["warning"], a["xfrc"], self._ctrl, self._buf,
                self._warnings, self._no_push if xfrc is None else xfrc, xfrc is not None, self.n_sub_steps,
                self._rk4, self._row_sums, self._warn_columns, self._bad)
        if split > 1:
            step_chunks(split, *args)
        else:
            step_chunk(0, self.num_envs, *args)

    def _note_warnings(self) -> None:
        """Clear the divergence warning counters of envs the step marked in ``_bad`` (MuJoCo counts
        them in ``MjData.warning``; cleared once seen, so any count is new)."""
        if self._bad.any():  # rare: no per-env Python otherwise
            for i in np.flatnonzero(self._bad):
                self._warn_views[i][list(_DIVERGENCE_WARNINGS)] = 0

    def _advance(self) -> None:
        if self._calibrated:  # the hot path: no timing
            self._physics(self._split)
            self._note_warnings()
            return
        # calibrating: with a split to try, even steps use it and odd steps one thread
        t = time.perf_counter()
        self._physics(self._split if len(self._timed) % 2 == 0 else 1)
        self._timed.append(time.perf_counter() - t)
        self._note_warnings()
        self._calibrate()

    def _calibrate(self) -> None:
        """After CALIBRATION_WARMUP steps on one thread: try a split over threads where its share per
        thread would reach MIN_SECONDS_PER_THREAD. After the alternating steps: keep the split only
        if its median step was MIN_THREAD_SPEEDUP times faster than one thread's."""
        B, timed = self.num_envs, self._timed
        if self._split == 1:
            if len(timed) < CALIBRATION_WARMUP:
                return
            step_seconds = float(np.median(timed))
            share = int(step_seconds / MIN_SECONDS_PER_THREAD) if MIN_SECONDS_PER_THREAD > 0 else B
            n = max(1, min(self.threads, B, share))
            self._timed = []
            if n > 1:
                n, why = parallel_threads(n)
                if why:
                    warnings.warn(f"backend 'mujoco': physics stays on one thread: {why}", RuntimeWarning,
                                  stacklevel=4)  # _calibrate < _advance < step < the caller of step
            if n == 1:
                self._calibrated = True
                return
            self._split = self.physics_threads = n
            return
        if len(timed) < 2 * (CALIBRATION_WARMUP + CALIBRATION_STEPS):
            return
        kept = timed[2 * CALIBRATION_WARMUP:]
        split, single = float(np.median(kept[0::2])), float(np.median(kept[1::2]))
        self._calibrated, self._timed = True, []
        if single < MIN_THREAD_SPEEDUP * split:  # the split did not pay: back to one thread
            self._split = self.physics_threads = 1

    def _reset_env(self, i: int, seed: int | None = None) -> None:
        """dm_control's ``Environment.reset`` of env ``i`` (the suite's ``initialize_episode`` inside
        ``Physics.reset_context``), without computing its Python observation."""
        env = self._suite_envs[i]
        if seed is not None:
            env.task.random.seed(seed)
        with env.physics.reset_context():
            env.task.initialize_episode(env.physics)
        self._buf[i] = self._span_views[i]
        self._warn_views[i][list(_DIVERGENCE_WARNINGS)] = 0  # a reset's own warnings are not a step's
        self._elapsed[i] = 0

    def _state_views(self, buf: np.ndarray, ctrl: np.ndarray):
        # lazy: sim.dmc_rewards imports MuJoCo, which loads its GL backend at import (after sim.make_env's check)
        from sim.dmc_rewards import DeviceState

        B, span = buf.shape[0], self._span
        return DeviceState(qpos=span.field(buf, "qpos"), qvel=span.field(buf, "qvel"), ctrl=ctrl,
                           xpos=span.field(buf, "xpos"), xipos=span.field(buf, "xipos"),
                           xmat=span.field(buf, "xmat").reshape(B, -1, 9), sensordata=span.field(buf, "sensordata"))

    def _gather_plan(self) -> np.ndarray | None:
        """Buffer columns of the state observation when every entry of it is a plain copy of a state
        field (cheetah, walker, cartpole: one ``np.take`` per step instead of a chain of array ops),
        else None (hopper's ``log1p`` of its touch sensors: the task's function each step).

        Found by running the task's observation function on a buffer whose columns hold their own
        index, then confirmed on two random buffers (anything but a copy fails there)."""
        def flat(buf):
            ctrl = np.full((buf.shape[0], self._ctrl.shape[1]), np.nan)
            parts = self._suite.observation(self._state_views(buf, ctrl))
            return np.concatenate([parts[k].reshape(buf.shape[0], -1) for k, _ in self.state_layout], axis=1)

        cols = flat(np.arange(self._span.size, dtype=np.float64)[None])[0]
        if not (np.isfinite(cols).all() and np.array_equal(cols, cols.round())):
            return None
        cols = cols.astype(np.int64)
        rng = np.random.default_rng(0)
        for _ in range(2):
            probe = rng.standard_normal((3, self._span.size))
            if not np.array_equal(flat(probe), probe[:, cols]):
                return None
        return cols

    def _non_finite_rows(self, row_sums: np.ndarray | None = None) -> np.ndarray:
        """bool [B]: envs with a NaN/inf in a field the task reads. A NaN or inf anywhere in a row makes
        its sum non-finite, so one sum per row (``row_sums``, float64 [B], as the stepping loop leaves
        them; default: summed here) clears the usual all-finite batch; only rows whose sum is not
        finite (a non-finite entry, or finite ones summing past float64's range) are checked field by
        field."""
        with np.errstate(over="ignore", invalid="ignore"):  # inf - inf, or an overflow: "suspect", not a warning
            suspect = ~np.isfinite(self._buf.sum(axis=1) if row_sums is None else row_sums)
        if not suspect.any():
            return suspect
        np.take(self._buf, self._span.columns, axis=1, out=self._gathered)
        return suspect & ~np.isfinite(self._gathered, out=self._finite).all(axis=1)

    def _observe(self) -> dict:
        if self._obs_columns is not None:
            state = torch.from_numpy(np.take(self._buf, self._obs_columns, axis=1).astype(np.float32))
        else:
            parts = self._suite.observation(self._state)
            state = np.concatenate([parts[k].reshape(self.num_envs, -1) for k, _ in self.state_layout], axis=1)
            state = torch.from_numpy(state.astype(np.float32))
        obs = {"state": state}
        if self.views:
            obs["images"] = self.render(self.views)
        return obs

    # ---------------------------------------------------------------------------------------------
    # Gymnasium vector API

    def reset(self, seed: int | None = None):
        """Reset every sub-env. Sub-env ``i`` gets seed ``seed + i`` (default: the seed given to
        ``make_env`` on the first reset, then continuing its own random stream).

        Returns:
            ``obs`` (see the class), ``info = {"success": bool [B]}`` (all False).
        Raises:
            ValueError: a negative or non-integer seed (nothing is reset).
            RuntimeError: after ``close()``.
        """
        if self._closed:
            raise RuntimeError("this env is closed; make a new one with sim.make_env")
        if seed is None and self._needs_seed:
            seed = self.seed
        if seed is not None:
            seed = check_seed(seed, count=self.num_envs)
        self._needs_seed = False
        self._pending_xfrc = None
        for i in range(self.num_envs):
            self._reset_env(i, None if seed is None else seed + i)
        self._last_obs = self._observe()
        return self._last_obs, {"success": torch.zeros(self.num_envs, dtype=torch.bool)}

    def check_action(self, action) -> np.ndarray:
        """Validate a batch of actions (:func:`sim.vector.check_actions`); returns numpy ``[B, A]``.

        Raises:
            TypeError: not a torch tensor / numpy array, or not a floating dtype.
            ValueError: wrong shape, or NaN/inf entries (the message gives the first bad row).
        """
        return check_actions(action, self.num_envs, self.action_dim)

    def step(self, action):
        """Step every sub-env one control step (``n_sub_steps`` physics steps).

        Args:
            action: float ``[B, A]`` in [-1, 1] (values outside are clipped), mapped linearly onto
                the task's actuator control range; torch or numpy.
        Returns:
            ``obs``, ``reward`` float32 [B], ``terminated`` bool [B] (always False), ``truncated``
            bool [B], ``info`` (``"success"``, ``"diverged"`` bool [B]; ``"final_obs"`` when an
            episode ended).
        Raises:
            TypeError, ValueError: see :meth:`check_action` (raised before anything is stepped).
            RuntimeError: ``step()`` before the first ``reset()``, or after ``close()``.
            mujoco.FatalError: MuJoCo failing inside the physics (rare; raised once every thread has
                finished, pending pushes cleared): envs of other chunks may have been stepped, so
                make a new env or reset this one.
        """
        if self._closed:
            raise RuntimeError("this env is closed; make a new one with sim.make_env")
        if self._needs_seed:
            raise RuntimeError("call reset() before step()")
        ctrl = self._ctrl  # in place: the stepping loop holds views of its rows
        np.clip(self.check_action(action), -1.0, 1.0, out=ctrl)
        ctrl += 1.0
        ctrl *= self._a_half_range
        ctrl += self._a_low
        try:
            self._advance()
        finally:
            self._pending_xfrc = None
        obs = self._observe()
        reward64 = self._suite.reward(self._state)  # float64 [B], numpy
        diverged = self._bad | self._non_finite_rows(self._row_sums)
        success = reward64 >= float(self.spec.success_threshold)
        reward = reward64.astype(np.float32)
        self._elapsed += 1
        done = self._elapsed >= self._limit
        if diverged.any():
            self.num_diverged += int(diverged.sum())
            rows = torch.from_numpy(diverged)
            for k in obs:
                obs[k] = _where_rows(rows, self._last_obs[k], obs[k])
            reward[diverged] = 0.0
            success &= ~diverged
            done |= diverged
        info = {"success": torch.from_numpy(success), "diverged": torch.from_numpy(diverged)}
        reward = torch.from_numpy(reward)
        truncated = torch.from_numpy(done.copy())
        if done.any():
            info["final_obs"] = _copy_obs(obs)
            for i in np.flatnonzero(done):
                self._reset_env(int(i))
            obs = _merge_rows(truncated, self._observe(), obs)
        self._last_obs = obs
        return obs, reward, torch.zeros(self.num_envs, dtype=torch.bool), truncated, info

    # ---------------------------------------------------------------------------------------------
    # Perturbations

    def body_names(self) -> list[str]:
        """Names of the bodies that accept external forces (MuJoCo body names, world excluded)."""
        return list(self._body_names[1:])

    def _ids(self, env_ids) -> np.ndarray:
        if env_ids is None:
            return np.arange(self.num_envs)
        ids = np.atleast_1d(np.asarray(env_ids.cpu() if isinstance(env_ids, torch.Tensor) else env_ids))
        if ids.size and (not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 or ids.max() >= self.num_envs):
            raise ValueError(f"env_ids {ids.tolist()} out of range [0, {self.num_envs})")
        return ids.astype(np.int64)

    def apply_force(self, body: str | list[str], wrench, env_ids=None) -> None:
        """Apply external wrenches on named bodies for the next step only, via ``xfrc_applied``.

        Args:
            body: a body name or a list of K names.
            wrench: float ``[B, 6]`` or ``[B, K, 6]`` (force in N, torque in N m, world frame).
                Components are clipped to ``max_force`` / ``max_torque``.
            env_ids: optional indices of the envs to push (default: all).
        Raises:
            ValueError: an unknown body (lists the known ones), a wrong shape, NaN or inf.
        """
        bodies = [body] if isinstance(body, str) else list(body)
        known = self.body_names()
        for b in bodies:
            if b not in known:
                raise ValueError(f"unknown body {b!r} for task {self.task!r}; known: {', '.join(sorted(known))}")
        w = torch.as_tensor(wrench, dtype=torch.float64).cpu().numpy()
        if w.ndim == 2:
            w = w[:, None, :]
        if w.shape != (self.num_envs, len(bodies), 6):
            raise ValueError(f"wrench shape {tuple(w.shape)} does not match ({self.num_envs}, {len(bodies)}, 6)")
        if not np.isfinite(w).all():
            raise ValueError("wrench contains NaN or inf")
        ids = self._ids(env_ids)
        pending = np.zeros((self.num_envs, len(self._body_names), 6))
        for k, b in enumerate(bodies):  # as TaskEnv.set_external_force: clip each wrench, then sum per body
            j = self._body_names.index(b)
            pending[ids, j, :3] += np.clip(w[ids, k, :3], -self.max_force, self.max_force)
            pending[ids, j, 3:] += np.clip(w[ids, k, 3:], -self.max_torque, self.max_torque)
        self._pending_xfrc = pending

    def _per_env(self, name: str, value) -> np.ndarray | None:
        if value is None:
            return None
        arr = np.full(self.num_envs, value) if np.ndim(value) == 0 else np.asarray(value, dtype=np.float64)
        if arr.shape != (self.num_envs,):
            raise ValueError(f"{name} scale must be a float or shape ({self.num_envs},), got {arr.shape}")
        return arr

    def set_scales(self, mass=None, friction=None, gain=None, env_ids=None) -> None:
        """Scale body mass (and inertia), geom friction and actuator gain per env, from nominal.

        As the ``"cpu"`` backend's ``TaskEnv.set_scales``, on env ``i``'s own ``MjModel``: gain scales
        ``actuator_gainprm[:, 0]`` and ``actuator_biasprm[:, 1]`` (servo stiffness as a whole).

        Args:
            mass, friction, gain: a float or a float ``[B]`` per env (``None``: unchanged; 1.0: nominal).
            env_ids: optional indices of the envs to change (default: all).
        Raises:
            ValueError: a scale outside :data:`sim.limits.SCALE_RANGE` ([0.01, 100]), NaN, inf, a
                non-number or a wrong length; bad env ids (nothing is changed).
        """
        ids = self._ids(env_ids)
        s = check_scales(mass=mass, friction=friction, gain=gain)
        mass, friction, gain = (self._per_env(k, s[k]) for k in ("mass", "friction", "gain"))
        nom = self._nominal
        for i in ids:
            m = self.models[i]
            if mass is not None:
                m.body_mass[:] = nom["body_mass"] * mass[i]
                m.body_inertia[:] = nom["body_inertia"] * mass[i]
                self._scales[i, 0] = mass[i]
            if friction is not None:
                m.geom_friction[:] = nom["geom_friction"] * friction[i]
                self._scales[i, 1] = friction[i]
            if gain is not None:
                m.actuator_gainprm[:, 0] = nom["actuator_gainprm"][:, 0] * gain[i]
                m.actuator_biasprm[:, 1] = nom["actuator_biasprm"][:, 1] * gain[i]
                self._scales[i, 2] = gain[i]

    def get_scales(self) -> list[dict[str, float]]:
        """Per env: ``{"mass", "friction", "gain"}`` scales relative to nominal."""
        return [{"mass": float(r[0]), "friction": float(r[1]), "gain": float(r[2])} for r in self._scales]

    def set_gravity(self, gravity, env_ids=None) -> None:
        """Set MuJoCo's ``opt.gravity`` per env: float ``[3]`` (every selected env) or ``[B, 3]``, m/s^2,
        world frame (:func:`sim.limits.gravity_tilt` makes a tilted one).

        Raises:
            ValueError: not 3 finite real numbers per env, a wrong shape or bad env ids (nothing changed).
        """
        ids = self._ids(env_ids)
        g = gravity.detach().cpu().numpy() if isinstance(gravity, torch.Tensor) else np.asarray(gravity)
        if g.ndim == 2 and g.shape[0] == self.num_envs:
            rows = [check_gravity(g[i]) for i in range(self.num_envs)]
        else:
            rows = [check_gravity(gravity)] * self.num_envs
        for i in ids:
            self.models[i].opt.gravity[:] = rows[i]

    def get_gravity(self) -> np.ndarray:
        """Every env's gravity, float64 ``[B, 3]`` m/s^2."""
        return np.stack([m.opt.gravity.copy() for m in self.models])

    def restore_nominal(self) -> None:
        """Nominal masses, frictions, gains and gravity in every env, and no pending external force."""
        self.set_scales(1.0, 1.0, 1.0)
        for m in self.models:
            m.opt.gravity[:] = self._nominal["gravity"]
        self._pending_xfrc = None

    # ---------------------------------------------------------------------------------------------

    def render(self, views=None, image_size: int | None = None) -> dict[str, torch.Tensor]:
        """Render views of the current states on demand: ``{view: uint8 [B, H, W, 3]}``, upright.

        Args:
            views: view names (default: the views given to ``make_env``, else all of the task's).
            image_size: pixels per side (default: the env's ``image_size``).
        Raises:
            ValueError: an unknown view (lists the task's views) or image size.
            sim.render.RenderingError: no OpenGL backend works.
        """
        # lazy: sim.limits is light, but check_views/check_image_size only matter when rendering
        from sim.limits import check_image_size, check_views

        views = check_views(views if views is not None else (self.views or tuple(self.spec.cameras)),
                            self.spec.cameras)
        size = self.image_size if image_size is None else check_image_size(image_size)
        out = {v: [] for v in views}
        renderer = self._renderers.get(size)  # one per size: the envs' models differ only in dynamics
        if renderer is None:
            renderer = self._renderers[size] = make_renderer(self.models[0], size, size)
        for d in self.datas:
            for v in views:
                out[v].append(render_camera(renderer, d, self.spec.cameras[v]))
        return {v: torch.from_numpy(np.stack(frames)) for v, frames in out.items()}

    @property
    def envs(self):
        raise AttributeError("backend 'mujoco' has no gymnasium sub-environments: every env is one MjModel and "
                             "MjData (env.models, env.datas)")

    def close(self) -> None:
        """Release the renderers; ``reset``/``step`` refuse afterwards. (The physics threads are
        numba's threading layer's, shared by the process.)"""
        self._closed = True
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _where_rows(rows: torch.Tensor, a, b):
    """``a`` where ``rows`` (bool [B]) else ``b``, for a tensor or a ``{view: tensor}`` dict."""
    if isinstance(a, dict):
        return {k: _where_rows(rows, a[k], b[k]) for k in a}
    return torch.where(rows.view(-1, *([1] * (a.ndim - 1))), a, b)


def _merge_rows(rows: torch.Tensor, a: dict, b: dict) -> dict:
    return {k: _where_rows(rows, a[k], b[k]) for k in a}


def _copy_obs(obs: dict) -> dict:
    return {k: ({v: x.clone() for v, x in x_.items()} if isinstance(x_, dict) else x_.clone()) for k, x_ in obs.items()}
