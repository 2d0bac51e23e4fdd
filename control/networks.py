"""Networks shared by the learners: MLPs with LayerNorm, tanh-Gaussian and Gaussian actors, the
critic ensemble, a value network and a running observation normaliser.

Shapes: B = batch, D = state dim, A = action dim, E = ensemble size. All tensors float32.
The actors' ``trunk`` and ``mean`` sub-modules use the same layout as the deployment policy
(:class:`control.export.MLPPolicy`), so :meth:`TanhGaussianActor.deploy_module` /
:meth:`GaussianActor.deploy_module` copy weights over by name.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from control.export import _ACTIVATIONS, MLPPolicy

ACTIVATIONS = tuple(_ACTIVATIONS)


def mlp_trunk(in_dim: int, hidden, layer_norm: bool = True, activation: str = "relu") -> nn.Sequential:
    """[Linear, (LayerNorm), activation] per hidden width. ``[B, in_dim] -> [B, hidden[-1]]``.

    Raises:
        ValueError: unknown activation (lists the known ones) or an empty/non-positive width.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; known: {', '.join(_ACTIVATIONS)}")
    hidden = [int(h) for h in hidden]
    if not hidden or min(hidden) < 1:
        raise ValueError(f"hidden widths must be a non-empty list of ints >= 1, got {hidden}")
    layers: list[nn.Module] = []
    d = int(in_dim)
    for h in hidden:
        layers.append(nn.Linear(d, h))
        if layer_norm:
            layers.append(nn.LayerNorm(h))
        layers.append(_ACTIVATIONS[activation]())
        d = h
    return nn.Sequential(*layers)


class MLP(nn.Module):
    """``trunk`` + linear ``head``: ``[B, in_dim] -> [B, out_dim]``."""

    def __init__(self, in_dim: int, out_dim: int, hidden=(256, 256), layer_norm: bool = True,
                 activation: str = "relu"):
        super().__init__()
        self.trunk = mlp_trunk(in_dim, hidden, layer_norm, activation)
        self.head = nn.Linear(int(list(hidden)[-1]), int(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class TanhGaussianActor(nn.Module):
    """SAC's squashed Gaussian policy (Haarnoja et al. 2018, appendix C): a = tanh(u), u ~ N(mu, sigma).

    Args:
        obs_dim: D.  action_dim: A.  hidden, layer_norm, activation: the trunk.
        log_std_min, log_std_max: bounds of log sigma (tanh-rescaled, as CleanRL's SAC).
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden=(256, 256), layer_norm: bool = True,
                 activation: str = "relu", log_std_min: float = -5.0, log_std_max: float = 2.0):
        super().__init__()
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self.hidden, self.layer_norm, self.activation = [int(h) for h in hidden], bool(layer_norm), activation
        self.trunk = mlp_trunk(obs_dim, hidden, layer_norm, activation)
        self.mean = nn.Linear(self.hidden[-1], self.action_dim)
        self.log_std = nn.Linear(self.hidden[-1], self.action_dim)
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, D] -> (mean [B, A], log_std [B, A])`` of the pre-tanh Gaussian."""
        h = self.trunk(obs)
        log_std = torch.tanh(self.log_std(h))
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (log_std + 1)
        return self.mean(h), log_std

    def sample(self, obs: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Action ``[B, A]`` in (-1, 1) and its log-probability ``[B]`` (tanh change of variables,
        SAC eq. 26). Deterministic: tanh(mean), log-prob of that point. ``generator`` is a CPU
        generator (noise is drawn on the CPU, then moved to the actor's device)."""
        mean, log_std = self(obs)
        std = log_std.exp()
        if deterministic:
            u = mean
        else:
            eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
            u = mean + std * eps
        a = torch.tanh(u)
        logp = (-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        logp = logp - (2 * (math.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)
        return a, logp

    def deploy_module(self) -> MLPPolicy:
        """A deployment policy (kind ``"mlp"``, tanh of the mean) with copies of the weights."""
        pol = MLPPolicy(self.obs_dim, self.action_dim, self.hidden, self.layer_norm, self.activation, "tanh")
        pol.trunk.load_state_dict(self.trunk.state_dict())
        pol.mean.load_state_dict(self.mean.state_dict())
        return pol


class GaussianActor(nn.Module):
    """PPO's diagonal Gaussian policy with a state-independent log sigma (as CleanRL's
    ``ppo_continuous_action``). Actions are unbounded samples; the env clips to [-1, 1].

    Args:
        obs_dim, action_dim, hidden, layer_norm, activation: as :class:`TanhGaussianActor`.
        init_log_std: initial log sigma.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden=(64, 64), layer_norm: bool = False,
                 activation: str = "tanh", init_log_std: float = 0.0):
        super().__init__()
        self.obs_dim, self.action_dim = int(obs_dim), int(action_dim)
        self.hidden, self.layer_norm, self.activation = [int(h) for h in hidden], bool(layer_norm), activation
        self.trunk = mlp_trunk(obs_dim, hidden, layer_norm, activation)
        self.mean = nn.Linear(self.hidden[-1], self.action_dim)
        nn.init.orthogonal_(self.mean.weight, 0.01)
        nn.init.zeros_(self.mean.bias)
        self.log_std = nn.Parameter(torch.full((self.action_dim,), float(init_log_std)))

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Normal:
        """``[B, D] ->`` Normal with loc ``[B, A]`` and scale ``[B, A]``."""
        mean = self.mean(self.trunk(obs))
        return torch.distributions.Normal(mean, self.log_std.exp().expand_as(mean))

    def deploy_module(self) -> MLPPolicy:
        """A deployment policy (kind ``"mlp"``, mean clipped to [-1, 1]) with copies of the weights."""
        pol = MLPPolicy(self.obs_dim, self.action_dim, self.hidden, self.layer_norm, self.activation, "clip")
        pol.trunk.load_state_dict(self.trunk.state_dict())
        pol.mean.load_state_dict(self.mean.state_dict())
        return pol


class CriticEnsemble(nn.Module):
    """E independent Q networks ``Q_i(s, a)`` with LayerNorm (as RLPD/REDQ and EXPO's critic).

    ``forward(obs [B, D], action [B, A]) -> q [E, B]``. The TD target of SAC uses the minimum over
    all E (clipped double Q for E = 2) or over a random subset of ``k`` members (REDQ, EXPO):
    :meth:`min_over_subset`.
    """

    def __init__(self, obs_dim: int, action_dim: int, num_critics: int = 2, hidden=(256, 256),
                 layer_norm: bool = True, activation: str = "relu"):
        super().__init__()
        if int(num_critics) < 1:
            raise ValueError(f"num_critics must be >= 1, got {num_critics}")
        self.num_critics = int(num_critics)
        self.members = nn.ModuleList(
            MLP(int(obs_dim) + int(action_dim), 1, hidden, layer_norm, activation) for _ in range(self.num_critics))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, action], dim=-1)
        return torch.stack([m(x).squeeze(-1) for m in self.members])

    def min_over_subset(self, q: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Minimum over a random subset of ``k`` of the E rows of ``q [E, B]`` -> ``[B]``.

        Raises:
            ValueError: k outside [1, E].
        """
        if not 1 <= int(k) <= self.num_critics:
            raise ValueError(f"critic subset size must be in [1, {self.num_critics}], got {k}")
        if int(k) == self.num_critics:
            return q.min(dim=0).values
        idx = torch.randperm(self.num_critics, generator=generator)[: int(k)]
        return q[idx.to(q.device)].min(dim=0).values


class RunningMeanStd(nn.Module):
    """Running mean and variance of observations (parallel Welford, Chan et al. 1979), as buffers so
    they travel in ``state_dict``. ``normalize(x) = clip((x - mean) / sqrt(var + eps), -clip, clip)``.
    """

    def __init__(self, dim: int, clip: float = 10.0, eps: float = 1e-8):
        super().__init__()
        self.register_buffer("mean", torch.zeros(int(dim), dtype=torch.float64))
        self.register_buffer("var", torch.ones(int(dim), dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))
        self.clip, self.eps = float(clip), float(eps)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch ``[N, dim]`` into the statistics. Raises ValueError on NaN/inf."""
        x = x.detach().to(self.mean.device, torch.float64).reshape(-1, self.mean.shape[0])
        if not torch.isfinite(x).all():
            raise ValueError("observation batch contains NaN or inf; normaliser not updated")
        n = x.shape[0]
        if n == 0:
            return
        b_mean, b_var = x.mean(0), x.var(0, unbiased=False)
        delta = b_mean - self.mean
        tot = self.count + n
        self.mean += delta * n / tot
        m2 = self.var * self.count + b_var * n + delta ** 2 * self.count * n / tot
        self.var.copy_(m2 / tot)
        self.count.copy_(tot)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        y = (x - self.mean.to(x.dtype)) / torch.sqrt(self.var.to(x.dtype) + self.eps)
        return y.clamp(-self.clip, self.clip)

    def export(self) -> dict:
        """``{"mean": [D], "std": [D], "clip": c}`` for a deployment policy's ``obs_normalizer``."""
        return {"mean": self.mean.tolist(), "std": torch.sqrt(self.var + self.eps).tolist(), "clip": self.clip}


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: target <- (1 - tau) target + tau source."""
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters(), strict=True):
            t.lerp_(s, float(tau))
