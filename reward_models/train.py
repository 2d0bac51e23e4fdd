"""``dopa reward-train``: pretrain the GRM on episode files of several tasks.

    dopa reward-train data=[data/lift.hdf5,data/stack.hdf5] steps=1500 out=runs/grm

Pairs come from the balanced sampler (:mod:`reward_models.labels`) over step-wise discretized
frames of every episode (successful and imperfect ones, their ground-truth progress giving the
labels). Each pair is shown with the task text and reference start/goal frames, taken from another
successful episode of the same task with probability ``replace_prob`` (Robo-Dopamine's reference
replacement, 0.75) and else from the pair's own episode. Loss: cross-entropy on the two-hot hop
bins plus MSE of the mean hop. AdamW with warmup and cosine decay; TensorBoard logs; a checkpoint
folder (:func:`reward_models.grm.save_checkpoint`) written every ``save_every`` steps and at the end,
with ``training_state/`` so that ``resume=true`` continues where a run stopped.

``<out>/training_state/`` (:func:`save_training_state`, no pickle): ``state.safetensors`` holds the
AdamW moments, ``state.json`` the step, the optimizer's structure and scalars, the torch RNG state
(a list of bytes) and the pair sampler's numpy bit-generator state. It is written atomically
right after the checkpoint folder; a checkpoint without it is complete but starts training from
scratch. An older ``training_state/state.pt`` (``torch.save``) is read with
``torch.load(weights_only=True)`` (tensors and plain containers only) or refused.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from reward_models.grm import GRM, GRMConfig, load_checkpoint, save_checkpoint
from reward_models.labels import BalancedPairSampler, SampledEpisode, hop_label, stepwise_sample

__all__ = ["Episode", "load_episodes", "HopData", "fit", "run", "save_training_state", "load_training_state",
           "has_training_state"]


@dataclasses.dataclass
class Episode:
    """One episode: ``frames[view]`` uint8 [T+1, H, W, 3], ``progress`` float32 [T+1] ground truth,
    ``keyframes`` int [K], ``success`` bool, ``imperfection`` str, ``task`` / ``task_text`` str."""

    task: str
    task_text: str
    frames: dict
    progress: np.ndarray | None
    keyframes: np.ndarray
    success: bool
    imperfection: str = "none"
    seed: int = -1

    @property
    def num_frames(self) -> int:
        return int(next(iter(self.frames.values())).shape[0])


def load_episodes(paths, views=None, image_size: int | None = None, stride: int = 1) -> list[Episode]:
    """Read episode files with ``sim.episodes.read_episodes`` (robomimic HDF5 layout).

    Args:
        paths: file paths (a single str is accepted).
        views: views to load (default: the file's); each must be in every file.
        image_size: when given, every file's frames must have this size.
        stride: keep every ``stride``-th frame (keyframes are mapped to the kept frames).
    Returns:
        list of :class:`Episode` (frames as numpy uint8 [T+1, H, W, 3]).
    Raises:
        FileNotFoundError: a missing file. ValueError (``sim.episodes.EpisodeFileError`` for
            corrupt files): missing views, other image size, an episode shorter than two frames.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    eps: list[Episode] = []
    for p in paths:
        p = str(p)
        if not os.path.isfile(p):
            raise FileNotFoundError(f"no episode file {p!r}")
        from sim.episodes import read_episodes

        got = []
        for e in read_episodes(p, views=None if views is None else list(views), stride=stride):
            got.append(Episode(str(e.task), str(e.task_text), {v: np.asarray(x) for v, x in e.frames.items()},
                               np.asarray(e.progress, np.float32), np.asarray(e.keyframes, np.int64),
                               bool(e.success), str(e.imperfection), int(e.seed)))
        for i, e in enumerate(got):
            if e.num_frames < 2:
                raise ValueError(f"{p}: episode {i} has {e.num_frames} frame(s); at least 2 are needed")
            for v, x in e.frames.items():
                if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
                    raise ValueError(f"{p}: episode {i} view {v!r} frames must be uint8 [T+1, H, W, 3], "
                                     f"got {x.dtype} {x.shape}")
                if image_size is not None and (x.shape[1] != image_size or x.shape[2] != image_size):
                    raise ValueError(f"{p}: frames are {x.shape[1]}x{x.shape[2]} px, expected {image_size}x{image_size}")
        eps += got
    if not eps:
        raise ValueError(f"no episodes in {list(map(str, paths))}")
    return eps


def num_subtasks(ep: Episode) -> int:
    """N for an episode: its task's sub-task count from ``sim.tasks`` (else its keyframe count, >= 1)."""
    try:
        from sim.tasks import get_task

        n = len(get_task(ep.task).subtasks)
    except ValueError:
        n = 0
    return max(n, len(ep.keyframes), 1)


def sample_episode(ep: Episode, samples_per_subtask: int | None = None, chunk: int = 2) -> SampledEpisode:
    """Step-wise discretized frames of one episode (m = max(2, round(T / (N * chunk))) by default)."""
    n = num_subtasks(ep)
    t = ep.num_frames - 1
    m = samples_per_subtask or max(2, int(round(t / (n * chunk))))
    idx, phi = stepwise_sample(ep.num_frames, ep.keyframes, m, n, progress=ep.progress)
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
        episodes: list of :class:`Episode` (all with the model's views, one image size).
        views: the model's views; reference_view: the view of the reference frames.
        text_emb: {task_text: float32 [384]}.
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


def fit(model: GRM, data: HopData, steps: int, batch_size: int, lr: float, weight_decay: float = 0.05,
        warmup: float = 0.05, loss: str = "ce+mse", shift: int = 0, optimizer=None, start_step: int = 0,
        writer=None, log_every: int = 20, on_step=None, progress_bar: bool = True, desc: str = "train") -> dict:
    """Train ``model`` on ``data`` for steps ``start_step .. steps-1`` (AdamW, linear warmup, cosine decay).

    Args:
        loss: ``"ce+mse"`` (pretraining: two-hot cross-entropy + MSE) or ``"mse"`` (one-shot
            adaptation, Robo-Dopamine Eq. 12).
        on_step: optional ``fn(step, optimizer)`` called after every step (checkpointing).
    Returns:
        {"loss": last smoothed loss, "mse": last smoothed hop MSE, "optimizer": the optimizer}.
    Raises:
        FloatingPointError: the loss became NaN or inf.
    """
    from tqdm import tqdm

    if loss not in ("ce+mse", "mse"):
        raise ValueError(f"unknown loss {loss!r}; known: ce+mse, mse")
    opt = optimizer or torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    n_warm = max(1, int(warmup * steps))

    def lr_at(s):
        if s < n_warm:
            return lr * (s + 1) / n_warm
        return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - n_warm) / max(1, steps - n_warm))))

    gen = torch.Generator()  # image shifts: seeded per step, so a resumed run draws the same ones
    model.train()
    ema = {"loss": float("nan"), "mse": float("nan")}
    bar = tqdm(range(start_step, steps), desc=desc, disable=not progress_bar, dynamic_ncols=True)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        gen.manual_seed(12345 + step)
        b = data.batch(batch_size, shift=shift, gen=gen)
        out = model(b["text_emb"], b["ref_start"], b["ref_goal"], b["before"], b["after"])
        if loss == "mse":
            total = F.mse_loss(out.hop, b["hop"])
            parts = {"mse": float(total.detach()), "ce": float("nan")}
        else:
            total, parts = model.loss(out, b["hop"])
        if not torch.isfinite(total):
            raise FloatingPointError(f"loss became {float(total)} at step {step}")
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        for k, v in (("loss", float(total.detach())), ("mse", parts["mse"])):
            ema[k] = v if math.isnan(ema[k]) else 0.95 * ema[k] + 0.05 * v
        if writer is not None and (step % log_every == 0 or step == steps - 1):
            writer.add_scalar(f"{desc}/loss", float(total.detach()), step)
            writer.add_scalar(f"{desc}/hop_mse", parts["mse"], step)
            if not math.isnan(parts["ce"]):
                writer.add_scalar(f"{desc}/hop_ce", parts["ce"], step)
            writer.add_scalar(f"{desc}/lr", lr_at(step), step)
        bar.set_postfix(loss=f"{ema['loss']:.4f}", mse=f"{ema['mse']:.4f}")
        if on_step is not None:
            on_step(step, opt)
    model.eval()
    return {"loss": ema["loss"], "mse": ema["mse"], "optimizer": opt}


def _text_embeddings(texts, cache_dir) -> dict:
    from reward_models.text import embed_texts

    texts = sorted(set(texts))
    emb = embed_texts(texts, cache_dir)
    return {t: emb[i] for i, t in enumerate(texts)}


def build_references(data: HopData, text_emb: dict) -> dict:
    """{task: {"text", "start", "goal", "text_emb"}} for every task in ``data``, for the checkpoint."""
    out = {}
    for e in data.episodes:
        if e.task not in out:
            r = data.references(e.task_text)
            out[e.task] = {"text": e.task_text, "start": r["start"], "goal": r["goal"],
                           "text_emb": np.asarray(text_emb[e.task_text], np.float32)}
    return out


STATE_FORMAT = "dopa-grm-training-state"
STATE_VERSION = 1


def has_training_state(folder) -> bool:
    """Whether the GRM checkpoint ``folder`` holds a resumable training state (new or old format)."""
    ts = Path(folder) / "training_state"
    return (ts / "state.json").is_file() or (ts / "state.pt").is_file()


def save_training_state(folder, step: int, optimizer: torch.optim.Optimizer, sampler_rng: dict,
                        reference_rng: dict | None = None) -> Path:
    """Write ``<folder>/training_state/`` atomically: ``state.safetensors`` (the optimizer's tensors)
    + ``state.json`` (``format``, ``version``, ``step``, the optimizer's structure and scalars,
    ``torch_rng`` as a list of uint8, ``sampler_rng``: a numpy bit-generator state). No pickle.

    Args:
        folder: an existing GRM checkpoint folder.  step: optimizer steps done.
        sampler_rng: ``np.random.Generator.bit_generator.state`` of the pair sampler.
        reference_rng: the same of :class:`HopData`'s reference-frame draws (stored when given).
    Returns:
        The ``training_state`` folder.
    """
    from basics.atomic import atomic_folder
    from basics.state import write_state

    state = {"format": STATE_FORMAT, "version": STATE_VERSION, "step": int(step),
             "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state().tolist(),
             "sampler_rng": sampler_rng}
    if reference_rng is not None:
        state["reference_rng"] = reference_rng
    path = Path(folder) / "training_state"
    with atomic_folder(path, marker="state.json") as tmp:
        write_state(tmp, "state", state)
    return path


def load_training_state(folder) -> dict:
    """Read ``<folder>/training_state/`` (written by :func:`save_training_state`, or an older
    ``state.pt``).

    Returns:
        ``{"step": int, "optimizer": optimizer state dict, "torch_rng": uint8 tensor,
        "sampler_rng": dict}`` and, when it was saved, ``"reference_rng": dict``.
    Raises:
        FileNotFoundError: no training state in ``folder``.
        ValueError: a corrupt state, another format or version, or an old ``state.pt`` holding
            more than tensors and plain containers (it is not unpickled).
    """
    from basics.state import StateFileError, read_state

    ts = Path(folder) / "training_state"
    if (ts / "state.json").is_file():
        try:
            state = read_state(ts, "state")
        except StateFileError as exc:
            raise ValueError(f"cannot resume from {ts}: {exc}") from None
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"{ts / 'state.json'} is not a {STATE_FORMAT} file")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{ts / 'state.json'} has version {state.get('version')!r}; "
                             f"this code reads version {STATE_VERSION}")
        state["torch_rng"] = torch.tensor(state["torch_rng"], dtype=torch.uint8)
        return state
    if (ts / "state.pt").is_file():
        try:  # the format before safetensors + JSON: tensors and plain containers only, no code
            state = torch.load(ts / "state.pt", map_location="cpu", weights_only=True)
        except Exception as exc:  # UnpicklingError (not plain tensors), RuntimeError, EOFError, ...
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"cannot resume from {ts / 'state.pt'}: an old torch-saved training state that "
                             f"does not load as plain tensors ({reason}); delete {ts} to train from scratch") from None
        return state
    raise FileNotFoundError(f"{folder} holds no training_state/state.json")


def run(cfg) -> int:
    """Pretrain the GRM on episode files of several tasks (progress bar, TensorBoard, resumable
    checkpoint folder with safetensors weights and a JSON config)."""
    from omegaconf import OmegaConf
    from torch.utils.tensorboard import SummaryWriter

    torch.set_num_threads(int(cfg.threads))
    seed = int(cfg.seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    paths = list(cfg.data) if not isinstance(cfg.data, str) else [cfg.data]
    if not paths:
        raise ValueError("data=[...] must name at least one episode file")
    for key in ("steps", "batch_size"):
        if int(cfg[key]) < 1:
            raise ValueError(f"{key} must be >= 1, got {cfg[key]}")
    from basics.checks import check_float, check_int

    for key in ("replace_prob", "goal_pair_prob", "start_pair_prob"):
        check_float(f"pairs.{key}", cfg.pairs[key], 0.0, 1.0)
    anchored = float(cfg.pairs.goal_pair_prob) + float(cfg.pairs.start_pair_prob)
    if anchored > 1.0:
        raise ValueError(f"pairs.goal_pair_prob + pairs.start_pair_prob must be <= 1 (shares of the batch), got "
                         f"{cfg.pairs.goal_pair_prob} + {cfg.pairs.start_pair_prob} = {anchored:g}")
    m = cfg.model
    channels = [m.channels] if isinstance(m.channels, int) else list(m.channels or [])
    if not channels:
        raise ValueError("model.channels must list at least one CNN width, e.g. [16,32,64,64]")
    for c in channels:
        check_int("model.channels[i]", c, 1)
    for key in ("width", "depth", "heads"):
        check_int(f"model.{key}", m[key], 1)
    if int(m.width) % int(m.heads):
        raise ValueError(f"model.width must be a multiple of model.heads ({m.heads}), got {m.width}")
    if not (math.isfinite(float(cfg.lr)) and float(cfg.lr) > 0):
        raise ValueError(f"lr must be a finite number > 0, got {cfg.lr}")
    out = Path(str(cfg.out))
    if out.exists() and not (out / "config.json").exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"out={out} exists and is not a GRM checkpoint; refusing to write over it")
    resume_state = None
    if bool(cfg.resume) and has_training_state(out):
        resume_state = load_training_state(out)  # before load_checkpoint: an old state.pt is checked first
        model, _ = load_checkpoint(out)
        mcfg = model.config
        print(f"resuming {out} at step {resume_state['step']}")
    else:
        first = load_episodes(paths[:1], views=None if cfg.views is None else
                              ([cfg.views] if isinstance(cfg.views, str) else list(cfg.views)))
        views = ((cfg.views,) if isinstance(cfg.views, str) else tuple(cfg.views)) if cfg.views is not None \
            else tuple(first[0].frames)
        if not views:
            raise ValueError(f"{paths[0]} holds no camera views (recorded with views=[]); the GRM needs "
                             "images: record with e.g. views=[front,wrist]")
        size = int(first[0].frames[views[0]].shape[1])
        mcfg = GRMConfig(views=views, image_size=size, reference_view=str(cfg.reference_view or ""),
                         channels=tuple(channels), width=int(cfg.model.width), depth=int(cfg.model.depth),
                         heads=int(cfg.model.heads), hop_bins=int(cfg.model.hop_bins))
        model = GRM(mcfg)
    episodes = load_episodes(paths, views=mcfg.views, image_size=mcfg.image_size, stride=int(cfg.stride))
    text_emb = _text_embeddings([e.task_text for e in episodes], cfg.text_cache)
    data = HopData(episodes, mcfg.views, mcfg.reference_view, text_emb, int(cfg.pairs.hop_bins),
                   int(cfg.pairs.gap_bins), float(cfg.pairs.zero_ratio), float(cfg.pairs.replace_prob),
                   cfg.pairs.samples_per_subtask, int(cfg.pairs.chunk), seed,
                   goal_pair_prob=float(cfg.pairs.goal_pair_prob), start_pair_prob=float(cfg.pairs.start_pair_prob))
    refs = build_references(data, text_emb)
    tasks = sorted({e.task for e in episodes})
    print(f"{len(episodes)} episodes of {tasks}, {data.sampler.num_pairs} distinct pairs, views {list(mcfg.views)}, "
          f"{mcfg.image_size} px, {sum(p.numel() for p in model.parameters())} parameters")
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg.lr), weight_decay=float(cfg.weight_decay))
    start = 0
    if resume_state is not None:
        opt.load_state_dict(resume_state["optimizer"])
        start = int(resume_state["step"])
        torch.set_rng_state(resume_state["torch_rng"])
        data.sampler.rng.bit_generator.state = resume_state["sampler_rng"]
        if resume_state.get("reference_rng") is not None:
            data.rng.bit_generator.state = resume_state["reference_rng"]
    log_dir = str(cfg.log_dir) if cfg.log_dir else str(out.parent / f"{out.name}_tb")
    writer = SummaryWriter(log_dir)
    writer.add_text("config", "```\n" + OmegaConf.to_yaml(cfg) + "\n```")
    steps = int(cfg.steps)
    info = {"tasks": tasks, "data": paths, "steps": steps}

    def save(step, opt_):
        save_checkpoint(out, model, refs, None, info={**info, "trained_steps": step + 1})
        save_training_state(out, step + 1, opt_, data.sampler.rng.bit_generator.state, data.rng.bit_generator.state)

    def on_step(step, opt_):
        if (step + 1) % int(cfg.save_every) == 0 and step + 1 < steps:
            save(step, opt_)

    t0 = time.time()
    res = fit(model, data, steps, int(cfg.batch_size), float(cfg.lr), float(cfg.weight_decay), float(cfg.warmup),
              "ce+mse", int(cfg.shift), opt, start, writer, on_step=on_step, desc="pretrain")
    save(steps - 1, res["optimizer"])
    writer.close()
    # reload what was written, so the saved artefact is proven usable
    load_checkpoint(out, views=mcfg.views)
    print(f"trained {steps - start} steps in {time.time() - t0:.0f} s; hop MSE {res['mse']:.4f}; saved {out}")
    return 0
