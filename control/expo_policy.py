"""The EXPO policy: edit policy pi_e, the on-the-fly (OTF) selection, and the deployable policy.

Dong, Li, Sadigh, Finn, "EXPO: Stable Reinforcement Learning with Expressive Policies"
(arXiv 2507.07986); the learner that trains these is :class:`control.expo.EXPO`.

- :class:`EditPolicy`: pi_e(a_hat | s, a), tanh-Gaussian; edited action a' = a + beta * a_hat.
- :func:`on_the_fly`: N base samples, n_edit of them edited, argmax over the candidates of the
  minimum over a subset of critic members (:meth:`control.networks.CriticEnsemble.min_q`).
- :class:`EXPOPolicy`: export kind ``"expo"``: EMA base + edit policy + the critic members of one
  subset, inference only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from control.diffusion import DiffusionBasePolicy
from control.export import register_kind
from control.networks import CriticEnsemble

__all__ = ["EditPolicy", "EXPOPolicy", "on_the_fly"]


class EditPolicy(nn.Module):
    """Tanh-Gaussian edit policy pi_e(a_hat | s, a): MLP(ReLU) on [s, a] -> mean, log std.

    ``forward(obs [B, D], action [B, A], generator)`` returns ``(a_hat [B, A] in (-1, 1),
    log_prob [B])`` with the tanh change of variables (SAC, Haarnoja et al. 2018, appendix C,
    eq. 21) in the numerically stable form log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)).
    """

    LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0

    def __init__(self, obs_dim: int, action_dim: int, hidden_dims: Sequence[int] = (256, 256, 256),
                 dropout: float = 0.0):
        super().__init__()
        layers, width = [], obs_dim + action_dim
        for h in hidden_dims:
            layers += [nn.Linear(width, h), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
            width = h
        self.body = nn.Sequential(*layers)
        self.mean = nn.Linear(width, action_dim)
        self.log_std = nn.Linear(width, action_dim)

    def forward(self, obs: torch.Tensor, action: torch.Tensor, generator: torch.Generator | None = None):
        """Reparameterised edit: obs float32 [B, D], action float32 [B, A] -> (a_hat float32 [B, A]
        in (-1, 1), log pi_e(a_hat | s, a) float32 [B] in nats). One [B, A] normal draw from ``generator``."""
        h = self.body(torch.cat([obs, action], dim=-1))
        mean = self.mean(h)
        log_std = self.log_std(h).clamp(self.LOG_STD_MIN, self.LOG_STD_MAX)
        std = log_std.exp()
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        u = mean + std * noise  # reparameterised Gaussian sample
        log_prob = (-0.5 * noise ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
        return torch.tanh(u), log_prob


@register_kind("expo")
class EXPOPolicy(nn.Module):
    """The EXPO on-the-fly policy for deployment (export kind ``"expo"``): no optimizers, buffers
    or training code.

    ``forward(state float32 [B, D], images=None) -> float32 [B, h, A]`` in [-1, 1] (under
    ``torch.inference_mode``): N samples of the (EMA) base policy (``sampler``/``sample_steps``: see
    :meth:`control.diffusion.DiffusionBasePolicy.set_sampler`), n_edit of them edited by pi_e, and the candidate with the highest
    minimum over the kept critic members is returned (a chunk of h actions; h = 1 without chunks).
    ``critic`` holds only the ``num_min_qs`` members used for the argmax. Sampling uses the policy's
    own ``torch.Generator`` seeded by ``seed``, so a freshly loaded policy repeats its actions for
    the same observations. Constructor arguments are the ``arch`` dict of ``control.export``.
    """

    def __init__(self, state_dim: int, action_dim: int, action_horizon: int = 1, diffusion_steps: int = 10,
                 beta_schedule: str = "squaredcos_cap_v2", base_hidden_dim: int = 256, base_num_blocks: int = 3,
                 time_dim: int = 128, sampler: str = "ddpm", sample_steps: int | None = None, edit_hidden_dims: Sequence[int] = (256, 256, 256),
                 critic_hidden_dims: Sequence[int] = (256, 256, 256), critic_layer_norm: bool = True,
                 num_min_qs: int = 2, num_samples: int = 8, num_edit_samples: int = 8, edit_scale: float = 0.05,
                 seed: int = 0):
        super().__init__()
        self.config = dict(state_dim=int(state_dim), action_dim=int(action_dim), action_horizon=int(action_horizon),
                           diffusion_steps=int(diffusion_steps), beta_schedule=str(beta_schedule),
                           base_hidden_dim=int(base_hidden_dim), base_num_blocks=int(base_num_blocks),
                           time_dim=int(time_dim), sampler=str(sampler),
                           sample_steps=None if sample_steps is None else int(sample_steps), edit_hidden_dims=[int(h) for h in edit_hidden_dims],
                           critic_hidden_dims=[int(h) for h in critic_hidden_dims],
                           critic_layer_norm=bool(critic_layer_norm), num_min_qs=int(num_min_qs),
                           num_samples=int(num_samples), num_edit_samples=int(num_edit_samples),
                           edit_scale=float(edit_scale), seed=int(seed))
        a = int(action_dim) * int(action_horizon)
        self.base = DiffusionBasePolicy(state_dim, a, diffusion_steps, beta_schedule, base_hidden_dim,
                                        base_num_blocks, time_dim, sampler=sampler, sample_steps=sample_steps)
        self.edit_policy = EditPolicy(state_dim, a, edit_hidden_dims)
        self.critic = CriticEnsemble(state_dim, a, num_min_qs, critic_hidden_dims, critic_layer_norm, init_order="layer")
        self.generator = torch.Generator(device="cpu").manual_seed(int(seed))

    #: constructor arguments that change how actions are drawn but no weight (``load_policy(sampling=)``)
    SAMPLING_KEYS = ("sampler", "sample_steps")

    def export_config(self) -> dict:
        """The constructor's arguments (``EXPOPolicy(**cfg)`` rebuilds it)."""
        return dict(self.config)

    def set_sampling(self, sampler: str | None = None, sample_steps: int | None = None) -> None:
        """Draw the base samples with another sampler of the same trained model (see
        :meth:`control.diffusion.DiffusionBasePolicy.set_sampler`): ``sampler`` ``"ddpm"`` or
        ``"ddim"`` (None: keep the current one), ``sample_steps`` in [1, diffusion_steps] (None: all
        of them). Raises ValueError for an unknown sampler or steps out of range (both named)."""
        sampler = self.config["sampler"] if sampler is None else sampler
        self.base.set_sampler(sampler, sample_steps)
        self.config.update(sampler=str(sampler), sample_steps=None if sample_steps is None else int(sample_steps))

    @torch.inference_mode()
    def forward(self, state: torch.Tensor, images: dict | None = None) -> torch.Tensor:
        """States float32 [B, D] (normalised as in training) -> action chunks float32 [B, h, A] in
        [-1, 1]; ``images`` unused. Raises ValueError when ``state`` is not [B, D]."""
        c = self.config
        if state.ndim != 2 or state.shape[1] != c["state_dim"]:
            raise ValueError(f"state must be [B, {c['state_dim']}], got shape {tuple(state.shape)}")
        best, _, _ = on_the_fly(state, self.base, self.base.denoiser, self.edit_policy, self.critic, None,
                                c["num_samples"], c["num_edit_samples"], c["edit_scale"], self.generator)
        return best.view(state.shape[0], c["action_horizon"], c["action_dim"])


def on_the_fly(obs: torch.Tensor, base: DiffusionBasePolicy, denoiser: nn.Module, edit_policy: EditPolicy,
               critic: CriticEnsemble, members: torch.Tensor, num_samples: int, num_edit_samples: int,
               edit_scale: float, generator: torch.Generator | None):
    """EXPO's on-the-fly policy (OTF): argmax_{a in candidates} min_{j in members} Q_j(s, a).

    Candidates: N base samples a_1..a_N ~ pi_b(. | s) and edits a_i + beta * a_hat_i,
    a_hat_i ~ pi_e(. | s, a_i), for i <= n_edit; all clipped to [-1, 1].

    Args:
        obs: float32 [B, D].  base, denoiser: pi_b and the noise predictor to sample with (online or EMA).
        edit_policy: pi_e.  critic: the ensemble scoring the candidates; ``members`` long [M] picks
            the members whose minimum is taken (None: all).
        num_samples: N >= 1.  num_edit_samples: n_edit in [0, N].  edit_scale: beta.
        generator: torch generator for the base samples and the edits (on the obs' device).
    Returns:
        (best float32 [B, A], candidates float32 [B, N + n_edit, A], q float32 [B, N + n_edit]).
    """
    b, a_dim = obs.shape[0], base.action_dim
    with torch.no_grad():
        s = obs.repeat_interleave(num_samples, dim=0)                          # [B*N, D]
        cands = base.sample(s, generator, denoiser).view(b, num_samples, a_dim)  # [B, N, A]
        if num_edit_samples > 0:
            a = cands[:, :num_edit_samples].reshape(-1, a_dim)
            s_e = obs.repeat_interleave(num_edit_samples, dim=0)
            a_hat, _ = edit_policy(s_e, a, generator)
            edited = (a + edit_scale * a_hat).clamp(-1.0, 1.0).view(b, num_edit_samples, a_dim)
            cands = torch.cat([cands, edited], dim=1)
        k = cands.shape[1]
        q = critic.min_q(obs.repeat_interleave(k, dim=0), cands.reshape(-1, a_dim), members).view(b, k)
        best = cands[torch.arange(b, device=obs.device), q.argmax(dim=1)]
    return best, cands, q
