"""Training pairs for the GRM: balanced hop pairs of step-wise discretized episode frames, with the
task text and reference start/goal frames (Robo-Dopamine §3.1.1 and App. B.3).

Each episode is discretized step-wise (:func:`sample_episode`: every sub-task between keyframes gets
the same number of frames, so each is worth 1/N; :func:`reward_models.labels.stepwise_sample`),
pairs are drawn by the balanced sampler (:class:`reward_models.labels.BalancedPairSampler`) and
labelled with Eq. 2 hops (:func:`reward_models.labels.hop_label`). :class:`HopData` adds the
reference frames (Robo-Dopamine's reference replacement) and the anchored pairs that ask what the
tracker asks (Eqs. 6-7); :func:`random_shift` is the image augmentation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from reward_models.labels import BalancedPairSampler, SampledEpisode, hop_label, stepwise_sample
from sim.episodes import Episode
from sim.tasks import get_task

__all__ = ["HopData", "MixedData", "sample_episode", "num_subtasks", "random_shift", "build_references"]


def num_subtasks(ep: Episode) -> int:
    """N for an episode: its task's sub-task count from ``sim.tasks``, else the sub-tasks its file
    (or :func:`reward_models.task_data.apply_keyframes`) states, else its keyframe count; >= 1."""
    try:
        n = len(get_task(ep.task).subtasks)
    except ValueError:
        n = len(getattr(ep, "subtasks", ()) or ())
    return max(n, len(ep.keyframes), 1)


def sample_episode(ep: Episode, samples_per_subtask: int | None = None, chunk: int = 2) -> SampledEpisode:
    """Step-wise discretized frames of one episode (m = max(2, round(T / (N * chunk))) by default).

    Labels come from the ground-truth progress, else the keyframes (j/N at keyframe j), else, for a
    successful episode, time-uniform progress i/M (Robo-Dopamine's labels without sub-task
    annotations: the whole episode is one sub-task).

    Raises:
        ValueError: a failed episode with neither ground-truth progress nor keyframes (named).
    """
    n = num_subtasks(ep)
    t = ep.num_frames - 1
    progress = ep.progress
    if progress is None and not len(ep.keyframes):
        if not ep.success:
            raise ValueError(f"{ep.task} {ep.name or 'episode'}: a failed episode without ground-truth progress "
                             "or keyframes has no hop labels (how far it got is unknown)")
        progress, n = np.linspace(0.0, 1.0, ep.num_frames, dtype=np.float32), 1
    m = samples_per_subtask or max(2, int(round(t / (n * chunk))))
    idx, phi = stepwise_sample(ep.num_frames, ep.keyframes, m, n, progress=progress)
    return SampledEpisode(idx, phi)


def random_shift(x: torch.Tensor, pad: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """Random translation by up to ``pad`` px (replicate padding), uint8 [N, H, W, 3] -> same."""
    if pad <= 0:
        return x
    n, h, w, _ = x.shape
    xp = F.pad(x.permute(0, 3, 1, 2).float(), (pad, pad, pad, pad), mode="replicate")
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
    out = xp[torch.arange(n)[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
    return out.permute(0, 2, 3, 1).to(torch.uint8)


class HopData:
    """Training pairs from episodes: balanced hop pairs with task text and reference frames.

    Args:
        episodes: list of :class:`sim.episodes.Episode` (all with the model's views, one image
            size; :func:`reward_models.episodes.read_episode_files`).
        views: the model's views; reference_view: the view of the reference frames.
        text_emb: {task_text: float32 [384]} (:func:`reward_models.text.text_embeddings`).
        replace_prob: chance that a pair's reference frames come from another successful episode
            of its task (else from its own episode, when that one succeeded).
        goal_pair_prob: share of pairs anchored on the reference goal frame, as the tracker's
            anchored queries are: the reference episode's last frame in every view as BEFORE and a
            frame of the pair's own episode as AFTER (the backward-anchored query, Eq. 7; 3 in 4
            of these), or the other way round (the reset's goal check; 1 in 4). Labels are
            Eq. 2 hops between the two frames' progress. Within-episode pairs alone never show
            the model another episode's goal frame as BEFORE, which is what Eq. 7 asks at
            inference.
        start_pair_prob: share of pairs anchored on the episode's own first frame (BEFORE), as the
            forward-anchored query (Eq. 6) is; the balanced sampler alone draws them rarely (one
            BEFORE frame in M).
    Raises:
        ValueError: ``replace_prob``, ``goal_pair_prob``, ``start_pair_prob`` or their sum
            outside [0, 1].
    """

    def __init__(self, episodes: list[Episode], views, reference_view: str, text_emb: dict,
                 hop_bins: int = 25, gap_bins: int = 4, zero_ratio: float = 0.05, replace_prob: float = 0.75,
                 samples_per_subtask: int | None = None, chunk: int = 2, seed: int = 0,
                 goal_pair_prob: float = 0.25, start_pair_prob: float = 0.15):
        for name, val in (("replace_prob", replace_prob), ("goal_pair_prob", goal_pair_prob),
                          ("start_pair_prob", start_pair_prob),
                          ("goal_pair_prob + start_pair_prob", float(goal_pair_prob) + float(start_pair_prob))):
            if not 0.0 <= float(val) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {val!r}")
        self.start_pair_prob = float(start_pair_prob)
        self.episodes = episodes
        self.views = tuple(views)
        self.reference_view = reference_view
        self.replace_prob = float(replace_prob)
        self.goal_pair_prob = float(goal_pair_prob)
        self.rng = np.random.default_rng(seed)
        self.frames = [{v: torch.from_numpy(np.ascontiguousarray(e.frames[v])) for v in self.views} for e in episodes]
        self.texts = sorted({e.task_text for e in episodes})
        self.text_emb = torch.stack([torch.as_tensor(np.asarray(text_emb[t]), dtype=torch.float32) for t in self.texts])
        self.text_index = np.asarray([self.texts.index(e.task_text) for e in episodes])
        self.pool: dict[str, list[int]] = {}
        for i, e in enumerate(episodes):
            if e.success:
                self.pool.setdefault(e.task_text, []).append(i)
        sampled = [sample_episode(e, samples_per_subtask, chunk) for e in episodes]
        self.sampler = BalancedPairSampler(sampled, hop_bins, gap_bins, zero_ratio, seed)
        # progress of every sampled frame (NaN elsewhere), for the goal-anchored pairs' labels
        self.phi = []
        for e, se in zip(episodes, sampled, strict=True):
            phi = np.full(e.num_frames, np.nan, np.float32)
            phi[se.frames] = se.progress
            self.phi.append(phi)

    def references(self, task_text: str) -> dict:
        """Reference frames of a task: the first successful episode's first/last frame, uint8 [V,H,W,3]."""
        pool = self.pool.get(task_text) or [i for i, e in enumerate(self.episodes) if e.task_text == task_text]
        fr = self.frames[pool[0]]
        return {"start": torch.stack([fr[v][0] for v in self.views]),
                "goal": torch.stack([fr[v][-1] for v in self.views])}

    def batch(self, n: int, shift: int = 0, gen: torch.Generator | None = None) -> dict:
        """``n`` pairs: ``text_emb`` [n, 384], ``ref_start``/``ref_goal`` uint8 [n, H, W, 3],
        ``before``/``after`` {view: uint8 [n, H, W, 3]}, ``hop`` float32 [n]."""
        ep, b, a, h = self.sampler.sample(n)
        h = h.copy()
        rv = self.reference_view
        rs, rg, refs = [], [], []
        for e in ep:
            own = self.episodes[e]
            pool = self.pool.get(own.task_text, [])
            if pool and (self.rng.random() < self.replace_prob or not own.success):
                r = int(pool[self.rng.integers(len(pool))])
            else:
                r = int(e)
            refs.append(r)
            rs.append(self.frames[r][rv][0])
            rg.append(self.frames[r][rv][-1])
        # (episode, frame) of BEFORE and AFTER per row; anchored pairs replace some of them
        src_b = [(int(e), int(i)) for e, i in zip(ep, b, strict=True)]
        src_a = [(int(e), int(i)) for e, i in zip(ep, a, strict=True)]
        if self.goal_pair_prob > 0 or self.start_pair_prob > 0:
            u = self.rng.random(len(ep))
            from_goal = self.rng.random(len(ep)) < 0.75
            for k in np.nonzero(u < self.goal_pair_prob + self.start_pair_prob)[0]:
                if u[k] >= self.goal_pair_prob:  # forward-anchored: BEFORE = own first frame
                    e, i = src_a[k]
                    src_b[k] = (e, 0)
                    h[k] = hop_label(float(self.phi[e][0]), float(self.phi[e][i]))
                    continue
                r = refs[k]
                goal_phi = float(self.phi[r][-1])
                if not (self.episodes[r].success and np.isfinite(goal_phi)):
                    continue
                e, i = src_a[k]
                phi = float(self.phi[e][i])
                if from_goal[k]:
                    src_b[k] = (r, self.episodes[r].num_frames - 1)
                    h[k] = hop_label(goal_phi, phi)
                else:
                    src_b[k], src_a[k] = (e, i), (r, self.episodes[r].num_frames - 1)
                    h[k] = hop_label(phi, goal_phi)
        before = {v: torch.stack([self.frames[e][v][i] for e, i in src_b]) for v in self.views}
        after = {v: torch.stack([self.frames[e][v][i] for e, i in src_a]) for v in self.views}
        out = {"text_emb": self.text_emb[self.text_index[ep]], "ref_start": torch.stack(rs), "ref_goal": torch.stack(rg),
               "before": before, "after": after, "hop": torch.from_numpy(h)}
        if shift:
            out["ref_start"] = random_shift(out["ref_start"], shift, gen)
            out["ref_goal"] = random_shift(out["ref_goal"], shift, gen)
            out["before"] = {v: random_shift(x, shift, gen) for v, x in before.items()}
            out["after"] = {v: random_shift(x, shift, gen) for v, x in after.items()}
        return out


def build_references(data: HopData, text_emb: dict) -> dict:
    """{task: {"text", "start", "goal", "text_emb"}} for every task in ``data``, for the checkpoint."""
    out = {}
    for e in data.episodes:
        if e.task not in out:
            r = data.references(e.task_text)
            out[e.task] = {"text": e.task_text, "start": r["start"], "goal": r["goal"],
                           "text_emb": np.asarray(text_emb[e.task_text], np.float32)}
    return out


class MixedData:
    """Adaptation batches that keep the pretrained tasks: a ``share`` of every batch are pairs of
    the pretraining episodes (``replay``, labelled and anchored as in pretraining), the rest
    pairs of the new task's demonstration (``new``). Rows from ``replay`` are marked in
    ``batch()["replay"]`` (bool [n]) so the fit loop can train their hop distribution as in
    pretraining (:func:`reward_models.fit.fit`).

    Args:
        new, replay: :class:`HopData` of one image size and one set of views.  share: in [0, 1).
    Raises:
        ValueError: ``share`` outside [0, 1).
    """

    def __init__(self, new: HopData, replay: HopData, share: float):
        if not 0.0 <= float(share) < 1.0:
            raise ValueError(f"replay_share must be in [0, 1), got {share!r}")
        self.new, self.replay, self.share = new, replay, float(share)
        self.sampler = new.sampler

    def references(self, task_text: str) -> dict:
        return self.new.references(task_text)

    def batch(self, n: int, shift: int = 0, gen: torch.Generator | None = None) -> dict:
        """``n`` pairs as :meth:`HopData.batch`, plus ``replay`` bool [n]."""
        k = int(round(n * self.share))
        parts = [self.new.batch(n - k, shift, gen)] + ([self.replay.batch(k, shift, gen)] if k else [])
        out = {}
        for key in ("text_emb", "ref_start", "ref_goal", "hop"):
            out[key] = torch.cat([p[key] for p in parts])
        for key in ("before", "after"):
            out[key] = {v: torch.cat([p[key][v] for p in parts]) for v in parts[0][key]}
        out["replay"] = torch.cat([torch.zeros(n - k, dtype=torch.bool), torch.ones(k, dtype=torch.bool)])
        return out
