"""The potential interface used by reward shaping, and two simple state potentials.

A potential Phi maps a batch of observations to progress in [0, 1] plus a completion flag. The
GRM progress tracker (``reward_models.tracker.GRMPotential``) is one; :class:`StatePotential` and
:class:`StateFeaturePotential` are state-only ones for tests and baselines; :class:`OraclePotential`
is the simulator's ground-truth progress (the upper bound of a learned potential).

Contract (:class:`Potential`)::

    potential.views                              # camera views it needs; () = state only
    potential.completion_threshold               # complete (the gold signal) when phi >= this
    potential.reset(env_ids, obs)                # start of episode for envs ``env_ids``; None or phi [K]
    phi, complete = potential(obs)               # float32 [B] in [0, 1], bool [B]

``obs = {"state": float32 [B, D], "images": {view: uint8 [B, H, W, 3]}}`` always holds all B rows;
``reset`` uses only rows ``env_ids`` (int64 [K]). A potential with history (the incremental mode
of the GRM fusion) keeps per-env state and must forget it in ``reset``, and must return Phi of the
reset rows' first states from ``reset``: a call advances every row, so the shaper calls it only on
its query schedule (a stateless potential may return None and is then queried on ``obs``). It may
also expose ``state_dict()`` / ``load_state_dict()`` (its statistics are then saved in checkpoints).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol, runtime_checkable

import torch

from basics.checks import check_float
from sim import check_has_progress


@runtime_checkable
class Potential(Protocol):
    """What reward shaping needs from a progress model (see the module docstring)."""

    views: tuple[str, ...]
    completion_threshold: float

    def reset(self, env_ids: torch.Tensor, obs: dict) -> torch.Tensor | None:
        """Start of a new episode for envs ``env_ids`` (int64 [K]); ``obs`` holds all rows.

        Returns float32 [K], Phi of those rows' first states (required of a potential with
        history), or None (a stateless potential), which makes the shaper call it on ``obs``.
        """

    def __call__(self, obs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Progress ``phi`` float32 [B] in [0, 1] and ``complete`` bool [B]."""


def check_potential_output(phi: torch.Tensor, complete: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a potential's output. Returns ``(phi float32 [B], complete bool [B])``.

    Raises:
        ValueError: wrong shapes, NaN/inf, or phi outside [0, 1] (beyond 1e-4), naming the values.
    """
    phi = torch.as_tensor(phi)
    complete = torch.as_tensor(complete)
    if tuple(phi.shape) != (batch,) or tuple(complete.shape) != (batch,):
        raise ValueError(f"potential must return phi [B] and complete [B] with B={batch}, got "
                         f"{tuple(phi.shape)} and {tuple(complete.shape)}")
    phi = phi.float()
    if not torch.isfinite(phi).all():
        raise ValueError(f"potential returned NaN or inf: {phi.tolist()}")
    if (phi < -1e-4).any() or (phi > 1 + 1e-4).any():
        raise ValueError(f"potential must be in [0, 1], got min {phi.min().item():.4g} max {phi.max().item():.4g}")
    return phi.clamp(0.0, 1.0), complete.bool()


class StatePotential:
    """A stateless potential from a function of the state.

    Args:
        fn: ``float32 [B, D] -> float32 [B]`` in [0, 1] (values outside are an error at call time).
        complete_at: ``complete = phi >= complete_at`` (the paper's gold signal uses 0.95); kept as
            ``completion_threshold``.
    """

    views: tuple[str, ...] = ()

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], complete_at: float = 0.95):
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.completion_threshold = float(complete_at)

    def reset(self, env_ids: torch.Tensor, obs: dict) -> None:
        return None

    def __call__(self, obs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        state = obs["state"]
        phi = torch.as_tensor(self.fn(state), dtype=torch.float32)
        phi, _ = check_potential_output(phi, torch.zeros_like(phi, dtype=torch.bool), state.shape[0])
        return phi, phi >= self.completion_threshold


class StateFeaturePotential(StatePotential):
    """Phi(s) = clip((s[index] - low) / (high - low), 0, 1): progress read off one state entry.

    E.g. cartpole's pole cosine (state index 1, low -1, high 1) is 0 hanging down, 1 upright.
    Built from :class:`StateFeaturePotentialConfig`, which checks the values (``high > low``,
    ``index >= 0``); the constructor trusts them.
    """

    def __init__(self, index: int, low: float, high: float, complete_at: float = 0.95):
        self.index, self.low, self.high = int(index), float(low), float(high)

        def fn(state: torch.Tensor) -> torch.Tensor:
            if state.shape[1] <= self.index:
                raise ValueError(f"state has {state.shape[1]} entries; potential reads index {self.index}")
            return ((state[:, self.index] - self.low) / (self.high - self.low)).clamp(0.0, 1.0)

        super().__init__(fn, complete_at)


@dataclasses.dataclass
class StateFeaturePotentialConfig:
    """A state-feature potential as configured (``reward.potential`` of ``configs/reward/state.yaml``);
    :meth:`make` builds the :class:`StateFeaturePotential`.

    Raises:
        ValueError: ``need high > low, got low=1.0 high=1.0`` or ``index must be >= 0, got -1``.
    """

    index: int = 1
    """Entry of the state vector progress is read from (cartpole's pole cosine: 1)."""
    low: float = -1.0
    """Value of that entry at progress 0."""
    high: float = 1.0
    """Value of that entry at progress 1 (> low)."""
    complete_at: float = 0.95
    """Complete (the gold signal) when progress >= this."""

    def __post_init__(self):
        if not self.high > self.low:
            raise ValueError(f"need high > low, got low={self.low} high={self.high}")
        if int(self.index) < 0:
            raise ValueError(f"index must be >= 0, got {self.index}")

    def make(self, task: str | None = None, num_envs: int = 1) -> StateFeaturePotential:
        """The potential (stateless: ``task`` and ``num_envs`` are the common signature, unused)."""
        return StateFeaturePotential(int(self.index), float(self.low), float(self.high), float(self.complete_at))


class StateDistancePotential(StatePotential):
    """Phi(s) = clip(1 - ||s[indices]|| / scale, 0, 1): closeness to a goal read off a state vector
    that holds the goal offset (e.g. reacher's ``to_target``, state indices 2 and 3), the classic
    distance potential of Ng et al. (1999).

    Raises:
        ValueError: no indices, a negative index or ``scale <= 0``.
    """

    def __init__(self, indices, scale: float, complete_at: float = 0.95):
        self.indices = [int(i) for i in indices]
        if not self.indices or min(self.indices) < 0:
            raise ValueError(f"indices must be a non-empty list of non-negative ints, got {indices!r}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = float(scale)

        def fn(state: torch.Tensor) -> torch.Tensor:
            if state.shape[1] <= max(self.indices):
                raise ValueError(f"state has {state.shape[1]} entries; potential reads indices {self.indices}")
            return (1.0 - state[:, self.indices].norm(dim=1) / self.scale).clamp(0.0, 1.0)

        super().__init__(fn, complete_at)


class OraclePotential:
    """Phi(s) = the simulator's ground-truth step-wise progress of s (``reward=oracle``): what the
    demonstrations record as ``progress`` (:class:`sim.experts.ProgressFunction`: N sub-tasks of
    1/N each, measured physically inside the current one, exactly 1 on success). No rendering, no
    model: the upper bound any learned potential can reach, and a cheap way to find budgets where
    shaping can matter at all.

    It reads ``obs["progress"]`` (float32 [B] in [0, 1]), which the env reports when built with
    ``progress=True`` (:func:`sim.make_env`; ``needs_progress`` tells the job to). The simulator
    computes it in each sub-environment, also for the final state of an ended episode
    (``info["final_obs"]``), so Phi(s') of a last transition is exact. It is privileged state kept
    out of ``obs["state"]``: the policy never sees it. Stateless (a function of the current
    simulator state and the episode's reset references), so ``reset`` just reports Phi(s_0).

    Args:
        completion_threshold: complete when Phi >= this, in (0, 1]; 1.0 (the default) is exactly
            the task's success.
    Raises:
        ValueError (at call time): observations without ``"progress"`` (naming how to get it), or
            with the wrong shape.
    """

    views: tuple[str, ...] = ()
    needs_progress = True

    def __init__(self, completion_threshold: float = 1.0):
        self.completion_threshold = float(completion_threshold)

    @staticmethod
    def _progress(obs: dict) -> torch.Tensor:
        if not isinstance(obs, dict) or "progress" not in obs:
            raise ValueError("the oracle potential needs obs['progress'] (the simulator's ground-truth progress); "
                             "build the env with progress=True (sim.make_env / EnvConfig.make)")
        p = torch.as_tensor(obs["progress"], dtype=torch.float32)
        b = obs["state"].shape[0]
        if tuple(p.shape) != (b,):
            raise ValueError(f"obs['progress'] must have shape ({b},), got {tuple(p.shape)}")
        return p

    def reset(self, env_ids: torch.Tensor, obs: dict) -> torch.Tensor:
        """Phi of the first states of envs ``env_ids`` (int64 [K]): float32 [K]."""
        return self._progress(obs)[torch.as_tensor(env_ids, dtype=torch.long)]

    def __call__(self, obs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Progress float32 [B] in [0, 1] and completion bool [B]."""
        phi = self._progress(obs)
        phi, _ = check_potential_output(phi, torch.zeros_like(phi, dtype=torch.bool), phi.shape[0])
        return phi, phi >= self.completion_threshold


@dataclasses.dataclass
class OraclePotentialConfig:
    """The oracle potential as configured (``reward.potential`` of ``configs/reward/oracle.yaml``);
    :meth:`make` builds the :class:`OraclePotential`.

    Raises:
        ValueError: ``reward.potential.completion_threshold must be in (0, 1], got 0``.
    """

    completion_threshold: float = 1.0
    """Complete (the gold signal) when progress >= this, in (0, 1]; 1.0 is exactly the task's success."""

    def __post_init__(self):
        check_float("reward.potential.completion_threshold", self.completion_threshold, 0.0, 1.0, low_open=True)

    def make(self, task: str | None = None, num_envs: int = 1) -> OraclePotential:
        """The potential for ``task`` (``num_envs``: the common signature, unused: it is stateless).

        Raises:
            ValueError: a task without ground-truth progress (``task 'cartpole-swingup' has no
                ground-truth progress; tasks with it: lift, stack, pick-place-can, door``).
        """
        if task is not None:
            check_has_progress(task)
        return OraclePotential(float(self.completion_threshold))
