"""Networks shared by the learners: MLPs with LayerNorm, tanh-Gaussian and Gaussian actors, the
critic ensemble, a value network and a running observation normaliser.

Shapes: B = batch, D = state dim, A = action dim, E = ensemble size. All tensors float32 unless said.
The actors' ``trunk`` and ``mean`` sub-modules use the same layout as the deployment policy
(:class:`control.export.MLPPolicy`), so :meth:`TanhGaussianActor.deploy_module` /
:meth:`GaussianActor.deploy_module` copy weights over by name.

Constructors refuse bad sizes and settings with a ``ValueError`` naming the value
(:func:`basics.checks.check_int` / :func:`basics.checks.check_float`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from basics.checks import check_float, check_int
from control.export import _ACTIVATIONS, MLPPolicy

ACTIVATIONS = tuple(_ACTIVATIONS)


def mlp_trunk(in_dim: int, hidden, layer_norm: bool = True, activation: str = "relu") -> nn.Sequential:
    """[Linear, (LayerNorm), activation] per hidden width: float32 ``[B, in_dim] -> [B, hidden[-1]]``.

    Layers use torch's default initialisation, created in order (same RNG draws for the same seed).

    Raises:
        ValueError: unknown activation (lists the known ones), ``in_dim`` < 1, or an empty/non-positive width.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; known: {', '.join(_ACTIVATIONS)}")
    check_int("in_dim", in_dim, 1)
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
    """``trunk`` (:func:`mlp_trunk`) + linear ``head``: float32 ``[B, in_dim] -> [B, out_dim]``.

    Used as PPO's value network (``out_dim=1``) and as one member of :class:`CriticEnsemble`.

    Raises:
        ValueError: as :func:`mlp_trunk`, or ``out_dim`` < 1.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden=(256, 256), layer_norm: bool = True,
                 activation: str = "relu"):
        super().__init__()
        self.trunk = mlp_trunk(in_dim, hidden, layer_norm, activation)
        self.head = nn.Linear(int(list(hidden)[-1]), check_int("out_dim", out_dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """float32 ``[B, in_dim] -> [B, out_dim]``."""
        return self.head(self.trunk(x))


class _MLPActor(nn.Module):
    """What both actors share: an :func:`mlp_trunk` ``trunk`` and a linear ``mean`` head, in the
    layout of :class:`control.export.MLPPolicy`. Subclasses add their own scale parameters after
    these two (so parameter order and initialisation draws are trunk, mean, then the scale)."""

    squash = "tanh"  # the deployment policy's squash of the mean

    def __init__(self, obs_dim: int, action_dim: int, hidden, layer_norm: bool, activation: str):
        super().__init__()
        self.obs_dim, self.action_dim = check_int("obs_dim", obs_dim, 1), check_int("action_dim", action_dim, 1)
        self.hidden, self.layer_norm, self.activation = [int(h) for h in hidden], bool(layer_norm), activation
        self.trunk = mlp_trunk(obs_dim, hidden, layer_norm, activation)
        self.mean = nn.Linear(self.hidden[-1], self.action_dim)

    def deploy_module(self) -> MLPPolicy:
        """A deployment policy (:class:`control.export.MLPPolicy`, kind ``"mlp"``) holding copies of
        ``trunk`` and ``mean``: ``state float32 [B, D] -> action float32 [B, 1, A]`` in [-1, 1]
        (``squash`` of the mean: tanh for SAC, clip for PPO)."""
        pol = MLPPolicy(self.obs_dim, self.action_dim, self.hidden, self.layer_norm, self.activation, self.squash)
        pol.trunk.load_state_dict(self.trunk.state_dict())
        pol.mean.load_state_dict(self.mean.state_dict())
        return pol


def _tanh_gaussian_log_density(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor, std: torch.Tensor
                               ) -> torch.Tensor:
    """log density of a = tanh(u), u ~ N(mean, std^2) per dimension: float ``[B, A]`` pre-tanh ``u``,
    ``mean``, ``log_std`` and ``std = exp(log_std)`` (passed, not recomputed) -> ``[B]`` nats, with the tanh change of variables of SAC eq. 26 in the
    stable form log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))."""
    logp = (-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    return logp - (2 * (math.log(2) - u - nn.functional.softplus(-2 * u))).sum(-1)


class TanhGaussianActor(_MLPActor):
    """SAC's squashed Gaussian policy (Haarnoja et al. 2018, appendix C): a = tanh(u), u ~ N(mu, sigma).

    Args:
        obs_dim: D >= 1.  action_dim: A >= 1.  hidden, layer_norm, activation: the trunk (:func:`mlp_trunk`).
        log_std_min, log_std_max: bounds of log sigma (tanh-rescaled, as CleanRL's SAC); finite, min < max.
    Raises:
        ValueError: a size < 1, an unknown activation, or log-std bounds that are not finite with min < max.
    """

    squash = "tanh"

    def __init__(self, obs_dim: int, action_dim: int, hidden=(256, 256), layer_norm: bool = True,
                 activation: str = "relu", log_std_min: float = -5.0, log_std_max: float = 2.0):
        lo, hi = check_float("log_std_min", log_std_min), check_float("log_std_max", log_std_max)
        if not lo < hi:
            raise ValueError(f"log_std_min must be < log_std_max, got {log_std_min!r} and {log_std_max!r}")
        super().__init__(obs_dim, action_dim, hidden, layer_norm, activation)
        self.log_std = nn.Linear(self.hidden[-1], self.action_dim)
        self.log_std_min, self.log_std_max = lo, hi

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 ``[B, D] -> (mean [B, A], log_std [B, A])`` of the pre-tanh Gaussian; log_std in
        [log_std_min, log_std_max]."""
        h = self.trunk(obs)
        log_std = torch.tanh(self.log_std(h))
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (log_std + 1)
        return self.mean(h), log_std

    def sample(self, obs: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised sample: obs float32 ``[B, D]`` -> (action float32 ``[B, A]`` in (-1, 1),
        log-probability float32 ``[B]`` in nats, with the tanh change of variables of SAC eq. 26 in
        the stable form log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))).

        Deterministic: tanh(mean), and the log-prob of that point. ``generator`` is a CPU generator
        (noise is drawn on the CPU, then moved to the actor's device); one ``[B, A]`` normal draw
        per stochastic call."""
        mean, log_std = self(obs)
        std = log_std.exp()
        if deterministic:
            u = mean
        else:
            eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
            u = mean + std * eps
        return torch.tanh(u), _tanh_gaussian_log_density(u, mean, log_std, std)

    def log_prob(self, obs: torch.Tensor, action: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        """log pi(a|s) of given actions (behaviour cloning): obs float32 ``[B, D]``, action float32
        ``[B, A]`` in [-1, 1] (clamped to +-(1 - eps) before atanh, so actions at the bounds stay
        finite) -> float32 ``[B]`` in nats, the same density as :meth:`sample` (SAC eq. 26)."""
        mean, log_std = self(obs)
        return _tanh_gaussian_log_density(torch.atanh(action.clamp(-1.0 + eps, 1.0 - eps)), mean, log_std, log_std.exp())


class GaussianActor(_MLPActor):
    """PPO's diagonal Gaussian policy with a state-independent log sigma (as CleanRL's
    ``ppo_continuous_action``). Actions are unbounded samples; the env clips to [-1, 1]. The mean
    head is initialised orthogonally with gain 0.01 (CleanRL's ``layer_init(std=0.01)``).

    Args:
        obs_dim, action_dim, hidden, layer_norm, activation: as :class:`TanhGaussianActor`.
        init_log_std: initial log sigma (finite), the same for every action dimension.
    Raises:
        ValueError: a size < 1, an unknown activation, or a non-finite ``init_log_std``.
    """

    squash = "clip"

    def __init__(self, obs_dim: int, action_dim: int, hidden=(64, 64), layer_norm: bool = False,
                 activation: str = "tanh", init_log_std: float = 0.0):
        init_log_std = check_float("init_log_std", init_log_std)
        super().__init__(obs_dim, action_dim, hidden, layer_norm, activation)
        nn.init.orthogonal_(self.mean.weight, 0.01)
        nn.init.zeros_(self.mean.bias)
        self.log_std = nn.Parameter(torch.full((self.action_dim,), init_log_std))

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Normal:
        """obs float32 ``[B, D] ->`` ``torch.distributions.Normal`` with loc ``[B, A]`` and scale
        ``[B, A]`` (= exp(log_std) broadcast); ``log_prob(a).sum(-1)`` gives log pi(a|s) ``[B]``."""
        mean = self.mean(self.trunk(obs))
        return torch.distributions.Normal(mean, self.log_std.exp().expand_as(mean))


def export_mlp_policy(actor: _MLPActor, normalizer: RunningMeanStd | None) -> tuple[MLPPolicy, dict]:
    """SAC's and PPO's ``export_policy``: the actor's deployment module (kind ``"mlp"``, see
    :meth:`_MLPActor.deploy_module`) and its meta entries for :func:`control.export.save_policy`
    (``kind``, ``action_horizon`` = 1, ``views`` = [], ``obs_normalizer``: :meth:`RunningMeanStd.export`
    or None)."""
    meta = {"kind": "mlp", "action_horizon": 1, "views": [],
            "obs_normalizer": normalizer.export() if normalizer is not None else None}
    return actor.deploy_module(), meta


class CriticEnsemble(nn.Module):
    """E independent Q networks ``Q_i(s, a)``, i = 1..E, evaluated in one batched pass (RLPD/REDQ):
    the critic ensemble of SAC and of EXPO.

    Each member is an MLP on [s, a]: (Linear -> LayerNorm -> activation) per hidden width, then
    Linear(1), as RLPD's ``MLP(use_layer_norm=True)``. The members' weights are stacked ``[E, in, out]``
    (``weights``, ``biases``, ``ln_weights``, ``ln_biases``) and applied with ``torch.baddbmm``.
    Initialisation is torch's default for ``nn.Linear``; ``init_order`` fixes the order of the RNG
    draws: ``"member"`` (every layer of member 1, then of member 2, ...: SAC) or ``"layer"`` (layer 1 of
    every member, then layer 2, ...: EXPO).

    ``forward(obs [B, D], action [B, A], members=None) -> q float32 [E', B]``: ``members`` (long
    [E']) evaluates only those members (REDQ's random subset), None all E. The TD targets take the
    minimum over members: all E (clipped double Q for E = 2, Fujimoto et al. 2018), a random subset
    of ``k`` of the computed rows (:meth:`min_over_subset`, SAC) or over the evaluated subset
    (:meth:`min_q`, EXPO's target and on-the-fly policy).

    Raises:
        ValueError: ``num_critics`` < 1, a size < 1, an unknown activation or ``init_order``.
    """

    INIT_ORDERS = ("member", "layer")

    def __init__(self, obs_dim: int, action_dim: int, num_critics: int = 2, hidden=(256, 256),
                 layer_norm: bool = True, activation: str = "relu", init_order: str = "member"):
        super().__init__()
        self.num_critics = check_int("num_critics", num_critics, 1)
        obs_dim, action_dim = check_int("obs_dim", obs_dim, 1), check_int("action_dim", action_dim, 1)
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; known: {', '.join(_ACTIVATIONS)}")
        if init_order not in self.INIT_ORDERS:
            raise ValueError(f"unknown init_order {init_order!r}; known: {', '.join(self.INIT_ORDERS)}")
        hidden = [int(h) for h in hidden]
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden widths must be a non-empty list of ints >= 1, got {hidden}")
        self.layer_norm = bool(layer_norm)
        self.act = _ACTIVATIONS[activation]()
        widths = [obs_dim + action_dim, *hidden, 1]
        pairs = list(zip(widths[:-1], widths[1:], strict=True))
        e = self.num_critics
        layers = [[None] * len(pairs) for _ in range(e)]  # torch's default init per member and layer
        for i, m in ([(i, m) for m in range(e) for i in range(len(pairs))] if init_order == "member"
                     else [(i, m) for i in range(len(pairs)) for m in range(e)]):
            layers[m][i] = nn.Linear(*pairs[i])
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        self.ln_weights, self.ln_biases = nn.ParameterList(), nn.ParameterList()
        for i, (_, w_out) in enumerate(pairs):
            self.weights.append(nn.Parameter(torch.stack([layers[m][i].weight.detach().T for m in range(e)])))
            self.biases.append(nn.Parameter(torch.stack([layers[m][i].bias.detach()[None] for m in range(e)])))
            if i < len(pairs) - 1 and self.layer_norm:
                self.ln_weights.append(nn.Parameter(torch.ones(e, 1, w_out)))
                self.ln_biases.append(nn.Parameter(torch.zeros(e, 1, w_out)))

    def forward(self, obs: torch.Tensor, action: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        """obs float32 [B, D], action float32 [B, A], members long [E'] or None -> Q float32 [E', B]."""
        x = torch.cat([obs, action], dim=-1)
        e = self.num_critics if members is None else len(members)
        x = x.unsqueeze(0).expand(e, *x.shape)
        n = len(self.weights)
        for i in range(n):
            w, b = self.weights[i], self.biases[i]
            if members is not None:
                w, b = w[members], b[members]
            x = torch.baddbmm(b, x, w)
            if i < n - 1:
                if self.layer_norm:
                    g, beta = self.ln_weights[i], self.ln_biases[i]
                    if members is not None:
                        g, beta = g[members], beta[members]
                    x = F.layer_norm(x, x.shape[-1:]) * g + beta
                x = self.act(x)
        return x.squeeze(-1)

    def min_q(self, obs: torch.Tensor, action: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        """min_{j in members} Q_j(s, a): obs float32 [B, D], action [B, A], members long [E'] or None
        (all) -> float32 [B]. Only the chosen members are evaluated (EXPO's subset-min)."""
        return self(obs, action, members).min(0).values

    def min_over_subset(self, q: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Minimum over a random subset of ``k`` of the E rows of ``q [E, B]`` -> ``[B]`` (REDQ); k = E
        takes all rows and draws nothing from ``generator``.

        Raises:
            ValueError: k outside [1, E].
        """
        if not 1 <= int(k) <= self.num_critics:
            raise ValueError(f"critic subset size must be in [1, {self.num_critics}], got {k}")
        if int(k) == self.num_critics:
            return q.min(dim=0).values
        idx = torch.randperm(self.num_critics, generator=generator)[: int(k)]
        return q[idx.to(q.device)].min(dim=0).values

    @torch.no_grad()
    def load_members(self, source: "CriticEnsemble", members: torch.Tensor) -> None:
        """Copy members ``members`` (long [E], E = this ensemble's size) of ``source`` (same widths)
        into this ensemble, in that order (EXPO's deployed policy keeps one subset)."""
        for dst_list, src_list in ((self.weights, source.weights), (self.biases, source.biases),
                                   (self.ln_weights, source.ln_weights), (self.ln_biases, source.ln_biases)):
            for d, s in zip(dst_list, src_list, strict=True):
                d.copy_(s[members])


class RunningMeanStd(nn.Module):
    """Running mean and variance of observations (parallel Welford, Chan et al. 1979), as float64
    buffers ``mean`` [dim], ``var`` [dim], ``count`` [] so they travel in ``state_dict``.
    ``normalize(x) = clip((x - mean) / sqrt(var + eps), -clip, clip)`` (Gymnasium's
    ``NormalizeObservation`` with clipping, as CleanRL's PPO).

    Args:
        dim: D >= 1.  clip: > 0, in standard deviations.  eps: > 0, added to the variance.
    Raises:
        ValueError: ``dim`` < 1, or ``clip``/``eps`` not finite and > 0.
    """

    def __init__(self, dim: int, clip: float = 10.0, eps: float = 1e-8):
        super().__init__()
        dim = check_int("dim", dim, 1)
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("var", torch.ones(dim, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))
        self.clip = check_float("clip", clip, 0.0, low_open=True)
        self.eps = check_float("eps", eps, 0.0, low_open=True)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold a batch float ``[N, dim]`` (any leading shape, reshaped to rows of ``dim``) into the
        statistics (Chan et al.'s parallel update, in float64). An empty batch changes nothing.

        Raises:
            ValueError: NaN/inf in ``x`` (the statistics are left as they were).
        """
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

    @torch.no_grad()
    def reset_to(self, x: torch.Tensor) -> None:
        """Forget everything seen and take the statistics of ``x`` float ``[N, dim]`` alone (as a
        fresh normaliser updated once with it): the ``obs_stats: frozen`` start from offline states.

        Raises:
            ValueError: NaN/inf in ``x``.
        """
        self.mean.zero_()
        self.var.fill_(1.0)
        self.count.fill_(1e-4)
        self.update(x)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """float ``[..., dim] ->`` the same shape and dtype, clip((x - mean) / sqrt(var + eps), -clip, clip)."""
        y = (x - self.mean.to(x.dtype)) / torch.sqrt(self.var.to(x.dtype) + self.eps)
        return y.clamp(-self.clip, self.clip)

    def export(self) -> dict:
        """``{"mean": [D], "std": [D], "clip": c}`` for a deployment policy's ``obs_normalizer``."""
        return {"mean": self.mean.tolist(), "std": torch.sqrt(self.var + self.eps).tolist(), "clip": self.clip}


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging of parameters (not buffers): target <- (1 - tau) target + tau source, in
    place; the two modules must have the same parameters in the same order.

    Raises:
        ValueError: ``tau`` outside [0, 1], or the modules have different numbers of parameters.
    """
    check_float("tau", tau, 0.0, 1.0)
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters(), strict=True):
            t.lerp_(s, float(tau))
