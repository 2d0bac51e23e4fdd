"""Potential-based reward shaping (Ng, Harada & Russell 1999) inside the batched environment loop.

Reward modes (``configs/reward/<mode>.yaml``, chosen by ``dopa train reward=...``):

- ``sparse``: r = r_gold (the environment's success, or the potential's completion flag);
- ``dense``: r = the task's own reward;
- ``potential`` (``reward=grm``): r = r_gold + gamma * Phi(s') - Phi(s), the potential-based form;
  on a true terminal transition Phi(s') is taken as 0 (the absorbing state has zero potential),
  on a time-limit truncation Phi(s') is the final state's potential and the learner bootstraps
  from s'. Summed along an episode the shaping terms telescope to gamma^T Phi(s_T) - Phi(s_0),
  so Q*(s, a) shifts by exactly -Phi(s) and the optimal policy is unchanged;
- ``naive``: r = r_gold + Phi(s') - Phi(s). With gamma < 1 the discounted sum is
  -Phi(s_0) + (1 - gamma) * sum_t gamma^t Phi(s_{t+1}) + ...: it pays the agent for *sitting* in
  high-progress states, which can change the optimal policy (the "semantic trap"). Kept for
  comparison.

Reward scale (``scale = c > 0``): the learning reward is c * r for every mode; with shaping
c * (r_gold + gamma * Phi(s') - Phi(s)) = c * r_gold + gamma * (c Phi)(s') - (c Phi)(s), i.e. the
gold reward and the potential scaled together, which is again potential-based (potential c Phi)
and has the optimal policy of c * r_gold, the same as r_gold's. It only changes the reward's size
next to a learner's own terms (SAC's entropy bonus).

Querying every k steps (``query_every = k``): rendering and the reward model are the CPU
bottleneck, so the potential can be evaluated only on steps t with t % k == 0 and *held* in between:
Phi_t = Phi(s_{k * floor(t / k)}). This is still potential-based: the held value is a function of
the augmented state (s_t, s_{last query}, t mod k), which is Markov, and the shaping terms
gamma * Phi_{t+1} - Phi_t still telescope along every trajectory, so the policy-invariance
argument of Ng et al. applies to the augmented MDP unchanged. Only the *amount* of guidance drops
(the signal arrives in bursts every k steps).

Per-environment bookkeeping: the shaper holds the previous Phi and completion flag for every env
and resets the potential (a tracker with history) for exactly the envs whose episode ended. A reset
never moves another env's potential: a potential with history returns Phi of the new first states
from ``reset`` (the GRM tracker: 0, its start of progress), so the shaper queries it only on its
schedule; only a potential whose ``reset`` returns None (a stateless one) is queried on the reset
observations, which changes nothing for the other rows. The completion flag of a first state is
Phi >= the potential's own ``completion_threshold``.
"""

from __future__ import annotations

import torch

from basics.checks import check_float
from reward_models.potential import Potential, check_potential_output

MODES = ("sparse", "dense", "potential", "naive")
GOLDS = ("env", "potential", "none")


def shaping_term(phi: torch.Tensor, phi_next: torch.Tensor, gamma: float, terminated: torch.Tensor,
                 mode: str = "potential") -> torch.Tensor:
    """The shaping term F(s, s') for a batch.

    Args:
        phi: float32 [B] Phi(s).  phi_next: float32 [B] Phi(s') (final state for ended episodes).
        gamma: discount in (0, 1].  terminated: bool [B] true terminal (Phi(s') := 0 for "potential").
        mode: ``"potential"``: gamma * Phi(s') - Phi(s) (Ng et al. 1999, Theorem 1);
            ``"naive"``: Phi(s') - Phi(s).
    Returns:
        float32 [B].
    Raises:
        ValueError: unknown mode, gamma outside (0, 1].
    """
    if not 0.0 < float(gamma) <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    if mode == "potential":
        nxt = torch.where(terminated.bool(), torch.zeros_like(phi_next), phi_next)
        return float(gamma) * nxt - phi
    if mode == "naive":
        return phi_next - phi
    raise ValueError(f"unknown shaping mode {mode!r}; known: potential, naive")


class RewardShaper:
    """Turns environment steps into the learning reward, batched, with per-env potential state.

    Args:
        mode: one of :data:`MODES` (see the module docstring).
        gamma: the learner's discount (shaping must use the same gamma to be policy-invariant).
        potential: a :class:`reward_models.potential.Potential`; required for ``potential``/``naive``
            and for ``gold="potential"``.
        gold: where r_gold comes from: ``"env"`` (``info["success"]``), ``"potential"`` (its
            completion flag) or ``"none"``.
        gold_scale: r_gold = gold_scale * 1[gold event on this step].
        query_every: k >= 1, evaluate the potential every k loop steps and hold it in between.
        scale: c > 0, the learning reward is c * r: r_gold and Phi scaled together (still
            potential-based; see the module docstring).
    Raises:
        ValueError: unknown mode or gold source, a missing potential, bad gamma, k or scale.
    """

    def __init__(self, mode: str, gamma: float, potential: Potential | None = None, gold: str = "env",
                 gold_scale: float = 1.0, query_every: int = 1, scale: float = 1.0):
        if mode not in MODES:
            raise ValueError(f"unknown reward mode {mode!r}; known: {', '.join(MODES)}")
        if gold not in GOLDS:
            raise ValueError(f"unknown gold source {gold!r}; known: {', '.join(GOLDS)}")
        if not 0.0 < float(gamma) <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        if isinstance(query_every, bool) or int(query_every) != query_every or int(query_every) < 1:
            raise ValueError(f"query_every must be an int >= 1, got {query_every!r}")
        self.uses_potential = mode in ("potential", "naive") or gold == "potential"
        if self.uses_potential and potential is None:
            raise ValueError(f"reward mode {mode!r} with gold {gold!r} needs a potential; none was given")
        if mode == "sparse" and gold == "none":
            raise ValueError("reward mode 'sparse' needs a gold source ('env' or 'potential'), got 'none'")
        self.mode, self.gamma, self.gold = mode, float(gamma), gold
        self.gold_scale, self.query_every = float(gold_scale), int(query_every)
        self.scale = check_float("reward.scale", scale, 0.0, None, low_open=True)
        self.potential = potential if self.uses_potential else None
        self.views: tuple[str, ...] = tuple(getattr(self.potential, "views", ()) or ())
        # the potential reads obs["progress"], the simulator's ground truth (env built with progress=True)
        self.needs_progress = bool(getattr(self.potential, "needs_progress", False))
        self.phi: torch.Tensor | None = None  # float32 [B], Phi of the current state (held between queries)
        self.complete: torch.Tensor | None = None  # bool [B]
        self.t = 0  # loop steps taken

    # ---------------------------------------------------------------------------------------------
    def query_due(self) -> bool:
        """Whether the next :meth:`step` evaluates the potential (so the loop knows to render)."""
        return self.uses_potential and (self.t + 1) % self.query_every == 0

    def _query(self, obs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        for v in self.views:
            if v not in obs.get("images", {}):
                raise ValueError(f"potential needs view {v!r}; observation has {sorted(obs.get('images', {}))}")
        phi, complete = self.potential(obs)
        return check_potential_output(phi, complete, obs["state"].shape[0])

    def _reset_rows(self, env_ids: torch.Tensor, obs: dict) -> None:
        """Reset the potential for rows ``env_ids`` (int64 [K]) and set their held Phi and completion
        flag to those of the first states in ``obs``; the other rows' potential state is untouched."""
        if self.potential is None or env_ids.numel() == 0:
            return
        first = self.potential.reset(env_ids, obs)
        if first is not None:  # a potential with history: Phi(s_0) from its reset, no query of all rows
            phi0 = torch.as_tensor(first, dtype=torch.float32).reshape(-1)
            if phi0.shape[0] != env_ids.numel():
                raise ValueError(f"potential.reset returned {phi0.shape[0]} values for {env_ids.numel()} envs")
            phi0, _ = check_potential_output(phi0, torch.zeros_like(phi0, dtype=torch.bool), env_ids.numel())
            threshold = getattr(self.potential, "completion_threshold", None)
            if threshold is None:
                raise ValueError(f"{type(self.potential).__name__}.reset returned Phi but the potential has no "
                                 "completion_threshold to judge completion by")
            complete0 = phi0 >= float(threshold)
        else:  # stateless: querying every row moves no other env's state
            phi_all, complete_all = self._query(obs)
            phi0, complete0 = phi_all[env_ids], complete_all[env_ids]
        self.phi[env_ids] = phi0.clamp(0.0, 1.0)
        self.complete[env_ids] = complete0

    def start(self, obs: dict) -> None:
        """Start of training (or after the loop resets every env): reset all rows of the potential.

        Args:
            obs: ``{"state": float32 [B, D], "images": {...}}`` of the first states.
        """
        b = obs["state"].shape[0]
        self.phi = torch.zeros(b, dtype=torch.float32)
        self.complete = torch.zeros(b, dtype=torch.bool)
        self._reset_rows(torch.arange(b), obs)

    def step(self, reward_env: torch.Tensor, next_obs: dict, terminated: torch.Tensor, truncated: torch.Tensor,
             success: torch.Tensor, reset_obs: dict | None = None, hold: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Learning reward for one batched step, then per-env reset of ended episodes.

        Args:
            reward_env: float32 [B] the task's reward.
            next_obs: s' for every row; for ended episodes the *final* state (``info["final_obs"]``).
                Must hold the potential's views on query steps (see :meth:`query_due`).
            terminated, truncated: bool [B].  success: bool [B] (``info["success"]``).
            reset_obs: the observation the env returned (first states of the new episodes for ended
                rows); required when any episode ended and a potential is used.
            hold: optional bool [B]: rows whose potential is held even on a query step (the loop
                passes the ended rows when their final frames were not rendered).
        Returns:
            reward float32 [B] and the terms ``{"task", "gold", "shaping", "progress", "reward"}``
            (each float32 [B]) for logging: ``gold`` and ``shaping`` are scaled by ``scale`` (their
            sum is the reward in the shaped modes), ``task`` and ``progress`` (Phi in [0, 1]) are not.
        Raises:
            RuntimeError: :meth:`start` was not called.  ValueError: bad potential output or views.
        """
        if self.uses_potential and self.phi is None:
            raise RuntimeError("RewardShaper.step before start(obs)")
        self.t += 1
        b = reward_env.shape[0]
        terminated, truncated = terminated.bool(), truncated.bool()
        done = terminated | truncated
        zeros = torch.zeros(b, dtype=torch.float32)
        shaping, progress = zeros, zeros
        complete = torch.zeros(b, dtype=torch.bool)
        if self.uses_potential:
            phi_prev = self.phi.clone()
            if self.t % self.query_every == 0:
                phi_q, complete_q = self._query(next_obs)
                keep = torch.zeros(b, dtype=torch.bool) if hold is None else hold.bool()
                phi_next = torch.where(keep, phi_prev, phi_q)
                complete = torch.where(keep, self.complete, complete_q)
            else:
                phi_next, complete = phi_prev, self.complete.clone()
            progress = phi_next
            if self.mode in ("potential", "naive"):
                shaping = shaping_term(phi_prev, phi_next, self.gamma, terminated, self.mode)
            self.phi, self.complete = phi_next.clone(), complete.clone()
        if self.gold == "env":
            gold = success.float() * self.gold_scale
        elif self.gold == "potential":
            gold = complete.float() * self.gold_scale
        else:
            gold = zeros
        gold, shaping = gold * self.scale, shaping * self.scale
        if self.mode == "dense":
            reward = reward_env.float() * self.scale
        elif self.mode == "sparse":
            reward = gold
        else:
            reward = gold + shaping
        if not torch.isfinite(reward).all():
            raise ValueError(f"shaped reward is NaN or inf: {reward.tolist()}")
        if self.uses_potential and done.any():
            if reset_obs is None:
                raise ValueError("episodes ended but reset_obs was not given; the potential must be reset")
            self._reset_rows(torch.nonzero(done).flatten(), reset_obs)
        terms = {"task": reward_env.float(), "gold": gold, "shaping": shaping, "progress": progress,
                 "reward": reward}
        return reward, terms

    def resume(self, obs: dict) -> None:
        """After :meth:`load_state_dict` at an episode start (a checkpoint boundary): a potential
        that cannot save its own state (no ``load_state_dict``) is reset for every env with the
        first observations ``obs``, so a tracker with history gets its episode context back. The
        held Phi values come from the checkpoint either way."""
        if self.potential is not None and not hasattr(self.potential, "load_state_dict"):
            self.potential.reset(torch.arange(obs["state"].shape[0]), obs)

    # ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Held potentials, completion flags, the step counter and the potential's own statistics."""
        out = {"t": self.t, "phi": None if self.phi is None else self.phi.clone(),
               "complete": None if self.complete is None else self.complete.clone()}
        if self.potential is not None and hasattr(self.potential, "state_dict"):
            out["potential"] = self.potential.state_dict()
        return out

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state["t"])
        self.phi = None if state["phi"] is None else state["phi"].clone().float()
        self.complete = None if state["complete"] is None else state["complete"].clone().bool()
        if "potential" in state and self.potential is not None and hasattr(self.potential, "load_state_dict"):
            self.potential.load_state_dict(state["potential"])
