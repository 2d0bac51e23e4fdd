"""dm_control suite tasks as :class:`sim.base.TaskEnv`.

State layout: the suite's observation dict flattened value by value in the dict's key order;
``env.state_layout`` lists ``(key, size)`` pairs (``dopa tasks`` prints them). Actions are in
[-1, 1] per actuator and mapped linearly onto the task's action bounds. Reward is the suite's
per-step reward in [0, 1]; success on a step means reward >= ``TaskSpec.success_threshold``.
None of the suite tasks here terminate; their time limit is truncation. A step on which dm_control
raises its ``PhysicsError`` (the simulation diverged) is a truncation with ``info["diverged"]``
(:meth:`sim.base.TaskEnv.step`).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from sim.base import TaskEnv
from sim.render import gl_guard
from sim.tasks import TaskSpec


class DMCEnv(TaskEnv):
    def __init__(self, spec: TaskSpec, views=(), image_size=64, seed: int = 0, env_index: int = 0,
                 max_force: float = 50.0, max_torque: float = 10.0, max_episode_steps: int | None = None,
                 **task_kwargs):
        super().__init__(spec, views, image_size, env_index, max_force, max_torque, max_episode_steps)
        with gl_guard():  # dm_control sets up its GL platform at import
            from dm_control import suite
            from dm_control.rl.control import PhysicsError

        self._divergence_errors = (PhysicsError,)

        domain, task = spec.source
        self._env = suite.load(domain, task, task_kwargs={"random": int(seed), **task_kwargs})
        aspec = self._env.action_spec()
        self._a_low, self._a_high = aspec.minimum.astype(np.float64), aspec.maximum.astype(np.float64)
        self.state_layout = [(k, int(np.prod(v.shape))) for k, v in self._env.observation_spec().items()]
        dim = sum(n for _, n in self.state_layout)
        state_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        spaces = {"state": state_space}
        if self.views:
            spaces["images"] = gym.spaces.Dict({
                v: gym.spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8) for v in self.views})
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, aspec.shape, np.float32)
        self._capture_nominal()

    @property
    def model(self):
        return self._env.physics.model.ptr

    @property
    def data(self):
        return self._env.physics.data.ptr

    def _flatten(self, observation) -> np.ndarray:
        return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in observation.values()])

    def _reset_task(self, seed):
        if seed is not None:
            self._env.task.random.seed(int(seed))
        ts = self._env.reset()
        return self._flatten(ts.observation)

    def _step_task(self, action):
        scaled = self._a_low + (np.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (self._a_high - self._a_low)
        ts = self._env.step(scaled)
        reward = float(ts.reward or 0.0)
        terminated = bool(ts.last() and ts.discount == 0.0)
        task_truncated = bool(ts.last() and not terminated)
        return self._flatten(ts.observation), reward, terminated, task_truncated, reward >= self.spec_.success_threshold

    @property
    def physics_steps_per_step(self) -> int:
        """MuJoCo steps per control step (``n_sub_steps``)."""
        return int(self._env._n_sub_steps)
