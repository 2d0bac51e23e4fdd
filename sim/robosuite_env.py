"""robosuite manipulation tasks with the Panda arm as :class:`sim.base.TaskEnv`.

Controllers (``controller=``):
  - ``osc_pose`` (default): robosuite's default composite "BASIC" controller with an OSC_POSE arm:
    action ``[dx, dy, dz, dax, day, daz, gripper]`` in [-1, 1] (scaled by robosuite to at most
    0.05 m and 0.5 rad per step; gripper -1 open, +1 close).
  - ``joint_position``: JOINT_POSITION arm part: action ``[dq_1..dq_7, gripper]`` in [-1, 1], each
    joint target moves by up to 0.05 rad per step; this is what a ros2_control trajectory
    controller accepts once integrated.

State layout: the non-image observation keys of robosuite in its order (robot proprioception,
then object state), each flattened; ``env.state_layout`` lists ``(key, size)``. Reward is
robosuite's sparse task reward (1.0 on success) unless ``reward_shaping=True``. Success is the
task's own ``_check_success()``. Tasks do not terminate unless ``terminate_on_success=True``;
the time limit (``max_episode_steps``) is truncation.

``progress=True`` (tasks with a scripted expert: lift, stack, pick-place-can, door) adds
``"progress"``: float32 [1] in [0, 1] to every observation, the ground-truth step-wise progress of
:class:`sim.experts.ProgressFunction` (the same function the demonstrations record, references
taken at each reset; exactly 1 on success). It is privileged simulator state for the oracle
potential (``reward=oracle``), never part of ``"state"``, so no policy sees it.
"""

from __future__ import annotations

import logging

import gymnasium as gym
import numpy as np

from sim.base import TaskEnv
from sim.experts import ProgressFunction
from sim.render import gl_guard
from sim.tasks import CONTROLLERS, TaskSpec


def controller_config(controller: str) -> dict:
    """robosuite composite controller config for the Panda with an ``osc_pose`` or ``joint_position`` arm.

    Raises:
        ValueError: unknown controller name (lists the known ones).
    """
    from robosuite.controllers import load_composite_controller_config, load_part_controller_config

    if controller not in CONTROLLERS:
        raise ValueError(f"unknown controller {controller!r}; known: {', '.join(CONTROLLERS)}")
    cfg = load_composite_controller_config(controller="BASIC", robot="Panda")
    if controller == "joint_position":
        part = load_part_controller_config(default_controller="JOINT_POSITION")
        part["gripper"] = cfg["body_parts"]["right"]["gripper"]
        cfg["body_parts"]["right"] = part
    return cfg


def _quiet_robosuite() -> None:
    """robosuite logs configuration chatter at INFO/WARNING on every make(); keep errors only."""
    logger = logging.getLogger("robosuite_logs")
    if not getattr(logger, "_dopa_quiet", False):
        # A logger-level filter survives robosuite adding its own handlers at import time.
        logger.addFilter(lambda record: record.levelno >= logging.ERROR)
        logger.propagate = False
        logger._dopa_quiet = True


class RobosuiteEnv(TaskEnv):
    def __init__(self, spec: TaskSpec, views=(), image_size=64, seed: int = 0, env_index: int = 0,
                 max_force: float = 50.0, max_torque: float = 10.0, max_episode_steps: int | None = None,
                 controller: str = "osc_pose", reward_shaping: bool = False,
                 terminate_on_success: bool = False, progress: bool = False, **task_kwargs):
        super().__init__(spec, views, image_size, env_index, max_force, max_torque, max_episode_steps)
        _quiet_robosuite()
        with gl_guard():
            import robosuite

        _quiet_robosuite()
        self.controller = controller
        self.terminate_on_success = bool(terminate_on_success)
        self._env = robosuite.make(
            spec.source[0], robots="Panda", controller_configs=controller_config(controller),
            has_renderer=False, has_offscreen_renderer=False, use_camera_obs=False,
            hard_reset=False, ignore_done=True, reward_shaping=bool(reward_shaping),
            control_freq=20, seed=0, **task_kwargs)
        # The model (object sizes) is built once with seed 0 so that an env is a function of the
        # episode seed alone; `reset(seed)` re-seeds placements and robot initialisation noise.
        self._env.rng.bit_generator.state = np.random.default_rng(int(seed)).bit_generator.state
        first = self._env.reset()
        self._keys = [k for k, v in first.items() if not k.endswith("-state") and not k.endswith("_image")]
        self.state_layout = [(k, int(np.asarray(first[k]).size)) for k in self._keys]
        dim = sum(n for _, n in self.state_layout)
        spaces = {"state": gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)}
        if self.views:
            spaces["images"] = gym.spaces.Dict({
                v: gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8) for v in self.views})
        self._progress = ProgressFunction(spec.name) if progress else None
        if self._progress is not None:
            spaces["progress"] = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.observation_space = gym.spaces.Dict(spaces)
        low, high = self._env.action_spec
        self.action_space = gym.spaces.Box(-1.0, 1.0, low.shape, np.float32)
        self._a_low, self._a_high = low.astype(np.float64), high.astype(np.float64)
        self._capture_nominal()

    @property
    def model(self):
        return self._env.sim.model._model

    @property
    def data(self):
        return self._env.sim.data._data

    @property
    def robosuite_env(self):
        """The wrapped robosuite environment (for experts and task-specific reads)."""
        return self._env

    def _flatten(self, obs) -> np.ndarray:
        return np.concatenate([np.asarray(obs[k], dtype=np.float64).ravel() for k in self._keys])

    def _reset_task(self, seed):
        if seed is not None:
            # robosuite's placement samplers and robot init noise hold this very Generator.
            self._env.rng.bit_generator.state = np.random.default_rng(int(seed)).bit_generator.state
        state = self._flatten(self._env.reset())
        if self._progress is not None:
            self._progress.reset(self)  # references (initial distances, resting heights) of this episode
        return state

    def _obs(self, state: np.ndarray) -> dict:
        obs = super()._obs(state)
        if self._progress is not None:
            obs["progress"] = np.array([self._progress()], dtype=np.float32)
        return obs

    def _step_task(self, action):
        scaled = self._a_low + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (self._a_high - self._a_low)
        obs, reward, _, _ = self._env.step(scaled)
        success = bool(self._env._check_success())
        return self._flatten(obs), float(reward), self.terminate_on_success and success, False, success

    @property
    def physics_steps_per_step(self) -> int:
        """MuJoCo steps per control step (robosuite steps the physics at 500 Hz, control at 20 Hz)."""
        return int(round(1.0 / (self._env.control_freq * self._env.model_timestep)))
