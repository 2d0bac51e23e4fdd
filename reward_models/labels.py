"""Hop labels, step-wise discretization and the balanced pair sampler of Robo-Dopamine (§3.1.1).

Hop (relative progress, Robo-Dopamine Eq. 2). For a pair of sampled states p -> q with progress
Phi_p, Phi_q in [0, 1] (Phi_0 = 0 the start, Phi_M = 1 the goal):

    q >= p:  H = (Phi_q - Phi_p) / (Phi_M - Phi_p)     the gain as a share of what was left
    q <  p:  H = (Phi_q - Phi_p) / (Phi_p - Phi_0)     the loss as a share of what was done

so H is in [-1, 1]. The 0/0 cases (a forward hop from the goal, a backward hop from the start)
are 0: nothing was left to gain or to lose.

Step-wise discretization (Eq. 1): keyframes split a demonstration into N sub-tasks and every
sub-task gets the same number of sampled frames, so each is worth 1/N of progress whatever its
duration.

Pair sampling (App. B.3): pairs are drawn balanced over ``hop_bins`` (25) hop bins on [-1, 1] and
``gap_bins`` (4) time-gap bins inside each, plus a ``zero_ratio`` (5%) share of zero-hop pairs
(the same state twice, labelled 0).
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["hop_label", "stepwise_sample", "stepwise_progress", "SampledEpisode", "BalancedPairSampler"]


def hop_label(phi_p, phi_q, phi_start: float = 0.0, phi_goal: float = 1.0) -> np.ndarray:
    """The ground-truth hop from progress ``phi_p`` to ``phi_q`` (Robo-Dopamine Eq. 2).

    Args:
        phi_p, phi_q: progress of the BEFORE and AFTER states, float arrays of one shape (or
            scalars), each in [phi_start, phi_goal].
        phi_start, phi_goal: progress of the start and goal states (0 and 1 by default).
    Returns:
        float32 array of the broadcast shape, in [-1, 1]. Forward: (q - p) / (goal - p);
        backward: (q - p) / (p - start); 0 where the denominator is 0 (from the goal forwards,
        from the start backwards).
    Raises:
        ValueError: NaN inputs, or progress outside [phi_start, phi_goal].
    """
    p = np.asarray(phi_p, dtype=np.float64)
    q = np.asarray(phi_q, dtype=np.float64)
    if not phi_goal > phi_start:
        raise ValueError(f"phi_goal ({phi_goal}) must be greater than phi_start ({phi_start})")
    for name, x in (("phi_p", p), ("phi_q", q)):
        if np.isnan(x).any():
            raise ValueError(f"{name} holds NaN")
        tol = 1e-6
        if (x < phi_start - tol).any() or (x > phi_goal + tol).any():
            raise ValueError(f"{name} must lie in [{phi_start}, {phi_goal}], got values in "
                             f"[{x.min():.4g}, {x.max():.4g}]")
    p = np.clip(p, phi_start, phi_goal)
    q = np.clip(q, phi_start, phi_goal)
    diff = q - p
    denom = np.where(diff >= 0, phi_goal - p, p - phi_start)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(denom > 0, diff / np.where(denom > 0, denom, 1.0), 0.0)
    return np.clip(h, -1.0, 1.0).astype(np.float32)


def _check_keyframes(num_frames: int, keyframes) -> np.ndarray:
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 2:
        raise ValueError(f"an episode needs at least 2 frames, got num_frames={num_frames!r}")
    k = np.asarray(list(keyframes), dtype=np.int64).ravel()
    last = num_frames - 1
    if k.size and (k.min() < 1 or k.max() > last):
        raise ValueError(f"keyframes must lie in [1, {last}] (frame indices of a {num_frames}-frame "
                         f"episode), got {k.tolist()}")
    if k.size > 1 and not (np.diff(k) > 0).all():
        raise ValueError(f"keyframes must be strictly increasing, got {k.tolist()}")
    return k


def stepwise_progress(num_frames: int, keyframes, num_subtasks: int | None = None) -> np.ndarray:
    """Dense step-wise progress of every frame: linear inside each sub-task, 1/N per sub-task.

    Args:
        num_frames: frames in the episode (T + 1 for T actions), >= 2.
        keyframes: strictly increasing frame indices in [1, num_frames - 1] where each completed
            sub-task ended.
        num_subtasks: N, the task's number of sub-tasks (default: ``len(keyframes)``, i.e. all done).
    Returns:
        float32 [num_frames] in [0, 1]; frames after the last keyframe hold its progress (1 when
        all N sub-tasks are done). With no keyframes progress is 0 throughout.
    Raises:
        ValueError: fewer than 2 frames, bad keyframes, or more keyframes than sub-tasks.
    """
    k = _check_keyframes(num_frames, keyframes)
    n = int(num_subtasks) if num_subtasks is not None else int(k.size)
    if n < max(1, k.size):
        raise ValueError(f"num_subtasks={num_subtasks} is smaller than the {k.size} keyframes given")
    bounds = np.concatenate([[0], k]).astype(np.float64)
    values = np.arange(k.size + 1, dtype=np.float64) / n
    t = np.arange(num_frames, dtype=np.float64)
    return np.interp(t, bounds, values).astype(np.float32)


def stepwise_sample(num_frames: int, keyframes, samples_per_subtask: int, num_subtasks: int | None = None,
                    progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Step-wise discretization (Robo-Dopamine Eq. 1): the same number of frames from every sub-task.

    Each segment [k_{j-1}, k_j] (k_0 = 0) gets ``samples_per_subtask`` + 1 evenly spaced frames
    (its two ends shared with the neighbours). Frames after the last keyframe form one more segment
    sampled the same way when ``progress`` is given or all N sub-tasks are done (the goal held);
    otherwise they are left out, their progress being unknown.

    Args:
        num_frames: T + 1, >= 2.
        keyframes: strictly increasing frame indices in [1, num_frames - 1].
        samples_per_subtask: m >= 1.
        num_subtasks: N (default ``len(keyframes)``).
        progress: optional float [num_frames] ground truth in [0, 1] (e.g. an episode's physics
            progress, which falls when progress is undone); used for the sampled frames' values.
    Returns:
        (frame indices int64 [M + 1] strictly increasing, progress float32 [M + 1]); without
        ``progress`` the values are i/M-style step-wise values, j/N at keyframe j.
    Raises:
        ValueError: fewer than 2 frames, bad keyframes, m < 1, wrong ``progress`` length or NaN.
    """
    k = _check_keyframes(num_frames, keyframes)
    m = int(samples_per_subtask)
    if m < 1:
        raise ValueError(f"samples_per_subtask must be >= 1, got {samples_per_subtask!r}")
    n = int(num_subtasks) if num_subtasks is not None else int(k.size)
    if progress is not None:
        progress = np.asarray(progress, dtype=np.float32).ravel()
        if progress.shape[0] != num_frames:
            raise ValueError(f"progress has {progress.shape[0]} values for {num_frames} frames")
        if np.isnan(progress).any():
            raise ValueError("progress holds NaN")
    last = num_frames - 1
    bounds = [0, *k.tolist()]
    if bounds[-1] < last and (progress is not None or (k.size >= n and n > 0)):
        bounds.append(last)
    if len(bounds) == 1:  # no keyframe and no ground truth: the whole episode is one segment
        if progress is None:
            raise ValueError("an episode with no keyframes needs its ground-truth progress")
        bounds.append(last)
    idx = [0]
    for a, b in zip(bounds[:-1], bounds[1:], strict=False):
        seg = np.rint(np.linspace(a, b, m + 1)).astype(np.int64)[1:]
        idx.extend(seg.tolist())
    idx = np.unique(np.asarray(idx, dtype=np.int64))
    if progress is not None:
        phi = progress[idx]
    else:
        phi = stepwise_progress(num_frames, k, n)[idx]
    return idx, np.clip(phi, 0.0, 1.0).astype(np.float32)


@dataclasses.dataclass
class SampledEpisode:
    """One episode's sampled frames: ``frames`` int64 [M + 1] frame indices, ``progress`` float32 [M + 1]."""

    frames: np.ndarray
    progress: np.ndarray


class BalancedPairSampler:
    """Training pairs balanced over hop bins and time-gap bins, plus zero-hop pairs (App. B.3).

    All ordered pairs (p, q), p != q, of sampled frames inside each episode are enumerated once;
    each is put in a (hop bin, gap bin) cell, hop bins splitting [-1, 1] into ``hop_bins`` equal
    parts and gap bins splitting the normalised time gap |i_q - i_p| / M (sample-index units,
    (0, 1]) into ``gap_bins`` equal parts. ``sample(n)`` draws a cell uniformly among the non-empty
    ones, then a pair uniformly inside it; a ``zero_ratio`` share are zero-hop pairs (p = q, hop 0).

    Args:
        episodes: list of :class:`SampledEpisode` (at least one with two or more frames).
        hop_bins, gap_bins: numbers of bins (>= 1).
        zero_ratio: share of zero-hop pairs in [0, 1).
        seed: for the sampler's own ``numpy.random.Generator``.
    Raises:
        ValueError: no episode with two frames, or bad bin counts / ratio.
    """

    def __init__(self, episodes: list[SampledEpisode], hop_bins: int = 25, gap_bins: int = 4,
                 zero_ratio: float = 0.05, seed: int = 0):
        if int(hop_bins) < 1 or int(gap_bins) < 1:
            raise ValueError(f"hop_bins and gap_bins must be >= 1, got {hop_bins}, {gap_bins}")
        if not 0.0 <= float(zero_ratio) < 1.0:
            raise ValueError(f"zero_ratio must be in [0, 1), got {zero_ratio}")
        self.hop_bins, self.gap_bins, self.zero_ratio = int(hop_bins), int(gap_bins), float(zero_ratio)
        self.rng = np.random.default_rng(seed)
        ep_ids, ps, qs, hops, cells = [], [], [], [], []
        self._singles = []  # (episode, frame) for zero-hop pairs
        for e, ep in enumerate(episodes):
            f = np.asarray(ep.frames, dtype=np.int64)
            phi = np.asarray(ep.progress, dtype=np.float32)
            if f.shape != phi.shape or f.ndim != 1:
                raise ValueError(f"episode {e}: frames {f.shape} and progress {phi.shape} must be equal 1-D")
            mlen = f.shape[0]
            self._singles += [(e, int(x)) for x in f]
            if mlen < 2:
                continue
            ii, jj = np.meshgrid(np.arange(mlen), np.arange(mlen), indexing="ij")
            off = ii != jj
            ii, jj = ii[off], jj[off]
            h = hop_label(phi[ii], phi[jj])
            gap = np.abs(jj - ii) / (mlen - 1)
            hb = np.minimum(((h + 1.0) / 2.0 * self.hop_bins).astype(np.int64), self.hop_bins - 1)
            gb = np.minimum(np.ceil(gap * self.gap_bins).astype(np.int64) - 1, self.gap_bins - 1)
            gb = np.maximum(gb, 0)
            ep_ids.append(np.full(ii.shape, e))
            ps.append(f[ii])
            qs.append(f[jj])
            hops.append(h)
            cells.append(hb * self.gap_bins + gb)
        if not ep_ids:
            raise ValueError("the pair sampler needs at least one episode with two or more sampled frames")
        self.episode = np.concatenate(ep_ids)
        self.before = np.concatenate(ps)
        self.after = np.concatenate(qs)
        self.hop = np.concatenate(hops).astype(np.float32)
        cell = np.concatenate(cells)
        order = np.argsort(cell, kind="stable")
        self._order = order
        self.cells, starts, counts = np.unique(cell[order], return_index=True, return_counts=True)
        self._starts, self._counts = starts, counts

    @property
    def num_pairs(self) -> int:
        """Number of distinct non-zero-gap pairs enumerated."""
        return int(self.hop.shape[0])

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Draw ``n`` pairs.

        Returns:
            (episode int64 [n], before frame int64 [n], after frame int64 [n], hop float32 [n]).
        """
        n = int(n)
        n_zero = int(self.rng.binomial(n, self.zero_ratio)) if self.zero_ratio > 0 else 0
        n_pair = n - n_zero
        c = self.rng.integers(0, self.cells.shape[0], n_pair)
        pick = self._order[self._starts[c] + (self.rng.random(n_pair) * self._counts[c]).astype(np.int64)]
        ep, b, a, h = self.episode[pick], self.before[pick], self.after[pick], self.hop[pick]
        if n_zero:
            z = self.rng.integers(0, len(self._singles), n_zero)
            zs = np.asarray([self._singles[i] for i in z], dtype=np.int64).reshape(-1, 2)
            ep = np.concatenate([ep, zs[:, 0]])
            b = np.concatenate([b, zs[:, 1]])
            a = np.concatenate([a, zs[:, 1]])
            h = np.concatenate([h, np.zeros(n_zero, np.float32)])
        perm = self.rng.permutation(n)
        return ep[perm].astype(np.int64), b[perm].astype(np.int64), a[perm].astype(np.int64), h[perm]
