"""A thin Gymnasium wrapper of ``sim.make_env`` for libraries that take a single ``gymnasium.Env``
(Stable-Baselines3 in ``benchmarks/ppo_throughput.py``): one sub-environment of a
``sim.make_env(name, num_envs=1, ...)`` batch, its observation reduced to the flat state vector.

    >>> env = StateEnv("cartpole-swingup", seed=0)
    >>> obs, info = env.reset(seed=0)        # float32 [D]
    >>> obs, r, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, np.float32))

The physics, reward, time limit (truncation) and action mapping are the project's own
(:class:`sim.base.TaskEnv`): the same task a learner sees through the training loop, without the
batching and torch conversion of :class:`sim.vector.BatchedEnv`.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import sim


class StateEnv(gym.ObservationWrapper):
    """``sim.make_env(name, num_envs=1, seed=seed, **task_kwargs)``'s sub-environment with
    observation ``float32 [D]`` (``obs["state"]``) and actions ``float32 [A]`` in [-1, 1].

    Raises:
        ValueError: an unknown task or bad kwargs (from :func:`sim.make_env`), or a task rendered
            through views (this wrapper is state only).
    """

    def __init__(self, name: str, seed: int = 0, **task_kwargs):
        batch = sim.make_env(name, num_envs=1, seed=int(seed), **task_kwargs)
        self._batch = batch
        super().__init__(batch.envs[0])
        self.observation_space = batch.single_observation_space["state"]
        self.action_space = batch.single_action_space

    def observation(self, observation: dict) -> np.ndarray:
        """``{"state": float32 [D], ...}`` -> float32 [D]."""
        return observation["state"]

    def close(self) -> None:
        self._batch.close()
