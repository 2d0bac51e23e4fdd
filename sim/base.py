"""The single-environment base class shared by every CPU task (dm_control, robosuite).

A :class:`TaskEnv` is a ``gymnasium.Env`` whose observation is a dict ``{"state": float32 [D],
"images": {view: uint8 [H, W, 3]}}`` (``"images"`` only when views were asked for). Batching,
torch conversion and input checks live in :mod:`sim.vector`; this class owns what needs the
MuJoCo model: rendering named views, external forces through ``xfrc_applied``, scales of
body mass, geom friction and actuator gain, gravity (``opt.gravity``), and the handling of a step
whose physics diverges (see :meth:`TaskEnv.step`).
"""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np

from sim.limits import check_gravity, check_image_size, check_scales, check_wrench_bounds
from sim.render import make_renderer, render_camera
from sim.tasks import TaskSpec

#: MuJoCo warnings that mean the state is no longer physical (NaN, inf or huge qpos, qvel, qacc)
_DIVERGENCE_WARNINGS = (mujoco.mjtWarning.mjWARN_BADQPOS, mujoco.mjtWarning.mjWARN_BADQVEL,
                        mujoco.mjtWarning.mjWARN_BADQACC)


class TaskEnv(gym.Env):
    """Base class; subclasses implement ``_reset_task``, ``_step_task``, ``model`` and ``data``."""

    metadata = {"render_modes": ["rgb_array"]}
    #: exception types of the subclass's simulator that mean "the physics diverged" (dm_control's PhysicsError)
    _divergence_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, spec: TaskSpec, views: tuple[str, ...], image_size: int, env_index: int,
                 max_force: float, max_torque: float, max_episode_steps: int | None):
        self.spec_ = spec
        self.views = tuple(views)
        self.image_size = int(image_size)
        self.env_index = int(env_index)
        self.max_force, self.max_torque = check_wrench_bounds(max_force, max_torque)
        self.max_episode_steps = int(spec.max_episode_steps if max_episode_steps is None else max_episode_steps)
        if self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps!r}")
        self._renderers: dict[int, mujoco.Renderer] = {}  # one per image size (observations, videos)
        self._elapsed = 0
        self._pending_xfrc: np.ndarray | None = None
        self._last_obs: dict | None = None  # the last finite observation (returned when a step diverges)
        self.num_diverged = 0  # steps whose physics diverged, since construction

    # ----- subclass hooks -------------------------------------------------------------------
    @property
    def model(self) -> mujoco.MjModel:  # raw MuJoCo model
        raise NotImplementedError

    @property
    def data(self) -> mujoco.MjData:  # raw MuJoCo data
        raise NotImplementedError

    def _reset_task(self, seed: int | None) -> np.ndarray:
        raise NotImplementedError

    def _step_task(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, bool]:
        """Returns state, reward, terminated, truncated (the task's own time limit), success."""
        raise NotImplementedError

    # ----- nominal parameters, captured once the model exists --------------------------------
    def _capture_nominal(self) -> None:
        m = self.model
        self._nominal = {
            "body_mass": m.body_mass.copy(),
            "body_inertia": m.body_inertia.copy(),
            "geom_friction": m.geom_friction.copy(),
            "actuator_gainprm": m.actuator_gainprm.copy(),
            "actuator_biasprm": m.actuator_biasprm.copy(),
            "gravity": m.opt.gravity.copy(),
        }
        self.scales = {"mass": 1.0, "friction": 1.0, "gain": 1.0}
        self._check_cameras()

    def _check_cameras(self) -> None:
        for view, cam in self.spec_.cameras.items():
            if mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, cam) < 0:
                raise RuntimeError(f"task {self.spec_.name!r}: view {view!r} maps to missing camera {cam!r}")

    # ----- gymnasium API ------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        self._elapsed = 0
        self._pending_xfrc = None
        state = self._reset_task(seed)
        self.data.xfrc_applied[:] = 0.0
        self._last_obs = self._obs(state)
        return self._last_obs, {"success": False}

    def _divergence_count(self) -> int:
        return sum(int(self.data.warning[w].number) for w in _DIVERGENCE_WARNINGS)

    def step(self, action):
        """One control step. Info: ``{"success": bool, "diverged": bool}``.

        A step whose physics diverges (the simulator's own error, e.g. dm_control's ``PhysicsError``;
        a MuJoCo ``mjWARN_BADQPOS`` / ``BADQVEL`` / ``BADQACC`` warning; a NaN or inf state) raises
        nothing: it ends the episode as truncated (not terminated) with reward 0, success False,
        ``"diverged": True`` and the last finite observation, and counts in ``num_diverged``; the
        vector env's autoreset then resets it like any episode end.
        """
        action = np.asarray(action, dtype=np.float64)
        if self._pending_xfrc is not None:
            self.data.xfrc_applied[:] = self._pending_xfrc
        bad_before = self._divergence_count()
        try:
            state, reward, terminated, task_truncated, success = self._step_task(action)
            diverged = (self._divergence_count() > bad_before or not np.isfinite(state).all()
                        or not (np.isfinite(self.data.qpos).all() and np.isfinite(self.data.qvel).all()))
        except self._divergence_errors:
            diverged = True
        finally:
            # External forces act for exactly one control step.
            self.data.xfrc_applied[:] = 0.0
            self._pending_xfrc = None
        self._elapsed += 1
        if diverged:
            self.num_diverged += 1
            last = self._last_obs
            obs = {k: ({v: x.copy() for v, x in last[k].items()} if k == "images" else last[k].copy()) for k in last}
            return obs, 0.0, False, True, {"success": False, "diverged": True}
        truncated = (not terminated) and (task_truncated or self._elapsed >= self.max_episode_steps)
        self._last_obs = self._obs(state)
        return self._last_obs, float(reward), bool(terminated), bool(truncated), {"success": bool(success),
                                                                                   "diverged": False}

    def _obs(self, state: np.ndarray) -> dict:
        obs = {"state": np.asarray(state, dtype=np.float32)}
        if self.views:
            obs["images"] = self.render_views(self.views)
        return obs

    # ----- rendering ----------------------------------------------------------------------------
    def render_views(self, views, image_size: int | None = None) -> dict[str, np.ndarray]:
        """Render named views of the current state: ``{view: uint8 [H, W, 3]}``, upright.

        ``image_size`` (pixels per side, default the env's) picks a renderer made on first use and
        kept, so observations and larger video frames can alternate without re-creating contexts.

        Raises:
            ValueError: an unknown view (lists this task's views).
            sim.render.RenderingError: no GL backend.
        """
        size = self.image_size if image_size is None else check_image_size(image_size)
        out = {}
        for view in views:
            cam = self.spec_.cameras.get(view)
            if cam is None:
                raise ValueError(f"unknown view {view!r} for task {self.spec_.name!r}; known: "
                                 f"{', '.join(self.spec_.cameras)}")
            renderer = self._renderers.get(size)
            if renderer is None:
                renderer = self._renderers[size] = make_renderer(self.model, size, size)
            out[view] = render_camera(renderer, self.data, cam)
        return out

    def render(self):
        return self.render_views(self.views[:1] or tuple(self.spec_.cameras)[:1])[
            (self.views[:1] or tuple(self.spec_.cameras)[:1])[0]]

    def close(self):
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    # ----- perturbations ------------------------------------------------------------------------
    def body_names(self) -> list[str]:
        m = self.model
        return [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, i) or f"<body {i}>" for i in range(m.nbody)]

    def body_id(self, body: str) -> int:
        """MuJoCo id of the body named ``body``; ValueError naming the known bodies otherwise."""
        bid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, str(body))
        if bid <= 0:  # 0 is the world body: forces on it do nothing
            names = [n for n in self.body_names()[1:]]
            raise ValueError(f"unknown body {body!r} for task {self.spec_.name!r}; known: {', '.join(names)}")
        return bid

    def set_external_force(self, forces: dict[str, np.ndarray]) -> None:
        """Queue wrenches for the next step: ``{body: float [6]}`` (force N, torque N m, world frame).

        Written into ``data.xfrc_applied`` for one control step, then cleared. Each force component
        is clipped to ``[-max_force, max_force]`` N and each torque to ``[-max_torque, max_torque]``.
        """
        xfrc = np.zeros_like(self.data.xfrc_applied)
        for body, wrench in forces.items():
            bid = self.body_id(body)
            w = np.asarray(wrench, dtype=np.float64).reshape(6)
            xfrc[bid, :3] += np.clip(w[:3], -self.max_force, self.max_force)
            xfrc[bid, 3:] += np.clip(w[3:], -self.max_torque, self.max_torque)
        self._pending_xfrc = xfrc

    def set_scales(self, mass: float | None = None, friction: float | None = None,
                   gain: float | None = None) -> None:
        """Scale body masses (and inertias), geom friction and actuator gains relative to nominal.

        Gain scales ``actuator_gainprm[:, 0]`` and, for position servos, the matching feedback
        term ``actuator_biasprm[:, 1]`` so the servo stiffness scales as a whole. ``None`` leaves a
        scale as it is; 1.0 restores nominal.

        Raises:
            ValueError: a scale that is not a real number in :data:`sim.limits.SCALE_RANGE` (0.01 to 100).
        """
        scales = check_scales(mass=mass, friction=friction, gain=gain)
        mass, friction, gain = scales["mass"], scales["friction"], scales["gain"]
        m, nom = self.model, self._nominal
        if mass is not None:
            m.body_mass[:] = nom["body_mass"] * mass
            m.body_inertia[:] = nom["body_inertia"] * mass
            self.scales["mass"] = float(mass)
        if friction is not None:
            m.geom_friction[:] = nom["geom_friction"] * friction
            self.scales["friction"] = float(friction)
        if gain is not None:
            m.actuator_gainprm[:, 0] = nom["actuator_gainprm"][:, 0] * gain
            m.actuator_biasprm[:, 1] = nom["actuator_biasprm"][:, 1] * gain
            self.scales["gain"] = float(gain)

    def set_gravity(self, gravity=None) -> None:
        """Set MuJoCo's ``opt.gravity`` of this env: float ``[3]`` m/s^2, world frame (``None``: nominal).

        Raises:
            ValueError: not 3 finite real numbers.
        """
        self.model.opt.gravity[:] = self._nominal["gravity"] if gravity is None else check_gravity(gravity)

    def restore_nominal(self) -> None:
        """Nominal masses, frictions, gains and gravity; queued external forces dropped."""
        self.set_scales(1.0, 1.0, 1.0)
        self.set_gravity(None)
        self._pending_xfrc = None

    def get_gravity(self) -> np.ndarray:
        """This env's gravity, float64 ``[3]`` m/s^2."""
        return self.model.opt.gravity.copy()

    # Batched entry points: every sub-env receives the whole batch and takes its own row, so the
    # same call works through gymnasium's SyncVectorEnv and AsyncVectorEnv (worker processes).
    def batched_set_scales(self, mass, friction, gain) -> None:
        def pick(scales):  # NaN marks "leave this env unchanged"
            value = None if scales is None else scales[self.env_index]
            return None if value is None or not np.isfinite(value) else float(value)

        self.set_scales(pick(mass), pick(friction), pick(gain))

    def batched_set_gravity(self, gravity, mask) -> None:
        if mask[self.env_index]:
            self.set_gravity(gravity[self.env_index])

    def batched_set_external_force(self, bodies, wrenches, mask) -> None:
        i = self.env_index
        if mask[i]:
            self.set_external_force({b: wrenches[i, k] for k, b in enumerate(bodies)})

    def get_scales(self) -> dict[str, float]:
        return dict(self.scales)
