"""Proximal Policy Optimization with a diagonal Gaussian policy and GAE (Schulman et al. 2017,
"Proximal Policy Optimization Algorithms"; GAE: Schulman et al. 2016), in the form of CleanRL's
``ppo_continuous_action.py``.

- clipped surrogate (PPO eq. 7): L = E[min(rho A, clip(rho, 1 - eps, 1 + eps) A)], rho = pi/pi_old;
- value loss 0.5 (V - R)^2 (optionally clipped), entropy bonus, global grad-norm clipping;
- advantages by GAE(lambda) (:meth:`control.buffers.RolloutBuffer.compute_gae`), normalised per
  minibatch; time-limit truncations bootstrap by adding gamma * V(final state) to the last reward.

Observation statistics (optional) are frozen during a rollout and its update, then refreshed from
that rollout, so stored log-probabilities stay consistent. Rewards can be scaled by a running
estimate of the discounted return's standard deviation (:class:`ReturnNormalizer`,
``normalize_returns``: SB3's ``VecNormalize(norm_reward=True)``, Gymnasium's ``NormalizeReward``),
so the critic's targets stay O(1) whatever the task's reward scale; the learning rate can decay
linearly to 0 over ``total_steps`` (``anneal_lr``, CleanRL's default).

Per step the loop calls ``act`` then ``observe`` on the same states: ``act`` keeps what it
computed (log-probability and value of the sampled action, with the parameters and statistics that
also serve ``observe``), so ``observe`` does not run the networks again. All sampling uses the learner's own
``torch.Generator`` (saved in ``state_dict``). GoRL's encoder reuses :func:`ppo_loss` and the
rollout buffer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from basics.checks import check_float, check_int, check_states, check_widths
from control.buffers import RolloutBuffer
from control.learner import Learner, LearnerConfig, Transition, check_transition
from control.networks import ACTIVATIONS, MLP, GaussianActor, RunningMeanStd, export_mlp_policy


def ppo_loss(new_log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantage: torch.Tensor,
             clip_coef: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate loss (negated PPO eq. 7) over a minibatch.

    Args:
        new_log_prob, old_log_prob: float32 [N], log pi(a|s) under the current and the rollout policy (nats).
        advantage: float32 [N] (normalised or not, as the caller chooses).  clip_coef: epsilon > 0.
    Returns:
        (loss: scalar tensor with gradient, {"approx_kl": E[(rho - 1) - log rho] (Schulman's k3
        estimator), "clipfrac": share of |rho - 1| > epsilon}).
    """
    log_ratio = new_log_prob - old_log_prob
    ratio = log_ratio.exp()
    pg1 = -advantage * ratio
    pg2 = -advantage * ratio.clamp(1 - clip_coef, 1 + clip_coef)
    loss = torch.max(pg1, pg2).mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()
        clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean()
    return loss, {"approx_kl": float(approx_kl), "clipfrac": float(clipfrac)}


class ReturnNormalizer:
    """Reward scaling by the running standard deviation of the discounted return (SB3's
    ``VecNormalize(norm_reward=True)``; Gymnasium's ``NormalizeReward``; Engstrom et al. 2020,
    "Implementation Matters in Deep Policy Gradients", sec. 3 "reward scaling").

    Per step: G <- gamma G + r (per env, float64 [B]), the running variance of G is updated with the
    batch of G (Chan et al.'s parallel update, as :class:`control.networks.RunningMeanStd`), the
    reward returned is ``clip(r / sqrt(var(G) + eps), -clip, clip)``, and G is set to 0 where an
    episode ended (terminated or truncated, as SB3). The mean is not subtracted (that would change
    the optimal policy). Kept in numpy: it runs once per env step on B numbers.

    Args:
        num_envs: B >= 1.  gamma: in (0, 1].  clip: > 0.  eps: > 0.
    Raises:
        ValueError: a value out of range (named).
    """

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, eps: float = 1e-8):
        self.gamma = check_float("gamma", gamma, 0.0, 1.0, low_open=True)
        self.clip = check_float("clip", clip, 0.0, low_open=True)
        self.eps = check_float("eps", eps, 0.0, low_open=True)
        self.ret = np.zeros(check_int("num_envs", num_envs, 1), dtype=np.float64)
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    @property
    def std(self) -> float:
        """sqrt(var(G) + eps): the scale rewards are divided by (1.0 before any step)."""
        return math.sqrt(self.var + self.eps)

    def __call__(self, reward: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """reward float32 [B], done bool [B] (the episode ended after this step) -> scaled reward
        float32 [B] on ``reward``'s device."""
        r = reward.detach().cpu().numpy().astype(np.float64)
        self.ret = self.ret * self.gamma + r
        n, b_mean, b_var = self.ret.shape[0], float(self.ret.mean()), float(self.ret.var())
        delta, tot = b_mean - self.mean, self.count + n
        self.mean += delta * n / tot
        self.var = (self.var * self.count + b_var * n + delta ** 2 * self.count * n / tot) / tot
        self.count = tot
        out = np.clip(r / self.std, -self.clip, self.clip).astype(np.float32)
        self.ret[done.detach().cpu().numpy().astype(bool)] = 0.0
        return torch.from_numpy(out).to(reward.device)

    def state_dict(self) -> dict:
        """``{"ret": float64 [B] tensor, "mean", "var", "count"}``."""
        return {"ret": torch.from_numpy(self.ret.copy()), "mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`. Raises ValueError for a ``ret`` of another size."""
        ret = np.asarray(state["ret"], dtype=np.float64)
        if ret.shape != self.ret.shape:
            raise ValueError(f"return normaliser for {ret.shape[0]} envs in the checkpoint, {self.ret.shape[0]} here")
        self.ret = ret.copy()
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), float(state["count"])


class FrozenNorm:
    """float32 view of a :class:`control.networks.RunningMeanStd` for the per-step path: the same
    ``clip((x - mean) / sqrt(var + eps))`` in float32, with the float32 mean and scale rebuilt only
    when the statistics changed (tracked by the buffers' in-place version counters, so an update, a
    ``load_state_dict`` or a checkpoint load is seen)."""

    def __init__(self, rms: RunningMeanStd):
        self.rms = rms
        self._key: tuple | None = None
        self._mean = self._std = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """float32 [..., D] -> float32 [..., D], normalised and clipped."""
        r = self.rms
        key = (r.mean._version, r.var._version, r.mean.data_ptr(), r.var.data_ptr())
        if key != self._key:
            self._mean, self._std = r.mean.to(torch.float32), torch.sqrt(r.var.to(torch.float32) + r.eps)
            self._key = key
        return ((x - self._mean) / self._std).clamp(-r.clip, r.clip)


def gaussian_log_prob(x: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Log density of a diagonal Gaussian, summed over the last dim: [B, A] -> [B] (nats)."""
    return (-0.5 * ((x - mu) / sigma).pow(2) - torch.log(sigma) - 0.5 * math.log(2 * math.pi)).sum(-1)


@dataclasses.dataclass
class PPOConfig(LearnerConfig):
    """PPO's hyper-parameters (``configs/learner/ppo.yaml``); ``make(obs_dim=, action_dim=, num_envs=,
    seed=, device=)`` builds the :class:`PPO` learner (no offline data).

    Raises (at construction; ``make`` for the minibatch division):
        ValueError: a value outside its range, named with what is allowed; an unknown activation
            (the known ones listed); ``num_steps * num_envs`` not divisible by ``num_minibatches``.
    """

    name: ClassVar[str] = "ppo"

    num_steps: int = 256
    """Rollout length T >= 1 per env (an update every ``num_steps`` loop steps)."""
    gamma: float = 0.99
    """Discount, in (0, 1]."""
    gae_lambda: float = 0.95
    """GAE lambda, in [0, 1]."""
    update_epochs: int = 10
    """Passes over the rollout, >= 1."""
    num_minibatches: int = 8
    """Minibatches per pass, >= 1, dividing ``num_steps * num_envs``."""
    clip_coef: float = 0.2
    """Surrogate clip epsilon, > 0."""
    clip_vloss: bool = False
    """Clip the value loss too."""
    ent_coef: float = 0.0
    """Entropy bonus weight (finite)."""
    vf_coef: float = 0.5
    """Value loss weight, >= 0."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip, > 0."""
    learning_rate: float = 3e-4
    """Adam step size, > 0."""
    anneal_lr: bool = False
    """Linear decay of the learning rate to 0 over ``total_steps``."""
    normalize_returns: bool = False
    """Scale rewards by the running std of the discounted return (:class:`ReturnNormalizer`)."""
    total_steps: int = 1_000_000
    """Env steps of the run (only for ``anneal_lr``; then >= 1)."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""
    obs_normalization: bool = True
    """Running state statistics (frozen during a rollout and its update)."""
    hidden: Sequence[int] = (64, 64)
    """Hidden widths of the actor and the critic."""
    layer_norm: bool = False
    """LayerNorm after each hidden layer."""
    activation: str = "tanh"
    """Hidden activation: relu, elu, tanh, silu or gelu."""
    init_log_std: float = 0.0
    """Initial log sigma of the Gaussian policy (finite)."""
    ortho_init: bool = True
    """Orthogonal initialisation as SB3 / CleanRL: hidden layers gain sqrt(2), zero biases, value head
    gain 1 (the mean head keeps gain 0.01); false: torch's default for the hidden layers."""
    target_kl: float | None = None
    """Stop the epoch loop early when the approximate KL exceeds it (None: never; else > 0)."""

    def __post_init__(self):
        for key in ("num_steps", "update_epochs", "num_minibatches"):
            setattr(self, key, check_int(key, getattr(self, key), 1))
        if self.anneal_lr:
            check_int("total_steps", self.total_steps, 1)
        self.total_steps = int(self.total_steps)
        self.gamma = check_float("gamma", self.gamma, 0.0, 1.0, low_open=True)
        self.gae_lambda = check_float("gae_lambda", self.gae_lambda, 0.0, 1.0)
        for key in ("clip_coef", "max_grad_norm", "learning_rate"):
            setattr(self, key, check_float(key, getattr(self, key), 0.0, low_open=True))
        self.ent_coef = check_float("ent_coef", self.ent_coef)
        self.vf_coef = check_float("vf_coef", self.vf_coef, 0.0)
        if self.target_kl is not None:
            self.target_kl = check_float("target_kl", self.target_kl, 0.0, low_open=True)
        self.init_log_std = check_float("init_log_std", self.init_log_std)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; known: {', '.join(ACTIVATIONS)}")
        self.hidden = check_widths("hidden", self.hidden)
        for key in ("clip_vloss", "anneal_lr", "norm_adv", "obs_normalization", "layer_norm", "normalize_returns",
                    "ortho_init"):
            setattr(self, key, bool(getattr(self, key)))

    def check_num_envs(self, num_envs: int) -> None:
        """Raises ValueError when ``num_steps * num_envs`` is not divisible by ``num_minibatches``."""
        batch = self.num_steps * int(num_envs)
        if batch % self.num_minibatches:
            raise ValueError(f"num_steps * num_envs = {batch} must be divisible by num_minibatches = {self.num_minibatches}")

    def build(self, obs_dim: int, action_dim: int, num_envs: int, seed: int, device, offline_data: list[str]) -> "PPO":
        return PPO(self, obs_dim, action_dim, num_envs, seed, device)


@torch.no_grad()
def _ortho_init(actor_trunk: nn.Module, critic_trunk: nn.Module, value_head: nn.Linear) -> None:
    """SB3's ``ActorCriticPolicy(ortho_init=True)`` / CleanRL's ``layer_init``: every Linear of the
    trunks orthogonal with gain sqrt(2), the value head with gain 1; biases 0."""
    for trunk in (actor_trunk, critic_trunk):
        for m in trunk.modules():
            if isinstance(m, nn.Linear):
                nn.init.orthogonal_(m.weight, math.sqrt(2))
                nn.init.zeros_(m.bias)
    nn.init.orthogonal_(value_head.weight, 1.0)
    nn.init.zeros_(value_head.bias)


class PPO(Learner):
    """PPO learner (see the module docstring), built by :meth:`PPOConfig.make`
    (``configs/learner/ppo.yaml``); the constructor trusts its config.

    Args:
        config: the hyper-parameters (:class:`PPOConfig`, checked there).
        obs_dim: D.  action_dim: A.  num_envs: B (``num_steps * num_envs`` divisible by
            ``num_minibatches``, checked by ``make``).  seed: seeds the network initialisation
            (torch's global RNG, forked) and the learner's own generator (seed + 1).
        device: torch device string.
    """

    name = "ppo"

    def __init__(self, config: PPOConfig, obs_dim: int, action_dim: int, num_envs: int = 1, seed: int = 0,
                 device: str = "cpu"):
        c = self.config = config
        self.obs_dim, self.action_dim, self.num_envs = int(obs_dim), int(action_dim), int(num_envs)
        self.device = torch.device(device)
        self.gamma, self.gae_lambda = c.gamma, c.gae_lambda
        self.update_epochs, self.num_minibatches = c.update_epochs, c.num_minibatches
        self.clip_coef, self.clip_vloss = c.clip_coef, c.clip_vloss
        self.ent_coef, self.vf_coef, self.max_grad_norm = c.ent_coef, c.vf_coef, c.max_grad_norm
        self.learning_rate, self.anneal_lr, self.total_steps = c.learning_rate, c.anneal_lr, c.total_steps
        self.norm_adv, self.target_kl = c.norm_adv, c.target_kl
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.actor = GaussianActor(obs_dim, action_dim, c.hidden, c.layer_norm, c.activation,
                                       c.init_log_std).to(self.device)
            self.critic = MLP(obs_dim, 1, c.hidden, c.layer_norm, c.activation).to(self.device)
            if c.ortho_init:
                _ortho_init(self.actor.trunk, self.critic.trunk, self.critic.head)
        self.optimizer = torch.optim.Adam(list(self.actor.parameters()) + list(self.critic.parameters()),
                                          lr=self.learning_rate, eps=1e-5, fused=True)
        self.normalizer = RunningMeanStd(obs_dim).to(self.device) if c.obs_normalization else None
        self._frozen_norm = FrozenNorm(self.normalizer) if self.normalizer is not None else None
        self.return_norm = ReturnNormalizer(num_envs, c.gamma) if c.normalize_returns else None
        self._last: tuple | None = None  # (obs, action, log_prob, value) of the last stochastic act()
        self.buffer = RolloutBuffer(c.num_steps, num_envs, obs_dim, action_dim, self.device)
        self.generator = torch.Generator().manual_seed(int(seed) + 1)
        self.env_steps, self.updates = 0, 0

    def _norm(self, obs: torch.Tensor) -> torch.Tensor:
        return self._frozen_norm(obs) if self._frozen_norm is not None else obs

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s): raw states float32 [B, D] -> float32 [B] (normalised inside when normalising; with gradient)."""
        return self.critic(self._norm(obs.to(self.device, torch.float32))).squeeze(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """States float32 [B, D] -> actions float32 [B, A] on the CPU: Gaussian samples (unbounded;
        the env clips to [-1, 1]; one [B, A] normal draw from the learner's generator) or the mean
        clipped to [-1, 1] when deterministic.

        Raises:
            TypeError: ``obs`` is not a tensor.  ValueError: ``obs`` not [B, D] or holding NaN/inf.
        """
        obs = check_states("obs", obs, self.obs_dim)
        x = self._norm(obs.to(self.device, torch.float32))
        mean = self.actor.mean(self.actor.trunk(x))
        if deterministic:
            return mean.clamp(-1, 1).cpu()
        std = self.actor.log_std.exp().expand_as(mean)
        eps = torch.randn(mean.shape, generator=self.generator)
        action = (mean + std * eps.to(self.device)).cpu()
        # kept for observe(): the same parameters and statistics produce the stored log-prob and value
        self._last = (obs, action, gaussian_log_prob(action.to(self.device), mean, std),
                      self.critic(x).squeeze(-1))
        return action

    @torch.no_grad()
    def observe(self, transition: Transition) -> None:
        """Append one step to the rollout; log-prob and value are computed here with the frozen
        parameters that also produced the action. Truncated rows get ``+ gamma * V(s_final)``.

        Args:
            transition: obs/next_obs float32 [num_envs, D], action [num_envs, A], reward [num_envs],
                terminated/truncated bool [num_envs]; ``info["latent"]`` is kept when present.
        Raises:
            ValueError: a field with the wrong shape (B must be ``num_envs``) or NaN/inf (named).
            RuntimeError: the rollout is already full (``update`` was not called).
        """
        tr = transition
        check_transition(tr, self.obs_dim, self.action_dim, self.num_envs)
        obs = tr.obs.to(self.device, torch.float32)
        last, self._last = self._last, None
        if last is not None and (last[0] is tr.obs or torch.equal(last[0], tr.obs)) and (
                last[1] is tr.action or torch.equal(last[1], tr.action)):
            log_prob, value = last[2], last[3]
        else:  # a transition act() did not produce (tests, offline feeding): compute it here
            dist = self.actor.distribution(self._norm(obs))
            log_prob = dist.log_prob(tr.action.to(self.device)).sum(-1)
            value = self.value(obs)
        reward = tr.reward.to(self.device, torch.float32).clone()
        done = tr.terminated.bool() | tr.truncated.bool()
        if self.return_norm is not None:
            reward = self.return_norm(reward, done)
        trunc = tr.truncated.bool() & ~tr.terminated.bool()
        if trunc.any():
            reward[trunc] += self.gamma * self.value(tr.next_obs[trunc])
        extra = {k: v for k, v in tr.info.items() if k == "latent"}
        self.buffer.add(obs, tr.action.to(self.device, torch.float32), log_prob, value, reward, done,
                        tr.next_obs.to(self.device, torch.float32), **extra)
        self.env_steps += int(obs.shape[0])

    def update(self) -> dict[str, float]:
        """When the rollout is full: GAE, ``update_epochs`` passes of minibatch updates, refresh
        the observation statistics, clear the rollout. Returns {} otherwise.

        Returns:
            {"policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac"} of the last minibatch,
            plus "explained_variance" and "log_std" (mean log sigma).
        Raises:
            FloatingPointError: the loss became NaN/inf (with the update index).
        """
        if not self.buffer.full:
            return {}
        if self.anneal_lr:
            frac = max(0.0, 1.0 - self.env_steps / max(1, self.total_steps))
            for g in self.optimizer.param_groups:
                g["lr"] = frac * self.learning_rate
        buf = self.buffer
        with torch.no_grad():
            last_value = self.value(buf.last_next_obs)
            adv, ret = buf.compute_gae(last_value, self.gamma, self.gae_lambda)
        n = buf.T * buf.B
        obs = self._norm(buf.obs.reshape(n, -1))
        act, old_logp = buf.action.reshape(n, -1), buf.log_prob.reshape(n)
        adv, ret, old_v = adv.reshape(n), ret.reshape(n), buf.value.reshape(n)
        mb = n // self.num_minibatches
        stats: dict[str, float] = {}
        for _ in range(self.update_epochs):
            perm = torch.randperm(n, generator=self.generator).to(self.device)
            for start in range(0, n, mb):
                idx = perm[start:start + mb]
                dist = self.actor.distribution(obs[idx])
                new_logp = dist.log_prob(act[idx]).sum(-1)
                entropy = dist.entropy().sum(-1).mean()
                a = adv[idx]
                if self.norm_adv and a.numel() > 1:
                    a = (a - a.mean()) / (a.std() + 1e-8)
                pg_loss, st = ppo_loss(new_logp, old_logp[idx], a, self.clip_coef)
                v = self.critic(obs[idx]).squeeze(-1)
                if self.clip_vloss:
                    v_clip = old_v[idx] + (v - old_v[idx]).clamp(-self.clip_coef, self.clip_coef)
                    v_loss = 0.5 * torch.max((v - ret[idx]) ** 2, (v_clip - ret[idx]) ** 2).mean()
                else:
                    v_loss = 0.5 * ((v - ret[idx]) ** 2).mean()
                loss = pg_loss - self.ent_coef * entropy + self.vf_coef * v_loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"PPO loss became {float(loss)} at update {self.updates}")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(list(self.actor.parameters()) + list(self.critic.parameters()),
                                         self.max_grad_norm)
                self.optimizer.step()
                stats = {"policy_loss": float(pg_loss.detach()), "value_loss": float(v_loss.detach()),
                         "entropy": float(entropy.detach()), **st}
            if self.target_kl is not None and stats.get("approx_kl", 0.0) > self.target_kl:
                break
        if self.normalizer is not None:
            self.normalizer.update(buf.obs.reshape(n, -1))
        self._last = None
        var_y = ret.var()
        stats["explained_variance"] = float(1 - (ret - old_v).var() / var_y) if var_y > 0 else float("nan")
        stats["log_std"] = float(self.actor.log_std.detach().mean())
        stats["learning_rate"] = float(self.optimizer.param_groups[0]["lr"])
        if self.return_norm is not None:
            stats["return_std"] = self.return_norm.std
        buf.clear()
        self.updates += 1
        return stats

    # ---------------------------------------------------------------------------------------------
    def export_policy(self) -> tuple[nn.Module, dict]:
        """Deployment module (kind ``"mlp"``: the Gaussian mean clipped to [-1, 1], ``[B, D] -> [B, 1, A]``)
        and its meta entries (:func:`control.networks.export_mlp_policy`)."""
        return export_mlp_policy(self.actor, self.normalizer)

    def networks(self) -> dict[str, nn.Module]:
        """The networks whose weights form the policy checkpoint (``pretrained_model``)."""
        mods = {"actor": self.actor, "critic": self.critic}
        if self.normalizer is not None:
            mods["normalizer"] = self.normalizer
        return mods

    def state_dict(self) -> dict:
        """Networks, optimizer, normaliser, rollout buffer, generator state and counters."""
        return {"actor": self.actor.state_dict(), "critic": self.critic.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "normalizer": self.normalizer.state_dict() if self.normalizer is not None else None,
                "buffer": self.buffer.state_dict(), "generator": self.generator.get_state(),
                "env_steps": self.env_steps, "updates": self.updates,
                "return_norm": self.return_norm.state_dict() if self.return_norm is not None else None}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict` (ValueError for a rollout buffer of another shape)."""
        self.actor.load_state_dict(state["actor"])
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.normalizer is not None and state.get("normalizer") is not None:
            self.normalizer.load_state_dict(state["normalizer"])
        self.buffer.load_state_dict(state["buffer"])
        self.generator.set_state(state["generator"])
        self.env_steps, self.updates = int(state["env_steps"]), int(state["updates"])
        if self.return_norm is not None and state.get("return_norm") is not None:
            self.return_norm.load_state_dict(state["return_norm"])
        self._last = None
