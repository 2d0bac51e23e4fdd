"""Replay and rollout buffers (torch tensors, preallocated, saved whole in checkpoints).

- :class:`ReplayBuffer`: FIFO ring of transitions for the off-policy learners, SAC
  (:class:`control.sac.SAC`) and EXPO (:class:`control.expo.EXPO`). SAC stores ``terminated`` only
  (time-limit truncations are bootstrapped from ``next_obs``); EXPO stores a per-transition
  ``discount`` (gamma^k for a chunk of k steps, 0 at a true terminal).
- :class:`RolloutBuffer`: ``T x B`` on-policy rollout with GAE(lambda) (Schulman et al. 2016,
  eq. 16) for PPO and GoRL's encoder. Truncations are bootstrapped by adding
  ``gamma * V(final state)`` to the reward of the truncated step (the loop gives the final state).

Both expose ``state_dict()`` / ``load_state_dict()`` with plain tensors (safetensors-ready), so a
resumed run continues with the exact same data. Bad sizes and batches raise ``ValueError`` naming
the field, its shape and the expected one.
"""

from __future__ import annotations

import torch

from basics.checks import check_float, check_int


def _check_batch(name: str, x: torch.Tensor, shape: tuple) -> torch.Tensor:
    """``x`` unchanged when its shape is ``shape`` and it is finite; else ValueError naming ``name``."""
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {tuple(shape)}")
    if torch.is_floating_point(x) and not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


class ReplayBuffer:
    """Ring buffer of ``(obs, action, reward, next_obs, terminated | discount)``: the replay of SAC
    and EXPO.

    Storage: ``obs``/``next_obs`` float32 [capacity, D], ``action`` float32 [capacity, A],
    ``reward`` float32 [capacity], and either ``terminated`` bool [capacity] (SAC: the learner
    applies gamma) or, with ``discount=True``, ``discount`` float32 [capacity], the factor of the
    bootstrap term of each transition: gamma^k (1 - terminal) for a chunk of k executed steps whose
    ``reward`` is the discounted sum of its k rewards (EXPO's action chunks).

    Args:
        capacity: maximum number of single transitions kept (oldest overwritten), >= 1.
        obs_dim: D >= 1.  action_dim: A >= 1.  device: where tensors live.
        discount: store a per-transition ``discount`` instead of ``terminated``.
    Raises:
        ValueError: a size < 1 (named).
    """

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, device="cpu", discount: bool = False):
        self.capacity = check_int("capacity", capacity, 1)
        self.obs_dim, self.action_dim = check_int("obs_dim", obs_dim, 1), check_int("action_dim", action_dim, 1)
        self.device = torch.device(device)
        self.end_field = "discount" if discount else "terminated"
        self.FIELDS = ("obs", "action", "reward", "next_obs", self.end_field)
        self.obs = torch.zeros(self.capacity, self.obs_dim, device=self.device)
        self.action = torch.zeros(self.capacity, self.action_dim, device=self.device)
        self.reward = torch.zeros(self.capacity, device=self.device)
        self.next_obs = torch.zeros(self.capacity, self.obs_dim, device=self.device)
        if discount:
            self.discount = torch.zeros(self.capacity, device=self.device)
        else:
            self.terminated = torch.zeros(self.capacity, dtype=torch.bool, device=self.device)
        self.ptr, self.size = 0, 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs, action, reward, next_obs, terminated=None, *, discount=None) -> None:
        """Add a batch of N transitions: obs/next_obs float32 [N, D], action [N, A], reward [N], and
        ``terminated`` bool [N] or (a buffer built with ``discount=True``) ``discount`` float32 [N].

        Raises:
            ValueError: wrong shapes or NaN/inf (the field named), or the end field the buffer does
                not store (``terminated`` for a discount buffer, ``discount`` for the other).
        """
        end = discount if self.end_field == "discount" else terminated
        other = terminated if self.end_field == "discount" else discount
        if end is None or other is not None:
            raise ValueError(f"this replay buffer stores {self.end_field!r}: pass it "
                             f"(and not {'terminated' if self.end_field == 'discount' else 'discount'})")
        n = obs.shape[0]
        _check_batch("obs", obs, (n, self.obs_dim))
        _check_batch("action", action, (n, self.action_dim))
        _check_batch("reward", reward, (n,))
        _check_batch("next_obs", next_obs, (n, self.obs_dim))
        _check_batch(self.end_field, end, (n,))
        idx = (self.ptr + torch.arange(n)) % self.capacity
        idx = idx.to(self.device)
        self.obs[idx] = obs.to(self.device, torch.float32)
        self.action[idx] = action.to(self.device, torch.float32)
        self.reward[idx] = reward.to(self.device, torch.float32)
        self.next_obs[idx] = next_obs.to(self.device, torch.float32)
        store = getattr(self, self.end_field)
        store[idx] = end.to(self.device, store.dtype)
        self.ptr = int((self.ptr + n) % self.capacity)
        self.size = int(min(self.size + n, self.capacity))

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Uniform sample with replacement (one ``torch.randint`` draw from ``generator``): dict of
        the FIELDS, each with leading dim ``batch_size`` (shapes and dtypes as stored).

        Raises:
            ValueError: ``batch_size`` < 1.
            RuntimeError: the buffer is empty.
        """
        check_int("batch_size", batch_size, 1)
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        idx = torch.randint(0, self.size, (int(batch_size),), generator=generator).to(self.device)
        return {f: getattr(self, f)[idx] for f in self.FIELDS}

    def state_dict(self) -> dict:
        """The filled part of the buffer plus the write pointer (tensors and ints)."""
        out = {f: getattr(self, f)[: self.size].clone() for f in self.FIELDS}
        out.update(ptr=self.ptr, size=self.size, capacity=self.capacity)
        return out

    def load_state_dict(self, state: dict) -> None:
        """Raises ValueError when the saved capacity or shapes differ (both named)."""
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"replay buffer capacity {int(state['capacity'])} in checkpoint, {self.capacity} configured")
        size = int(state["size"])
        for f in self.FIELDS:
            src = state[f]
            dst = getattr(self, f)
            if tuple(src.shape[1:]) != tuple(dst.shape[1:]):
                raise ValueError(f"replay buffer {f} rows have shape {tuple(src.shape[1:])} in checkpoint, "
                                 f"{tuple(dst.shape[1:])} here")
            dst.zero_()
            dst[:size] = src.to(self.device, dst.dtype)
        self.size, self.ptr = size, int(state["ptr"])


class RolloutBuffer:
    """``num_steps x num_envs`` rollout for on-policy learners, with GAE.

    Stored per step (all float32): obs [T, B, D], action [T, B, A], log_prob [T, B] (nats),
    value [T, B], reward [T, B], done [T, B] (1.0 when the episode ended after this step: terminated
    or truncated), plus ``extra`` tensors a learner wants kept (e.g. GoRL's ``latent`` [T, B, A]);
    ``last_next_obs`` [B, D] is the state after the latest step (for the bootstrap value).

    Args:
        num_steps: T >= 1.  num_envs: B >= 1.  obs_dim: D >= 1.  action_dim: A >= 1.  device.
    Raises:
        ValueError: a size < 1 (named).
    """

    def __init__(self, num_steps: int, num_envs: int, obs_dim: int, action_dim: int, device="cpu"):
        self.T, self.B = check_int("num_steps", num_steps, 1), check_int("num_envs", num_envs, 1)
        self.obs_dim, self.action_dim = check_int("obs_dim", obs_dim, 1), check_int("action_dim", action_dim, 1)
        self.device = torch.device(device)
        T, B = self.T, self.B
        self.obs = torch.zeros(T, B, self.obs_dim, device=self.device)
        self.action = torch.zeros(T, B, self.action_dim, device=self.device)
        self.log_prob = torch.zeros(T, B, device=self.device)
        self.value = torch.zeros(T, B, device=self.device)
        self.reward = torch.zeros(T, B, device=self.device)
        self.done = torch.zeros(T, B, device=self.device)
        self.extra: dict[str, torch.Tensor] = {}
        self.last_next_obs = torch.zeros(B, self.obs_dim, device=self.device)
        self.t = 0

    @property
    def full(self) -> bool:
        """True once T steps are stored (then :meth:`compute_gae`, use, :meth:`clear`)."""
        return self.t >= self.T

    def add(self, obs, action, log_prob, value, reward, done, next_obs, **extra) -> None:
        """Add one step for all B envs: obs float32 [B, D], action [B, A], log_prob [B], value [B],
        reward [B], done bool [B], next_obs [B, D]; each ``extra`` tensor has leading dim B.

        Raises:
            RuntimeError: the buffer is full.
            ValueError: a field with the wrong shape or NaN/inf (named with both shapes).
        """
        if self.full:
            raise RuntimeError(f"rollout buffer is full ({self.T} steps); compute GAE and clear it first")
        t, B = self.t, self.B
        self.obs[t] = _check_batch("obs", obs, (B, self.obs_dim))
        self.action[t] = _check_batch("action", action, (B, self.action_dim))
        self.log_prob[t] = _check_batch("log_prob", log_prob, (B,))
        self.value[t] = _check_batch("value", value, (B,))
        self.reward[t] = _check_batch("reward", reward, (B,))
        self.done[t] = _check_batch("done", done, (B,)).float()
        self.last_next_obs = _check_batch("next_obs", next_obs, (B, self.obs_dim)).detach().clone()
        for k, v in extra.items():
            if v.ndim < 1 or v.shape[0] != B or (k in self.extra and tuple(self.extra[k].shape[1:]) != tuple(v.shape)):
                want = f"({B}, ...)" if k not in self.extra else str(tuple(self.extra[k].shape[1:]))
                raise ValueError(f"extra {k!r} has shape {tuple(v.shape)}, expected {want}")
            if k not in self.extra:
                self.extra[k] = torch.zeros((self.T, *v.shape), dtype=v.dtype, device=self.device)
            self.extra[k][t] = v
        self.t += 1

    def compute_gae(self, last_value: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE(lambda) (Schulman et al. 2016, eq. 16): advantage float32 [T, B] and return
        target float32 [T, B] (= advantage + value).

        ``last_value`` float32 [B] is V of the state after the last step (``last_next_obs``); steps
        whose ``done`` is set do not bootstrap across the episode boundary.

        Raises:
            ValueError: ``last_value`` not [B], ``gamma`` outside [0, 1] or ``lam`` outside [0, 1].
        """
        _check_batch("last_value", last_value, (self.B,))
        check_float("gamma", gamma, 0.0, 1.0)
        check_float("lam", lam, 0.0, 1.0)
        adv = torch.zeros_like(self.reward)
        last = torch.zeros(self.B, device=self.device)
        for t in reversed(range(self.T)):
            next_value = last_value if t == self.T - 1 else self.value[t + 1]
            nonterminal = 1.0 - self.done[t]
            delta = self.reward[t] + gamma * next_value * nonterminal - self.value[t]
            last = delta + gamma * lam * nonterminal * last
            adv[t] = last
        return adv, adv + self.value

    def clear(self) -> None:
        """Start a new rollout (the tensors are overwritten by the next T steps)."""
        self.t = 0

    def state_dict(self) -> dict:
        """Copies of every stored tensor (shapes as in the class docstring), ``extra`` and the step ``t``."""
        out = {k: getattr(self, k).clone() for k in ("obs", "action", "log_prob", "value", "reward", "done",
                                                      "last_next_obs")}
        out["extra"] = {k: v.clone() for k, v in self.extra.items()}
        out["t"] = self.t
        return out

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`. Raises ValueError when a saved tensor's shape differs (named)."""
        for k in ("obs", "action", "log_prob", "value", "reward", "done", "last_next_obs"):
            dst = getattr(self, k)
            if tuple(state[k].shape) != tuple(dst.shape):
                raise ValueError(f"rollout buffer {k} has shape {tuple(state[k].shape)} in checkpoint, "
                                 f"{tuple(dst.shape)} here")
            dst.copy_(state[k])
        self.extra = {k: v.clone() for k, v in state.get("extra", {}).items()}
        self.t = int(state["t"])
