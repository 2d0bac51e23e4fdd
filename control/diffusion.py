"""EXPO's base policy pi_b(a | s): a DDPM (Ho et al. 2020) over actions in [-1, 1]^A with an
MLP-ResNet noise predictor, as the authors' code (``pd-perry/EXPO``, after IDQL).

- :class:`Denoiser`: eps_theta(s, a_t, t) -- learnable Fourier features of t, then
  [s, a_t, time embedding] -> MLP-ResNet blocks -> the predicted noise.
- :class:`DiffusionBasePolicy`: diffusers' ``DDPMScheduler`` around the denoiser; ``loss`` is the
  imitation loss L_b = E_{t, eps} || eps - eps_theta(s, sqrt(abar_t) a + sqrt(1 - abar_t) eps, t) ||^2
  (Ho et al. eq. 14, the "simple" loss) and ``sample`` is ancestral sampling (Ho et al., Algorithm 2)
  over all T steps (``sampler="ddpm"``, the authors'), or DDIM (Song et al. 2021, eq. 12 with
  eta = 1, i.e. stochastic like ancestral sampling; diffusers' ``DDIMScheduler``, "trailing"
  spacing) over ``sample_steps`` <= T steps of the same trained model (``sampler="ddim"``: fewer
  denoiser passes per action).

Used by :mod:`control.expo` (the learner) and :class:`control.expo_policy.EXPOPolicy` (deployment).
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FourierFeatures", "MLPResNetBlock", "Denoiser", "DiffusionBasePolicy", "BETA_SCHEDULES", "SAMPLERS"]

BETA_SCHEDULES = ("squaredcos_cap_v2", "linear", "scaled_linear", "sigmoid")
SAMPLERS = ("ddpm", "ddim")


class FourierFeatures(nn.Module):
    """Learnable Fourier features of the diffusion step: t [B, 1] float -> [B, dim] (cos, sin).

    As the authors' ``FourierFeatures(learnable=True)``: f = 2 pi t W^T with W ~ N(0, 0.2^2).
    """

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"time_dim must be even, got {dim}")
        self.weight = nn.Parameter(torch.randn(dim // 2, 1) * 0.2)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """float32 [B, 1] -> float32 [B, dim] = [cos(2 pi t W^T), sin(2 pi t W^T)]."""
        f = 2.0 * math.pi * t @ self.weight.T
        return torch.cat([torch.cos(f), torch.sin(f)], dim=-1)


class MLPResNetBlock(nn.Module):
    """x + W2 swish(W1 LayerNorm(x)), widths h -> 4h -> h (IDQL / EXPO ``MLPResNetBlock``)."""

    def __init__(self, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, 4 * hidden)
        self.fc2 = nn.Linear(4 * hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float32 [B, hidden] -> float32 [B, hidden] (residual)."""
        return x + self.fc2(F.silu(self.fc1(self.norm(self.dropout(x)))))


class Denoiser(nn.Module):
    """The DDPM noise predictor eps_theta(s, a_t, t) of the base policy.

    Time t -> learnable Fourier features -> MLP (2 time_dim, 2 time_dim, swish); then
    [s, a_t, time embedding] -> Linear(hidden) -> ``num_blocks`` MLP-ResNet blocks -> swish -> Linear(A).

    Shapes: obs float32 [B, D], noisy_action float32 [B, A], t [B] or one step shared by all rows
    (a scalar or [1]; its time embedding is then computed once) -> float32 [B, A].

    The input layer is one ``Linear`` over the concatenation; it is also applied in its three column
    blocks, W [s, a_t, emb] + b = (W_s s + b) + W_a a_t + W_e emb, so that a sampler computes the
    observation's share (:meth:`condition`) once per action and the time's share
    (:meth:`time_embedding`) once per step for all rows, and each denoising step only adds the noisy
    action's (:meth:`trunk`). ``forward`` is ``trunk(condition(obs), a_t, time_embedding(t))``: the
    same function, summed in another order (float32 round-off).
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int = 256, num_blocks: int = 3,
                 time_dim: int = 128, dropout: float = 0.0):
        super().__init__()
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self.time_features = FourierFeatures(time_dim)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, 2 * time_dim), nn.SiLU(),
                                      nn.Linear(2 * time_dim, 2 * time_dim))
        self.inp = nn.Linear(obs_dim + action_dim + 2 * time_dim, hidden_dim)
        self.blocks = nn.Sequential(*[MLPResNetBlock(hidden_dim, dropout) for _ in range(num_blocks)])
        self.out = nn.Linear(hidden_dim, action_dim)

    def forward(self, obs: torch.Tensor, noisy_action: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predicted noise eps_theta(s, a_t, t): obs float32 [B, D], noisy_action float32 [B, A],
        t [B] or a scalar (step index, int or float) -> float32 [B, A]."""
        return self.trunk(self.condition(obs), noisy_action, self.time_embedding(t.to(obs.device)))

    def condition(self, obs: torch.Tensor) -> torch.Tensor:
        """The observation's share of the input layer, bias included: obs float32 [B, D] ->
        float32 [B, hidden] = W_s obs + b (constant over the denoising steps of one sample)."""
        return F.linear(obs, self.inp.weight[:, :self.obs_dim], self.inp.bias)

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """The diffusion step's share of the input layer: t [S] or a scalar (step index) ->
        float32 [S, hidden] ([1, hidden] for a scalar) = W_e MLP(FourierFeatures(t))."""
        t = t.to(self.inp.weight.dtype).reshape(-1, 1)
        return F.linear(self.time_mlp(self.time_features(t)), self.inp.weight[:, self.obs_dim + self.action_dim:])

    def trunk(self, condition: torch.Tensor, noisy_action: torch.Tensor, time_embedding: torch.Tensor) -> torch.Tensor:
        """The rest of the network: condition float32 [B, hidden] (:meth:`condition`), noisy_action
        float32 [B, A], time_embedding float32 [B or 1, hidden] (:meth:`time_embedding`) -> the
        predicted noise float32 [B, A]."""
        a = self.obs_dim
        x = condition + F.linear(noisy_action, self.inp.weight[:, a:a + self.action_dim]) + time_embedding
        return self.out(F.silu(self.blocks(x)))


class DiffusionBasePolicy(nn.Module):
    """DDPM base policy pi_b(a | s) over actions in [-1, 1]^A, schedule from diffusers.

    Uses ``diffusers.DDPMScheduler`` (``num_train_timesteps = T``, epsilon prediction, predicted
    x_0 clipped to [-1, 1], fixed-small variance): ``add_noise`` for training (Ho et al. 2020,
    eq. 4) and ``step`` for ancestral sampling (Ho et al., Algorithm 2).

    Args:
        obs_dim: D.  action_dim: A (h * A for chunks).  diffusion_steps: T >= 1.
        beta_schedule: one of squaredcos_cap_v2, linear, scaled_linear, sigmoid.
        hidden_dim, num_blocks, time_dim, dropout: the :class:`Denoiser`.
        sampler, sample_steps: how :meth:`sample` draws (:meth:`set_sampler`).
    Raises:
        ValueError: an unknown ``beta_schedule`` or ``sampler`` (the known ones listed),
            ``diffusion_steps`` < 1, or ``sample_steps`` outside what the sampler allows.
    """

    def __init__(self, obs_dim: int, action_dim: int, diffusion_steps: int = 10,
                 beta_schedule: str = "squaredcos_cap_v2", hidden_dim: int = 256, num_blocks: int = 3,
                 time_dim: int = 128, dropout: float = 0.0, sampler: str = "ddpm", sample_steps: int | None = None):
        super().__init__()
        from diffusers import DDPMScheduler  # third-party, heavy: imported when a base policy is built

        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"unknown beta_schedule {beta_schedule!r}; known: {', '.join(BETA_SCHEDULES)}")
        if int(diffusion_steps) < 1:
            raise ValueError(f"diffusion_steps must be >= 1, got {diffusion_steps!r}")
        self.action_dim = int(action_dim)
        self.denoiser = Denoiser(obs_dim, action_dim, hidden_dim, num_blocks, time_dim, dropout)
        self.scheduler = DDPMScheduler(num_train_timesteps=int(diffusion_steps), beta_schedule=beta_schedule,
                                       prediction_type="epsilon", clip_sample=True, clip_sample_range=1.0,
                                       variance_type="fixed_small")
        self.scheduler.set_timesteps(int(diffusion_steps))
        self.set_sampler(sampler, sample_steps)

    def set_sampler(self, sampler: str = "ddpm", sample_steps: int | None = None) -> None:
        """Choose how :meth:`sample` draws: ``"ddpm"`` (ancestral, all T steps; ``sample_steps`` None
        or T) or ``"ddim"`` (DDIM with eta = 1, stochastic, on ``sample_steps`` in [1, T] timesteps with
        "trailing" spacing, so the first step starts at t = T - 1; None: T). Training is unchanged.

        Raises:
            ValueError: an unknown sampler (the known ones listed) or ``sample_steps`` out of range.
        """
        from diffusers import DDIMScheduler  # lazy: third-party, heavy (as DDPMScheduler above)

        big_t = int(self.scheduler.config.num_train_timesteps)
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
        if sample_steps is not None and (isinstance(sample_steps, bool) or not isinstance(sample_steps, numbers.Integral)):
            raise ValueError(f"sample_steps must be an int in [1, diffusion_steps={big_t}] or null, got {sample_steps!r}")
        steps = big_t if sample_steps is None else int(sample_steps)
        if sampler == "ddpm" and steps != big_t:
            raise ValueError(f"sample_steps={sample_steps!r} needs sampler=ddim: sampler ddpm (the one in use) "
                             f"runs all diffusion_steps={big_t} steps")
        if not 1 <= steps <= big_t:
            raise ValueError(f"sample_steps must be in [1, diffusion_steps={big_t}], got {sample_steps!r}")
        self.sampler, self.sample_steps = sampler, steps
        if sampler == "ddpm":
            self.sample_scheduler, self._step_kwargs = self.scheduler, {}
            return
        c = self.scheduler.config
        self.sample_scheduler = DDIMScheduler(num_train_timesteps=big_t, beta_schedule=c.beta_schedule,
                                              prediction_type="epsilon", clip_sample=True, clip_sample_range=1.0,
                                              set_alpha_to_one=True, timestep_spacing="trailing")
        self.sample_scheduler.set_timesteps(steps)
        self._step_kwargs = {"eta": 1.0, "use_clipped_model_output": True}

    def loss(self, obs: torch.Tensor, action: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Imitation loss: mean over the batch of ||eps - eps_theta(s, a_t, t)||^2 summed over A.

        Args: obs float32 [B, D]; action float32 [B, A] in [-1, 1]. Returns a scalar tensor.
        """
        b = action.shape[0]
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (b,), generator=generator,
                          device=action.device)
        noise = torch.randn(action.shape, generator=generator, device=action.device, dtype=action.dtype)
        noisy = self.scheduler.add_noise(action, noise, t)
        return ((self.denoiser(obs, noisy, t) - noise) ** 2).sum(-1).mean()

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None,
               denoiser: nn.Module | None = None) -> torch.Tensor:
        """Draw one action per row: obs float32 [B, D] -> float32 [B, A] in [-1, 1], all rows in one
        batched pass per denoising step (``sample_steps`` passes; see :meth:`set_sampler`).

        ``denoiser`` overrides the online network (the EMA copy for acting).
        """
        net = self.denoiser if denoiser is None else denoiser
        sched = self.sample_scheduler
        x = torch.randn((obs.shape[0], self.action_dim), generator=generator, device=obs.device, dtype=obs.dtype)
        condition = net.condition(obs)  # once per action, not once per step
        time_embedding = net.time_embedding(sched.timesteps.to(obs.device))  # all steps in one pass: [S, hidden]
        for i, t in enumerate(sched.timesteps):
            eps = net.trunk(condition, x, time_embedding[i])
            x = sched.step(eps, int(t), x, generator=generator, **self._step_kwargs).prev_sample
        return x.clamp(-1.0, 1.0)
