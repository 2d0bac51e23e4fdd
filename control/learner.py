"""The Learner contract every learner in ``control/`` follows (SAC, PPO, GoRL, EXPO), and the base
of their typed configs.

A learner is built in two steps: Hydra instantiates its typed config from
``configs/learner/<name>.yaml`` (``_target_`` = the :class:`LearnerConfig` subclass, e.g.
``control.sac.SACConfig``; the config checks every hyper-parameter once, in ``__post_init__``), then
``config.make(obs_dim=, action_dim=, num_envs=, seed=, device=, offline_data=None)`` builds the
learner with the sizes the training loop supplies. The learner's constructor trusts its config.

The training loop (``control/train.py``) is the only driver::

    action = learner.act(obs, deterministic=False)          # float32 [B, A] in [-1, 1]
    next_obs, reward, terminated, truncated, info = env.step(action)
    learner.observe(Transition(...))                         # one batched transition
    metrics = learner.update()                               # learner decides whether it trains now

Actions are normalised to [-1, 1] per dimension (the env maps them onto actuator ranges).

Bad values are refused with a ``ValueError`` that names them and says what is allowed: the
hyper-parameters by the config (:func:`basics.checks.check_int` / :func:`basics.checks.check_float`),
the sizes by :meth:`LearnerConfig.make`, and ``act``/``observe`` inputs by
:func:`basics.checks.check_states` / :func:`check_transition`.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import torch

from basics.checks import check_int, check_states


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


@dataclasses.dataclass
class LearnerConfig:
    """Base of the learners' typed configs (``SACConfig``, ``PPOConfig``, ``GoRLConfig``, ``EXPOConfig``).

    Subclasses are dataclasses whose fields are the learner's hyper-parameters (one docstring line
    each), check their ranges in ``__post_init__`` and implement :meth:`build`. Class attributes:
    ``name`` (the learner's name, e.g. ``"sac"``) and ``takes_offline_data`` (whether ``make``
    accepts episode files). Every learner config has a ``gamma`` field (its discount).
    """

    name: ClassVar[str] = "learner"
    takes_offline_data: ClassVar[bool] = False

    def make(self, *, obs_dim: int, action_dim: int, num_envs: int = 1, seed: int = 0, device="cpu",
             offline_data: Sequence[str] | None = None) -> "Learner":
        """Build the learner for an env with states of size ``obs_dim``, actions of size ``action_dim``
        and ``num_envs`` parallel envs.

        Args:
            obs_dim: D >= 1.  action_dim: A >= 1.  num_envs: B >= 1.
            seed: seeds the learner's initialisation and its generators.  device: torch device.
            offline_data: episode files (``dopa demos``) for learners that take them; None or empty for none.
        Raises:
            ValueError: a size < 1, a size that does not fit the config (e.g. PPO's minibatches), or
                ``offline_data`` given to a learner that takes none ("offline_data was given but
                learner <name> takes no offline_data").
        """
        obs_dim, action_dim = check_int("obs_dim", obs_dim, 1), check_int("action_dim", action_dim, 1)
        num_envs = check_int("num_envs", num_envs, 1)
        offline = [str(p) for p in (offline_data or [])]
        if offline and not self.takes_offline_data:
            raise ValueError(f"offline_data was given but learner {self.name} takes no offline_data")
        self.check_num_envs(num_envs)
        return self.build(obs_dim, action_dim, num_envs, int(seed), device, offline)

    def check_num_envs(self, num_envs: int) -> None:
        """Checks that need the number of envs (none by default). Raises ValueError."""

    def build(self, obs_dim: int, action_dim: int, num_envs: int, seed: int, device, offline_data: list[str]
              ) -> "Learner":
        """The learner, from checked sizes (``offline_data`` is empty unless ``takes_offline_data``)."""
        raise NotImplementedError


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
