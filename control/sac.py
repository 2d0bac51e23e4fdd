"""Soft Actor-Critic (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications") with
a LayerNorm critic ensemble (clipped double Q for E = 2; REDQ-style min over a random subset for
E > 2), automatic temperature tuning and an update-to-data ratio; and RLPD (Ball, Smith, Kostrikov,
Levine 2023, "Efficient Online Reinforcement Learning with Offline Data", arXiv 2302.02948;
authors' code ``ikostrikov/rlpd``), the same learner configured by :class:`RLPDConfig`.

Equations (paper numbering of arXiv 1812.05905):
- critic: J_Q = E[(Q_i(s, a) - y)^2], y = r + gamma (1 - terminated) (min_j Q'_j(s', a') - alpha log pi(a'|s')),
  a' ~ pi(.|s')  (eqs. 5-6, with the min over target critics; ``backup_entropy=False`` drops the
  alpha log pi term, as RLPD's sparse-reward scripts);
- actor: J_pi = E[alpha log pi(a|s) - Q(s, a)]  (eq. 7, reparameterised), Q = min_i Q_i (``actor_q:
  min``, SAC) or (1/E) sum_i Q_i (``actor_q: mean``, REDQ / RLPD: the mean over the whole ensemble);
- temperature: J(alpha) = E[-alpha (log pi(a|s) + target_entropy)]  (eq. 18), target_entropy = -A
  (SAC) or -A/2 (RLPD).

RLPD (:class:`RLPDConfig`, ``learner=rlpd``): 10 LayerNorm critics, TD target over a random subset of
2, actor on the ensemble mean, initial temperature 1.0, target entropy -A/2, one actor and
temperature update per environment step after ``utd_ratio`` critic updates, and symmetric sampling:
every batch holds ``offline_ratio`` (1/2) offline transitions from episode files (read with
:func:`sim.episodes.read_episodes` through :mod:`control.expo_data`) and the rest online ones.
``bc_steps`` > 0 (not in RLPD) first behaviour-clones the actor on the offline data (max log pi(a|s),
:meth:`SAC.pretrain`) and acts with it from the first env step: the "RLPD + BC" arm that separates
an offline start from what online learning adds.

Time-limit truncations bootstrap (only ``terminated`` zeroes the target). All randomness (random
warm-up actions, policy noise, minibatches, critic subsets) comes from the learner's own
``torch.Generator``, saved in ``state_dict``, so a resumed run repeats an uninterrupted one.
The critic ensemble (:class:`control.networks.CriticEnsemble`) and the replay buffer
(:class:`control.buffers.ReplayBuffer`) are the ones EXPO (:mod:`control.expo`) uses too; the
soft TD target (:func:`critic_target`, with an entropy term) is SAC's own.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from basics.checks import check_float, check_int, check_states, check_widths
from control.buffers import ReplayBuffer
from control.expo_data import episodes_to_transitions, read_offline_data
from control.learner import Learner, LearnerConfig, Transition, check_transition
from control.networks import (
    ACTIVATIONS,
    CriticEnsemble,
    RunningMeanStd,
    TanhGaussianActor,
    export_mlp_policy,
    soft_update,
)


def critic_target(critic_target_net: CriticEnsemble, next_obs: torch.Tensor, next_action: torch.Tensor,
                  next_log_prob: torch.Tensor, reward: torch.Tensor, terminated: torch.Tensor, gamma: float,
                  alpha: torch.Tensor | float, subset: int, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
    """Soft TD target of SAC eqs. 5-6 with a min over target critics (clipped double Q / REDQ), no gradient:
    y = r + gamma (1 - terminated) (min_{j in subset} Q'_j(s', a') - alpha log pi(a'|s')).

    Args:
        critic_target_net: the target ensemble Q' (E members).
        next_obs: float32 [B, D] (normalised as the critic sees states).  next_action: float32 [B, A],
            a' ~ pi(.|s').  next_log_prob: float32 [B], log pi(a'|s') in nats.
        reward: float32 [B].  terminated: bool [B] (true terminal: no bootstrap).
        gamma: discount.  alpha: temperature (scalar tensor or float).
        subset: members in the min, in [1, E] (E: all, no RNG draw).  generator: CPU generator for the subset.
    Returns:
        y float32 [B].
    Raises:
        ValueError: ``subset`` outside [1, E].
    """
    with torch.no_grad():
        q_next = critic_target_net(next_obs, next_action)
        q_min = critic_target_net.min_over_subset(q_next, subset, generator)
        return reward + gamma * (1.0 - terminated.float()) * (q_min - alpha * next_log_prob)


@dataclasses.dataclass
class SACConfig(LearnerConfig):
    """SAC's hyper-parameters (``configs/learner/sac.yaml``); ``make(obs_dim=, action_dim=, num_envs=,
    seed=, device=)`` builds the :class:`SAC` learner (no offline data; :class:`RLPDConfig` takes some).

    Raises (at construction):
        ValueError: a value outside its range, named with what is allowed; an unknown activation,
            ``actor_q`` or ``obs_stats`` (the known ones listed).
    """

    name: ClassVar[str] = "sac"
    #: target entropy per action dimension when ``target_entropy`` is None (SAC: -1, i.e. -A)
    entropy_per_action_dim: ClassVar[float] = -1.0
    ACTOR_Q: ClassVar[tuple[str, ...]] = ("min", "mean")
    OBS_STATS: ClassVar[tuple[str, ...]] = ("running", "frozen")

    gamma: float = 0.99
    """Discount, in (0, 1]."""
    tau: float = 0.005
    """Polyak rate of the target critics, in (0, 1]."""
    actor_lr: float = 3e-4
    """Adam lr of the actor, > 0."""
    critic_lr: float = 3e-4
    """Adam lr of the critics, > 0."""
    alpha_lr: float = 3e-4
    """Adam lr of the temperature, > 0."""
    batch_size: int = 256
    """Minibatch size, >= 1."""
    buffer_size: int = 1_000_000
    """Replay capacity (transitions), >= 1."""
    learning_starts: int = 5000
    """Env steps (all envs together) of uniform random actions before updates, >= 0."""
    utd_ratio: float = 1.0
    """Gradient steps per environment step (all envs together), > 0, e.g. 1 or 20."""
    num_critics: int = 2
    """Critic ensemble size E, >= 1."""
    critic_subset: int = 2
    """Members in the TD target's min, in [1, E]."""
    actor_q: str = "min"
    """What the actor maximises: ``min`` over all E critics (SAC's clipped double Q) or their ``mean``
    (REDQ / RLPD, for ensembles of more than two)."""
    backup_entropy: bool = True
    """Keep the -alpha log pi(a'|s') term in the TD target (SAC eq. 5; RLPD's sparse-reward scripts: false)."""
    hidden: Sequence[int] = (256, 256)
    """Hidden widths of the actor and of each critic."""
    layer_norm: bool = True
    """LayerNorm after each hidden layer of the critics (and of the actor unless ``actor_layer_norm`` says)."""
    actor_layer_norm: bool | None = None
    """LayerNorm in the actor; None: as ``layer_norm`` (RLPD: false, only its critics have it)."""
    activation: str = "relu"
    """Hidden activation: relu, elu, tanh, silu or gelu."""
    init_temperature: float = 0.1
    """Initial alpha, > 0."""
    autotune: bool = True
    """Learn alpha (eq. 18)."""
    target_entropy: float | None = None
    """Entropy target in nats (finite); None: -A (SAC) or -A/2 (RLPD)."""
    obs_normalization: bool = False
    """Normalise states with running statistics (frozen during updates)."""
    obs_stats: str = "running"
    """With ``obs_normalization``: ``running`` (every observed state) or ``frozen`` (the offline data's
    states, or without offline data the states seen before ``learning_starts``; then fixed)."""
    actor_update_every: int | None = 1
    """Actor/temperature update every k >= 1 critic updates; None: once per environment step, i.e.
    every max(1, round(utd_ratio)) critic updates (RLPD)."""

    def __post_init__(self):
        for key, low in (("batch_size", 1), ("buffer_size", 1), ("learning_starts", 0), ("num_critics", 1)):
            setattr(self, key, check_int(key, getattr(self, key), low))
        self.gamma = check_float("gamma", self.gamma, 0.0, 1.0, low_open=True)
        self.tau = check_float("tau", self.tau, 0.0, 1.0, low_open=True)
        for key in ("actor_lr", "critic_lr", "alpha_lr", "utd_ratio", "init_temperature"):
            setattr(self, key, check_float(key, getattr(self, key), 0.0, low_open=True))
        if self.actor_update_every is not None:
            self.actor_update_every = check_int("actor_update_every", self.actor_update_every, 1)
        if self.target_entropy is not None:
            self.target_entropy = check_float("target_entropy", self.target_entropy)
        if not (check_int("critic_subset", self.critic_subset, 1) <= self.num_critics):
            raise ValueError(f"critic_subset must be in [1, num_critics={self.num_critics}], got {self.critic_subset}")
        self.critic_subset = int(self.critic_subset)
        for key, known in (("activation", ACTIVATIONS), ("actor_q", self.ACTOR_Q), ("obs_stats", self.OBS_STATS)):
            if getattr(self, key) not in known:
                raise ValueError(f"unknown {key} {getattr(self, key)!r}; known: {', '.join(known)}")
        self.hidden = check_widths("hidden", self.hidden)
        self.layer_norm, self.autotune = bool(self.layer_norm), bool(self.autotune)
        self.actor_layer_norm = self.layer_norm if self.actor_layer_norm is None else bool(self.actor_layer_norm)
        self.obs_normalization, self.backup_entropy = bool(self.obs_normalization), bool(self.backup_entropy)

    def build(self, obs_dim: int, action_dim: int, num_envs: int, seed: int, device, offline_data: list[str]) -> "SAC":
        return SAC(self, obs_dim, action_dim, num_envs, seed, device)


@dataclasses.dataclass
class RLPDConfig(SACConfig):
    """RLPD's hyper-parameters (``configs/learner/rlpd.yaml``; Ball et al. 2023, authors' code
    ``ikostrikov/rlpd`` ``configs/rlpd_config.py`` + README scripts): SAC with 10 LayerNorm critics,
    a TD target over a random subset of 2, the actor on the ensemble mean, alpha_0 = 1, target
    entropy -A/2, one actor update per environment step, UTD 20, and symmetric sampling of offline
    episode files and online data. ``make(..., offline_data=[files])`` builds the :class:`SAC` learner.

    Raises (at construction):
        ValueError: as :class:`SACConfig`, or ``offline_ratio`` outside [0, 1].
    """

    name: ClassVar[str] = "rlpd"
    takes_offline_data: ClassVar[bool] = True
    entropy_per_action_dim: ClassVar[float] = -0.5

    learning_starts: int = 5000
    """Env steps of uniform random actions before updates, >= 0 [5000 in the authors' scripts]."""
    utd_ratio: float = 20.0
    """Critic updates per environment step, > 0 [20]."""
    num_critics: int = 10
    """Critic ensemble size E, >= 1 [10]."""
    critic_subset: int = 2
    """Members in the TD target's min, in [1, E] [2; 1 for AntMaze]."""
    actor_q: str = "mean"
    """``mean`` over the ensemble (RLPD) or ``min``."""
    layer_norm: bool = True
    """LayerNorm in the critics [True]."""
    actor_layer_norm: bool | None = False
    """LayerNorm in the actor [False]."""
    init_temperature: float = 1.0
    """Initial alpha, > 0 [1.0]."""
    obs_stats: str = "frozen"
    """With ``obs_normalization`` (RLPD normalises nothing): ``frozen`` on the offline data's states, or ``running``."""
    actor_update_every: int | None = None
    """None: one actor/temperature update per environment step (every max(1, round(utd_ratio)) critic updates)."""
    offline_ratio: float = 0.5
    """Share of every batch drawn from the offline data, in [0, 1] [0.5]."""
    offline_done_is_terminal: bool = False
    """The last ``done`` of an offline episode is a true terminal (no bootstrap)."""
    bc_steps: int = 0
    """Behaviour cloning of the actor before online learning, >= 0: gradient steps (Adam at
    ``actor_lr``, ``batch_size`` offline transitions each) of max E[log pi(a_demo | s)] on the offline
    data; the warm-up before ``learning_starts`` then acts with the cloned policy instead of uniform
    random actions. 0 (RLPD): none. Separates what the offline start gives from the online part."""

    def __post_init__(self):
        super().__post_init__()
        self.offline_ratio = check_float("offline_ratio", self.offline_ratio, 0.0, 1.0)
        self.offline_done_is_terminal = bool(self.offline_done_is_terminal)
        self.bc_steps = check_int("bc_steps", self.bc_steps, 0)

    def build(self, obs_dim: int, action_dim: int, num_envs: int, seed: int, device, offline_data: list[str]) -> "SAC":
        return SAC(self, obs_dim, action_dim, num_envs, seed, device, offline_data=offline_data,
                   offline_ratio=self.offline_ratio, offline_done_is_terminal=self.offline_done_is_terminal)


class SAC(Learner):
    """SAC learner (see the module docstring), built by :meth:`SACConfig.make`
    (``configs/learner/sac.yaml``) or :meth:`RLPDConfig.make` (``configs/learner/rlpd.yaml``, with
    offline data); the constructor trusts its config.

    Args:
        config: the hyper-parameters (:class:`SACConfig`, checked there).
        obs_dim: D.  action_dim: A.  num_envs: B.  seed: seeds the network initialisation (torch's
            global RNG, forked) and the learner's own generator (seed + 1).
        device: torch device string.
        offline_data: episode files (``dopa demos``) mixed into every batch; None or empty for none.
        offline_ratio: share of each batch drawn from them, in [0, 1].
        offline_done_is_terminal: an offline episode's last ``done`` is a true terminal.
    Raises:
        FileNotFoundError: an ``offline_data`` file that does not exist.
        ValueError: offline data whose sizes do not match, or bad offline episodes.
    """

    name = "sac"

    def __init__(self, config: SACConfig, obs_dim: int, action_dim: int, num_envs: int = 1, seed: int = 0,
                 device: str = "cpu", offline_data: Sequence[str] | None = None, offline_ratio: float = 0.5,
                 offline_done_is_terminal: bool = False):
        c = self.config = config
        self.name = type(c).name  # "sac" or "rlpd" (run folders, checkpoints)
        self.obs_dim, self.action_dim, self.num_envs = int(obs_dim), int(action_dim), int(num_envs)
        self.device = torch.device(device)
        self.gamma, self.tau, self.batch_size = c.gamma, c.tau, c.batch_size
        self.learning_starts, self.utd_ratio = c.learning_starts, c.utd_ratio
        self.critic_subset, self.autotune = c.critic_subset, c.autotune
        self.actor_update_every = (max(1, round(c.utd_ratio)) if c.actor_update_every is None
                                   else c.actor_update_every)
        self.actor_q, self.backup_entropy, self.obs_stats = c.actor_q, c.backup_entropy, c.obs_stats
        self.target_entropy = float(c.entropy_per_action_dim * self.action_dim if c.target_entropy is None
                                    else c.target_entropy)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.actor = TanhGaussianActor(obs_dim, action_dim, c.hidden, c.actor_layer_norm,
                                           c.activation).to(self.device)
            self.critic = CriticEnsemble(obs_dim, action_dim, c.num_critics, c.hidden, c.layer_norm,
                                         c.activation).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = torch.tensor(c.init_temperature, device=self.device).log().requires_grad_(True)
        # fused Adam: one kernel per step instead of one per tensor (~20% faster SAC steps on CPU)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=c.actor_lr, fused=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=c.critic_lr, fused=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=c.alpha_lr, fused=True)
        self.normalizer = RunningMeanStd(obs_dim).to(self.device) if c.obs_normalization else None
        self.buffer = ReplayBuffer(c.buffer_size, obs_dim, action_dim, self.device)
        self.generator = torch.Generator().manual_seed(int(seed) + 1)
        self.env_steps, self.grad_steps = 0, 0
        self._update_credit = 0.0
        self.offline: ReplayBuffer | None = None
        self.offline_ratio, self.offline_done_is_terminal = float(offline_ratio), bool(offline_done_is_terminal)
        self.offline_data = [str(p) for p in (offline_data or [])]
        self.bc_steps = int(getattr(c, "bc_steps", 0))
        self.pretrained = self.bc_steps == 0
        self._pretrain_metrics: dict[str, float] = {}  # cloned from act(): reported by the next update()
        if self.offline_data:
            self.set_offline_episodes(read_offline_data(self.offline_data))

    def set_offline_episodes(self, episodes) -> int:
        """Use these episodes (``.states`` [T+1, D], ``.actions`` [T, A], ``.rewards`` [T], ``.dones``
        [T]) as the offline data, replacing any before; returns the number of transitions. With
        ``obs_normalization`` the statistics are seeded by their states (``obs_stats: frozen``: they
        are those states' statistics alone, fixed from now on).

        Raises:
            ValueError: dimensions that do not match the learner, or bad episodes (see
                :func:`control.expo_data.episodes_to_transitions`).
        """
        tr = episodes_to_transitions(episodes, 1, self.gamma, self.offline_done_is_terminal)
        if tr["obs"].shape[1] != self.obs_dim or tr["action"].shape[1] != self.action_dim:
            raise ValueError(f"offline data has obs dim {tr['obs'].shape[1]} and action dim {tr['action'].shape[1]}; "
                             f"the learner expects {self.obs_dim} and {self.action_dim}")
        self.offline = ReplayBuffer(tr["obs"].shape[0], self.obs_dim, self.action_dim, self.device)
        self.offline.add(tr["obs"], tr["action"], tr["reward"], tr["next_obs"], tr["discount"] == 0)
        if self.normalizer is not None:
            states = torch.cat([tr["obs"], tr["next_obs"]]).to(self.device)
            if self.obs_stats == "frozen":  # the statistics of the offline states alone
                self.normalizer.reset_to(states)
            else:
                self.normalizer.update(states)
        return len(self.offline)

    def _stats_frozen(self) -> bool:
        """Whether observed states no longer change the normaliser (``obs_stats: frozen`` once there
        is offline data or updates have begun)."""
        return self.obs_stats == "frozen" and (self.offline is not None or self.env_steps >= self.learning_starts)

    def _sample(self, n: int) -> dict[str, torch.Tensor]:
        """A minibatch of n transitions: ``offline_ratio`` of them (rounded) from the offline data,
        the rest from the replay buffer (RLPD's symmetric sampling); the replay buffer alone without
        offline data, the offline data alone while the replay buffer is empty. Offline rows come first."""
        if self.offline is None or self.offline_ratio == 0.0:
            return self.buffer.sample(n, self.generator)
        if len(self.buffer) == 0 or self.offline_ratio == 1.0:
            return self.offline.sample(n, self.generator)
        n_off = int(round(n * self.offline_ratio))
        if n_off in (0, n):
            return (self.offline if n_off else self.buffer).sample(n, self.generator)
        off, on = self.offline.sample(n_off, self.generator), self.buffer.sample(n - n_off, self.generator)
        return {k: torch.cat([off[k], on[k]]) for k in off}

    # ---------------------------------------------------------------------------------------------
    @property
    def temperature(self) -> torch.Tensor:
        """alpha = exp(log_alpha), the entropy temperature."""
        return self.log_alpha.exp()

    def _norm(self, obs: torch.Tensor) -> torch.Tensor:
        return self.normalizer.normalize(obs) if self.normalizer is not None else obs

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """States float32 [B, D] -> actions float32 [B, A] in [-1, 1], on the CPU.

        Stochastic: uniform random before ``learning_starts`` env steps (with ``bc_steps``: the cloned
        policy from the start), then a ~ pi(.|s); deterministic: tanh(mean). Both draw from the
        learner's generator. With ``bc_steps`` the first call runs :meth:`pretrain` unless the loop
        did (its metrics then come with the next :meth:`update`).

        Raises:
            TypeError: ``obs`` is not a tensor.  ValueError: ``obs`` not [B, D] or holding NaN/inf;
            ``bc_steps`` > 0 without offline data (:meth:`pretrain`).
        """
        obs = check_states("obs", obs, self.obs_dim).to(self.device, torch.float32)
        if not self.pretrained:
            self._pretrain_metrics = self.pretrain()
        if not deterministic and self.env_steps < self.learning_starts and self.bc_steps == 0:
            return torch.rand(obs.shape[0], self.action_dim, generator=self.generator) * 2 - 1
        a, _ = self.actor.sample(self._norm(obs), deterministic, self.generator)
        return a.cpu()

    def observe(self, transition: Transition) -> None:
        """Store the batch in the replay buffer (``terminated`` only ends bootstrapping; actions are
        clamped to [-1, 1]) and fold ``obs`` into the running statistics when normalising (unless
        they are frozen: ``obs_stats``).

        Args:
            transition: obs/next_obs float32 [B, D], action [B, A], reward [B], terminated/truncated bool [B].
        Raises:
            ValueError: a field with the wrong shape or NaN/inf (named).
        """
        tr = transition
        check_transition(tr, self.obs_dim, self.action_dim)
        self.buffer.add(tr.obs, tr.action.clamp(-1, 1), tr.reward, tr.next_obs, tr.terminated)
        if self.normalizer is not None and not self._stats_frozen():
            self.normalizer.update(tr.obs)
        self.env_steps += int(tr.obs.shape[0])
        if self.env_steps >= self.learning_starts:
            self._update_credit += self.utd_ratio * tr.obs.shape[0]

    def pretrain(self) -> dict[str, float]:
        """Behaviour cloning of the actor (``bc_steps`` > 0, :class:`RLPDConfig`): ``bc_steps`` Adam
        steps of -E[log pi(a|s)] (:meth:`control.networks.TanhGaussianActor.log_prob`) on minibatches of
        ``batch_size`` offline transitions (normalised states as the actor sees them). Runs once (the
        loop calls it before the first env step; :meth:`act` otherwise); returns ``{"pretrain/bc_loss",
        "pretrain/bc_action_err"}`` (the last minibatch's mean |tanh(mean) - a_demo|), ``{}`` when done.

        Raises:
            ValueError: ``bc_steps`` > 0 and no offline data.
            FloatingPointError: the loss became NaN/inf.
        """
        if self.pretrained:
            return {}
        if self.offline is None:
            raise ValueError(f"bc_steps={self.bc_steps} > 0 needs offline data (offline_data files or set_offline_episodes)")
        with torch.enable_grad():  # also when called from act() (no_grad)
            for step in range(self.bc_steps):
                b = self.offline.sample(self.batch_size, self.generator)
                obs, act = self._norm(b["obs"]), b["action"].clamp(-1, 1)
                loss = -self.actor.log_prob(obs, act).mean()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"SAC bc_loss became {float(loss)} at behaviour-cloning step {step}")
                self.actor_opt.zero_grad(set_to_none=True)
                loss.backward()
                self.actor_opt.step()
        with torch.no_grad():
            err = (torch.tanh(self.actor(obs)[0]) - act).abs().mean()
        self.pretrained = True
        return {"pretrain/bc_loss": float(loss.detach()), "pretrain/bc_action_err": float(err)}

    def update(self) -> dict[str, float]:
        """Run the gradient steps earned since the last call (``utd_ratio`` per env step after
        ``learning_starts``); returns the last step's metrics (``{}`` when none ran), with the
        behaviour-cloning metrics of a :meth:`pretrain` that :meth:`act` ran since the last call.

        Raises:
            FloatingPointError: a loss or metric became NaN/inf.
        """
        pending, self._pretrain_metrics = self._pretrain_metrics, {}
        n = int(self._update_credit)
        if n < 1 or (len(self.buffer) < 1 and self.offline is None):
            return pending
        self._update_credit -= n
        metrics: dict[str, float] = {}
        for _ in range(n):
            metrics = self.gradient_step()
        return {**pending, **metrics}

    def gradient_step(self) -> dict[str, float]:
        """One critic update (eqs. 5-6), then every ``actor_update_every`` steps an actor (eq. 7, on
        the min or the mean of the ensemble: ``actor_q``) and temperature (eq. 18) update, on one
        minibatch of ``batch_size`` (:meth:`_sample`: replay, mixed with offline data when given).

        Returns:
            {"critic_loss", "q_mean", "temperature"} plus {"actor_loss", "entropy"} (and "alpha_loss"
            with ``autotune``) on actor steps.
        Raises:
            FloatingPointError: a metric became NaN/inf (named, with the gradient step).
            RuntimeError: the replay buffer is empty.
        """
        b = self._sample(self.batch_size)
        obs, next_obs = self._norm(b["obs"]), self._norm(b["next_obs"])
        alpha = self.temperature.detach()
        with torch.no_grad():
            next_a, next_logp = self.actor.sample(next_obs, False, self.generator)
        y = critic_target(self.critic_target, next_obs, next_a, next_logp, b["reward"], b["terminated"],
                          self.gamma, alpha if self.backup_entropy else 0.0, self.critic_subset, self.generator)
        q = self.critic(obs, b["action"])
        critic_loss = 0.5 * ((q - y[None]) ** 2).mean(dim=1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        soft_update(self.critic_target, self.critic, self.tau)
        self.grad_steps += 1
        metrics = {"critic_loss": float(critic_loss.detach()), "q_mean": float(q.detach().mean()), "temperature": float(alpha)}
        if self.grad_steps % self.actor_update_every == 0:
            a, logp = self.actor.sample(obs, False, self.generator)
            q_all = self.critic(obs, a)                                    # [E, B]
            q_pi = q_all.mean(dim=0) if self.actor_q == "mean" else q_all.min(dim=0).values
            actor_loss = (alpha * logp - q_pi).mean()
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            self.actor_opt.step()
            metrics.update(actor_loss=float(actor_loss.detach()), entropy=float(-logp.detach().mean()))
            if self.autotune:
                alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
                self.alpha_opt.zero_grad(set_to_none=True)
                alpha_loss.backward()
                self.alpha_opt.step()
                metrics["alpha_loss"] = float(alpha_loss.detach())
        for k, v in metrics.items():
            if v != v or v in (float("inf"), float("-inf")):
                raise FloatingPointError(f"SAC {k} became {v} at gradient step {self.grad_steps}")
        return metrics

    # ---------------------------------------------------------------------------------------------
    def export_policy(self) -> tuple[nn.Module, dict]:
        """Deployment module (kind ``"mlp"``: tanh of the actor mean, ``[B, D] -> [B, 1, A]``) and its
        meta entries (:func:`control.networks.export_mlp_policy`)."""
        return export_mlp_policy(self.actor, self.normalizer)

    def networks(self) -> dict[str, nn.Module]:
        """The networks whose weights form the policy checkpoint (``pretrained_model``)."""
        mods = {"actor": self.actor, "critic": self.critic, "critic_target": self.critic_target}
        if self.normalizer is not None:
            mods["normalizer"] = self.normalizer
        return mods

    def state_dict(self) -> dict:
        """Networks, optimizers, temperature, normaliser, replay buffer, generator state and counters.
        The offline buffer is not saved: it is rebuilt from ``offline_data``."""
        return {
            "actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
            "critic_target": self.critic_target.state_dict(), "log_alpha": self.log_alpha.detach().clone(),
            # optimizer state dicts hold references to live moment tensors: copy them
            "actor_opt": copy.deepcopy(self.actor_opt.state_dict()),
            "critic_opt": copy.deepcopy(self.critic_opt.state_dict()),
            "alpha_opt": copy.deepcopy(self.alpha_opt.state_dict()),
            "normalizer": self.normalizer.state_dict() if self.normalizer is not None else None,
            "buffer": self.buffer.state_dict(), "generator": self.generator.get_state(),
            "env_steps": self.env_steps, "grad_steps": self.grad_steps, "update_credit": self._update_credit,
            "pretrained": self.pretrained,
        }

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict` (torch's errors for mismatched networks; ValueError for a
        replay buffer of another capacity or shape)."""
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        if self.normalizer is not None and state.get("normalizer") is not None:
            self.normalizer.load_state_dict(state["normalizer"])
        self.buffer.load_state_dict(state["buffer"])
        self.generator.set_state(state["generator"])
        self.env_steps, self.grad_steps = int(state["env_steps"]), int(state["grad_steps"])
        self._update_credit = float(state["update_credit"])
        self.pretrained = bool(state.get("pretrained", True))  # checkpoints from before bc_steps: nothing to clone
