"""The reward-model jobs: ``dopa reward-train``, ``reward-eval`` and ``reward-adapt``.

Each reads its Hydra config (``configs/reward_train.yaml``, ``reward_eval.yaml``,
``reward_adapt.yaml``), checks the values before anything is loaded or written, and calls the
library (:func:`reward_models.train.pretrain`, :func:`reward_models.evaluate.evaluate_checkpoint`,
:func:`reward_models.adapt.adapt`) with plain arguments.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from basics.atomic import write_json
from basics.checks import check_float, check_int
from reward_models.adapt import adapt, demo_reference, resolve_task_text
from reward_models.evaluate import evaluate_checkpoint, print_table
from reward_models.grm import check_grm_checkpoint, load_checkpoint, save_checkpoint
from reward_models.text import check_task_text
from reward_models.tracker import check_fusion, resolve_fusion
from reward_models.train import pretrain
from sim.episodes import read_episodes

__all__ = ["run_train", "run_eval", "run_adapt"]


def _paths(value) -> list[str]:
    """A config value naming episode files (a str, a list or null) as a list of str."""
    if value is None:
        return []
    return [str(value)] if isinstance(value, str) else [str(p) for p in value]


def _check_out_folder(out) -> Path:
    out = Path(str(out))
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out={str(out)!r} is a file; out is the folder to write into")
    return out


def _train_arch(cfg: DictConfig) -> dict:
    """GRMConfig's architecture fields from ``cfg.model``, checked (named by their config keys)."""
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
    return {"channels": tuple(int(c) for c in channels), "width": int(m.width), "depth": int(m.depth),
            "heads": int(m.heads), "hop_bins": int(m.hop_bins)}


def _train_pairs(cfg: DictConfig) -> dict:
    """:class:`reward_models.pairs.HopData` keywords from ``cfg.pairs``, checked."""
    p = cfg.pairs
    for key in ("replace_prob", "goal_pair_prob", "start_pair_prob"):
        check_float(f"pairs.{key}", p[key], 0.0, 1.0)
    anchored = float(p.goal_pair_prob) + float(p.start_pair_prob)
    if anchored > 1.0:
        raise ValueError(f"pairs.goal_pair_prob + pairs.start_pair_prob must be <= 1 (shares of the batch), got "
                         f"{p.goal_pair_prob} + {p.start_pair_prob} = {anchored:g}")
    return {"hop_bins": int(p.hop_bins), "gap_bins": int(p.gap_bins), "zero_ratio": float(p.zero_ratio),
            "replace_prob": float(p.replace_prob), "samples_per_subtask": p.samples_per_subtask,
            "chunk": int(p.chunk), "goal_pair_prob": float(p.goal_pair_prob),
            "start_pair_prob": float(p.start_pair_prob)}


def run_train(cfg: DictConfig) -> int:
    """Pretrain the GRM on episode files of several tasks (progress bar, TensorBoard, resumable
    checkpoint folder with safetensors weights and a JSON config)."""
    torch.set_num_threads(int(cfg.threads))
    seed = int(cfg.seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    paths = _paths(cfg.data)
    if not paths:
        raise ValueError("data=[...] must name at least one episode file")
    for key in ("steps", "batch_size"):
        if int(cfg[key]) < 1:
            raise ValueError(f"{key} must be >= 1, got {cfg[key]}")
    pairs = _train_pairs(cfg)
    arch = _train_arch(cfg)
    if not (math.isfinite(float(cfg.lr)) and float(cfg.lr) > 0):
        raise ValueError(f"lr must be a finite number > 0, got {cfg.lr}")
    views = None if cfg.views is None else ((str(cfg.views),) if isinstance(cfg.views, str) else
                                            tuple(str(v) for v in cfg.views))
    pretrain(paths, str(cfg.out), arch=arch, views=views, reference_view=str(cfg.reference_view or ""),
             stride=int(cfg.stride), steps=int(cfg.steps), batch_size=int(cfg.batch_size), lr=float(cfg.lr),
             weight_decay=float(cfg.weight_decay), warmup=float(cfg.warmup), shift=int(cfg.shift),
             save_every=int(cfg.save_every), seed=seed, text_cache=cfg.text_cache, pairs=pairs,
             resume=bool(cfg.resume), log_dir=str(cfg.log_dir) if cfg.log_dir else None,
             config_text=OmegaConf.to_yaml(cfg))
    return 0


def run_eval(cfg: DictConfig) -> int:
    """Per-task table of VOC, completion accuracy and progress MAE of a GRM checkpoint on episode
    files; saves tracked-vs-true progress plots (PNG) and a metrics JSON into ``out``."""
    paths = _paths(cfg.data)
    if not paths:
        raise ValueError("data=[...] must name at least one episode file, e.g. data=[data/lift.hdf5]")
    check_int("stride", cfg.stride, 1)
    check_float("completion_threshold", cfg.completion_threshold, 0.0, 1.0, low_open=True)
    out = _check_out_folder(cfg.out)
    fusion = resolve_fusion(check_fusion(cfg.fusion), has_distribution=True)  # a GRM checkpoint: it has one
    check_grm_checkpoint(cfg.checkpoint)
    torch.set_num_threads(int(cfg.threads))
    model, meta = load_checkpoint(str(cfg.checkpoint))
    episodes = read_episodes(paths, views=model.views, image_size=model.config.image_size, stride=int(cfg.stride))
    if not episodes:
        raise ValueError(f"no episodes in {paths}")
    results = evaluate_checkpoint(model, meta, episodes, fusion, float(cfg.completion_threshold), out)
    print(f"fusion: {fusion}" + (" (auto)" if str(cfg.fusion) == "auto" else ""))
    print_table(results)
    write_json(out / "metrics.json", {t: {k: v for k, v in r.items() if k != "curves"} for t, r in results.items()})
    print(f"plots and metrics.json in {out}")
    return 0


def _check_adapt(cfg: DictConfig) -> str:
    """The values of ``dopa reward-adapt``, checked before anything is loaded. Returns the fusion
    (``auto`` resolved)."""
    check_int("steps", cfg.steps, 0)
    check_int("batch_size", cfg.batch_size, 1)
    check_float("lr", cfg.lr, low=0.0, low_open=True)
    check_int("shift", cfg.shift, 0)
    check_int("stride", cfg.stride, 1)
    check_int("seed", cfg.seed, 0)
    check_int("demo_index", cfg.demo_index, 0)
    fusion = resolve_fusion(check_fusion(cfg.fusion), has_distribution=True)  # a GRM checkpoint: it has one
    if cfg.task is not None:
        check_task_text(str(cfg.task))
    _check_out_folder(cfg.out)
    check_grm_checkpoint(cfg.checkpoint)
    if not Path(str(cfg.demo)).is_file():
        raise FileNotFoundError(f"demo={str(cfg.demo)!r} is not a file (an episode file from dopa demos)")
    return fusion


def _adapt_episodes(cfg: DictConfig, model) -> tuple:
    """(the demonstration, the other episodes of its task to report on), task text resolved."""
    size, stride = model.config.image_size, int(cfg.stride)
    demos = read_episodes(str(cfg.demo), views=model.views, image_size=size, stride=stride)
    idx = int(cfg.demo_index)
    if not 0 <= idx < len(demos):
        raise ValueError(f"demo_index {idx} out of range: {cfg.demo} holds {len(demos)} episode(s)")
    demo = demos[idx]
    if cfg.task is not None:
        demo.task_text = resolve_task_text(cfg.task, demo.task)
    eval_paths = _paths(cfg.eval_data)
    others = (read_episodes(eval_paths, views=model.views, image_size=size, stride=stride) if eval_paths
              else [e for i, e in enumerate(demos) if i != idx])
    others = [e for e in others if e.task == demo.task and not (e.seed == demo.seed and e.seed >= 0)]
    for e in others:
        e.task_text = demo.task_text
    return demo, others


def run_adapt(cfg: DictConfig) -> int:
    """Fine-tune a GRM checkpoint from one demonstration of a new task (MSE on hops) and report VOC
    before and after on other episodes of that task; saves the adapted checkpoint to ``out``.

    ``task`` is the task TEXT the model is conditioned on, a sentence such as
    ``task='open the door'`` (default: the demonstration file's own task text); a registered task
    name (``dopa tasks``, e.g. ``task=door``) stands for that task's text."""
    fusion = _check_adapt(cfg)
    torch.set_num_threads(int(cfg.threads))
    model, meta = load_checkpoint(str(cfg.checkpoint))
    demo, others = _adapt_episodes(cfg, model)
    meta["references"].pop(demo.task, None)
    # the "before" numbers use the demonstration as the reference (the model has never seen the task)
    meta["references"][demo.task] = demo_reference(demo, model.views, cfg.text_cache)
    out = Path(str(cfg.out))
    print(f"fusion: {fusion}" + (" (auto)" if str(cfg.fusion) == "auto" else ""))
    before = evaluate_checkpoint(model, meta, others, fusion, out=out, tag="_before") if others else {}
    if before:
        print("before adaptation:")
        print_table(before)
    adapt(model, meta, demo, int(cfg.steps), int(cfg.batch_size), float(cfg.lr), int(cfg.shift), int(cfg.seed),
          cfg.text_cache)
    after = evaluate_checkpoint(model, meta, others, fusion, out=out, tag="_after") if others else {}
    if after:
        print("after adaptation:")
        print_table(after)
    refs = {t: {**r, "text_emb": np.asarray(r["text_emb"], np.float32)} for t, r in meta["references"].items()}
    info = dict(meta["config"].get("info", {}))
    info["adapted_to"] = {"task": demo.task, "text": demo.task_text, "demo": str(cfg.demo), "steps": int(cfg.steps)}
    save_checkpoint(out / "checkpoint", model, refs, None, info)
    b, a = before.get(demo.task, {}), after.get(demo.task, {})
    summary = {"task": demo.task, "voc_before": b.get("voc"), "voc_after": a.get("voc"),
               "completion_accuracy_before": b.get("completion_accuracy"),
               "completion_accuracy_after": a.get("completion_accuracy"),
               "mae_before": b.get("mae"), "mae_after": a.get("mae"),
               "eval_episodes": len(others), "fusion": fusion, "steps": int(cfg.steps)}
    write_json(out / "adapt.json", summary)
    print(f"VOC before {summary['voc_before']}, after {summary['voc_after']}; adapted checkpoint {out / 'checkpoint'}")
    return 0
