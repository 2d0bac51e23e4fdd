"""The MuJoCo Warp backend: dm_control suite tasks batched over worlds on one device.

``sim.make_env(name, num_envs, backend="warp", device=...)`` returns a :class:`WarpEnv`, with
the same API and semantics as :class:`sim.vector.BatchedEnv` on the CPU backend: Gymnasium's vector
API with same-step autoreset, ``info["final_obs"]`` and ``info["success"]``, and the same state
layout as the dm_control CPU env (``state_layout``). All ``num_envs`` worlds live in one MuJoCo
Warp ``Data`` (``mjw.make_data(model, nworld=num_envs)``); observations, rewards and initial
states are computed in torch on the same device (:mod:`sim.dmc_rewards`) from zero-copy views of
the Warp arrays (``wp.to_torch``), so nothing leaves the device during a rollout.

Stepping follows dm_control's ``Physics.step`` (``legacy_step``): ``n_sub_steps`` physics steps
per control step, then ``mj_step1`` so positions, velocities and position/velocity sensors match
the new state while acceleration sensors (touch) keep the values of the last ``mj_forward``.

Runs on CUDA for training and on Warp's CPU device for tests (slowly). The first step of a model
compiles Warp kernels (minutes on a small CPU; cached in Warp's kernel cache afterwards).
"""

from __future__ import annotations

import contextlib

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector.utils import batch_space

from basics.checks import check_seed
from sim.limits import check_gravity, check_scales, check_wrench_bounds
from sim.render import gl_guard
from sim.tasks import TaskSpec

OPTIONS = ("max_episode_steps", "max_force", "max_torque", "nconmax", "njmax", "cuda_graph", "on_divergence")
DIVERGENCE = ("raise", "reset")


def _import_warp():
    import warp as wp

    wp.config.quiet = True  # no banner and no per-module build lines on stdout
    import mujoco_warp as mjw

    return wp, mjw


def supported_tasks() -> tuple[str, ...]:
    """Names of the tasks the MuJoCo Warp backend supports."""
    # lazy: sim.dmc_rewards imports MuJoCo, which loads its GL backend at import (sim.make_env checks MUJOCO_GL first)
    from sim.dmc_rewards import SUITE_TASKS

    return tuple(SUITE_TASKS)


def default_device() -> str:
    """``"cuda"`` when Warp sees a CUDA device, else ``"cpu"``."""
    wp, _ = _import_warp()
    return "cuda" if wp.is_cuda_available() else "cpu"


class WarpEnv:
    """``num_envs`` worlds of a dm_control suite task stepped together by MuJoCo Warp.

    ``reset(seed) -> obs, info``; ``step(action [B, A]) -> obs, reward [B], terminated [B],
    truncated [B], info`` with ``obs = {"state": float32 [B, D]}`` on ``self.device``. A world
    whose episode ended is reset in the same call (Gymnasium's ``SAME_STEP`` autoreset): ``obs``
    is then its new first observation and ``info["final_obs"]`` (all rows; rows of unfinished
    worlds repeat ``obs``) holds the observation the step ended in. ``info["success"]`` (bool
    [B]) is ``reward >= TaskSpec.success_threshold`` after this step. The suite tasks never
    terminate; their time limit is truncation after ``max_episode_steps`` control steps, or at
    the suite's own time limit (1000 control steps for these tasks) if that comes first, as on
    the CPU backend.

    Initial states follow the suite's ``initialize_episode`` with draws from one torch generator
    on the device, seeded by ``reset(seed)``: equal seeds give equal states; they are not the
    CPU backend's numpy draws (use :meth:`set_state` to start both backends from one state).

    Args:
        spec: the task (``sim.get_task(name)``); must be one of :func:`supported_tasks`.
        num_envs: number of worlds B >= 1.
        seed: non-negative int, the seed of the first ``reset()``.
        device: ``"cuda"``, ``"cuda:N"`` or ``"cpu"`` (Warp's CPU device); default ``"cuda"``
            when available, else ``"cpu"``.
        max_episode_steps: time limit in control steps (default: the task's).
        max_force, max_torque: clip of :meth:`apply_force` components (N, N m).
        nconmax, njmax: contacts and constraints allocated per world (MuJoCo Warp's defaults).
        cuda_graph: on CUDA, replay each control step's physics as one captured CUDA graph
            (default True). Ignored on CPU.
        image_size: kept as ``env.image_size`` for code that records it; nothing is rendered.
        on_divergence: what a world whose state becomes NaN or inf does: ``"raise"`` (default; a
            ``FloatingPointError`` naming the worlds, as dm_control's ``PhysicsError``) or
            ``"reset"`` (the world's episode is truncated and reset in the same step;
            ``info["diverged"]`` marks it, its ``final_obs`` is its last finite observation and
            its reward 0; ``num_diverged`` counts them), for long runs where one diverging world
            must not stop the others.
    Raises:
        ValueError: an unsupported task (lists the supported ones), a bad device or option.
    """

    def __init__(self, spec: TaskSpec, num_envs: int, seed: int = 0, device: str | None = None,
                 max_episode_steps: int | None = None, max_force: float = 50.0, max_torque: float = 10.0,
                 nconmax: int | None = None, njmax: int | None = None, cuda_graph: bool = True,
                 image_size: int = 64, on_divergence: str = "raise"):
        # lazy: sim.dmc_rewards imports MuJoCo, which loads its GL backend at import (after sim.make_env's check)
        from sim.dmc_rewards import DeviceState, make_suite_task

        if spec.name not in supported_tasks():
            raise ValueError(f"task {spec.name!r} is not supported by backend 'warp'; supported: "
                             f"{', '.join(supported_tasks())} (use backend='cpu' for the others)")
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an int >= 1, got {num_envs!r}")
        if max_episode_steps is not None and (isinstance(max_episode_steps, bool)
                                              or not isinstance(max_episode_steps, int) or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps must be an int >= 1, got {max_episode_steps!r}")
        if on_divergence not in DIVERGENCE:
            raise ValueError(f"unknown on_divergence {on_divergence!r}; known: {', '.join(DIVERGENCE)}")
        max_force, max_torque = check_wrench_bounds(max_force, max_torque)
        wp, mjw = _import_warp()
        self._wp, self._mjw = wp, mjw
        if device is None:
            device = default_device()
        if not isinstance(device, str) or not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
            raise ValueError(f"unknown device {device!r}; known: 'cuda', 'cuda:N', 'cpu'")
        if device.startswith("cuda") and not wp.is_cuda_available():
            raise ValueError(f"device {device!r} asked for but Warp sees no CUDA device; use device='cpu'")
        self.wp_device = wp.get_device(device)
        self.device = torch.device(wp.device_to_torch(self.wp_device))

        self.spec = spec
        self.task = spec.name
        self.num_envs = int(num_envs)
        self.seed = int(seed)
        self.views: tuple[str, ...] = ()
        self.image_size = int(image_size)
        self.vectorization = "warp"
        self.max_episode_steps = int(max_episode_steps or spec.max_episode_steps)
        self.max_force, self.max_torque = float(max_force), float(max_torque)
        self.on_divergence = on_divergence

        # The host model and the suite's own spaces, from dm_control itself.
        with gl_guard():
            from dm_control import suite
        import mujoco

        domain, task = spec.source
        host = suite.load(domain, task, task_kwargs={"random": self.seed})
        self.mjmodel: mujoco.MjModel = host.physics.model.ptr
        self.n_sub_steps = int(host._n_sub_steps)
        # dm_control's own time limit ends episodes too (the CPU backend truncates there as well).
        self.suite_step_limit = float(host._step_limit)
        aspec = host.action_spec()
        self.state_layout = [(k, int(np.prod(v.shape))) for k, v in host.observation_spec().items()]
        self._suite = make_suite_task(spec.name, self.mjmodel)
        m = self.mjmodel
        self._body_names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, i) or f"<body {i}>" for i in range(m.nbody)]
        acc = [np.arange(m.sensor_adr[i], m.sensor_adr[i] + m.sensor_dim[i]) for i in range(m.nsensor)
               if m.sensor_needstage[i] == mujoco.mjtStage.mjSTAGE_ACC]
        B = self.num_envs

        with wp.ScopedDevice(self.wp_device):
            self._m = mjw.put_model(m)
            self._sizes = {"nconmax": nconmax, "njmax": njmax}
            self._d = mjw.make_data(m, nworld=B, **self._sizes)
            # Per-world copies of the fields set_scales changes: MuJoCo Warp batches a model field
            # when its leading ("*") dimension is nworld (kernels read field[worldid % shape[0]]).
            self._nominal = {}
            for f in ("body_mass", "body_inertia", "geom_friction", "actuator_gainprm", "actuator_biasprm"):
                arr = getattr(self._m, f)
                host_arr = arr.numpy()
                self._nominal[f] = torch.from_numpy(host_arr[0].copy()).to(self.device)
                setattr(self._m, f, wp.array(np.repeat(host_arr[:1], B, axis=0), dtype=arr.dtype))
            # Gravity per world too: ``opt.gravity`` is batched the same way (read as gravity[worldid % n]).
            self._nominal_gravity = np.array(m.opt.gravity, dtype=np.float64)
            self._m.opt.gravity = wp.array(np.tile(m.opt.gravity, (B, 1)), dtype=wp.vec3)

        def t(arr):  # zero-copy torch view; Warp cannot view an empty array (e.g. no sensors)
            if arr.size == 0:
                return torch.zeros(arr.shape, dtype=torch.float32, device=self.device)
            return wp.to_torch(arr)

        self._mf = {f: t(getattr(self._m, f)).view(B, *self._nominal[f].shape) for f in self._nominal}
        self._gravity = t(self._m.opt.gravity).view(B, 3)
        d = self._d
        nb = m.nbody
        self._state = DeviceState(qpos=t(d.qpos), qvel=t(d.qvel), ctrl=t(d.ctrl), xpos=t(d.xpos).view(B, nb, 3),
                                  xipos=t(d.xipos).view(B, nb, 3), xmat=t(d.xmat).view(B, nb, 9),
                                  sensordata=t(d.sensordata))
        self._xfrc = t(d.xfrc_applied).view(B, nb, 6)
        self._qacc_warmstart = t(d.qacc_warmstart)
        self._acc_cols = torch.from_numpy(np.concatenate(acc)).to(self.device) if acc else None
        self._qpos0 = torch.as_tensor(m.qpos0, dtype=torch.float32, device=self.device)
        self._a_low = torch.tensor(np.array(aspec.minimum), dtype=torch.float32, device=self.device)
        self._a_high = torch.tensor(np.array(aspec.maximum), dtype=torch.float32, device=self.device)
        self._scales = torch.ones(B, 3, dtype=torch.float64)  # mass, friction, gain per world (host)
        self._pending_xfrc: torch.Tensor | None = None
        self._elapsed = np.zeros(B, dtype=np.int64)  # host copy: truncation needs no device sync
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(self.seed)
        self._needs_seed = True
        self.num_diverged = 0  # world steps that diverged (on_divergence="reset"), since construction
        self._settle_d = None
        self._graph = None
        self._graph_ready = False
        self._use_graph = bool(cuda_graph) and self.wp_device.is_cuda

        dim = sum(n for _, n in self.state_layout)
        self.action_dim = int(aspec.shape[0])
        self.state_dim = int(dim)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (self.action_dim,), np.float32)
        self.single_observation_space = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)})
        self.action_space = batch_space(self.single_action_space, B)
        self.observation_space = batch_space(self.single_observation_space, B)

    # ---------------------------------------------------------------------------------------------
    # Physics

    @contextlib.contextmanager
    def _scope(self):
        """Warp calls on this env's device; on CUDA in torch's current stream, so Warp kernels and
        torch ops on the same arrays run in order without host synchronisation."""
        wp = self._wp
        with wp.ScopedDevice(self.wp_device):
            if self.wp_device.is_cuda:
                with wp.ScopedStream(wp.stream_from_torch(torch.cuda.current_stream(self.device))):
                    yield
            else:
                yield

    def _physics_step(self) -> None:
        """``n_sub_steps`` MuJoCo Warp steps, then ``step1`` (dm_control's legacy ``Physics.step``)."""
        mjw = self._mjw
        for _ in range(self.n_sub_steps):
            mjw.step(self._m, self._d)

    def _sync_positions(self) -> None:
        """``mj_step1`` on every world, keeping acceleration-stage sensors (step1 clears them)."""
        sd = self._state.sensordata
        saved = sd[:, self._acc_cols].clone() if self._acc_cols is not None else None
        self._mjw.step1(self._m, self._d)
        if saved is not None:
            sd[:, self._acc_cols] = saved

    def _advance(self) -> None:
        wp = self._wp
        with self._scope():
            if self._graph is None and self._use_graph and self._graph_ready:
                # CUDA graphs cannot be captured on the legacy default stream: capture (and replay)
                # on a stream of our own, ordered after and before torch's stream by events.
                self._graph_stream = wp.Stream(self.wp_device)
                with wp.ScopedStream(self._graph_stream):  # kernels launch on the capturing stream
                    with wp.ScopedCapture(device=self.wp_device) as capture:
                        self._physics_step()
                self._graph = capture.graph
            if self._graph is not None:
                current = wp.get_stream(self.wp_device)
                self._graph_stream.wait_stream(current)
                wp.capture_launch(self._graph, stream=self._graph_stream)
                current.wait_stream(self._graph_stream)
            else:  # the first step runs uncaptured: it loads (and compiles) every kernel
                self._physics_step()
                self._graph_ready = True
            self._sync_positions()

    def _forward(self) -> None:
        with self._scope():
            self._mjw.forward(self._m, self._d)

    def _observe(self) -> torch.Tensor:
        parts = self._suite.observation(self._state)
        state = torch.cat([parts[k].reshape(self.num_envs, -1) for k, _ in self.state_layout], dim=1)
        return state.to(torch.float32)

    def _reset_worlds(self, ids: torch.Tensor, qpos=None, qvel=None, warmstart=None) -> None:
        """Clear worlds ``ids`` (``mj_resetData``), set their initial state and run ``mj_forward``.

        Without ``qpos``/``qvel`` the task's initial-state distribution (and settling) is used."""
        wp, mjw = self._wp, self._mjw
        mask = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        mask[ids] = True
        with self._scope():
            mjw.reset_data(self._m, self._d, reset=wp.from_torch(mask))
        if qpos is None:
            qpos, qvel = self._suite.initial_state(self._qpos0.expand(len(ids), -1), self._generator)
            if self._suite.settle_steps:
                qpos, qvel, warmstart = self._settle(ids, qpos, qvel)
        if warmstart is not None:
            self._qacc_warmstart[ids] = warmstart
        self._state.qpos[ids] = qpos
        self._state.qvel[ids] = qvel
        self._xfrc[ids] = 0.0
        self._forward()

    def _settle(self, ids, qpos, qvel):
        """The suite's settling steps (cheetah: 200 with zero control) in a scratch ``Data``."""
        wp, mjw = self._wp, self._mjw
        with self._scope():
            if self._settle_d is None:
                self._settle_d = mjw.make_data(self.mjmodel, nworld=self.num_envs, **self._sizes)
            sd = self._settle_d
            mjw.reset_data(self._m, sd)
            mjw.forward(self._m, sd)  # dm_control's reset_context: mj_resetData, mj_forward
            t = wp.to_torch
            t(sd.qpos)[ids] = qpos
            t(sd.qvel)[ids] = qvel
            # dm_control's legacy Physics.step(n) starts with mj_step2, whose position-dependent
            # terms (contacts, inertia) are still those of the default pose: replicate it.
            mjw.step2(self._m, sd)
            for _ in range(self._suite.settle_steps - 1):
                mjw.step(self._m, sd)
            return t(sd.qpos)[ids].clone(), t(sd.qvel)[ids].clone(), t(sd.qacc_warmstart)[ids].clone()

    def _check_finite(self, state: torch.Tensor, may_reset: bool = False) -> torch.Tensor | None:
        """Bool ``[B]`` of worlds whose state is NaN or inf, or None when all are finite.

        Raises FloatingPointError naming them unless ``may_reset`` and ``on_divergence="reset"``."""
        bad = ~(torch.isfinite(state).all(dim=1) & torch.isfinite(self._state.qpos).all(dim=1)
                & torch.isfinite(self._state.qvel).all(dim=1))
        if not bool(bad.any()):
            return None
        if may_reset and self.on_divergence == "reset":
            return bad
        rows = torch.nonzero(bad).flatten().tolist()
        raise FloatingPointError(f"MuJoCo Warp state became NaN or inf in worlds {rows[:10]} (task "
                                 f"{self.task!r}): the simulation diverged; reset() the env, or make it "
                                 "with on_divergence='reset'")

    # ---------------------------------------------------------------------------------------------
    # Gymnasium vector API

    def reset(self, seed: int | None = None):
        """Reset every world to a fresh initial state of the suite task.

        Args:
            seed: non-negative int re-seeding the initial-state generator (default: the seed given
                to ``make_env`` on the first reset, then continuing its stream).
        Returns:
            ``obs = {"state": float32 [B, D]}``, ``info = {"success": bool [B]}`` (all False).
        Raises:
            ValueError: a seed that is not an int with ``0 <= seed`` and ``seed + num_envs - 1 < 2**32``.
        """
        if seed is None and self._needs_seed:
            seed = self.seed
        if seed is not None:
            self._generator.manual_seed(check_seed(seed, count=self.num_envs))
        self._needs_seed = False
        self._pending_xfrc = None
        self._elapsed[:] = 0
        self._reset_worlds(torch.arange(self.num_envs, device=self.device))
        state = self._observe()
        self._check_finite(state)
        self._last_state = state
        return {"state": state}, {"success": torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)}

    def set_state(self, qpos, qvel, env_ids=None, settle: bool = False):
        """Start worlds ``env_ids`` from given joint positions and velocities (as after a reset).

        Clears the worlds (``mj_resetData``: time, warm start, forces), writes ``qpos``/``qvel``
        and runs ``mj_forward``; the episode clock of those worlds restarts at 0. With
        ``settle=True`` the task's settling steps run first from the given state (cheetah: 200
        steps with zero control, as its ``initialize_episode``); without settling steps it is a
        no-op flag.

        Args:
            qpos: float ``[K, nq]`` (or ``[nq]`` for every selected world), rad / m.
            qvel: float ``[K, nv]`` (or ``[nv]``), rad/s / m/s.
            env_ids: indices of the K worlds (default: all).
        Returns:
            ``obs = {"state": float32 [B, D]}`` of every world.
        Raises:
            ValueError: wrong shapes, NaN or inf, or env ids out of range.
        """
        ids = self._ids(env_ids)
        out = []
        for name, value, n in (("qpos", qpos, self.mjmodel.nq), ("qvel", qvel, self.mjmodel.nv)):
            v = torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)
            v = v.to(self.device, torch.float32)
            if v.ndim == 1:
                v = v.expand(len(ids), -1)
            if tuple(v.shape) != (len(ids), n):
                raise ValueError(f"{name} shape {tuple(v.shape)} does not match ({len(ids)}, {n})")
            if not bool(torch.isfinite(v).all()):
                raise ValueError(f"{name} contains NaN or inf")
            out.append(v)
        qpos, qvel = out
        warm = None
        if settle and self._suite.settle_steps:
            qpos, qvel, warm = self._settle(ids, qpos, qvel)
        self._reset_worlds(ids, qpos, qvel, warm)
        self._elapsed[ids.cpu().numpy()] = 0
        state = self._observe()
        self._check_finite(state)
        self._last_state = state
        return {"state": state}

    def check_action(self, action) -> torch.Tensor:
        """Validate a batch of actions; returns them as float32 ``[B, A]`` on ``self.device``.

        Raises:
            TypeError: not a torch tensor / numpy array, or not a floating dtype.
            ValueError: wrong shape, or NaN/inf entries (the message gives the first bad row).
        """
        if isinstance(action, np.ndarray):
            if not np.issubdtype(action.dtype, np.floating):
                raise TypeError(f"action dtype must be floating point, got {action.dtype}")
            action = torch.from_numpy(action)
        elif isinstance(action, torch.Tensor):
            if not torch.is_floating_point(action):
                raise TypeError(f"action dtype must be floating point, got {action.dtype}")
        else:
            raise TypeError(f"action must be a torch.Tensor or numpy array, got {type(action).__name__}")
        expected = (self.num_envs, self.action_dim)
        if tuple(action.shape) != expected:
            raise ValueError(f"action shape {tuple(action.shape)} does not match (num_envs, action_dim) = {expected}")
        action = action.detach().to(self.device, torch.float32)
        finite = torch.isfinite(action).all(dim=1)
        if not bool(finite.all()):
            row = int(torch.nonzero(~finite)[0, 0])
            raise ValueError(f"action contains NaN or inf (env {row}: {action[row].tolist()})")
        return action

    def step(self, action):
        """Step every world one control step (``n_sub_steps`` physics steps).

        Args:
            action: float ``[B, A]`` in [-1, 1] (values outside are clipped), mapped linearly onto
                the task's actuator control range, torch (any device) or numpy.
        Returns:
            ``obs``, ``reward`` float32 [B], ``terminated`` bool [B], ``truncated`` bool [B],
            ``info`` (``"success"`` bool [B]; ``"final_obs"`` when a world's episode ended;
            ``"diverged"`` bool [B], True where a world diverged under ``on_divergence="reset"``).
        Raises:
            TypeError, ValueError: see :meth:`check_action`.
            FloatingPointError: the simulation produced NaN or inf (names the worlds), unless
                ``on_divergence="reset"``.
        """
        if self._needs_seed:
            raise RuntimeError("call reset() before step()")
        a = self.check_action(action).clamp(-1.0, 1.0)
        self._state.ctrl.copy_(self._a_low + (a + 1.0) * 0.5 * (self._a_high - self._a_low))
        if self._pending_xfrc is not None:
            self._xfrc.copy_(self._pending_xfrc)
        try:
            self._advance()
        finally:
            if self._pending_xfrc is not None:  # external forces act for exactly one control step
                self._xfrc.zero_()
                self._pending_xfrc = None
        state = self._observe()
        diverged = self._check_finite(state, may_reset=True)
        reward = self._suite.reward(self._state).to(torch.float32)
        self._elapsed += 1
        done = self._elapsed >= min(self.max_episode_steps, self.suite_step_limit)
        info = {"diverged": torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)}
        if diverged is not None:  # on_divergence="reset": end those episodes with finite values
            state = torch.where(diverged[:, None], self._last_state, state)
            reward = torch.where(diverged, torch.zeros_like(reward), reward)
            done = done | diverged.cpu().numpy()
            info["diverged"] = diverged
            self.num_diverged += int(diverged.sum())
        success = reward >= float(self.spec.success_threshold)
        info["success"] = success
        terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        truncated = torch.from_numpy(done).to(self.device)
        if done.any():
            ids = torch.from_numpy(np.flatnonzero(done)).to(self.device)
            info["final_obs"] = {"state": state}
            self._reset_worlds(ids)
            state = torch.where(truncated[:, None], self._observe(), state)
            self._elapsed[done] = 0
            self._check_finite(state)
        self._last_state = state
        return {"state": state}, reward, terminated, truncated, info

    # ---------------------------------------------------------------------------------------------
    # Perturbations

    def body_names(self) -> list[str]:
        """Names of the bodies that accept external forces (MuJoCo body names, world excluded)."""
        return list(self._body_names[1:])

    def _ids(self, env_ids) -> torch.Tensor:
        if env_ids is None:
            return torch.arange(self.num_envs, device=self.device)
        ids = np.atleast_1d(np.asarray(env_ids.cpu() if isinstance(env_ids, torch.Tensor) else env_ids))
        if ids.size and (not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 or ids.max() >= self.num_envs):
            raise ValueError(f"env_ids {ids.tolist()} out of range [0, {self.num_envs})")
        return torch.from_numpy(ids.astype(np.int64)).to(self.device)

    def apply_force(self, body: str | list[str], wrench, env_ids=None) -> None:
        """Apply external wrenches on named bodies for the next step only, via ``xfrc_applied``.

        Args:
            body: a body name or a list of K names.
            wrench: float ``[B, 6]`` or ``[B, K, 6]`` (force in N, torque in N m, world frame).
                Components are clipped to ``max_force`` / ``max_torque``.
            env_ids: optional indices of the worlds to push (default: all).
        Raises:
            ValueError: an unknown body (lists the known ones), a wrong shape, NaN or inf.
        """
        bodies = [body] if isinstance(body, str) else list(body)
        known = self.body_names()
        for b in bodies:
            if b not in known:
                raise ValueError(f"unknown body {b!r} for task {self.task!r}; known: {', '.join(sorted(known))}")
        w = torch.as_tensor(wrench).to(self.device, torch.float32)
        if w.ndim == 2:
            w = w[:, None, :]
        if tuple(w.shape) != (self.num_envs, len(bodies), 6):
            raise ValueError(f"wrench shape {tuple(w.shape)} does not match ({self.num_envs}, {len(bodies)}, 6)")
        if not bool(torch.isfinite(w).all()):
            raise ValueError("wrench contains NaN or inf")
        w = torch.cat([w[..., :3].clamp(-self.max_force, self.max_force),
                       w[..., 3:].clamp(-self.max_torque, self.max_torque)], dim=-1)
        ids = self._ids(env_ids)
        pending = torch.zeros_like(self._xfrc)
        for k, b in enumerate(bodies):
            pending[ids, self._body_names.index(b)] += w[ids, k]
        self._pending_xfrc = pending

    def set_scales(self, mass=None, friction=None, gain=None, env_ids=None) -> None:
        """Scale body mass (and inertia), geom friction and actuator gain per world, from nominal.

        Writes the per-world model fields of MuJoCo Warp (``body_mass``, ``body_inertia``,
        ``geom_friction``, ``actuator_gainprm[:, 0]`` and, for servos, ``actuator_biasprm[:, 1]``),
        as the CPU backend's ``TaskEnv.set_scales`` does per env.

        Args:
            mass, friction, gain: a real number or a float ``[B]`` per world (``None``: unchanged;
                1.0: nominal), in ``sim.limits.SCALE_RANGE`` = [0.01, 100].
            env_ids: optional indices of the worlds to change (default: all).
        Raises:
            ValueError: a str, bool, NaN, inf or out-of-range scale, or a wrong length.
        """
        ids = self._ids(env_ids)
        ids_host = ids.cpu()
        checked = check_scales(mass=mass, friction=friction, gain=gain)

        def batch(name, value):
            if value is None:
                return None
            arr = np.full(self.num_envs, value) if np.ndim(value) == 0 else np.asarray(value, dtype=np.float64)
            if arr.shape != (self.num_envs,):
                raise ValueError(f"{name} scale must be a float or shape ({self.num_envs},), got {arr.shape}")
            return torch.from_numpy(arr)

        mass, friction, gain = (batch(n, v) for n, v in checked.items())
        nom, mf = self._nominal, self._mf

        def scaled(field, s):
            s = s[ids_host].to(self.device, torch.float32)
            return nom[field][None] * s.view(-1, *([1] * nom[field].ndim))

        if mass is not None:
            mf["body_mass"][ids] = scaled("body_mass", mass)
            mf["body_inertia"][ids] = scaled("body_inertia", mass)
            self._scales[ids_host, 0] = mass[ids_host]
        if friction is not None:
            mf["geom_friction"][ids] = scaled("geom_friction", friction)
            self._scales[ids_host, 1] = friction[ids_host]
        if gain is not None:
            mf["actuator_gainprm"][ids, :, 0] = scaled("actuator_gainprm", gain)[:, :, 0]
            mf["actuator_biasprm"][ids, :, 1] = scaled("actuator_biasprm", gain)[:, :, 1]
            self._scales[ids_host, 2] = gain[ids_host]

    def set_gravity(self, gravity, env_ids=None) -> None:
        """Set gravity per world (MuJoCo Warp's batched ``opt.gravity``) until :meth:`restore_nominal`.

        Args:
            gravity: float ``[3]`` (every selected world) or ``[B, 3]`` (row ``i`` for world ``i``),
                m/s^2, world frame, finite; ``sim.gravity_tilt(degrees, axis)`` makes a tilted one.
            env_ids: optional indices of the worlds to change (default: all).
        Raises:
            ValueError: a wrong shape, NaN, inf or non-number (nothing is changed).
        """
        ids = self._ids(env_ids)
        g = gravity.detach().cpu().numpy() if isinstance(gravity, torch.Tensor) else gravity
        if np.ndim(np.asarray(g, dtype=object)) == 2:
            if np.shape(g)[0] != self.num_envs:
                raise ValueError(f"gravity must be [3] or [{self.num_envs}, 3] m/s^2, got shape {np.shape(g)}")
            rows = np.stack([check_gravity(r) for r in g])
        else:
            rows = np.tile(check_gravity(g), (self.num_envs, 1))
        self._gravity[ids] = torch.as_tensor(rows, dtype=torch.float32, device=self.device)[ids]

    def get_gravity(self) -> np.ndarray:
        """Gravity of every world: float64 ``[B, 3]``, m/s^2."""
        return self._gravity.cpu().numpy().astype(np.float64)

    def restore_nominal(self) -> None:
        """In every world: every scale back to 1.0 (the model's nominal values), gravity back to the
        model's own, and queued external forces dropped."""
        self.set_scales(1.0, 1.0, 1.0)
        self.set_gravity(self._nominal_gravity)
        self._pending_xfrc = None

    def get_scales(self) -> list[dict[str, float]]:
        """Per world: ``{"mass", "friction", "gain"}`` scales relative to nominal."""
        return [{"mass": float(r[0]), "friction": float(r[1]), "gain": float(r[2])} for r in self._scales]

    # ---------------------------------------------------------------------------------------------

    def render(self, views=None, image_size: int | None = None):
        """Not available: the MuJoCo Warp backend simulates state only.

        Raises:
            NotImplementedError: always; make the env with ``backend="cpu"`` for images.
        """
        raise NotImplementedError("backend 'warp' renders no images; make the env with backend='cpu' "
                                  "(sim.make_env(name, views=(...), backend='cpu')) to get camera views")

    @property
    def envs(self):
        raise AttributeError("backend 'warp' has no sub-environments: all worlds live in one MuJoCo Warp Data")

    def close(self) -> None:
        self._graph = None
        self._settle_d = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

