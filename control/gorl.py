"""GoRL: a Gaussian encoder in latent space, a generative decoder, trained in alternating stages.

Paper: Zhang et al., "GoRL: An Algorithm-Agnostic Framework for Online RL with Generative Policies"
(arXiv 2512.02581; later "Training Diffusion Policies via Prior-Mapping Co-Evolution"); the
algorithm below follows the paper's factorisation and the authors' code (bennidict23/GoRL, 1461fb0).

The policy is factorised (the paper's latent-space factorisation)::

    pi(a | s) = integral pi_phi(a | s, eps) pi_theta(eps | s) d eps
    eps ~ pi_theta(. | s) = N(mu_theta(s), diag sigma_theta(s)^2)       encoder, dim(eps) = dim(a)
    u   = g_phi(s, eps)                                                 decoder, deterministic ODE/DDIM
    a   = tanh(u)                                                       what the env receives, [-1, 1]

Stages alternate (the paper's two time-scales; the authors' ``run_gorl_fm.py`` driver):

1. **Latent optimisation** (decoder frozen): PPO on the encoder in latent space -- the stored
   "action" is the latent eps and the likelihood ratio is pi_theta(eps|s) / pi_theta_old(eps|s):
   ordinary PPO on the latent MDP whose "environment" includes the frozen decoder. Where the map
   eps -> a is invertible (identity, an exact ODE flow) this ratio equals the ratio of action
   likelihoods (the Jacobians cancel), so no change-of-variables term is needed. A penalty pulls
   pi_theta(.|s) toward the prior N(0, I), where the decoder was trained.
2. **Decoder refit** (encoder frozen): the current policy collects (s, u) pairs (all those env
   steps are counted), then g_phi is refit by supervised generative learning with *fresh*
   eps ~ N(0, I) -- flow matching or DDPM -- so that g_phi(s, eps ~ N(0, I)) reproduces the policy
   that collected the data. The (eps, u) pairs are not used (paper; authors' code); by default
   the refit pairs each target with its whitened draw instead (policy coupling, below).

Stage 0 uses the identity decoder u = eps exactly, i.e. Gaussian PPO with tanh squashing.

Choices made here (and why):

- **Prior pull: true KL** ``KL(N(mu, sigma^2) || N(0, I)) = 0.5 * sum(mu^2 + sigma^2 - 1 - log sigma^2)``
  (``prior_penalty: kl``, the default). The paper describes a KL; the authors' code uses an L2 penalty
  ``z_reg * (mean(mu^2) + mean(sigma^2))`` which has no ``-log sigma^2`` term, so on its own it drives
  sigma to 0 and only the entropy bonus pushes back. The KL's minimum is the prior itself, so the
  latent stays where the decoder was trained. ``prior_penalty: l2`` reproduces the authors' code.
- **Encoder re-initialisation** between stages: on by default (``reinit_encoder: true``), as in the
  authors' code, but the fresh encoder starts at mu ~ 0 and sigma = ``encoder_init_std`` (default
  1.0, the prior itself): behind a decoder that maps N(0, I) to the previous policy, the new stage
  then starts by reproducing that policy, spread included. The authors' fresh encoder starts at
  sigma = softplus(0) ~ 0.69, so each refit shrank the action spread by ~0.69x and nothing (their
  entropy bonus is 0 on DMC) restored it (``encoder_init_std: 0.69`` reproduces that). The critic is
  kept by default (``reinit_critic: false``): the new policy is close to the old one, so its value
  is too, and a fresh critic costs many steps. The authors re-initialise both.
- **Honest step counting**: the collection phase runs inside the training loop's own environment,
  through ``act``/``observe``, so every collection step is counted by the loop and by
  :attr:`GoRL.env_steps` (the authors' plots omit ~79M such steps). Collection episodes end at the
  env's time limit (truncation). A collection phase lasts ``max(collect_steps, 2 * num_envs * L)``
  env steps, L the longest episode seen so far, so every step-in-episode appears in the data for
  every env at least twice; the metric ``gorl/decoder_data_early_frac`` reports the share of the
  data from the first 10% of an episode.
- **Several decoder targets per stored state** (``decoder_targets_per_state`` = K): the policy that
  collected is frozen, hence known exactly; each stored state gets K draws from it (no extra env
  steps), so the refit sees its spread at every state. ``decoder_dataset_size`` caps the pairs.
- **Policy coupling** (``decoder_coupling: policy``, default; a departure from the paper): each
  target u = g_phi(s, mu(s) + sigma(s) n) is fit with its own n (x_t = t n + (1 - t) u), so the refit
  learns a deterministic map pushing N(0, I) to exactly the frozen policy; fresh noise
  (``independent``, the paper's) leaves a target with irreducible variance, and its curved paths
  shrink the spread under 10 Euler steps. Cartpole refits (``benchmarks/gorl_refit_fidelity.py``,
  README "GoRL"): action error 0.100 -> 0.008 (independent K = 4 -> policy K = 16), std ratio 1.00.
  Each refit logs :meth:`GoRL.refit_fidelity` (``gorl/refit_*``).
- **Return normalisation** (``normalize_returns``, :class:`control.ppo.ReturnNormalizer`) and
  optional linear learning-rate decay over ``total_steps`` (``anneal_lr``), as in :mod:`control.ppo`.
- **Decoder refit from a fresh initialisation** every stage with a 10% validation split, early
  stopping and the best-validation weights kept (authors' ``train_decoder_fm.py``).
- Evaluation (``deterministic=True``) uses eps = mu_theta(s) and the deterministic decoder.

The PPO pieces are the project's own: :func:`control.ppo.ppo_loss` (clipped surrogate),
:class:`control.buffers.RolloutBuffer` (GAE; time-limit truncations bootstrap by adding
gamma * V(final state) to the last reward, as in :class:`control.ppo.PPO`) and
:class:`control.networks.RunningMeanStd` (observation statistics, frozen during a rollout and its
update). The buffer's "action" is the latent eps, so log-probabilities are taken in latent space.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from typing import ClassVar, Sequence

import numpy as np
import torch
from torch import nn

from basics.checks import check_float, check_int, check_states
from control.buffers import RolloutBuffer
from control.decoders import (
    DECODERS,
    DIFFUSION_PREDICTIONS,
    Encoder,
    GenerativeDecoder,
    GoRLPolicy,
    IdentityDecoder,
    activation_class,
    critic_mlp,
    fit_decoder,
    policy_fidelity,
    time_embedding,
)
from control.learner import Learner, LearnerConfig, Transition
from control.networks import RunningMeanStd
from control.ppo import FrozenNorm, ReturnNormalizer, gaussian_log_prob, ppo_loss

__all__ = ["GoRL", "GoRLConfig", "GoRLPolicy", "Encoder", "GenerativeDecoder", "IdentityDecoder", "fit_decoder",
           "gaussian_log_prob", "prior_penalty", "time_embedding", "DECODERS", "DIFFUSION_PREDICTIONS",
           "PRIOR_PENALTIES", "PHASES", "DECODER_COUPLINGS"]

PRIOR_PENALTIES = ("kl", "l2")
#: how a refit pairs each decoder target with noise (see GoRLConfig.decoder_coupling)
DECODER_COUPLINGS = ("policy", "independent")
PHASES = ("encoder", "collect")


def prior_penalty(mu: torch.Tensor, sigma: torch.Tensor, kind: str) -> torch.Tensor:
    """Pull of pi_theta(.|s) toward N(0, I): mu, sigma float32 [B, A] -> scalar tensor (mean over the batch).

    ``"kl"``: KL(N(mu, sigma^2) || N(0, I)) = 0.5 * sum_i(mu_i^2 + sigma_i^2 - 1 - log sigma_i^2).
    ``"l2"``: the authors' code, mean(mu^2) + mean(sigma^2) (no log term, not a divergence).

    Raises:
        ValueError: an unknown ``kind`` (the known ones listed).
    """
    if kind == "kl":
        return (0.5 * (mu.pow(2) + sigma.pow(2) - 1.0 - 2.0 * torch.log(sigma)).sum(-1)).mean()
    if kind == "l2":
        return mu.pow(2).mean() + sigma.pow(2).mean()
    raise ValueError(f"unknown prior_penalty {kind!r}; known: {', '.join(PRIOR_PENALTIES)}")


# =================================================================================================

def _staged(value, stage: int) -> float:
    """A hyper-parameter given per stage: a scalar, or a list whose last entry repeats -> float."""
    if isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, str)):
        seq = list(value)
        return float(seq[min(stage, len(seq) - 1)])
    return float(value)


def _per_stage(key: str, value, low_open: bool):
    """A per-stage hyper-parameter checked and normalised: a number -> float, a list -> tuple of floats.

    Raises:
        ValueError: an empty list, or an entry that is not a finite number >= 0 (> 0 when ``low_open``).
    """
    is_seq = isinstance(value, (list, tuple)) or (hasattr(value, "__len__") and not isinstance(value, str))
    seq = list(value) if is_seq else [value]
    if not seq:
        raise ValueError(f"{key} must be a number or a non-empty per-stage list, got {value!r}")
    checked = [check_float(key, x, 0.0, low_open=low_open) for x in seq]
    return tuple(checked) if is_seq else checked[0]


@dataclasses.dataclass
class GoRLConfig(LearnerConfig):
    """GoRL's hyper-parameters (``configs/learner/gorl.yaml``; the authors' values in brackets);
    ``make(obs_dim=, action_dim=, num_envs=, seed=, device=)`` builds the :class:`GoRL` learner (no
    offline data).

    Raises (at construction; ``make`` for the minibatch count):
        ValueError: an unknown decoder, decoder prediction or prior penalty (the known ones listed),
            a value outside its range (named, with what is allowed), or ``num_steps * num_envs``
            smaller than ``num_minibatches``.
    """

    name: ClassVar[str] = "gorl"

    decoder: str = "flow"
    """Decoder g_phi: "flow" (Euler ODE) or "diffusion" (DDIM)."""
    decoder_steps: int = 10
    """Decoder sampling steps, >= 1."""
    decoder_hidden: Sequence[int] = (64, 64, 64, 64)
    """Decoder MLP widths, each >= 1 [4 x 64]."""
    decoder_prediction: str = "v_prediction"
    """Diffusion target: "v_prediction" or "epsilon" [epsilon]; see :class:`GenerativeDecoder`."""
    stage_steps: Sequence[float] = (40_000, 60_000)
    """Env steps of encoder training per stage, each > 0 (``[inf]``: one stage, plain Gaussian PPO);
    every stage but the last ends with a collection phase and a decoder refit [60M, 60M, 30M, 30M]."""
    collect_steps: int = 10_000
    """Env steps (all envs together) of decoder-data collection after a stage, >= 0; counted. The
    phase lasts at least 2 x num_envs x the longest episode seen (the data-size rule)."""
    decoder_dataset_size: int = 1_000_000
    """Most (s, u) pairs in one refit (states x targets), >= 1; states subsampled uniformly when over."""
    decoder_targets_per_state: int = 16
    """K >= 1 targets per stored state: K draws from the frozen policy that collected the data
    (``decoder_coupling: independent``: the executed u and K - 1 draws)."""
    decoder_coupling: str = "policy"
    """How a refit pairs targets with noise: ``policy`` (default): each target u = g_old(s, mu(s) +
    sigma(s) n) is trained with its own n, so g_new(s, n) learns the frozen policy's map itself;
    ``independent`` (paper, authors): fresh eps ~ N(0, I) per pair. Measured on cartpole-swingup
    (README "GoRL"): with equal data and steps, policy coupling cut the refit's action error 3.6-5x
    and kept the spread (std ratio 1.00 vs 0.92-0.96)."""
    decoder_epochs: int = 50
    """Refit epochs, >= 1 [50]."""
    decoder_batch_size: int = 256
    """Refit batch size, >= 1 [8192 with ~10M pairs; small data needs small batches]."""
    decoder_lr: float = 3e-4
    """Refit Adam lr, > 0 [3e-4]."""
    decoder_noise_samples: int = 8
    """(eps, t) draws per pair in the refit, >= 1 [8]."""
    decoder_patience: int = 20
    """Refit early-stopping patience in epochs, >= 1 [20]."""
    decoder_reinit: bool = True
    """Refit from a fresh initialisation [True] instead of the previous decoder."""
    reinit_encoder: bool = True
    """Fresh encoder at each new stage [True]."""
    encoder_init_std: float = 1.0
    """sigma of a fresh encoder, in (1e-3, 10) [softplus(0) = 0.69]; 1.0 = the prior the decoder maps
    to the previous policy, so a new stage starts by reproducing it."""
    reinit_critic: bool = False
    """Fresh critic at each new stage [True]."""
    encoder_hidden: Sequence[int] = (32, 32, 32, 32)
    """Encoder MLP widths, each >= 1 [4 x 32]."""
    activation: str = "tanh"
    """Hidden activation of the encoder and the critic: ``tanh`` [default; SB3 / CleanRL PPO],
    ``silu`` (authors), ``relu``, ``elu`` or ``gelu``."""
    ortho_init: bool = True
    """Orthogonal initialisation of the encoder and the critic (gain sqrt(2), heads 1), zero biases
    [True; authors: False]."""
    state_dependent_std: bool = False
    """False [default]: one learned log-sigma per latent dimension; True: sigma from an encoder head (authors)."""
    critic_hidden: Sequence[int] = (256, 256, 256)
    """Critic MLP widths, each >= 1 [5 x 256]."""
    num_steps: int = 256
    """Rollout length per env between PPO updates, >= 1."""
    update_epochs: int = 10
    """PPO passes over a rollout, >= 1."""
    num_minibatches: int = 8
    """PPO minibatches per pass, >= 1 and <= num_steps * num_envs."""
    gamma: float = 0.99
    """Discount, in (0, 1]."""
    gae_lambda: float = 0.95
    """GAE lambda, in [0, 1]."""
    lr: float = 3e-4
    """Adam lr of the encoder and critic, > 0."""
    vf_coef: float = 0.25
    """Value loss weight, >= 0 [0.25]."""
    ent_coef: float = 0.0
    """Entropy bonus weight (finite)."""
    clip_eps: float | Sequence[float] = (0.15, 0.3)
    """PPO clip epsilon, > 0: a number or per-stage list (last repeats) [0.15, then 0.3]."""
    max_grad_norm: float | Sequence[float] = (0.5, 1.0)
    """Gradient-norm clip, > 0: a number or per-stage list [0.5, then 1.0]."""
    prior_coef: float | Sequence[float] = (5e-4, 1e-3)
    """Weight of the pull toward N(0, I), >= 0: a number or per-stage list [5e-4, then 1e-3]."""
    prior_penalty: str = "kl"
    """"kl" (true KL to N(0, I)) or "l2" (the authors' mean(mu^2) + mean(sigma^2))."""
    reward_scale: float = 1.0
    """Rewards are multiplied by this (> 0) before GAE (Playground's DMC PPO: 10)."""
    normalize_returns: bool = False
    """Scale rewards by the running std of the discounted return (:class:`control.ppo.ReturnNormalizer`)."""
    anneal_lr: bool = False
    """Linear decay of the encoder/critic learning rate to 0 over ``total_steps`` (all env steps)."""
    total_steps: int = 1_000_000
    """Env steps of the run (only for ``anneal_lr``; then >= 1)."""
    normalize_obs: bool = True
    """Running observation normalisation for the encoder and critic."""

    def __post_init__(self):
        if self.decoder not in DECODERS:
            raise ValueError(f"unknown decoder {self.decoder!r}; known: {', '.join(DECODERS)}")
        if self.decoder_coupling not in DECODER_COUPLINGS:
            raise ValueError(f"unknown decoder_coupling {self.decoder_coupling!r}; known: {', '.join(DECODER_COUPLINGS)}")
        if self.prior_penalty not in PRIOR_PENALTIES:
            raise ValueError(f"unknown prior_penalty {self.prior_penalty!r}; known: {', '.join(PRIOR_PENALTIES)}")
        for key in ("num_steps", "update_epochs", "num_minibatches", "decoder_steps", "decoder_dataset_size",
                    "decoder_batch_size", "decoder_epochs", "decoder_noise_samples", "decoder_patience",
                    "decoder_targets_per_state"):
            setattr(self, key, check_int(key, getattr(self, key), 1))
        for key in ("decoder_hidden", "encoder_hidden", "critic_hidden"):
            setattr(self, key, tuple(check_int(f"{key} width", h, 1) for h in getattr(self, key)))
        for key in ("lr", "decoder_lr", "reward_scale"):
            setattr(self, key, check_float(key, getattr(self, key), 0.0, low_open=True))
        self.gamma = check_float("gamma", self.gamma, 0.0, 1.0, low_open=True)
        self.gae_lambda = check_float("gae_lambda", self.gae_lambda, 0.0, 1.0)
        self.vf_coef = check_float("vf_coef", self.vf_coef, 0.0)
        self.ent_coef = check_float("ent_coef", self.ent_coef)
        for key, low_open in (("clip_eps", True), ("max_grad_norm", True), ("prior_coef", False)):
            setattr(self, key, _per_stage(key, getattr(self, key), low_open))
        stage_steps = [float(s) for s in self.stage_steps]
        if not stage_steps or any(not s > 0 for s in stage_steps):
            raise ValueError(f"stage_steps must be a non-empty list of positive step counts, got {stage_steps}")
        self.stage_steps = tuple(stage_steps)
        if int(self.collect_steps) < 0:
            raise ValueError(f"collect_steps must be >= 0, got {self.collect_steps!r}")
        self.collect_steps = int(self.collect_steps)
        if self.decoder_prediction not in DIFFUSION_PREDICTIONS:
            raise ValueError(f"unknown decoder_prediction {self.decoder_prediction!r}; known: "
                             f"{', '.join(DIFFUSION_PREDICTIONS)}")
        activation_class(self.activation)  # refuses an unknown name, listing the known ones
        for key in ("decoder_reinit", "reinit_encoder", "reinit_critic", "normalize_obs", "normalize_returns",
                    "anneal_lr", "ortho_init", "state_dependent_std"):
            setattr(self, key, bool(getattr(self, key)))
        self.encoder_init_std = check_float("encoder_init_std", self.encoder_init_std, 1e-3, 10.0, low_open=True,
                                            high_open=True)
        if self.anneal_lr:
            check_int("total_steps", self.total_steps, 1)
        self.total_steps = int(self.total_steps)

    def check_num_envs(self, num_envs: int) -> None:
        """Raises ValueError when ``num_steps * num_envs`` is smaller than ``num_minibatches``."""
        if self.num_steps * num_envs < self.num_minibatches:
            raise ValueError(f"num_steps*num_envs = {self.num_steps * num_envs} is smaller than "
                             f"num_minibatches = {self.num_minibatches}")

    def build(self, obs_dim: int, action_dim: int, num_envs: int, seed: int, device, offline_data: list[str]) -> "GoRL":
        return GoRL(self, obs_dim, action_dim, num_envs, seed, device)


class GoRL(Learner):
    """GoRL learner (see the module docstring for the algorithm and the choices made), built by
    :meth:`GoRLConfig.make` (``configs/learner/gorl.yaml``); the constructor trusts its config.

    Args:
        config: the hyper-parameters (:class:`GoRLConfig`, checked there).
        obs_dim, action_dim, num_envs, seed, device: from the training loop.
    """

    name = "gorl"

    def __init__(self, config: GoRLConfig, obs_dim: int, action_dim: int, num_envs: int = 1, seed: int = 0,
                 device: str = "cpu"):
        c = self.config = config
        self.obs_dim, self.action_dim, self.num_envs = int(obs_dim), int(action_dim), int(num_envs)
        self.device = torch.device(device)
        self.seed = int(seed)
        self.decoder_kind, self.decoder_steps = c.decoder, c.decoder_steps
        self.decoder_hidden = list(c.decoder_hidden)
        self.decoder_prediction = c.decoder_prediction
        self.stage_steps, self.collect_steps = list(c.stage_steps), c.collect_steps
        self.decoder_dataset_size, self.targets_per_state = c.decoder_dataset_size, c.decoder_targets_per_state
        self.decoder_coupling = c.decoder_coupling
        self.decoder_fit = dict(epochs=c.decoder_epochs, batch_size=c.decoder_batch_size, lr=c.decoder_lr,
                                noise_samples=c.decoder_noise_samples, patience=c.decoder_patience)
        self.decoder_reinit, self.reinit_encoder, self.reinit_critic = c.decoder_reinit, c.reinit_encoder, c.reinit_critic
        self.encoder_hidden, self.critic_hidden = list(c.encoder_hidden), list(c.critic_hidden)
        self.num_steps, self.update_epochs, self.num_minibatches = c.num_steps, c.update_epochs, c.num_minibatches
        self.gamma, self.gae_lambda, self.lr = c.gamma, c.gae_lambda, c.lr
        self.vf_coef, self.ent_coef = c.vf_coef, c.ent_coef
        self.clip_eps, self.max_grad_norm, self.prior_coef = c.clip_eps, c.max_grad_norm, c.prior_coef
        self.prior_penalty, self.reward_scale, self.normalize_obs = c.prior_penalty, c.reward_scale, c.normalize_obs
        self.encoder_init_std, self.anneal_lr, self.total_steps = c.encoder_init_std, c.anneal_lr, c.total_steps
        self.activation, self.ortho_init, self.state_dependent_std = c.activation, c.ortho_init, c.state_dependent_std

        self.gen = torch.Generator(device="cpu").manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.obs_norm = RunningMeanStd(self.obs_dim).to(self.device)
            self.encoder = self._new_encoder()
            self.critic = self._new_critic()
        self._frozen_norm = FrozenNorm(self.obs_norm)
        self.return_norm = ReturnNormalizer(self.num_envs, self.gamma) if c.normalize_returns else None
        self.decoder: nn.Module = IdentityDecoder()
        self._make_optimizer()

        # Schedule state.
        self.stage, self.phase = 0, "encoder"
        self.env_steps = 0  # every env step seen by observe(), collection included
        self.phase_steps = 0  # env steps in the current phase
        self.updates = 0
        # Rollout buffer for the encoder's PPO; its "action" is the latent eps.
        B, D, A = self.num_envs, self.obs_dim, self.action_dim
        self.buffer = RolloutBuffer(self.num_steps, B, D, A, self.device)
        # Decoder data: the collection phase's (s, u) pairs and their step-in-episode, per loop step.
        self.data_obs: list[torch.Tensor] = []
        self.data_u: list[torch.Tensor] = []
        self.data_t: list[torch.Tensor] = []
        self.episode_t = torch.zeros(B, dtype=torch.long)
        self.longest_episode = 0  # longest episode seen (env steps of one env), for the data-size rule
        self._last: dict | None = None  # what act() computed for the last stochastic call
        self.history: list[dict] = []  # one entry per stage transition (for logs and tests)

    # ---------------------------------------------------------------------------------------------
    def _make_optimizer(self) -> None:
        """One Adam (eps 1e-5) over the encoder's and the critic's parameters, in that order."""
        self.optimizer = torch.optim.Adam(list(self.encoder.parameters()) + list(self.critic.parameters()),
                                          lr=self.lr, eps=1e-5)

    def _new_encoder(self) -> Encoder:
        return Encoder(self.obs_dim, self.action_dim, self.encoder_hidden, self.encoder_init_std,
                       activation=self.activation, state_dependent_std=self.state_dependent_std,
                       ortho_init=self.ortho_init).to(self.device)

    def _new_critic(self) -> nn.Module:
        return critic_mlp(self.obs_dim, self.critic_hidden, self.activation, self.ortho_init).to(self.device)

    def collect_target(self) -> int:
        """Env steps the current collection phase lasts: ``max(collect_steps, 2 * num_envs * L)``, L
        the longest episode seen so far (the decoder data-size rule); with ``collect_steps = 0`` and no
        episode ended yet, the phase lasts until one ends (then L is known)."""
        if self.longest_episode == 0 and self.collect_steps == 0:
            return 1 << 62
        return max(self.collect_steps, 2 * self.num_envs * self.longest_episode)

    def _new_decoder(self) -> GenerativeDecoder:
        return GenerativeDecoder(self.obs_dim, self.action_dim, self.decoder_kind, self.decoder_hidden,
                                 self.decoder_steps, prediction=self.decoder_prediction).to(self.device)

    def _norm(self, obs: torch.Tensor) -> torch.Tensor:
        return self._frozen_norm(obs) if self.normalize_obs else obs

    def _check_obs(self, obs: torch.Tensor, what: str = "obs", batch: int | None = None) -> torch.Tensor:
        """:func:`basics.checks.check_states` ([B, D], B = ``batch`` when given), then float32 on the learner's device."""
        return check_states(what, obs, self.obs_dim, batch).to(self.device, torch.float32)

    # ----- acting ---------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, obs: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """u = g_phi(s, eps): raw obs float32 [B, D], latent float32 [B, A] -> pre-tanh action [B, A]."""
        return self.decoder(obs, latent)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """a = tanh(g_phi(s, eps)), eps ~ pi_theta(.|s) (or eps = mu_theta(s) when deterministic).

        Args:
            obs: float32 [B, D] states (B = num_envs for training calls; any B when deterministic).
        Returns:
            float32 [B, A] in [-1, 1] (on the obs' device).
        Raises:
            ValueError: wrong shape or NaN/inf in ``obs``.
        """
        dev_in = obs.device if isinstance(obs, torch.Tensor) else None
        s = self._check_obs(obs)
        x = self._norm(s)
        mu, sigma = self.encoder(x)
        if deterministic:
            latent = mu
        else:
            noise = torch.randn(mu.shape, generator=self.gen).to(self.device)
            latent = mu + sigma * noise
        u = self.decoder(s, latent)
        action = torch.tanh(u)
        if not torch.isfinite(action).all():
            raise FloatingPointError("GoRL produced NaN/inf actions (encoder or decoder diverged)")
        if not deterministic:
            value = self.critic(x).squeeze(-1) if self.phase == "encoder" else None
            self._last = {"obs": s, "latent": latent, "u": u, "logp": gaussian_log_prob(latent, mu, sigma),
                          "action": action, "value": value}
        return action.to(dev_in) if dev_in is not None else action

    # ----- storing --------------------------------------------------------------------------------
    @torch.no_grad()
    def observe(self, transition: Transition) -> None:
        """Store one batched transition.

        The latent of each action comes from the preceding ``act(obs, deterministic=False)`` call
        (cached), or from ``transition.info["latent"]`` (float32 [B, A]) when given.

        Args:
            transition: obs/next_obs float32 [num_envs, D], action float32 [num_envs, A] (checked,
                not stored: the decoder data are the pre-tanh actions u of the cached ``act``),
                reward float32 [num_envs], terminated/truncated bool [num_envs].
        Raises:
            ValueError: wrong batch size or shape, NaN/inf, or no latent for this transition
                (``act`` was not called on this ``obs`` and ``info`` has no ``"latent"``).
        """
        s = self._check_obs(transition.obs, "transition.obs")
        if s.shape[0] != self.num_envs:
            raise ValueError(f"transition batch {s.shape[0]} does not match num_envs={self.num_envs}")
        check_states("transition.action", transition.action, self.action_dim, self.num_envs)
        for field in ("reward", "terminated", "truncated"):
            x = getattr(transition, field)
            if not isinstance(x, torch.Tensor) or x.numel() != self.num_envs:
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"transition.{field} must hold num_envs={self.num_envs} entries, got {shape}")
        next_obs = self._check_obs(transition.next_obs, "transition.next_obs", self.num_envs)
        reward = transition.reward.to(self.device, torch.float32).reshape(-1)
        if not torch.isfinite(reward).all():
            raise ValueError("transition.reward contains NaN or inf")
        if "latent" in (transition.info or {}):
            latent = check_states("transition.info['latent']", transition.info["latent"], self.action_dim,
                                  self.num_envs).to(self.device, torch.float32)
            mu, sigma = self.encoder(self._norm(s))
            logp = gaussian_log_prob(latent, mu, sigma)
            u, value = self.decoder(s, latent), None
        elif self._last is not None and self._last["obs"].shape == s.shape and torch.equal(self._last["obs"], s):
            latent, logp, u, value = self._last["latent"], self._last["logp"], self._last["u"], self._last["value"]
        else:
            raise ValueError("GoRL.observe: no latent for this transition; call act(obs, deterministic=False) on "
                             "the same obs first, or pass info['latent'] (float32 [B, A])")
        self._last = None
        terminated = transition.terminated.to(self.device).bool()
        done = terminated | transition.truncated.to(self.device).bool()

        # Decoder data: the collection phase's (s, u) pairs with their step-in-episode.
        if self.phase == "collect":
            self.data_obs.append(s.cpu())
            self.data_u.append(u.cpu())
            self.data_t.append(self.episode_t.clone())
        done_cpu = done.cpu()
        if done_cpu.any():
            self.longest_episode = max(self.longest_episode, int(self.episode_t[done_cpu].max()) + 1)
        self.episode_t = torch.where(done_cpu, torch.zeros_like(self.episode_t), self.episode_t + 1)

        self.env_steps += self.num_envs
        self.phase_steps += self.num_envs
        if self.phase == "encoder":
            if value is None:
                value = self.critic(self._norm(s)).squeeze(-1)
            reward = reward * self.reward_scale
            if self.return_norm is not None:
                reward = self.return_norm(reward, done)
            trunc = done & ~terminated  # time limit: bootstrap from the final state (as control.ppo.PPO)
            if trunc.any():
                reward[trunc] += self.gamma * self.critic(self._norm(next_obs[trunc])).squeeze(-1)
            self.buffer.add(s, latent, logp, value, reward, done, next_obs)

    # ----- training -------------------------------------------------------------------------------
    def update(self) -> dict[str, float]:
        """Run whatever the schedule calls for now; returns metrics (``{}`` when nothing ran).

        Encoder phase: a PPO update in latent space once ``num_steps`` steps per env are stored; at
        the end of the stage's budget, switch to the collection phase. Collection phase: once
        :meth:`collect_target` env steps are gathered, refit the decoder and start the next stage.
        """
        metrics: dict[str, float] = {}
        if self.phase == "encoder" and self.buffer.full:
            metrics.update(self._ppo_update())
            last_stage = self.stage >= len(self.stage_steps) - 1
            if not last_stage and self.phase_steps >= self.stage_steps[self.stage]:
                self.phase, self.phase_steps = "collect", 0
                self.data_obs, self.data_u, self.data_t = [], [], []
        if self.phase == "collect" and self.phase_steps >= self.collect_target():
            metrics.update(self._refit_and_next_stage())
        if metrics:
            metrics.update({"gorl/stage": float(self.stage), "gorl/collecting": float(self.phase == "collect"),
                            "gorl/env_steps": float(self.env_steps)})
        return metrics

    def _ppo_update(self) -> dict[str, float]:
        st = self.stage
        clip_eps, max_norm, prior_coef = (_staged(self.clip_eps, st), _staged(self.max_grad_norm, st),
                                          _staged(self.prior_coef, st))
        if self.anneal_lr:
            frac = max(0.0, 1.0 - self.env_steps / max(1, self.total_steps))
            for grp in self.optimizer.param_groups:
                grp["lr"] = frac * self.lr
        buf = self.buffer
        T, B = buf.T, buf.B
        n = T * B
        with torch.no_grad():
            last_value = self.critic(self._norm(buf.last_next_obs)).squeeze(-1)
            adv, ret = buf.compute_gae(last_value, self.gamma, self.gae_lambda)
        obs = self._norm(buf.obs.reshape(n, -1))
        latent, old_logp = buf.action.reshape(n, -1), buf.log_prob.reshape(n)
        adv, ret = adv.reshape(n), ret.reshape(n)
        mb = max(1, n // self.num_minibatches)
        stats = {k: [] for k in ("policy_loss", "value_loss", "prior", "entropy", "approx_kl", "clipfrac")}
        for _ in range(self.update_epochs):
            perm = torch.randperm(n, generator=self.gen).to(self.device)
            for i in range(0, n - mb + 1, mb):
                j = perm[i:i + mb]
                mu, sigma = self.encoder(obs[j])
                new_logp = gaussian_log_prob(latent[j], mu, sigma)  # log pi_theta(eps | s): latent space
                a = adv[j]
                a = (a - a.mean()) / (a.std() + 1e-8) if a.numel() > 1 else a
                pg, st_ = ppo_loss(new_logp, old_logp[j], a, clip_eps)
                v = self.critic(obs[j]).squeeze(-1)
                v_loss = 0.5 * (v - ret[j]).pow(2).mean()
                entropy = (torch.log(sigma) + 0.5 * math.log(2 * math.pi * math.e)).sum(-1).mean()
                prior = prior_penalty(mu, sigma, self.prior_penalty)  # pull toward N(0, I)
                loss = pg + self.vf_coef * v_loss - self.ent_coef * entropy + prior_coef * prior
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"GoRL PPO loss became {loss.item()} (stage {st}, update {self.updates})")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(list(self.encoder.parameters()) + list(self.critic.parameters()), max_norm)
                self.optimizer.step()
                stats["policy_loss"].append(pg.item())
                stats["value_loss"].append(v_loss.item())
                stats["prior"].append(prior.item())
                stats["entropy"].append(entropy.item())
                stats["approx_kl"].append(st_["approx_kl"])
                stats["clipfrac"].append(st_["clipfrac"])
        if self.normalize_obs:
            self.obs_norm.update(buf.obs.reshape(n, -1))
        lat = buf.action.reshape(n, -1)
        rollout_reward = float(buf.reward.mean()) / max(self.reward_scale, 1e-12)
        buf.clear()
        self.updates += 1
        out = {f"gorl/{k}": float(np.mean(v)) for k, v in stats.items()}
        out.update({"gorl/latent_mean_abs": float(lat.mean(0).abs().mean()), "gorl/latent_std": float(lat.std(0).mean()),
                    "gorl/rollout_reward": rollout_reward, "gorl/learning_rate": float(self.optimizer.param_groups[0]["lr"])})
        if self.return_norm is not None:
            out["gorl/return_std"] = self.return_norm.std
        return out

    def decoder_dataset(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The current collection phase's (s, executed u, step-in-episode), in step order:
        float32 [N, D], float32 [N, A], int64 [N] (N = env steps collected so far)."""
        if not self.data_obs:
            return torch.zeros(0, self.obs_dim), torch.zeros(0, self.action_dim), torch.zeros(0, dtype=torch.long)
        return torch.cat(self.data_obs), torch.cat(self.data_u), torch.cat(self.data_t)

    @torch.no_grad()
    def decoder_targets(self, obs: torch.Tensor, u: torch.Tensor, ep_t: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The refit's (s, u) pairs from the stored states and the current (frozen) encoder and
        decoder, K = ``decoder_targets_per_state`` per state; states subsampled uniformly (learner
        RNG) when N * K would exceed ``decoder_dataset_size``.

        ``decoder_coupling: policy``: K draws u = g_phi(s, mu(s) + sigma(s) n), n ~ N(0, I), each
        returned with its n. ``independent``: the executed u and K - 1 such draws, no noise.

        Args:
            obs: float32 [N, D] raw states.  u: float32 [N, A] executed pre-tanh actions.
            ep_t: int64 [N] step-in-episode or None (subsampled alike).
        Returns:
            (states float32 [M*K, D], targets float32 [M*K, A], noise float32 [M*K, A] or None,
            ep_t int64 [M] or None), M <= N.
        """
        K = self.targets_per_state
        keep = max(1, self.decoder_dataset_size // K)
        if obs.shape[0] > keep:
            idx = torch.randperm(obs.shape[0], generator=self.gen)[:keep].sort().values
            obs, u = obs[idx], u[idx]
            ep_t = ep_t[idx] if ep_t is not None else None
        paired = self.decoder_coupling == "policy"
        states, targets, noises = ([], [], []) if paired else ([obs], [u], [])
        for lo in range(0, obs.shape[0], 65536):
            s = obs[lo:lo + 65536].to(self.device)
            mu, sigma = self.encoder(self._norm(s))
            for _ in range(K if paired else K - 1):
                n = torch.randn(mu.shape, generator=self.gen).to(self.device)
                states.append(s.cpu())
                targets.append(self.decoder(s, mu + sigma * n).cpu())
                noises.append(n.cpu())
        return torch.cat(states), torch.cat(targets), (torch.cat(noises) if paired else None), ep_t

    def refit_decoder(self, obs: torch.Tensor, action: torch.Tensor, noise: torch.Tensor | None = None
                      ) -> dict[str, float]:
        """Phase 2 on given data: fit a decoder (fresh unless ``decoder_reinit`` is false and a
        generative decoder exists) on raw states float32 [N, D] and pre-tanh actions float32 [N, A]
        (each with its noise float32 [N, A] when given: :func:`fit_decoder`'s policy coupling),
        and install it (frozen). Returns the fit metrics of :func:`fit_decoder`."""
        if self.decoder_reinit or not isinstance(self.decoder, GenerativeDecoder):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed * 1000 + self.stage + 1)
                dec = self._new_decoder()
        else:
            dec = copy.deepcopy(self.decoder)
        g = torch.Generator().manual_seed(self.seed * 1000 + self.stage + 7)
        out = fit_decoder(dec, obs, action, generator=g, noise=noise, **self.decoder_fit)
        for p in dec.parameters():
            p.requires_grad_(False)
        self.decoder = dec
        return out

    @torch.no_grad()
    def refit_fidelity(self, obs: torch.Tensor, encoder: nn.Module, decoder: nn.Module, draws: int = 64,
                       max_states: int = 1000) -> dict[str, float]:
        """How closely the current policy (at a stage start: a fresh encoder behind the refit decoder)
        reproduces the frozen policy (``encoder``, ``decoder``) that collected the data, on up to
        ``max_states`` of the stored states ``obs`` (float32 [N, D] raw, every k-th), ``draws`` latents
        each: :func:`control.decoders.policy_fidelity` (its keys, actions in [-1, 1])."""
        if obs.shape[0] == 0:
            return {}
        s = obs[::max(1, obs.shape[0] // max_states)][:max_states].to(self.device)
        g = torch.Generator().manual_seed(self.seed * 1000 + self.stage + 11)
        return policy_fidelity(s, self._norm(s), (encoder, decoder), (self.encoder, self.decoder), draws, g)

    def _refit_and_next_stage(self) -> dict[str, float]:
        t0 = time.perf_counter()
        stored = self.decoder_dataset()[0]
        states_collected = stored.shape[0]
        obs, u, noise, ep_t = self.decoder_targets(*self.decoder_dataset())
        self.data_obs, self.data_u, self.data_t = [], [], []
        old_encoder, old_decoder = self.encoder, self.decoder
        out = self.refit_decoder(obs, u, noise)
        self.stage += 1
        self.phase, self.phase_steps = "encoder", 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1000 + self.stage)
            if self.reinit_encoder:
                self.encoder = self._new_encoder()
            if self.reinit_critic:
                self.critic = self._new_critic()
        self._make_optimizer()
        self.buffer.clear()
        out.update(self.refit_fidelity(stored, old_encoder, old_decoder))
        early = float((ep_t < max(1, int(0.1 * max(int(ep_t.max()), 1)))).float().mean()) if ep_t.numel() else 0.0
        out = {f"gorl/{k}": v for k, v in out.items()}
        out.update({"gorl/decoder_fit_seconds": time.perf_counter() - t0, "gorl/decoder_data_early_frac": early,
                    "gorl/decoder_data_max_episode_t": float(ep_t.max()) if ep_t.numel() else 0.0,
                    "gorl/decoder_data_states": float(states_collected),
                    "gorl/decoder_targets_per_state": float(self.targets_per_state),
                    "gorl/longest_episode": float(self.longest_episode)})
        self.history.append({"stage": self.stage, "env_steps": self.env_steps, **out})
        return out

    # ----- checkpointing --------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Networks, optimizer, normaliser, schedule counters, rollout buffer, decoder data, RNG."""
        dec = self.decoder
        return {
            "encoder": self.encoder.state_dict(), "critic": self.critic.state_dict(),
            "obs_norm": self.obs_norm.state_dict(), "optimizer": self.optimizer.state_dict(),
            "decoder": None if isinstance(dec, IdentityDecoder) else {"config": dec.export_config(), "state": dec.state_dict()},
            "stage": self.stage, "phase": self.phase, "env_steps": self.env_steps, "phase_steps": self.phase_steps,
            "updates": self.updates, "buffer": self.buffer.state_dict(),
            "data": dict(zip(("obs", "u", "t"), self.decoder_dataset(), strict=True)),
            "episode_t": self.episode_t.clone(), "longest_episode": self.longest_episode,
            "return_norm": self.return_norm.state_dict() if self.return_norm is not None else None,
            "rng": self.gen.get_state(), "history": list(self.history),
        }

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`. Raises KeyError naming a missing entry."""
        for key in ("encoder", "critic", "obs_norm", "optimizer", "decoder", "stage", "phase", "buffer", "data", "rng"):
            if key not in state:
                raise KeyError(f"GoRL state lacks {key!r}")
        self.encoder.load_state_dict(state["encoder"])
        self.critic.load_state_dict(state["critic"])
        self.obs_norm.load_state_dict(state["obs_norm"])
        self._make_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        if state["decoder"] is None:
            self.decoder = IdentityDecoder()
        else:
            cfg = dict(state["decoder"]["config"])
            kind = cfg.pop("kind")
            dec = GenerativeDecoder(kind=kind, **cfg).to(self.device)
            dec.load_state_dict(state["decoder"]["state"])
            for p in dec.parameters():
                p.requires_grad_(False)
            self.decoder = dec.eval()
        self.stage, self.phase = int(state["stage"]), str(state["phase"])
        self.env_steps, self.phase_steps, self.updates = int(state["env_steps"]), int(state["phase_steps"]), int(state["updates"])
        self.buffer.load_state_dict(state["buffer"])
        d = state["data"]
        self.data_obs, self.data_u, self.data_t = (([d[k].clone()] if d[k].shape[0] else []) for k in ("obs", "u", "t"))
        self.episode_t.copy_(state["episode_t"])
        self.longest_episode = int(state.get("longest_episode", 0))
        if self.return_norm is not None and state.get("return_norm") is not None:
            self.return_norm.load_state_dict(state["return_norm"])
        self.gen.set_state(state["rng"])
        self.history = list(state.get("history", []))
        self._last = None

    # ----- deployment -----------------------------------------------------------------------------
    def policy_module(self) -> "GoRLPolicy":
        """The deterministic deployment policy (kind ``"gorl"`` for :func:`control.export.save_policy`):
        eps = mu_theta(s), a = tanh(g_phi(s, eps)). Its input is the state normalised with
        :meth:`obs_normalizer`, which goes into the policy's meta."""
        dec = self.decoder
        mod = GoRLPolicy(self.obs_dim, self.action_dim, self.encoder_hidden,
                         None if isinstance(dec, IdentityDecoder) else dec.export_config(),
                         activation=self.activation, state_dependent_std=self.state_dependent_std)
        mod.encoder.load_state_dict(self.encoder.state_dict())
        if mod.decoder is not None:
            mod.decoder.load_state_dict(dec.state_dict())
        with torch.no_grad():
            mod.norm_mean.copy_(self.obs_norm.mean.float() if self.normalize_obs else torch.zeros(self.obs_dim))
            mod.norm_std.copy_(torch.tensor(self.obs_norm.export()["std"]) if self.normalize_obs else torch.ones(self.obs_dim))
        return mod.eval()

    def export_policy(self) -> tuple[nn.Module, dict]:
        """Deployment module (kind ``"gorl"``) and the meta entries the learner knows (same contract
        as :meth:`control.ppo.PPO.export_policy`)."""
        meta = {"kind": "gorl", "action_horizon": 1, "views": [], "obs_normalizer": self.obs_normalizer()}
        return self.policy_module(), meta

    def networks(self) -> dict[str, nn.Module]:
        """The learner's fixed modules by name (a checkpoint's ``model.safetensors``): encoder, critic
        and normaliser. The decoder is not here because it does not exist at stage 0 (identity) and
        a fresh learner must accept any stage's checkpoint; it travels in :meth:`state_dict`
        (``"decoder"``: its config and weights) and in the deployment policy."""
        mods: dict[str, nn.Module] = {"encoder": self.encoder, "critic": self.critic}
        if self.normalize_obs:
            mods["normalizer"] = self.obs_norm
        return mods

    def obs_normalizer(self) -> dict | None:
        """``{"mean": [D], "std": [D], "clip": c}`` of the encoder's normaliser (None when off), for policy meta."""
        if not self.normalize_obs:
            return None
        return self.obs_norm.export()
