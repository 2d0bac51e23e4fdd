"""Pretraining the GRM on episode files of several tasks (``dopa reward-train`` runs :func:`pretrain`).

Pairs come from the balanced sampler (:mod:`reward_models.labels`) over step-wise discretized
frames of every episode (successful and imperfect ones, their ground-truth progress giving the
labels; :class:`reward_models.pairs.HopData`). Each pair is shown with the task text and reference
start/goal frames, taken from another successful episode of the same task with probability
``replace_prob`` (Robo-Dopamine's reference replacement, 0.75) and else from the pair's own
episode. Loss: cross-entropy on the two-hot hop bins plus MSE of the mean hop
(:func:`reward_models.fit.fit`). AdamW with warmup and cosine decay; TensorBoard logs; a
checkpoint folder (:func:`reward_models.grm.save_checkpoint`) written every ``save_every`` steps
and at the end, with ``training_state/`` (:mod:`reward_models.training_state`) written in the
same atomic folder swap as the model, so that ``resume=True`` continues where a run stopped (even
after ``kill -9``). An ``out`` folder that cannot be resumed (a GRM checkpoint without a complete
training state) is refused with ``resume=True``; ``resume=False`` starts over and replaces it.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter

from reward_models.distributed import Ranks, saved_world_size
from reward_models.fit import fit
from reward_models.grm import GRM, GRMConfig, load_checkpoint, save_checkpoint
from reward_models.pairs import HopData, build_references
from reward_models.text import text_embeddings
from reward_models.training_state import has_training_state, load_training_state, training_state
from sim.episodes import read_episodes

__all__ = ["pretrain", "model_for"]


def model_for(paths, out: Path, views, reference_view: str, arch: dict, resume: bool) -> tuple[GRM, dict | None]:
    """The model to train: the one in ``out`` with its training state when ``resume`` and ``out``
    holds one, else a new :class:`GRM` for the first file's views (or ``views``) and image size.

    Args:
        arch: GRMConfig's architecture fields (``channels``, ``width``, ``depth``, ``heads``, ``hop_bins``).
    Returns:
        (model, training state or None).
    Raises:
        ValueError: the first file holds no camera views; with ``resume``, an ``out`` that holds a
            checkpoint without a complete training state, or a bad one (named; ``resume=false``
            starts over).
    """
    if resume and out.is_dir() and any(out.iterdir()):
        if not has_training_state(out):
            raise ValueError(f"out={str(out)!r} holds a GRM checkpoint without a complete training_state/, so it "
                             "cannot be resumed; resume=false starts over and replaces it (or choose another out)")
        try:
            state = load_training_state(out)  # before load_checkpoint: an old state.pt is checked first
        except ValueError as exc:
            raise ValueError(f"{exc}; resume=false starts over and replaces {out}") from None
        model, _ = load_checkpoint(out)
        print(f"resuming {out} at step {state['step']}")
        return model, state
    first = read_episodes(paths[:1], views=views)
    if not first:
        raise ValueError(f"no episodes in {paths[0]}")
    views = tuple(views) if views is not None else tuple(first[0].frames)
    if not views:
        raise ValueError(f"{paths[0]} holds no camera views (recorded with views=[]); the GRM needs "
                         "images: record with e.g. views=[front,wrist]")
    size = int(first[0].frames[views[0]].shape[1])
    return GRM(GRMConfig(views=views, image_size=size, reference_view=reference_view or "", **arch)), None


def pretrain(paths, out, *, arch: dict, views=None, reference_view: str = "", stride: int = 1, steps: int = 1500,
             batch_size: int = 48, lr: float = 1e-3, weight_decay: float = 0.05, warmup: float = 0.05,
             shift: int = 3, save_every: int = 500, seed: int = 0, text_cache=None, pairs: dict | None = None,
             resume: bool = True, log_dir=None, config_text: str = "", prepare=None, ranks: Ranks | None = None) -> dict:
    """Pretrain a GRM on episode files and write its checkpoint folder ``out`` (resumable).

    Args:
        paths: episode files (robomimic HDF5 from ``dopa demos``).  out: the checkpoint folder.
        arch: GRMConfig's architecture fields (``channels``, ``width``, ``depth``, ``heads``, ``hop_bins``).
        views: the model's views (default: the first file's).  reference_view: "" = the first view.
        stride: keep every ``stride``-th frame.  steps, batch_size, lr, weight_decay, warmup, shift:
            see :func:`reward_models.fit.fit`.  save_every: checkpoint every this many steps (and at the end).
        seed: the pair sampler's seed (the caller seeds torch).  text_cache: MiniLM embedding cache folder.
        pairs: :class:`reward_models.pairs.HopData` keywords (``hop_bins``, ``gap_bins``,
            ``zero_ratio``, ``replace_prob``, ``samples_per_subtask``, ``chunk``, ``goal_pair_prob``,
            ``start_pair_prob``).
        resume: continue from ``out/training_state``; an ``out`` holding a checkpoint without one is
            refused (ValueError). False: start over (an existing checkpoint at ``out`` is replaced).
        log_dir: TensorBoard folder (default ``<out>_tb`` beside ``out``).  config_text: written to
            TensorBoard as the run's config.
        prepare: optional ``fn(episodes) -> episodes`` applied to the episodes read, before anything
            is trained or written (task text, keyframes, labelled ones: :mod:`reward_models.task_data`).
        ranks: this process's place in a data-parallel run (:mod:`reward_models.distributed`):
            ``batch_size`` pairs per rank from a rank-seeded stream, gradients averaged, rank 0
            alone writes the checkpoint and logs. Default: one process.
    Returns:
        {"out": Path, "steps": steps, "start": first step trained, "mse": last smoothed hop MSE}.
    Raises:
        FileExistsError: ``out`` exists and is not a GRM checkpoint.  FileNotFoundError / ValueError:
            bad episode files (:func:`sim.episodes.read_episodes`), no episodes at all, or training state.
    """
    out = Path(str(out))
    if out.exists() and not (out / "config.json").exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"out={out} exists and is not a GRM checkpoint; refusing to write over it")
    ranks = ranks or Ranks()
    model, resume_state = model_for(paths, out, views, reference_view, arch, resume)
    ranks.broadcast(model)  # every rank starts from rank 0's weights
    mcfg = model.config
    episodes = read_episodes(paths, views=mcfg.views, image_size=mcfg.image_size, stride=stride)
    if prepare is not None:  # task text, keyframes and labels of files recorded elsewhere (jobs/reward.py)
        episodes = prepare(episodes)
    if not episodes:
        raise ValueError(f"no episodes in {[str(p) for p in paths]}")
    text_emb = text_embeddings([e.task_text for e in episodes], text_cache)
    data = ranks.make_data(lambda s: HopData(episodes, mcfg.views, mcfg.reference_view, text_emb, seed=s,
                                             **(pairs or {})), seed)
    refs = build_references(data, text_emb)
    tasks = sorted({e.task for e in episodes})
    print(f"{len(episodes)} episodes of {tasks}, {data.sampler.num_pairs} distinct pairs, views {list(mcfg.views)}, "
          f"{mcfg.image_size} px, {sum(p.numel() for p in model.parameters())} parameters")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    start = 0
    if resume_state is not None:
        opt.load_state_dict(resume_state["optimizer"])
        start = int(resume_state["step"])
        torch.set_rng_state(resume_state["torch_rng"])
        if ranks.reseeds_on_resume or saved_world_size(out) > 1:  # one stream per rank: new streams
            ranks.reseed(data, seed, start)
        else:
            data.sampler.rng.bit_generator.state = resume_state["sampler_rng"]
            if resume_state.get("reference_rng") is not None:
                data.rng.bit_generator.state = resume_state["reference_rng"]
    writer = SummaryWriter(str(log_dir) if log_dir else str(out.parent / f"{out.name}_tb")) if ranks.is_main else None
    if config_text and writer is not None:
        writer.add_text("config", "```\n" + config_text + "\n```")
    info = {"tasks": tasks, "data": [str(p) for p in paths], "steps": steps, "world_size": ranks.world_size,
            "batch_size_per_rank": batch_size}

    def save(step, opt_):  # model and training state in one atomic folder swap; rank 0 alone
        if not ranks.is_main:
            return
        state = training_state(step + 1, opt_, data.sampler.rng.bit_generator.state, data.rng.bit_generator.state)
        save_checkpoint(out, model, refs, state, info={**info, "trained_steps": step + 1})

    def on_step(step, opt_):
        if (step + 1) % save_every == 0 and step + 1 < steps:
            save(step, opt_)

    t0 = time.time()
    res = fit(model, data, steps, batch_size, lr, weight_decay, warmup, "ce+mse", shift, opt, start, writer,
              on_step=on_step, desc="pretrain", progress_bar=ranks.is_main, grad_hook=ranks.average_gradients)
    save(steps - 1, res["optimizer"])
    if writer is not None:
        writer.close()
        # reload what was written, so the saved artefact is proven usable
        load_checkpoint(out, views=mcfg.views)
    if ranks.is_main:
        print(f"trained {steps - start} steps in {time.time() - t0:.0f} s; hop MSE {res['mse']:.4f}; saved {out}")
    return {"out": out, "steps": steps, "start": start, "mse": res["mse"]}
