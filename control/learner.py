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

The learners validate their configuration with :func:`check_int` and :func:`check_float` and their
``act``/``observe`` inputs with :func:`check_states` / :func:`check_transition`, so a bad value is
refused with a ``ValueError`` that names it and says what is allowed.
"""

from __future__ import annotations

import abc
import dataclasses

import torch

from basics.checks import check_states


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


def check_transition(tr: Transition, obs_dim: int, action_dim: int, batch: int | None = None) -> int:
    """Check a :class:`Transition` against the learner's sizes; returns its batch size B.

    ``obs``/``next_obs`` must be [B, obs_dim], ``action`` [B, action_dim], ``reward``,
    ``terminated`` and ``truncated`` [B] (all finite), with B = ``batch`` when given.

    Raises:
        TypeError: a field that is not a torch.Tensor.
        ValueError: a field with the wrong shape or NaN/inf, named as ``transition.<field>``.
    """
    b = check_states("transition.obs", tr.obs, obs_dim, batch).shape[0]
    check_states("transition.next_obs", tr.next_obs, obs_dim, b)
    check_states("transition.action", tr.action, action_dim, b)
    for field in ("reward", "terminated", "truncated"):
        x = getattr(tr, field)
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"transition.{field} must be a torch.Tensor [{b}], got {type(x).__name__}")
        if tuple(x.shape) != (b,):
            raise ValueError(f"transition.{field} has shape {tuple(x.shape)}, expected ({b},)")
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise ValueError(f"transition.{field} contains NaN or inf")
    return b
