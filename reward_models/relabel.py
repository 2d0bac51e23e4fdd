"""One reward for every transition: offline episodes relabelled with the run's reward.

A learner that mixes offline episodes (``dopa demos``) into its batches (EXPO, RLPD) must see the
same reward function on them as on its online transitions. Online, every transition gets the
shaper's reward (:class:`reward_models.shaping.RewardShaper`: ``c * (r_gold + gamma Phi(s') - Phi(s))``
with ``reward=grm``, ``c * r_gold`` with ``reward=sparse``, ...). Stored episodes hold the
environment's own reward. Fitting one critic to two reward functions (a 50/50 batch of each)
breaks the policy invariance that potential-based shaping promises, and biases the learner
toward the demonstrated actions. :func:`relabel_episode` runs the *same* shaper over an
episode's stored frames and states, so an offline transition and the online one of the same
trajectory get the same reward.

Per step t of an episode of T actions (frames 0..T):

- the potential is queried on every frame (``query_every`` 1; the tracker is reset at frame 0);
- ``success`` of step t is the recorded ground-truth progress of frame t+1 reaching 1 (the
  simulator's ``info["success"]``), or, in a file without progress, the episode's success flag
  on its last step only;
- the last step is a time-limit truncation (Phi(s_T) kept) unless ``done_is_terminal`` and the
  episode's last ``done`` is set (a true terminal: Phi(s_T) := 0), as the learner treats it.

:func:`relabel_files` does this for episode files and caches the rewards beside each file
(``<file>.rewards/<key>.npz``, ``key`` from the caller: the reward settings and the GRM
checkpoint), so a rerun or a resume does not run the reward model again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from basics.atomic import atomic_file
from reward_models.shaping import RewardShaper
from sim.episodes import Episode, read_episodes

__all__ = ["relabel_episode", "relabel_files", "relabel_key", "cache_path"]


def _obs(ep: Episode, t: int, views: Sequence[str]) -> dict:
    obs = {"state": torch.as_tensor(np.asarray(ep.states[t:t + 1], dtype=np.float32)),
           "images": {v: torch.as_tensor(np.asarray(ep.frames[v][t:t + 1])) for v in views}}
    if ep.progress is not None and len(ep.progress):
        obs["progress"] = torch.as_tensor(np.asarray(ep.progress[t:t + 1], dtype=np.float32))
    return obs


def relabel_episode(ep: Episode, shaper: RewardShaper, done_is_terminal: bool = False) -> np.ndarray:
    """The learning reward of every transition of one episode, as the online loop would give it.

    Args:
        ep: an episode with ``states`` float32 [T+1, D], ``rewards`` float32 [T] (the task's own,
            used by ``reward=dense``), ``dones`` [T], ``progress`` float32 [T+1] (may be empty), and
            ``frames[view]`` uint8 [T+1, H, W, 3] for each of ``shaper.views``.
        shaper: a shaper for ONE env (its potential built with ``num_envs=1``) that queries every
            step (``query_every`` 1); :meth:`RewardShaper.start` is called here, so it may be reused
            from one episode to the next.
        done_is_terminal: the episode's last ``done`` is a true terminal (Phi(s_T) := 0).
    Returns:
        float32 [T] rewards.
    Raises:
        ValueError: a shaper that skips queries, an episode without a view the potential needs
            (naming the episode, the view and the stored ones), or the shaper's own errors.
    """
    if shaper.query_every != 1:
        raise ValueError(f"relabelling queries the potential on every frame; got a shaper with "
                         f"query_every={shaper.query_every}")
    views = tuple(shaper.views)
    missing = [v for v in views if v not in ep.frames]
    if missing:
        raise ValueError(f"episode {ep.name or '?'}: the potential needs view(s) {missing}; the episode has "
                         f"{sorted(ep.frames)}")
    t_len = int(ep.actions.shape[0])
    has_progress = ep.progress is not None and len(ep.progress) == t_len + 1
    shaper.start(_obs(ep, 0, views))
    out = np.zeros(t_len, dtype=np.float32)
    for t in range(t_len):
        last = t == t_len - 1
        nxt = _obs(ep, t + 1, views)
        success = bool(ep.progress[t + 1] >= 1.0 - 1e-6) if has_progress else (last and bool(ep.success))
        terminated = last and done_is_terminal and bool(ep.dones[-1])
        reward, _ = shaper.step(torch.tensor([float(ep.rewards[t])]), nxt, torch.tensor([terminated]),
                                torch.tensor([last and not terminated]), torch.tensor([success]),
                                reset_obs=nxt)
        out[t] = float(reward[0])
    return out


def relabel_key(settings: dict, checkpoint: str | os.PathLike | None = None) -> str:
    """A cache key (16 hex digits) for the reward ``settings`` (a JSON-able dict: mode, gold, scale,
    gamma, the potential's config) and the reward-model ``checkpoint`` folder, whose files' names,
    sizes and modification times enter the key (a retrained model gets a new key)."""
    files = []
    if checkpoint is not None and Path(checkpoint).exists():
        root = Path(checkpoint)
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            st = f.stat()
            files.append([str(f.relative_to(root)), st.st_size, st.st_mtime_ns])
    blob = json.dumps({"settings": settings, "checkpoint": files}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_path(episode_file: str | os.PathLike, key: str) -> Path:
    """Where the relabelled rewards of ``episode_file`` under ``key`` are cached."""
    p = Path(episode_file)
    return p.with_name(p.name + ".rewards") / f"{key}.npz"


def _load_cache(path: Path, eps: list[Episode]) -> bool:
    try:
        with np.load(path) as z:
            rewards = [np.asarray(z[ep.name], dtype=np.float32) for ep in eps]
    except (OSError, KeyError, ValueError):
        return False
    if any(r.shape != (ep.num_steps,) or not np.isfinite(r).all() for r, ep in zip(rewards, eps, strict=True)):
        return False
    for ep, r in zip(eps, rewards, strict=True):
        ep.rewards = r
    return True


def relabel_files(paths: Sequence[str | os.PathLike], make_shaper: Callable[[], RewardShaper], *,
                  done_is_terminal: bool = False, key: str | None = None,
                  image_size: int | None = None, log: Callable[[str], None] = print) -> list[Episode]:
    """The episodes of every file in ``paths`` (states only, in order) with relabelled ``rewards``.

    Args:
        paths: episode files (``dopa demos``).
        make_shaper: builds the one-env shaper (see :func:`relabel_episode`); called once, and only
            when some file is not cached.
        done_is_terminal: as the learner's ``offline_done_is_terminal``.
        key: cache key (:func:`relabel_key`); None: no cache. A cache that cannot be written (a
            read-only data folder) is skipped with one line.
        image_size: pixels per side of the potential's frames (the files must store them so).
    Returns:
        list of :class:`sim.episodes.Episode` without frames; ``rewards`` float32 [T] relabelled.
    Raises:
        FileNotFoundError, ValueError, sim.episodes.EpisodeFileError: unreadable files (named), or
            the errors of :func:`relabel_episode`.
    """
    out: list[Episode] = []
    shaper = None
    for p in paths:
        eps = read_episodes(p, views=())
        cached = cache_path(p, key) if key else None
        if cached is not None and cached.exists() and _load_cache(cached, eps):
            out.extend(eps)
            continue
        if shaper is None:
            shaper = make_shaper()
        if shaper.views:  # frames only when the potential looks at them
            eps = read_episodes(p, views=list(shaper.views), image_size=image_size)
        for ep in eps:
            ep.rewards = relabel_episode(ep, shaper, done_is_terminal)
            ep.frames = {}
        if cached is not None:
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                with atomic_file(cached, suffix=".npz") as tmp:
                    np.savez(tmp, **{ep.name: ep.rewards for ep in eps})
            except OSError as exc:
                log(f"relabelled rewards not cached beside {p}: {exc}")
        out.extend(eps)
    return out
