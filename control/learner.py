"""The Learner contract every learner in ``control/`` follows (SAC, PPO, GoRL, EXPO, QARL).

A learner is built by Hydra from ``configs/learner/<name>.yaml`` (``_target_`` = its class)
with the keyword arguments ``obs_dim``, ``action_dim``, ``num_envs``, ``seed`` and ``device``
supplied by the training loop, plus the hyper-parameters of the YAML file.

The training loop (``control/train.py``) is the only driver::

    action = learner.act(obs, deterministic=False)          # float32 [B, A] in [-1, 1]
    next_obs, reward, terminated, truncated, info = env.step(action)
    learner.observe(Transition(...))                         # one batched transition
    metrics = learner.update()                               # learner decides whether it trains now

Actions are normalised to [-1, 1] per dimension (the env maps them onto actuator ranges).
"""

from __future__ import annotations

import abc
import dataclasses

import torch


@dataclasses.dataclass
class Transition:
    """One batched environment transition (B = number of envs).

    Attributes:
        obs: float32 [B, D] state before the action.
        action: float32 [B, A] action taken, in [-1, 1].
        reward: float32 [B] reward used for learning (shaped or not, by the loop's reward mode).
        next_obs: float32 [B, D] state after the action; for envs whose episode ended this is the
            final state of that episode (``info["final_obs"]``), not the reset state.
        terminated: bool [B] true terminal (no bootstrap).
        truncated: bool [B] time limit (bootstrap from ``next_obs``).
        info: extra per-step tensors (e.g. ``"latent"`` for GoRL, reward terms for logging).
    """

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    info: dict = dataclasses.field(default_factory=dict)


class Learner(abc.ABC):
    """Base class. Subclasses set ``name`` and implement the abstract methods."""

    name: str = "learner"

    @abc.abstractmethod
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions for a batch of states: float32 [B, D] -> float32 [B, A] in [-1, 1]."""

    @abc.abstractmethod
    def observe(self, transition: Transition) -> None:
        """Store one batched transition (replay buffer or rollout buffer)."""

    @abc.abstractmethod
    def update(self) -> dict[str, float]:
        """Train if the learner's schedule says so; returns scalar metrics (empty when it did not)."""

    @abc.abstractmethod
    def state_dict(self) -> dict:
        """Everything needed to resume exactly: networks, optimizers, counters, normalisers."""

    @abc.abstractmethod
    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`."""

    def extra_env_steps(self) -> int:
        """Environment steps the learner spent outside the loop's own counting (0 for most)."""
        return 0
