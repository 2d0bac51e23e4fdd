"""Offline data of EXPO (:mod:`control.expo`) and RLPD (:class:`control.sac.RLPDConfig`): episode
files -> (chunk) transitions for :class:`control.buffers.ReplayBuffer`.

Episode files are the ones ``dopa demos`` writes, read with the project's one reader,
:func:`sim.episodes.read_episodes` (states only).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from sim.episodes import Episode, read_episodes

__all__ = ["TRANSITION_FIELDS", "episodes_to_transitions", "read_offline_data"]

TRANSITION_FIELDS = ("obs", "action", "reward", "next_obs", "discount")


def read_offline_data(paths: Sequence[str]) -> list[Episode]:
    """The episodes of every file in ``paths``, in order (states, actions, rewards, dones; no images).

    Raises:
        FileNotFoundError: files that do not exist (all of them named).
        sim.episodes.EpisodeFileError: an unreadable or inconsistent file.
    """
    paths = [str(p) for p in paths]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"offline data file(s) {missing} do not exist")
    return [ep for p in paths for ep in read_episodes(p, views=())]


def episodes_to_transitions(episodes, horizon: int = 1, gamma: float = 0.99,
                            done_is_terminal: bool = False) -> dict[str, torch.Tensor]:
    """Turn episodes into (chunk) transitions in the layout of a discount :class:`control.buffers.ReplayBuffer`.

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
    out = {k: [] for k in TRANSITION_FIELDS}
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
