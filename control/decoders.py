"""GoRL's decoders g_phi(s, eps) and their supervised refit (GoRL phase 2, "decoder refinement").

Zhang et al., "GoRL" (arXiv 2512.02581), authors' code ``bennidict23/GoRL`` (``decoder_fm.py``,
``decoder_diffusion.py``, ``train_decoder_fm.py``). The learner that uses them is
:class:`control.gorl.GoRL`.

- :class:`IdentityDecoder`: stage 0, u = eps.
- :class:`GenerativeDecoder`: conditional flow matching (Euler ODE) or diffusion (DDIM), sampled
  deterministically from x = eps.
- :func:`fit_decoder`: refit on (s, u) pairs with fresh eps ~ N(0, I), validation split, early stopping.
- :class:`Encoder`: the latent Gaussian pi_theta(eps | s); :class:`GoRLPolicy`: the deployment
  module a = tanh(g_phi(s, mu_theta(s))) (kind ``"gorl"``).
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from basics.checks import check_float, check_int
from control.export import _ACTIVATIONS, register_kind

__all__ = ["DECODERS", "DIFFUSION_PREDICTIONS", "critic_mlp", "mlp", "time_embedding", "IdentityDecoder", "GenerativeDecoder",
           "fit_decoder", "Encoder", "GoRLPolicy"]

DECODERS = ("flow", "diffusion")
DIFFUSION_PREDICTIONS = ("v_prediction", "epsilon")


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation=nn.SiLU) -> nn.Sequential:
    """[Linear, activation] x len(hidden), then Linear(out_dim): float32 [..., in_dim] -> [..., out_dim].

    torch's default initialisation, layers created in order. Raises ValueError for a size < 1.
    """
    check_int("in_dim", in_dim, 1)
    check_int("out_dim", out_dim, 1)
    for h in hidden:
        check_int("hidden width", h, 1)
    layers: list[nn.Module] = []
    d = int(in_dim)
    for h in hidden:
        layers += [nn.Linear(d, int(h)), activation()]
        d = int(h)
    layers.append(nn.Linear(d, int(out_dim)))
    return nn.Sequential(*layers)


def time_embedding(t: torch.Tensor, dim: int = 8) -> torch.Tensor:
    """Sinusoidal embedding of a time in [0, 1]: float [N] -> float32 [N, dim] = [sin(pi f t), cos(pi f t)]
    with f = 2^k, k = 0 .. dim/2 - 1 (``dim`` even; 8-d: f in {1, 2, 4, 8}, the authors' choice).

    Octave frequencies keep every feature smooth on [0, 1] (the highest completes dim/4 periods):
    a geometric range up to 1000 pi would turn a continuous flow time into aliased, noise-like inputs."""
    freqs = 2.0 ** torch.arange(dim // 2, device=t.device, dtype=torch.float32)
    ang = t.float()[:, None] * freqs[None] * math.pi
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)


class IdentityDecoder(nn.Module):
    """Stage 0's decoder: u = eps exactly (so the policy is Gaussian PPO with tanh squashing)."""

    kind = "identity"

    def forward(self, obs: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """obs float32 [B, D] (unused), latent float32 [B, A] -> float32 [B, A] (the same values)."""
        return latent

    def export_config(self) -> dict:
        """``{"kind": "identity"}`` (no weights)."""
        return {"kind": "identity"}


class GenerativeDecoder(nn.Module):
    """Conditional flow-matching or diffusion model whose starting noise is the latent.

    Network (authors' ``decoder_fm.py``): MLP on [normalised s, x_t, 8-d time embedding], SiLU.
    Sampling is deterministic and starts from ``x = eps``:

    - ``kind="flow"``: linear path x_t = t * eps + (1 - t) * u, velocity target v = eps - u
      (rectified flow / flow matching, Lipman et al. 2023; Liu et al. 2023); sampling integrates
      dx/dt = v from t = 1 to 0 with ``steps`` Euler steps using diffusers'
      ``FlowMatchEulerDiscreteScheduler`` (sigma = t, same convention).
    - ``kind="diffusion"``: DDPM loss (Ho et al. 2020) with a cosine schedule of ``steps`` training
      steps (``squaredcos_cap_v2``), sampled with deterministic DDIM (eta = 0, Song et al. 2021)
      through diffusers' ``DDIMScheduler``. ``prediction="v_prediction"`` (default; Salimans & Ho
      2022) rather than the authors' epsilon-prediction: with 10 cosine steps abar_T ~ 2.4e-5, so the
      first DDIM step turns an error in eps_hat into an error in x0_hat amplified by
      sqrt((1 - abar_T) / abar_T) ~ 200; measured here, epsilon-prediction put the decoded mean and
      std off by 30-100% where v-prediction matched (``"epsilon"`` is kept for comparison).

    The observation normaliser (``obs_mean``/``obs_std`` buffers, float32 [D]) is fixed when the
    decoder is fit, so later changes of the encoder's running normaliser do not move a frozen decoder.

    Args:
        obs_dim: D >= 1.  action_dim: A >= 1.  kind: ``"flow"`` or ``"diffusion"``.
        hidden: MLP widths (each >= 1).  steps: sampling (and, for diffusion, training) steps >= 1.
        time_dim: width of the time embedding, even and >= 2.
        prediction: diffusion target, ``"v_prediction"`` or ``"epsilon"`` (ignored by flow).
    Raises:
        ValueError: an unknown kind or prediction (the known ones listed), or a bad size (named).
    """

    def __init__(self, obs_dim: int, action_dim: int, kind: str = "flow", hidden: Sequence[int] = (64, 64, 64, 64),
                 steps: int = 10, time_dim: int = 8, prediction: str = "v_prediction"):
        super().__init__()
        if kind not in DECODERS:
            raise ValueError(f"unknown decoder {kind!r}; known: {', '.join(DECODERS)}")
        if prediction not in DIFFUSION_PREDICTIONS:
            raise ValueError(f"unknown diffusion prediction {prediction!r}; known: {', '.join(DIFFUSION_PREDICTIONS)}")
        self.prediction = prediction
        if int(steps) < 1:
            raise ValueError(f"decoder steps must be >= 1, got {steps!r}")
        if check_int("time_dim", time_dim, 2) % 2:
            raise ValueError(f"time_dim must be even (sin/cos pairs), got {time_dim!r}")
        self.kind = kind
        self.obs_dim, self.action_dim, self.steps, self.time_dim = (
            check_int("obs_dim", obs_dim, 1), check_int("action_dim", action_dim, 1), int(steps), int(time_dim))
        self.hidden = [int(h) for h in hidden]
        self.net = mlp(self.obs_dim + self.action_dim + self.time_dim, self.hidden, self.action_dim)
        self.register_buffer("obs_mean", torch.zeros(self.obs_dim))
        self.register_buffer("obs_std", torch.ones(self.obs_dim))
        self._scheduler = self._make_scheduler()

    def export_config(self) -> dict:
        """The constructor's arguments as a JSON-ready dict (``GenerativeDecoder(**cfg)`` rebuilds it)."""
        return {"kind": self.kind, "obs_dim": self.obs_dim, "action_dim": self.action_dim, "hidden": self.hidden,
                "steps": self.steps, "time_dim": self.time_dim, "prediction": self.prediction}

    def _make_scheduler(self):
        # third-party, heavy: diffusers is imported when a decoder is built (stage 0 needs none)
        if self.kind == "flow":
            from diffusers import FlowMatchEulerDiscreteScheduler

            return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
        from diffusers import DDIMScheduler

        return DDIMScheduler(num_train_timesteps=self.steps, beta_schedule="squaredcos_cap_v2", clip_sample=False,
                             prediction_type=self.prediction, set_alpha_to_one=True)

    def __deepcopy__(self, memo):
        new = GenerativeDecoder(**{k: v for k, v in self.export_config().items()})
        new.load_state_dict(self.state_dict())
        return new.to(self.obs_mean.device)

    def _net(self, obs: torch.Tensor, x: torch.Tensor, t01: torch.Tensor) -> torch.Tensor:
        s = ((obs - self.obs_mean) / self.obs_std).clamp(-10.0, 10.0)
        return self.net(torch.cat([s, x, time_embedding(t01, self.time_dim)], dim=-1))

    def loss(self, obs: torch.Tensor, action: torch.Tensor, noise: torch.Tensor, t_unit: torch.Tensor) -> torch.Tensor:
        """Generative loss on (s, u) pairs with fresh noise (not the latents that produced u).

        Args:
            obs: float32 [N, D] raw states.  action: float32 [N, A] pre-tanh actions u.
            noise: float32 [N, A] ~ N(0, I).  t_unit: float32 [N] ~ U(0, 1) (flow time, or the
                diffusion step index as floor(t_unit * steps)).
        Returns:
            scalar MSE: flow ||v_phi(x_t, t) - (eps - u)||^2; diffusion ||eps_phi(x_k, k) - eps||^2.
        """
        if self.kind == "flow":
            t = t_unit[:, None]
            x_t = t * noise + (1.0 - t) * action
            return F.mse_loss(self._net(obs, x_t, t_unit), noise - action)
        k = (t_unit * self.steps).long().clamp(0, self.steps - 1)
        x_k = self._scheduler.add_noise(action, noise, k)
        target = noise if self.prediction == "epsilon" else self._scheduler.get_velocity(action, noise, k)
        return F.mse_loss(self._net(obs, x_k, k.float() / self.steps), target)

    def forward(self, obs: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """Deterministic sampling from the latent: obs float32 [B, D] (raw), latent float32 [B, A]
        -> pre-tanh action u float32 [B, A]. ``steps`` network evaluations."""
        sched = self._scheduler
        x = latent
        if self.kind == "flow":
            sched.set_timesteps(sigmas=np.linspace(1.0, 0.0, self.steps + 1)[:-1].tolist(), device=x.device)
            for i, t in enumerate(sched.timesteps):
                sigma = sched.sigmas[i].to(x.device, torch.float32).expand(x.shape[0])
                v = self._net(obs, x, sigma)
                x = sched.step(v, t, x).prev_sample
            return x
        sched.set_timesteps(self.steps, device=x.device)
        for k in sched.timesteps:
            kk = torch.full((x.shape[0],), float(k) / self.steps, device=x.device)
            eps_hat = self._net(obs, x, kk)
            x = sched.step(eps_hat, int(k), x, eta=0.0).prev_sample
        return x


def fit_decoder(decoder: GenerativeDecoder, obs: torch.Tensor, action: torch.Tensor, *, epochs: int = 50,
                batch_size: int = 8192, lr: float = 3e-4, noise_samples: int = 8, val_fraction: float = 0.1,
                patience: int = 20, generator: torch.Generator | None = None,
                noise: torch.Tensor | None = None) -> dict[str, float]:
    """Supervised refit of g_phi on (s, u) pairs (GoRL phase 2): with fresh eps ~ N(0, I) per pair
    and step (independent coupling, the paper's), or with each pair's own ``noise``.

    Args:
        decoder: the decoder to train in place (its obs normaliser is set from ``obs``).
        obs: float32 [N, D] raw states.  action: float32 [N, A] pre-tanh actions u.
        noise: None, or float32 [N, A] ~ N(0, I): the noise that produced each u (policy coupling:
            u = g_old(s, mu(s) + sigma(s) * noise) from a known frozen policy). The loss then pairs
            each u with its own noise (fresh t only), so the target is a deterministic map: it has
            no irreducible variance and, for a flow, its paths are straight, so 10 Euler steps
            integrate them without the spread shrinking (independent coupling's paths between
            N(0, 1) and N(mu, sigma^2 != 1) are curved).
        epochs, batch_size, lr: Adam training; ``noise_samples`` (eps, t) draws per pair and step
            (authors: 8). ``val_fraction`` of the pairs is held out; training stops after
            ``patience`` epochs without a better validation loss and the best weights are kept.
        generator: torch RNG for the split, batches and noise (reproducible fits).
    Returns:
        {"decoder_train_loss", "decoder_val_loss", "decoder_epochs", "decoder_pairs"}.
    Raises:
        ValueError: mismatched shapes (``noise`` included), fewer than 10 pairs, NaN/inf in the
            data, a non-finite loss, or a setting out of range (epochs, batch_size, noise_samples,
            patience >= 1; lr > 0; val_fraction in (0, 1)).
    """
    for key, v in (("epochs", epochs), ("batch_size", batch_size), ("noise_samples", noise_samples),
                   ("patience", patience)):
        check_int(key, v, 1)
    check_float("lr", lr, 0.0, low_open=True)
    check_float("val_fraction", val_fraction, 0.0, 1.0, low_open=True, high_open=True)
    if obs.ndim != 2 or action.ndim != 2 or obs.shape[0] != action.shape[0]:
        raise ValueError(f"fit_decoder wants obs [N, D] and action [N, A] with equal N, got {tuple(obs.shape)} and {tuple(action.shape)}")
    if obs.shape[1] != decoder.obs_dim or action.shape[1] != decoder.action_dim:
        raise ValueError(f"decoder expects D={decoder.obs_dim}, A={decoder.action_dim}; got D={obs.shape[1]}, A={action.shape[1]}")
    n = obs.shape[0]
    if n < 10:
        raise ValueError(f"fit_decoder needs at least 10 (s, u) pairs, got {n}")
    if not (torch.isfinite(obs).all() and torch.isfinite(action).all()):
        raise ValueError("fit_decoder: the (s, u) data contain NaN or inf")
    if noise is not None:
        if tuple(noise.shape) != tuple(action.shape):
            raise ValueError(f"fit_decoder: noise must have the actions' shape {tuple(action.shape)}, got {tuple(noise.shape)}")
        if not torch.isfinite(noise).all():
            raise ValueError("fit_decoder: the paired noise contains NaN or inf")
    dev = decoder.obs_mean.device
    obs, action = obs.to(dev, torch.float32), action.to(dev, torch.float32)
    paired = noise.to(dev, torch.float32) if noise is not None else None
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    with torch.no_grad():
        decoder.obs_mean.copy_(obs.mean(0))
        decoder.obs_std.copy_(obs.std(0).clamp_min(1e-3) if n > 1 else torch.ones_like(decoder.obs_std))
    perm = torch.randperm(n, generator=g).to(dev)
    n_val = max(1, int(round(val_fraction * n)))
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    opt = torch.optim.Adam(decoder.net.parameters(), lr=lr)
    # A fixed validation noise draw so validation losses are comparable between epochs.
    k = int(noise_samples)
    vo, va = obs[val_idx].repeat(k, 1), action[val_idx].repeat(k, 1)
    v_noise = (paired[val_idx].repeat(k, 1) if paired is not None
               else torch.randn(vo.shape[0], action.shape[1], generator=g).to(dev))
    v_t = torch.rand(vo.shape[0], generator=g).to(dev)
    best, best_state, bad, train_loss, epoch = math.inf, None, 0, math.nan, 0
    for epoch in range(1, int(epochs) + 1):
        decoder.train()
        order = tr_idx[torch.randperm(tr_idx.shape[0], generator=g).to(dev)]
        losses = []
        for i in range(0, order.shape[0], int(batch_size)):
            b = order[i:i + int(batch_size)]
            bo, ba = obs[b].repeat(k, 1), action[b].repeat(k, 1)
            eps = (paired[b].repeat(k, 1) if paired is not None
                   else torch.randn(bo.shape[0], action.shape[1], generator=g).to(dev))
            t = torch.rand(bo.shape[0], generator=g).to(dev)
            loss = decoder.loss(bo, ba, eps, t)
            if not torch.isfinite(loss):
                raise ValueError(f"decoder loss became {loss.item()} at epoch {epoch}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        train_loss = float(np.mean(losses))
        decoder.eval()
        with torch.no_grad():
            val = decoder.loss(vo, va, v_noise, v_t).item()
        if val < best - 1e-6:
            best, bad = val, 0
            best_state = {kk: v.detach().clone() for kk, v in decoder.state_dict().items()}
        else:
            bad += 1
            if bad >= int(patience):
                break
    if best_state is not None:
        decoder.load_state_dict(best_state)
    decoder.eval()
    return {"decoder_train_loss": train_loss, "decoder_val_loss": best, "decoder_epochs": float(epoch),
            "decoder_pairs": float(n)}


# =================================================================================================
# The learner


# =================================================================================================
# The encoder pi_theta(eps | s) and the deployment module

@torch.no_grad()
def policy_fidelity(obs: torch.Tensor, obs_norm: torch.Tensor, old: tuple[nn.Module, nn.Module],
                    new: tuple[nn.Module, nn.Module], draws: int = 64,
                    generator: torch.Generator | None = None) -> dict[str, float]:
    """How closely the latent policy ``new`` = (encoder, decoder) reproduces ``old`` on the given states:
    a = tanh(decoder(s, mu(s) + sigma(s) n)), n ~ N(0, I), with the same n for both (common random
    numbers: the difference of the two means is unbiased and its variance small).

    Args:
        obs: float32 [N, D] raw states (the decoders' input).  obs_norm: float32 [N, D] the same states
            normalised (the encoders' input).  old, new: (encoder, decoder) pairs; an encoder maps
            [N, D] -> (mu, sigma) [N, A] each.  draws: latents per state, >= 2.  generator: for n (CPU).
    Raises:
        ValueError: ``draws`` < 2 (a spread needs two draws) or ``obs``/``obs_norm`` of other shapes.
    Returns:
        ``{"refit_action_mean_err"``: mean |E new a - E old a| per state and dimension,
        ``"refit_action_std_ratio"``: mean new std / mean old std of a (1 = the spread kept),
        ``"refit_det_action_err"``: mean |tanh(g_new(s, mu_new(s))) - tanh(g_old(s, mu_old(s)))|
        (the deterministic policies evaluation runs)``}``, actions in [-1, 1].
    """
    if int(draws) < 2:
        raise ValueError(f"draws must be >= 2 (a spread needs two draws), got {draws}")
    if obs.shape != obs_norm.shape:
        raise ValueError(f"obs {tuple(obs.shape)} and obs_norm {tuple(obs_norm.shape)} must have the same shape")
    S = obs.repeat(draws, 1)
    actions, det = [], []
    n = None
    for enc, dec in (old, new):
        mu, sigma = enc(obs_norm)
        if n is None:
            n = torch.randn(S.shape[0], mu.shape[1], generator=generator).to(obs.device)
        a = torch.tanh(dec(S, mu.repeat(draws, 1) + sigma.repeat(draws, 1) * n))
        actions.append(a.view(draws, obs.shape[0], -1))
        det.append(torch.tanh(dec(obs, mu)))
    (a_old, a_new), (det_old, det_new) = actions, det
    return {"refit_action_mean_err": float((a_new.mean(0) - a_old.mean(0)).abs().mean()),
            "refit_action_std_ratio": float(a_new.std(0).mean() / a_old.std(0).mean().clamp_min(1e-8)),
            "refit_det_action_err": float((det_new - det_old).abs().mean())}


def activation_class(name: str) -> type[nn.Module]:
    """The activation module class for ``name`` (``control.export``'s table: relu, elu, tanh, silu, gelu).

    Raises:
        ValueError: an unknown name (lists the known ones).
    """
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def critic_mlp(obs_dim: int, hidden: Sequence[int], activation: str = "silu", ortho_init: bool = False) -> nn.Sequential:
    """The value network V(s): float32 [B, D] -> [B, 1], :func:`mlp` with ``activation``
    (a name of ``control.export``'s activations: relu, elu, tanh, silu, gelu); ``ortho_init``: orthogonal weights (gain sqrt(2), the head 1) and zero
    biases, as SB3 / CleanRL PPO.

    Raises:
        ValueError: unknown activation (lists the known ones), a size < 1.
    """
    net = mlp(obs_dim, hidden, 1, activation=activation_class(activation))
    if ortho_init:
        _orthogonal(net, head_gain=1.0)
    return net


def _orthogonal(net: nn.Sequential, head_gain: float) -> None:
    lin = [m for m in net if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for i, m in enumerate(lin):
            nn.init.orthogonal_(m.weight, head_gain if i == len(lin) - 1 else math.sqrt(2))
            nn.init.zeros_(m.bias)


class Encoder(nn.Module):
    """Diagonal Gaussian over the latent eps (dim = action dim), authors' ``EncoderState`` actor.

    ``forward(obs_norm float32 [B, D]) -> (mu [B, A], sigma [B, A])``. With ``state_dependent_std``
    (the authors') sigma = clamp(softplus(.) + 1e-3, 1e-3, 10) from the network's second head;
    without it sigma = clamp(exp(log_std), 1e-3, 10) with ``log_std`` one parameter per latent
    dimension (as :mod:`control.ppo`). The last layer's weights are scaled by 0.01 and its bias set
    so a fresh encoder starts at mu ~ 0, sigma ~ ``init_std`` (in (1e-3, 10); the authors' zero bias
    gives softplus(0) + 1e-3 = 0.694). ``activation``: ``silu`` (authors), ``tanh``, ... (:func:`activation_class`);
    ``ortho_init``: orthogonal hidden weights (gain sqrt(2)) and zero biases before that scaling.

    Raises:
        ValueError: ``init_std`` outside (1e-3, 10); unknown ``activation`` (lists the known ones).
    """

    def __init__(self, obs_dim: int, latent_dim: int, hidden: Sequence[int], init_std: float = 1.0,
                 activation: str = "silu", state_dependent_std: bool = True, ortho_init: bool = False):
        super().__init__()
        A = check_int("latent_dim", latent_dim, 1)
        init_std = check_float("encoder_init_std", init_std, 1e-3, 10.0, low_open=True, high_open=True)
        act = activation_class(activation)
        self.state_dependent_std = bool(state_dependent_std)
        self.net = mlp(obs_dim, hidden, 2 * A if self.state_dependent_std else A,
                       activation=act)
        if ortho_init:
            _orthogonal(self.net, head_gain=1.0)
        with torch.no_grad():
            self.net[-1].weight.mul_(0.01)
            self.net[-1].bias.zero_()
            if self.state_dependent_std:
                # softplus^-1(init_std - 1e-3) = log(expm1(init_std - 1e-3))
                self.net[-1].bias[A:] = math.log(math.expm1(init_std - 1e-3))
        if not self.state_dependent_std:
            self.log_std = nn.Parameter(torch.full((A,), math.log(init_std)))

    def forward(self, obs_norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised states float32 [B, D] -> (mu float32 [B, A], sigma float32 [B, A] in [1e-3, 10])."""
        if not self.state_dependent_std:
            mu = self.net(obs_norm)
            return mu, self.log_std.exp().clamp(1e-3, 10.0).expand_as(mu)
        mu, raw = self.net(obs_norm).chunk(2, dim=-1)
        sigma = (F.softplus(raw) + 1e-3).clamp(1e-3, 10.0)
        return mu, sigma


@register_kind("gorl")
class GoRLPolicy(nn.Module):
    """Deployment module: ``forward(state_norm float32 [B, D], images=None) -> float32 [B, 1, A]`` in [-1, 1].

    ``state_norm`` is the state normalised by the encoder's running normaliser (stored in the policy
    meta); the module un-normalises it for the decoder, which has its own fixed normaliser. Note the
    encoder's normaliser clips at +-10 std; the deployed module does not (states that far out are
    outside the training data either way).
    """

    def __init__(self, state_dim: int, action_dim: int, encoder_hidden: Sequence[int], decoder: dict | None = None,
                 activation: str = "silu", state_dependent_std: bool = True):
        super().__init__()
        self.config = {"state_dim": int(state_dim), "action_dim": int(action_dim),
                       "encoder_hidden": [int(h) for h in encoder_hidden], "decoder": decoder,
                       "activation": str(activation), "state_dependent_std": bool(state_dependent_std)}
        self.encoder = Encoder(state_dim, action_dim, encoder_hidden, activation=activation,
                               state_dependent_std=state_dependent_std)
        if decoder is None:
            self.decoder = None
        else:
            cfg = dict(decoder)
            kind = cfg.pop("kind")
            self.decoder = GenerativeDecoder(kind=kind, **cfg)
        self.register_buffer("norm_mean", torch.zeros(int(state_dim)))
        self.register_buffer("norm_std", torch.ones(int(state_dim)))

    def export_config(self) -> dict:
        """The constructor's arguments (``GoRLPolicy(**cfg)`` rebuilds it), a deep copy."""
        return copy.deepcopy(self.config)

    def forward(self, state: torch.Tensor, images: dict | None = None) -> torch.Tensor:
        """Normalised states float32 [B, D] -> actions float32 [B, 1, A] in [-1, 1]
        (a = tanh(g_phi(s, mu_theta(s))); ``images`` unused)."""
        x = state.clamp(-10.0, 10.0)
        mu, _ = self.encoder(x)
        u = mu if self.decoder is None else self.decoder(state * self.norm_std + self.norm_mean, mu)
        return torch.tanh(u).unsqueeze(1)
