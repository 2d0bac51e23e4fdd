"""EXPO: Expressive Policy Optimization, in one file.

Dong, Li, Sadigh, Finn, "EXPO: Stable Reinforcement Learning with Expressive Policies"
(arXiv 2507.07986, ICLR 2026); authors' code ``pd-perry/EXPO`` (``EXPOLearner``, built on RLPD).

The pieces, top to bottom, with the paper's names:

1. **Base policy** pi_b(a | s): a DDPM with T (10) denoising steps, diffusers' ``DDPMScheduler``
   for the noise schedule, an MLP-ResNet denoiser eps_theta(s, a_t, t) with learnable Fourier time
   features. Trained *only* by imitation on replay (and offline) batches:
       L_b = E_{t, eps} || eps - eps_theta(s, sqrt(abar_t) a + sqrt(1 - abar_t) eps, t) ||^2
   An EMA copy (tau_actor = 1e-3) is used for acting.
2. **Edit policy** pi_e(a_hat | s, a): tanh-Gaussian, a_hat in (-1, 1)^|A|; edited action
   a' = a + beta * a_hat, beta a fixed bound on the edit size. SAC-style loss
       L_e = E[ alpha * (log pi_e(a_hat | s, a) - |A| log beta) - mean_i Q_i(s, a') ]
   (the -|A| log beta term is the change of variables a_hat -> beta * a_hat), trained on replay
   actions a; temperature alpha tuned toward a target entropy of the edited action.
3. **On-the-fly (OTF) policy**: draw N base samples, edit the first n_edit of them, take
   argmax over the N + n_edit candidates of min_{j in random subset} Qbar_j(s, a). Used for
   acting, for evaluation and for the TD target's next action.
4. **Critic ensemble**: ``num_qs`` (10) MLPs with LayerNorm; TD target
       y = r + gamma^k * (1 - terminal) * min_{j in random subset of num_min_qs} Qbar_j(s', a*'),
   a*' from the OTF policy (online base, EMA-free), no entropy backup; UTD ratio (20) critic
   updates per environment step, then one base and one edit + temperature update (RLPD schedule);
   offline and online data mixed 50/50 in every batch.
5. **Offline start**: optional behaviour-cloning pre-training of the base policy (and critic,
   edit policy) from episode files written by ``dopa demos``.
6. **Action chunks** of horizon h (Q-chunking style): the critic, base and edit policies act on
   the flattened chunk [h * A]; a chunk transition stores the discounted sum of its rewards and
   bootstraps with gamma^k from the state after its k executed steps.

Deviations from the authors' code, on purpose:
  - Candidates are clipped to [-1, 1] before Q scores them (the learner contract and the env clip
    anyway, so Q judges the action that is executed). The authors leave edited actions unclipped.
  - ``adjust_target_entropy`` (an option in the authors' code, off there) is on by default: the
    target entropy is that of the *edited* action, -|A|/2 + |A| log beta. With the authors'
    default (-|A|/2) the target is out of reach whenever beta < e^{-1/2}/2 ~ 0.30 (a tanh edit
    scaled by beta has entropy at most |A| log(2 beta)), so the temperature grows without bound.
  - The DDPM noise schedule is diffusers' ``squaredcos_cap_v2`` (cosine; the authors' "vp"
    schedule is not a diffusers schedule; their "cosine" option is this one).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from control.export import register_kind
from basics.checks import check_float, check_int, check_states
from control.learner import Learner, Transition
from control.networks import RunningMeanStd

__all__ = [
    "EXPO", "EXPOPolicy", "Denoiser", "DiffusionBasePolicy", "EditPolicy", "CriticEnsemble",
    "ReplayBuffer", "episodes_to_transitions", "load_episodes", "read_h5_episodes", "on_the_fly",
]


# ================================================================================================
# Networks
# ================================================================================================


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

    Shapes: obs float32 [B, D], noisy_action float32 [B, A], t [B] (int or float step index) ->
    float32 [B, A].
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int = 256, num_blocks: int = 3,
                 time_dim: int = 128, dropout: float = 0.0):
        super().__init__()
        self.time_features = FourierFeatures(time_dim)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, 2 * time_dim), nn.SiLU(),
                                      nn.Linear(2 * time_dim, 2 * time_dim))
        self.inp = nn.Linear(obs_dim + action_dim + 2 * time_dim, hidden_dim)
        self.blocks = nn.Sequential(*[MLPResNetBlock(hidden_dim, dropout) for _ in range(num_blocks)])
        self.out = nn.Linear(hidden_dim, action_dim)

    def forward(self, obs: torch.Tensor, noisy_action: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predicted noise eps_theta(s, a_t, t): obs float32 [B, D], noisy_action float32 [B, A],
        t [B] or a scalar (step index, int or float) -> float32 [B, A]."""
        t = t.to(obs.dtype).reshape(-1, 1).expand(obs.shape[0], 1)
        emb = self.time_mlp(self.time_features(t))
        x = self.inp(torch.cat([obs, noisy_action, emb], dim=-1))
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
    Raises:
        ValueError: an unknown ``beta_schedule`` (the known ones listed) or ``diffusion_steps`` < 1.
    """

    def __init__(self, obs_dim: int, action_dim: int, diffusion_steps: int = 10,
                 beta_schedule: str = "squaredcos_cap_v2", hidden_dim: int = 256, num_blocks: int = 3,
                 time_dim: int = 128, dropout: float = 0.0):
        super().__init__()
        from diffusers import DDPMScheduler

        allowed = ("squaredcos_cap_v2", "linear", "scaled_linear", "sigmoid")
        if beta_schedule not in allowed:
            raise ValueError(f"unknown beta_schedule {beta_schedule!r}; known: {', '.join(allowed)}")
        if int(diffusion_steps) < 1:
            raise ValueError(f"diffusion_steps must be >= 1, got {diffusion_steps!r}")
        self.action_dim = int(action_dim)
        self.denoiser = Denoiser(obs_dim, action_dim, hidden_dim, num_blocks, time_dim, dropout)
        self.scheduler = DDPMScheduler(num_train_timesteps=int(diffusion_steps), beta_schedule=beta_schedule,
                                       prediction_type="epsilon", clip_sample=True, clip_sample_range=1.0,
                                       variance_type="fixed_small")
        self.scheduler.set_timesteps(int(diffusion_steps))

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
        """Draw one action per row: obs float32 [B, D] -> float32 [B, A] in [-1, 1].

        ``denoiser`` overrides the online network (the EMA copy for acting).
        """
        net = self.denoiser if denoiser is None else denoiser
        x = torch.randn((obs.shape[0], self.action_dim), generator=generator, device=obs.device, dtype=obs.dtype)
        for t in self.scheduler.timesteps:
            eps = net(obs, x, t.to(obs.device))
            x = self.scheduler.step(eps, int(t), x, generator=generator).prev_sample
        return x.clamp(-1.0, 1.0)


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


class CriticEnsemble(nn.Module):
    """``num_qs`` Q-networks evaluated in one batched pass: Q_i(s, a), i = 1..E.

    Each member: [s, a] -> (Linear -> LayerNorm -> ReLU) x len(hidden_dims) -> Linear(1), as RLPD's
    ``MLP(use_layer_norm=True)``; weights are stacked [E, in, out] and applied with ``torch.baddbmm``.

    ``forward(obs [B, D], action [B, A], members=None) -> float32 [E', B]`` where ``members`` (long
    [E']) picks a subset (REDQ's random subset) and ``None`` means all E.
    """

    def __init__(self, obs_dim: int, action_dim: int, num_qs: int = 10,
                 hidden_dims: Sequence[int] = (256, 256, 256), layer_norm: bool = True):
        super().__init__()
        if int(num_qs) < 1:
            raise ValueError(f"num_qs must be >= 1, got {num_qs!r}")
        self.num_qs = int(num_qs)
        self.layer_norm = bool(layer_norm)
        widths = [obs_dim + action_dim, *[int(h) for h in hidden_dims], 1]
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        self.ln_weights, self.ln_biases = nn.ParameterList(), nn.ParameterList()
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers = [nn.Linear(w_in, w_out) for _ in range(self.num_qs)]  # torch's default init per member
            self.weights.append(nn.Parameter(torch.stack([m.weight.detach().T for m in layers])))
            self.biases.append(nn.Parameter(torch.stack([m.bias.detach()[None] for m in layers])))
            if i < len(widths) - 2 and self.layer_norm:
                self.ln_weights.append(nn.Parameter(torch.ones(self.num_qs, 1, w_out)))
                self.ln_biases.append(nn.Parameter(torch.zeros(self.num_qs, 1, w_out)))

    def forward(self, obs: torch.Tensor, action: torch.Tensor, members: torch.Tensor | None = None) -> torch.Tensor:
        """obs float32 [B, D], action float32 [B, A], members long [E'] or None -> Q float32 [E', B]."""
        x = torch.cat([obs, action], dim=-1)
        e = self.num_qs if members is None else len(members)
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
                x = F.relu(x)
        return x.squeeze(-1)


# ================================================================================================
# Replay buffer and offline episodes
# ================================================================================================


class ReplayBuffer:
    """Ring buffer of transitions as torch tensors on one device.

    Fields: ``obs`` float32 [N, D], ``action`` float32 [N, A] (A = h * per-step action dim for
    chunks), ``reward`` float32 [N] (discounted sum over the chunk), ``next_obs`` float32 [N, D],
    ``discount`` float32 [N] = gamma^k * (1 - terminal), the factor of the bootstrap term.
    """

    FIELDS = ("obs", "action", "reward", "next_obs", "discount")

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, device: str | torch.device = "cpu"):
        if int(capacity) < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity!r}")
        self.capacity = int(capacity)
        self.data = {
            "obs": torch.zeros(self.capacity, obs_dim, device=device),
            "action": torch.zeros(self.capacity, action_dim, device=device),
            "reward": torch.zeros(self.capacity, device=device),
            "next_obs": torch.zeros(self.capacity, obs_dim, device=device),
            "discount": torch.zeros(self.capacity, device=device),
        }
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, **batch: torch.Tensor) -> None:
        """Append a batch of n transitions (keyword per field of ``FIELDS``, each [n, ...] as stored,
        cast to float32); the oldest are overwritten.

        Raises:
            KeyError: a field is missing.  ValueError: a field holds NaN/inf (named).
        """
        n = int(batch["obs"].shape[0])
        for k in self.FIELDS:
            v = batch[k].to(self.data[k].device, torch.float32).reshape(n, *self.data[k].shape[1:])
            if not torch.isfinite(v).all():
                raise ValueError(f"non-finite value in transition field {k!r}")
            idx = (self.pos + torch.arange(n)) % self.capacity
            self.data[k][idx.to(self.data[k].device)] = v
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """n transitions drawn uniformly with replacement. Raises ValueError when empty."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = torch.randint(0, self.size, (n,), generator=generator, device="cpu")
        return {k: v[idx.to(v.device)] for k, v in self.data.items()}

    def state_dict(self) -> dict:
        """The filled rows of each field and the write position: ``{"data": {...}, "pos", "size"}``."""
        return {"data": {k: v[: self.size].clone() for k, v in self.data.items()}, "pos": self.pos, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict` (into a buffer of at least the saved size)."""
        size = int(state["size"])
        for k, v in state["data"].items():
            self.data[k][:size] = v.to(self.data[k].device)
        self.pos, self.size = int(state["pos"]), size


def load_episodes(path: str):
    """Episodes of one HDF5 file written by ``dopa demos``.

    Uses ``sim.episodes.read_episodes`` (the project's reader) when it is installed, else
    :func:`read_h5_episodes`. Each episode has ``.states`` float [T+1, D], ``.actions`` float
    [T, A], ``.rewards`` [T], ``.dones`` [T], ``.success``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"offline data file {path!r} does not exist")
    try:
        from sim.episodes import read_episodes
    except ImportError:
        return read_h5_episodes(path)
    return list(read_episodes(path))


def read_h5_episodes(path: str) -> list[SimpleNamespace]:
    """Read the robomimic-style layout ``data/<demo>/{states [T+1, D], actions [T, A], rewards [T],
    dones [T]}`` with the attribute ``success`` on each demo group; demos in name order.

    Raises:
        ValueError: no ``data`` group or a demo missing one of the four datasets (named).
    """
    import h5py

    out = []
    with h5py.File(path, "r") as f:
        if "data" not in f:
            raise ValueError(f"{path}: no 'data' group; found {list(f.keys())}")
        for name in sorted(f["data"].keys(), key=lambda n: (len(n), n)):
            g = f["data"][name]
            missing = [k for k in ("states", "actions", "rewards", "dones") if k not in g]
            if missing:
                raise ValueError(f"{path}: demo {name!r} lacks {missing}")
            out.append(SimpleNamespace(states=g["states"][()], actions=g["actions"][()], rewards=g["rewards"][()],
                                       dones=g["dones"][()], success=bool(g.attrs.get("success", False))))
    return out


def episodes_to_transitions(episodes, horizon: int = 1, gamma: float = 0.99,
                            done_is_terminal: bool = False) -> dict[str, torch.Tensor]:
    """Turn episodes into (chunk) transitions in the :class:`ReplayBuffer` layout.

    For each step t of an episode of length T, the chunk is actions[t : t+h] (padded with the last
    action when fewer than h remain), k = min(h, T - t) steps executed, reward sum_{j<k} gamma^j r_{t+j},
    next state states[t+k], discount gamma^k, or 0 when the episode's end is reached, its last
    ``done`` is set and ``done_is_terminal`` (a true terminal, no bootstrap).

    Returns: dict of float32 tensors ``obs`` [N, D], ``action`` [N, h*A], ``reward`` [N],
    ``next_obs`` [N, D], ``discount`` [N].
    Raises:
        ValueError: an episode whose lengths disagree (states must have one row more than actions),
            non-finite values, or actions outside [-1, 1].
    """
    out = {k: [] for k in ReplayBuffer.FIELDS}
    for n, ep in enumerate(episodes):
        states = np.asarray(ep.states, dtype=np.float32)
        actions = np.asarray(ep.actions, dtype=np.float32)
        rewards = np.asarray(ep.rewards, dtype=np.float32).reshape(-1)
        dones = np.asarray(ep.dones, dtype=bool).reshape(-1)
        t_len = actions.shape[0]
        if states.shape[0] != t_len + 1 or rewards.shape[0] != t_len or dones.shape[0] != t_len:
            raise ValueError(f"episode {n}: states {states.shape}, actions {actions.shape}, rewards "
                             f"{rewards.shape}, dones {dones.shape}; need states [T+1, D], the rest [T]")
        if not (np.isfinite(states).all() and np.isfinite(actions).all() and np.isfinite(rewards).all()):
            raise ValueError(f"episode {n}: non-finite values")
        if t_len and np.abs(actions).max() > 1.0 + 1e-6:
            raise ValueError(f"episode {n}: actions must lie in [-1, 1], max |a| = {np.abs(actions).max():.3f}")
        if t_len == 0:
            continue
        padded = np.concatenate([actions, np.repeat(actions[-1:], horizon - 1, axis=0)], axis=0)
        terminal_end = bool(done_is_terminal and dones[-1])
        for t in range(t_len):
            k = min(horizon, t_len - t)
            out["obs"].append(states[t])
            out["action"].append(padded[t:t + horizon].reshape(-1))
            out["reward"].append(float(sum(gamma ** j * rewards[t + j] for j in range(k))))
            out["next_obs"].append(states[t + k])
            out["discount"].append(0.0 if (terminal_end and t + k == t_len) else gamma ** k)
    if not out["obs"]:
        raise ValueError("offline data holds no transitions")
    return {k: torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in out.items()}


# ================================================================================================
# The deployable policy: base (EMA) + edit policy + critic argmax, inference only
# ================================================================================================


@register_kind("expo")
class EXPOPolicy(nn.Module):
    """The EXPO on-the-fly policy for deployment (export kind ``"expo"``): no optimizers, buffers
    or training code.

    ``forward(state float32 [B, D], images=None) -> float32 [B, h, A]`` in [-1, 1]: N samples of
    the (EMA) base policy, n_edit of them edited by pi_e, and the candidate with the highest
    minimum over the kept critic members is returned (a chunk of h actions; h = 1 without chunks).
    ``critic`` holds only the ``num_min_qs`` members used for the argmax. Sampling uses the policy's
    own ``torch.Generator`` seeded by ``seed``, so a freshly loaded policy repeats its actions for
    the same observations. Constructor arguments are the ``arch`` dict of ``control.export``.
    """

    def __init__(self, state_dim: int, action_dim: int, action_horizon: int = 1, diffusion_steps: int = 10,
                 beta_schedule: str = "squaredcos_cap_v2", base_hidden_dim: int = 256, base_num_blocks: int = 3,
                 time_dim: int = 128, edit_hidden_dims: Sequence[int] = (256, 256, 256),
                 critic_hidden_dims: Sequence[int] = (256, 256, 256), critic_layer_norm: bool = True,
                 num_min_qs: int = 2, num_samples: int = 8, num_edit_samples: int = 8, edit_scale: float = 0.05,
                 seed: int = 0):
        super().__init__()
        self.config = dict(state_dim=int(state_dim), action_dim=int(action_dim), action_horizon=int(action_horizon),
                           diffusion_steps=int(diffusion_steps), beta_schedule=str(beta_schedule),
                           base_hidden_dim=int(base_hidden_dim), base_num_blocks=int(base_num_blocks),
                           time_dim=int(time_dim), edit_hidden_dims=[int(h) for h in edit_hidden_dims],
                           critic_hidden_dims=[int(h) for h in critic_hidden_dims],
                           critic_layer_norm=bool(critic_layer_norm), num_min_qs=int(num_min_qs),
                           num_samples=int(num_samples), num_edit_samples=int(num_edit_samples),
                           edit_scale=float(edit_scale), seed=int(seed))
        a = int(action_dim) * int(action_horizon)
        self.base = DiffusionBasePolicy(state_dim, a, diffusion_steps, beta_schedule, base_hidden_dim,
                                        base_num_blocks, time_dim)
        self.edit_policy = EditPolicy(state_dim, a, edit_hidden_dims)
        self.critic = CriticEnsemble(state_dim, a, num_min_qs, critic_hidden_dims, critic_layer_norm)
        self.generator = torch.Generator(device="cpu").manual_seed(int(seed))

    def export_config(self) -> dict:
        """The constructor's arguments (``EXPOPolicy(**cfg)`` rebuilds it)."""
        return dict(self.config)

    @torch.no_grad()
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
        q = critic(obs.repeat_interleave(k, dim=0), cands.reshape(-1, a_dim), members).min(0).values.view(b, k)
        best = cands[torch.arange(b, device=obs.device), q.argmax(dim=1)]
    return best, cands, q


# ================================================================================================
# The learner
# ================================================================================================


class EXPO(Learner):
    """EXPO learner (see the module docstring for the algorithm and its equations).

    Built by Hydra from ``configs/learner/expo.yaml``; the training loop supplies ``obs_dim``,
    ``action_dim``, ``num_envs``, ``seed``, ``device``. Hyper-parameters (authors' defaults for
    Robomimic / MimicGen in brackets):

    Args:
        obs_dim, action_dim: sizes D and A of the state and of one step's action.
        num_envs: batch size B of ``act``/``observe``.
        seed: seeds the networks' initialisation and the learner's own sampling generator.
        device: torch device string.
        gamma: discount [0.99]. tau: critic target Polyak rate [0.005]. actor_tau: EMA rate of
            the acting base policy [1e-3].
        diffusion_steps: DDPM steps T [10]. beta_schedule: diffusers schedule name.
        base_hidden_dim, base_num_blocks, time_dim: MLP-ResNet denoiser [256, 3, 128].
        base_lr: AdamW lr of the base policy [3e-4], cosine-decayed over ``base_decay_steps`` [3M].
        num_samples: N base samples in the OTF policy [8]. num_edit_samples: how many get edited [8].
        edit_scale: beta, the bound on the edit size [0.05; 0.7 for Adroit].
        edit_hidden_dims, edit_dropout: edit policy MLP [(256, 256, 256), 0].
        init_temperature: alpha at start [1.0]. target_entropy: None -> see ``adjust_target_entropy``.
        adjust_target_entropy: target = -hA/2 + hA log beta (True) or -hA/2 (False, authors' default).
        num_qs: critic ensemble size [10]. num_min_qs: size of the random subset for the min [2].
        critic_hidden_dims, critic_layer_norm: [(256, 256, 256), True].
        lr: Adam lr of the critic, edit policy and temperature [3e-4].
        batch_size: per update [256]. utd_ratio: critic updates per environment step [20].
        start_training: environment steps before updates begin [5000].
        buffer_size: online replay capacity.
        offline_data: HDF5 episode files (``dopa demos``); empty or None for none.
        offline_ratio: share of each batch drawn from offline data [0.5].
        offline_done_is_terminal: the last ``done`` of an episode is a true terminal (no bootstrap).
        pretrain_steps: behaviour-cloning steps of the base policy on offline data before online
            training [authors' flag default 1M; 0 here, set it with offline data].
        pretrain_critic, pretrain_edit: also train critic / edit policy during pre-training [False].
        horizon: action chunk length h [1; 4 in the authors' robomimic script].
        obs_normalization: feed the networks clip((s - mean) / std, -10, 10) with running statistics
            (``control.networks.RunningMeanStd``) of the offline states and of every observed state;
            buffers keep raw states; the exported policy carries the statistics as ``obs_normalizer``.

    Ranges: sizes and counts >= 1 (``num_edit_samples``, ``start_training``, ``pretrain_steps``,
    ``base_num_blocks``, ``base_decay_steps`` >= 0; ``num_edit_samples`` <= ``num_samples``;
    ``num_min_qs`` <= ``num_qs``; ``time_dim`` even); ``gamma`` in [0, 1]; ``tau``, ``actor_tau`` in
    (0, 1]; ``lr``, ``base_lr``, ``init_temperature`` finite and > 0; ``base_weight_decay`` >= 0;
    ``edit_scale`` in (0, 2]; ``edit_dropout`` in [0, 1); ``offline_ratio`` in [0, 1].

    Raises:
        ValueError: a value outside its range (named, with what is allowed), an unknown
            ``beta_schedule``, offline data whose sizes do not match, or bad offline episodes.
        FileNotFoundError: an ``offline_data`` file that does not exist.
    """

    name = "expo"

    def __init__(self, obs_dim: int, action_dim: int, num_envs: int = 1, seed: int = 0, device: str = "cpu",
                 gamma: float = 0.99, tau: float = 0.005, actor_tau: float = 1e-3,
                 diffusion_steps: int = 10, beta_schedule: str = "squaredcos_cap_v2",
                 base_hidden_dim: int = 256, base_num_blocks: int = 3, time_dim: int = 128,
                 base_lr: float = 3e-4, base_decay_steps: int | None = 3_000_000, base_weight_decay: float = 1e-4,
                 num_samples: int = 8, num_edit_samples: int = 8, edit_scale: float = 0.05,
                 edit_hidden_dims: Sequence[int] = (256, 256, 256), edit_dropout: float = 0.0,
                 init_temperature: float = 1.0, target_entropy: float | None = None,
                 adjust_target_entropy: bool = True,
                 num_qs: int = 10, num_min_qs: int = 2, critic_hidden_dims: Sequence[int] = (256, 256, 256),
                 critic_layer_norm: bool = True, lr: float = 3e-4,
                 batch_size: int = 256, utd_ratio: int = 20, start_training: int = 5000,
                 buffer_size: int = 1_000_000, offline_data: Sequence[str] | None = None,
                 offline_ratio: float = 0.5, offline_done_is_terminal: bool = False,
                 pretrain_steps: int = 0, pretrain_critic: bool = False, pretrain_edit: bool = False,
                 horizon: int = 1, obs_normalization: bool = False):
        for key, v, low in (("obs_dim", obs_dim, 1), ("action_dim", action_dim, 1), ("num_envs", num_envs, 1),
                            ("num_samples", num_samples, 1), ("num_edit_samples", num_edit_samples, 0),
                            ("num_qs", num_qs, 1), ("batch_size", batch_size, 1), ("utd_ratio", utd_ratio, 1),
                            ("start_training", start_training, 0), ("pretrain_steps", pretrain_steps, 0),
                            ("horizon", horizon, 1), ("buffer_size", buffer_size, 1),
                            ("diffusion_steps", diffusion_steps, 1), ("base_hidden_dim", base_hidden_dim, 1),
                            ("base_num_blocks", base_num_blocks, 0), ("time_dim", time_dim, 2)):
            check_int(key, v, low)
        if int(time_dim) % 2:
            raise ValueError(f"time_dim must be even (cos/sin pairs), got {time_dim!r}")
        if base_decay_steps is not None:
            check_int("base_decay_steps", base_decay_steps, 0)
        for key, widths in (("edit_hidden_dims", edit_hidden_dims), ("critic_hidden_dims", critic_hidden_dims)):
            for h in widths:
                check_int(f"{key} width", h, 1)
        for key, v in (("tau", tau), ("actor_tau", actor_tau)):
            check_float(key, v, 0.0, 1.0, low_open=True)
        for key, v in (("lr", lr), ("base_lr", base_lr), ("init_temperature", init_temperature)):
            check_float(key, v, 0.0, low_open=True)
        check_float("base_weight_decay", base_weight_decay, 0.0)
        check_float("edit_dropout", edit_dropout, 0.0, 1.0, high_open=True)
        if target_entropy is not None:
            check_float("target_entropy", target_entropy)
        if num_edit_samples > num_samples:
            raise ValueError(f"num_edit_samples ({num_edit_samples}) must be <= num_samples ({num_samples})")
        if not 1 <= int(num_min_qs) <= int(num_qs):
            raise ValueError(f"num_min_qs must be in [1, num_qs={num_qs}], got {num_min_qs!r}")
        if not 0.0 < float(edit_scale) <= 2.0:
            raise ValueError(f"edit_scale (beta) must be in (0, 2], got {edit_scale!r}")
        if not 0.0 <= float(offline_ratio) <= 1.0:
            raise ValueError(f"offline_ratio must be in [0, 1], got {offline_ratio!r}")
        if not 0.0 <= float(gamma) <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
        self.obs_dim, self.step_action_dim, self.horizon = int(obs_dim), int(action_dim), int(horizon)
        self.action_dim = self.step_action_dim * self.horizon  # what the networks see: the chunk
        self.num_envs, self.seed, self.device = int(num_envs), int(seed), torch.device(device)
        self.gamma, self.tau, self.actor_tau = float(gamma), float(tau), float(actor_tau)
        self.num_samples, self.num_edit_samples = int(num_samples), int(num_edit_samples)
        self.edit_scale = float(edit_scale)
        self.num_qs, self.num_min_qs = int(num_qs), int(num_min_qs)
        self.batch_size, self.utd_ratio, self.start_training = int(batch_size), int(utd_ratio), int(start_training)
        self.offline_ratio = float(offline_ratio)
        self.pretrain_steps, self.pretrain_critic, self.pretrain_edit = (
            int(pretrain_steps), bool(pretrain_critic), bool(pretrain_edit))
        a = self.action_dim
        if target_entropy is None:
            target_entropy = -a / 2 + (a * math.log(self.edit_scale) if adjust_target_entropy else 0.0)
        self.target_entropy = float(target_entropy)

        self._arch = dict(diffusion_steps=int(diffusion_steps), beta_schedule=beta_schedule,
                          base_hidden_dim=int(base_hidden_dim), base_num_blocks=int(base_num_blocks),
                          time_dim=int(time_dim), edit_hidden_dims=[int(h) for h in edit_hidden_dims],
                          critic_hidden_dims=[int(h) for h in critic_hidden_dims],
                          critic_layer_norm=bool(critic_layer_norm), num_min_qs=self.num_min_qs,
                          num_samples=self.num_samples, num_edit_samples=self.num_edit_samples,
                          edit_scale=self.edit_scale, seed=self.seed)

        # ---- seeding: one block ----------------------------------------------------------------
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.base = DiffusionBasePolicy(obs_dim, a, diffusion_steps, beta_schedule, base_hidden_dim,
                                            base_num_blocks, time_dim).to(self.device)
            self.edit_policy = EditPolicy(obs_dim, a, edit_hidden_dims, edit_dropout).to(self.device)
            self.critic_ensemble = CriticEnsemble(obs_dim, a, num_qs, critic_hidden_dims,
                                                  critic_layer_norm).to(self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.cpu_generator = torch.Generator().manual_seed(self.seed + 1)  # buffer indices, subsets

        # EMA copy of the base denoiser for acting; Polyak target of the critic (torch's AveragedModel).
        self.ema_denoiser = AveragedModel(self.base.denoiser, multi_avg_fn=get_ema_multi_avg_fn(1.0 - self.actor_tau))
        self.target_critic = AveragedModel(self.critic_ensemble, multi_avg_fn=get_ema_multi_avg_fn(1.0 - self.tau))
        for p in [*self.ema_denoiser.parameters(), *self.target_critic.parameters()]:
            p.requires_grad_(False)
        self.log_temperature = torch.tensor(math.log(float(init_temperature)), device=self.device, requires_grad=True)

        self.base_opt = torch.optim.AdamW(self.base.parameters(), lr=base_lr, weight_decay=base_weight_decay)
        decay = int(base_decay_steps) if base_decay_steps else 0
        self.base_sched = torch.optim.lr_scheduler.LambdaLR(
            self.base_opt, (lambda s: 0.5 * (1 + math.cos(math.pi * min(s, decay) / decay))) if decay else (lambda s: 1.0))
        self.edit_opt = torch.optim.Adam(self.edit_policy.parameters(), lr=lr)
        self.critic_opt = torch.optim.Adam(self.critic_ensemble.parameters(), lr=lr)
        self.temperature_opt = torch.optim.Adam([self.log_temperature], lr=lr)

        self.normalizer = RunningMeanStd(obs_dim).to(self.device) if obs_normalization else None
        self.online = ReplayBuffer(buffer_size, obs_dim, a, self.device)
        self.offline: ReplayBuffer | None = None
        self.offline_data = [str(p) for p in (offline_data or [])]
        missing = [p for p in self.offline_data if not os.path.exists(p)]
        if missing:
            raise FileNotFoundError(f"offline data file(s) {missing} do not exist")
        self.offline_done_is_terminal = bool(offline_done_is_terminal)
        if self.offline_data:
            self.set_offline_episodes([ep for path in self.offline_data for ep in load_episodes(path)])

        self.env_steps = 0          # environment steps observed
        self.pending_steps = 0      # steps not yet matched by an update round
        self.grad_steps = 0         # critic updates done
        self.pretrained = self.pretrain_steps == 0
        # Chunk execution state per env (training acting): plan [B, h, A], index of the next action.
        self._plan = torch.zeros(self.num_envs, self.horizon, self.step_action_dim, device=self.device)
        self._plan_step = torch.full((self.num_envs,), self.horizon, dtype=torch.long)
        self._chunk_obs = torch.zeros(self.num_envs, obs_dim, device=self.device)
        self._chunk_reward = torch.zeros(self.num_envs, device=self.device)
        self._chunk_discount = torch.ones(self.num_envs, device=self.device)

    def set_offline_episodes(self, episodes) -> int:
        """Use these episodes (``.states`` [T+1, D], ``.actions`` [T, A], ``.rewards``, ``.dones``) as
        the offline data, replacing any before; returns the number of (chunk) transitions.

        Raises:
            ValueError: dimensions that do not match the learner, or bad episodes (see
                :func:`episodes_to_transitions`).
        """
        tr = episodes_to_transitions(episodes, self.horizon, self.gamma, self.offline_done_is_terminal)
        if tr["obs"].shape[1] != self.obs_dim or tr["action"].shape[1] != self.action_dim:
            raise ValueError(f"offline data has obs dim {tr['obs'].shape[1]} and (chunk) action dim "
                             f"{tr['action'].shape[1]}; the learner expects {self.obs_dim} and {self.action_dim}")
        self.offline = ReplayBuffer(tr["obs"].shape[0], self.obs_dim, self.action_dim, self.device)
        self.offline.add(**tr)
        if self.normalizer is not None:
            self.normalizer.update(torch.cat([tr["obs"], tr["next_obs"]]).to(self.device))
        return len(self.offline)

    # ---------------------------------------------------------------------------------------------
    # acting
    # ---------------------------------------------------------------------------------------------
    def _subset(self) -> torch.Tensor:
        """A random subset of ``num_min_qs`` critic members (REDQ's M), long [num_min_qs]."""
        return torch.randperm(self.num_qs, generator=self.cpu_generator)[: self.num_min_qs].to(self.device)

    def otf(self, obs: torch.Tensor, use_ema: bool = True):
        """The on-the-fly policy on a batch: obs float32 [B, D] (already normalised, see ``_norm``) ->
        (best [B, hA], candidates [B, N + n_edit, hA], q [B, N + n_edit]); scored by the target
        critic's random subset."""
        denoiser = self.ema_denoiser.module if use_ema else self.base.denoiser
        return on_the_fly(obs, self.base, denoiser, self.edit_policy, self.target_critic.module, self._subset(),
                          self.num_samples, self.num_edit_samples, self.edit_scale, self.generator)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Actions for a batch: float32 [B, D] -> float32 [B, A] in [-1, 1] (the OTF policy).

        EXPO's policy is the argmax over sampled candidates for acting and evaluation alike.
        With chunks (h > 1) and ``deterministic=False`` the learner executes each chunk open-loop and
        expects ``observe`` after every ``act`` (B must equal ``num_envs``); with
        ``deterministic=True`` it replans every step and returns the chunk's first action
        (stateless, for evaluation on any batch).

        Raises:
            ValueError: obs not [B, D] with D = obs_dim, non-finite obs, or (chunked training) B != num_envs.
        """
        obs = self._check_obs(obs)
        self._ensure_pretrained()
        if self.horizon == 1 or deterministic:
            return self.otf(self._norm(obs))[0].view(-1, self.horizon, self.step_action_dim)[:, 0]
        if obs.shape[0] != self.num_envs:
            raise ValueError(f"chunked acting needs B == num_envs ({self.num_envs}), got {obs.shape[0]}")
        need = self._plan_step >= self.horizon
        if need.any():
            idx = need.nonzero().squeeze(1).to(self.device)
            self._plan[idx] = self.otf(self._norm(obs[idx]))[0].view(-1, self.horizon, self.step_action_dim)
            self._chunk_obs[idx] = obs[idx]
            self._chunk_reward[idx] = 0.0
            self._chunk_discount[idx] = 1.0
            self._plan_step[need] = 0
        return self._plan[torch.arange(self.num_envs, device=self.device), self._plan_step.to(self.device)].clone()

    def policy(self) -> EXPOPolicy:
        """The deployable policy (export kind ``"expo"``): EMA base + edit policy + the critic members
        of one random subset (fixed by the seed), copied; no training state. ``control.export.save_policy`` writes it.
        With ``obs_normalization`` it expects normalised states (``export_policy`` gives the statistics)."""
        pol = EXPOPolicy(self.obs_dim, self.step_action_dim, self.horizon, **self._arch)
        pol.base.denoiser.load_state_dict(self.ema_denoiser.module.state_dict())
        pol.edit_policy.load_state_dict(self.edit_policy.state_dict())
        # a subset drawn from its own seeded generator: exporting leaves the training streams alone
        members = torch.randperm(self.num_qs, generator=torch.Generator().manual_seed(self.seed))[: self.num_min_qs]
        src = self.target_critic.module
        with torch.no_grad():
            for dst_list, src_list in ((pol.critic.weights, src.weights), (pol.critic.biases, src.biases),
                                       (pol.critic.ln_weights, src.ln_weights), (pol.critic.ln_biases, src.ln_biases)):
                for d, s_ in zip(dst_list, src_list, strict=True):
                    d.copy_(s_[members])
        return pol.eval()

    def export_policy(self) -> tuple[nn.Module, dict]:
        """Deployment module (kind ``"expo"``, see :class:`EXPOPolicy`) and its meta entries, for
        ``control.export.save_policy`` (the training loop adds task, controller and layout)."""
        norm = self.normalizer.export() if self.normalizer is not None else None
        return self.policy(), {"kind": "expo", "action_horizon": self.horizon, "views": [], "obs_normalizer": norm}

    def networks(self) -> dict[str, nn.Module]:
        """The networks whose weights form the policy checkpoint (``pretrained_model``)."""
        return {"base": self.base, "ema_denoiser": self.ema_denoiser, "edit_policy": self.edit_policy,
                "critic": self.critic_ensemble, "critic_target": self.target_critic,
                **({"normalizer": self.normalizer} if self.normalizer is not None else {})}

    # ---------------------------------------------------------------------------------------------
    # storing
    # ---------------------------------------------------------------------------------------------
    def observe(self, transition: Transition) -> None:
        """Store a batched transition (chunks: accumulate and store when a chunk ends or the episode does).

        Args:
            transition: obs/next_obs float32 [B, D], action float32 [B, A] (one step, not the chunk),
                reward float32 [B], terminated/truncated bool [B].
        Raises:
            ValueError: shapes that do not match obs_dim / action_dim / num_envs, or non-finite values.
        """
        t = transition
        obs = self._check_obs(t.obs)
        b = obs.shape[0]
        next_obs = self._check_obs(t.next_obs, "next_obs", b)
        action = torch.as_tensor(t.action, dtype=torch.float32, device=self.device)
        if action.shape != (b, self.step_action_dim):
            raise ValueError(f"action must be [{b}, {self.step_action_dim}], got {tuple(action.shape)}")
        if not torch.isfinite(action).all():
            raise ValueError("transition.action contains NaN or inf")
        reward = torch.as_tensor(t.reward, dtype=torch.float32, device=self.device).reshape(-1)
        terminated = torch.as_tensor(t.terminated, device=self.device).reshape(-1).bool()
        truncated = torch.as_tensor(t.truncated, device=self.device).reshape(-1).bool()
        if reward.shape[0] != b or terminated.shape[0] != b or truncated.shape[0] != b:
            raise ValueError(f"reward/terminated/truncated must have {b} entries")
        if not torch.isfinite(reward).all():
            raise ValueError(f"non-finite reward: {reward.tolist()}")
        if self.horizon > 1 and (b != self.num_envs or bool((self._plan_step >= self.horizon).any())):
            raise ValueError("chunked observe() must follow act(deterministic=False) on all num_envs envs")
        self.env_steps += b
        self.pending_steps += b
        if self.normalizer is not None:
            self.normalizer.update(obs)
        if self.horizon == 1:
            self.online.add(obs=obs, action=action, reward=reward, next_obs=next_obs,
                            discount=self.gamma * (~terminated).float())
            return
        ar = torch.arange(b, device=self.device)
        step = self._plan_step.to(self.device)
        self._plan[ar, step] = action                      # what was executed
        self._chunk_reward += self._chunk_discount * reward
        self._chunk_discount *= self.gamma
        self._plan_step += 1
        end = ((self._plan_step.to(self.device) >= self.horizon) | terminated | truncated)
        if end.any():
            i = end.nonzero().squeeze(1)
            self.online.add(obs=self._chunk_obs[i], action=self._plan[i].reshape(len(i), -1),
                            reward=self._chunk_reward[i], next_obs=next_obs[i],
                            discount=self._chunk_discount[i] * (~terminated[i]).float())
            self._plan_step[end.cpu()] = self.horizon

    # ---------------------------------------------------------------------------------------------
    # training
    # ---------------------------------------------------------------------------------------------
    def _norm(self, obs: torch.Tensor) -> torch.Tensor:
        return self.normalizer.normalize(obs) if self.normalizer is not None else obs

    def _batch(self, n: int) -> dict[str, torch.Tensor]:
        """n transitions (states normalised): ``offline_ratio`` of them offline, the rest online
        (RLPD's symmetric sampling)."""
        if self.offline is None or self.offline_ratio == 0.0:
            batch = self.online.sample(n, self.cpu_generator)
        elif len(self.online) == 0 or self.offline_ratio == 1.0:
            batch = self.offline.sample(n, self.cpu_generator)
        else:
            n_off = int(round(n * self.offline_ratio))
            off, on = self.offline.sample(n_off, self.cpu_generator), self.online.sample(n - n_off, self.cpu_generator)
            batch = {k: torch.cat([off[k], on[k]]) for k in off}
        batch["obs"], batch["next_obs"] = self._norm(batch["obs"]), self._norm(batch["next_obs"])
        return batch

    def update_critic(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One TD step of every ensemble member toward y = r + discount * min_subset Qbar(s', OTF(s'))
        (module docstring, item 4), then the Polyak update of the target critic.

        Args:
            batch: from ``_batch``: obs/next_obs float32 [n, D] (normalised), action [n, hA],
                reward [n], discount [n].
        Returns:
            {"critic_loss", "q", "target_q"} (floats).
        """
        with torch.no_grad():
            next_action = self.otf(batch["next_obs"], use_ema=False)[0]
            next_q = self.target_critic.module(batch["next_obs"], next_action, self._subset()).min(0).values
            target = batch["reward"] + batch["discount"] * next_q
        q = self.critic_ensemble(batch["obs"], batch["action"])             # [E, B]
        loss = ((q - target) ** 2).mean()
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        self.target_critic.update_parameters(self.critic_ensemble)
        self.grad_steps += 1
        return {"critic_loss": loss.item(), "q": q.detach().mean().item(), "target_q": target.mean().item()}

    def update_base(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One imitation step of the base policy on ``batch["obs"]``/``batch["action"]`` (L_b of the
        module docstring; no Q gradient), the lr schedule step, then the EMA update. Returns {"base_loss"}."""
        loss = self.base.loss(batch["obs"], batch["action"], self.generator)
        self.base_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.base_opt.step()
        self.base_sched.step()
        self.ema_denoiser.update_parameters(self.base.denoiser)
        return {"base_loss": loss.item()}

    def update_edit(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One SAC-style step of the edit policy on replay actions (L_e of the module docstring),
        then the temperature step toward ``target_entropy``.

        Returns:
            {"edit_loss", "edit_q", "entropy", "temperature", "edit_magnitude"} (floats).
        """
        obs, a = batch["obs"], batch["action"]
        a_hat, log_prob = self.edit_policy(obs, a, self.generator)
        log_prob = log_prob - self.action_dim * math.log(self.edit_scale)   # density of beta * a_hat
        edited = (a + self.edit_scale * a_hat).clamp(-1.0, 1.0)
        q = self.critic_ensemble(obs, edited).mean(0)                        # mean over the whole ensemble
        alpha = self.log_temperature.exp().detach()
        loss = (alpha * log_prob - q).mean()
        self.edit_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.edit_opt.step()
        self.critic_opt.zero_grad(set_to_none=True)  # the Q gradient reached the critic: drop it
        entropy = -log_prob.detach().mean()
        temp_loss = self.log_temperature.exp() * (entropy - self.target_entropy)
        self.temperature_opt.zero_grad(set_to_none=True)
        temp_loss.backward()
        self.temperature_opt.step()
        return {"edit_loss": loss.item(), "edit_q": float(q.mean().detach()), "entropy": float(entropy),
                "temperature": self.log_temperature.detach().exp().item(),
                "edit_magnitude": float((self.edit_scale * a_hat).abs().mean().detach())}

    def update_round(self, critic: bool = True, base: bool = True, edit: bool = True) -> dict[str, float]:
        """RLPD/EXPO schedule: ``utd_ratio`` critic steps on fresh mixed batches, then one base and one
        edit + temperature step on the last batch."""
        metrics: dict[str, float] = {}
        batch = None
        for _ in range(self.utd_ratio if critic else 1):
            batch = self._batch(self.batch_size)
            if critic:
                metrics.update(self.update_critic(batch))
        if base:
            metrics.update(self.update_base(batch))
        if edit and self.num_edit_samples > 0:
            metrics.update(self.update_edit(batch))
        return metrics

    def pretrain(self) -> dict[str, float]:
        """Offline start: ``pretrain_steps`` rounds on offline data only (base always; critic and edit
        policy when ``pretrain_critic`` / ``pretrain_edit``). Runs once; returns the last metrics,
        prefixed ``pretrain/``.

        Raises:
            ValueError: ``pretrain_steps`` > 0 and no offline data.
        """
        metrics: dict[str, float] = {}
        if self.pretrained:
            return metrics
        if self.offline is None:
            raise ValueError(f"pretrain_steps={self.pretrain_steps} > 0 needs offline data (offline_data files "
                             "or set_offline_episodes)")
        from tqdm import trange

        for _ in trange(self.pretrain_steps, desc="expo pretrain", leave=False, disable=None):
            metrics = self.update_round(critic=self.pretrain_critic, base=True, edit=self.pretrain_edit)
        self.pretrained = True
        return {f"pretrain/{k}": v for k, v in metrics.items()}

    def _ensure_pretrained(self) -> None:
        if not self.pretrained:
            self.pretrain()

    def update(self) -> dict[str, float]:
        """One update round per environment step observed since the last call, once ``start_training``
        steps are in; returns the last round's metrics (empty when it did not train).

        Raises:
            FloatingPointError: a metric became NaN/inf (named).
        """
        metrics = self.pretrain() if not self.pretrained else {}
        if self.env_steps < self.start_training or len(self.online) == 0:
            self.pending_steps = 0
            return metrics
        rounds, self.pending_steps = self.pending_steps, 0
        for _ in range(rounds):
            metrics.update(self.update_round())
        if rounds:
            metrics["grad_steps"] = float(self.grad_steps)
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            raise FloatingPointError(f"EXPO update produced non-finite {', '.join(bad)}: {metrics}")
        return metrics

    # ---------------------------------------------------------------------------------------------
    # checkpoints
    # ---------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Networks (online, EMA, target), optimizers and lr schedule, temperature, online replay,
        normaliser, counters, both generators and the per-env chunk state. The offline buffer is
        not saved: it is rebuilt from ``offline_data``."""
        return {
            "base": self.base.state_dict(), "ema_denoiser": self.ema_denoiser.state_dict(),
            "edit_policy": self.edit_policy.state_dict(), "critic_ensemble": self.critic_ensemble.state_dict(),
            "target_critic": self.target_critic.state_dict(), "log_temperature": self.log_temperature.detach().clone(),
            # optimizer state dicts hold references to live moment tensors: copy them
            "base_opt": copy.deepcopy(self.base_opt.state_dict()), "base_sched": self.base_sched.state_dict(),
            "edit_opt": copy.deepcopy(self.edit_opt.state_dict()),
            "critic_opt": copy.deepcopy(self.critic_opt.state_dict()),
            "temperature_opt": copy.deepcopy(self.temperature_opt.state_dict()),
            "online": self.online.state_dict(),
            "normalizer": self.normalizer.state_dict() if self.normalizer is not None else {},
            "counters": {"env_steps": self.env_steps, "pending_steps": self.pending_steps,
                         "grad_steps": self.grad_steps, "pretrained": self.pretrained},
            "generator": self.generator.get_state(), "cpu_generator": self.cpu_generator.get_state(),
            "chunk": {"plan": self._plan.clone(), "plan_step": self._plan_step.clone(),
                      "obs": self._chunk_obs.clone(), "reward": self._chunk_reward.clone(),
                      "discount": self._chunk_discount.clone()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict` (torch's errors for mismatched networks)."""
        self.base.load_state_dict(state["base"])
        self.ema_denoiser.load_state_dict(state["ema_denoiser"])
        self.edit_policy.load_state_dict(state["edit_policy"])
        self.critic_ensemble.load_state_dict(state["critic_ensemble"])
        self.target_critic.load_state_dict(state["target_critic"])
        with torch.no_grad():
            self.log_temperature.copy_(state["log_temperature"])
        for name in ("base_opt", "base_sched", "edit_opt", "critic_opt", "temperature_opt"):
            getattr(self, name).load_state_dict(state[name])
        self.online.load_state_dict(state["online"])
        if self.normalizer is not None:
            self.normalizer.load_state_dict(state["normalizer"])
        c = state["counters"]
        self.env_steps, self.pending_steps, self.grad_steps = int(c["env_steps"]), int(c["pending_steps"]), int(c["grad_steps"])
        self.pretrained = bool(c["pretrained"])
        self.generator.set_state(state["generator"])
        self.cpu_generator.set_state(state["cpu_generator"])
        ch = state["chunk"]
        self._plan.copy_(ch["plan"]); self._plan_step.copy_(ch["plan_step"])  # noqa: E702
        self._chunk_obs.copy_(ch["obs"]); self._chunk_reward.copy_(ch["reward"])  # noqa: E702
        self._chunk_discount.copy_(ch["discount"])

    # ---------------------------------------------------------------------------------------------
    def _check_obs(self, obs, name: str = "obs", batch: int | None = None) -> torch.Tensor:
        """States (tensor or array-like) [B, D] (B = ``batch`` when given) -> float32 [B, D] on the
        learner's device (:func:`basics.checks.check_states`: ValueError for a wrong shape or NaN/inf)."""
        x = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        return check_states(name, x, self.obs_dim, batch)
