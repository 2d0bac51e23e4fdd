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
from basics.checks import check_float, check_int, check_seed
from jobs.torchrun import in_rank, launch, rank_threads, wants_launch
from reward_models.adapt import adapt, demo_reference, resolve_task_text
from reward_models.distributed import init_from_env
from reward_models.evaluate import evaluate_checkpoint, print_table
from reward_models.fit import LOSSES
from reward_models.grm import check_grm_checkpoint, load_checkpoint, save_checkpoint
from reward_models.task_data import apply_keyframes, apply_task_text, label_source, labelled
from reward_models.text import check_task_text
from reward_models.tracker import check_fusion, resolve_fusion
from reward_models.train import pretrain
from sim.episodes import read_episodes
from sim.tasks import TASKS

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


def _keyframes(value):
    """``keyframes=`` as plain lists (None when not given)."""
    if value is None:
        return None
    return OmegaConf.to_container(value) if not isinstance(value, (list, tuple, int)) else value


def _existing(paths: list[str], key: str) -> list[str]:
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{key}: no episode file at {', '.join(missing)}")
    return paths


def run_train(cfg: DictConfig) -> int:
    """Pretrain the GRM on episode files of several tasks (progress bar, TensorBoard, resumable
    checkpoint folder with safetensors weights and a JSON config). Files of tasks the stack has no
    simulation for are taken as they are: ``task=`` gives the text where a file has none,
    ``keyframes=[[...], ...]`` one list per episode read (:mod:`reward_models.task_data`).
    ``distributed.nproc=N``: N data-parallel ranks through torchrun (:mod:`jobs.torchrun`)."""
    if wants_launch(cfg):  # this process launches the ranks; each rank runs run_train again
        return launch(cfg, "reward-train", "jobs.reward:run_train")
    torch.set_num_threads(rank_threads(int(cfg.threads)) if in_rank() else int(cfg.threads))
    seed = check_seed(cfg.seed)
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
    text = None if cfg.get("task") is None else check_task_text(str(cfg.task))
    keyframes = _keyframes(cfg.get("keyframes"))

    def prepare(episodes):
        apply_task_text(episodes, text)
        apply_keyframes(episodes, keyframes)
        return labelled(episodes, "training")

    views = None if cfg.views is None else ((str(cfg.views),) if isinstance(cfg.views, str) else
                                            tuple(str(v) for v in cfg.views))
    dist = cfg.get("distributed") or {}
    ranks = init_from_env(float(dist.get("timeout_s", 60)), str(dist.get("backend", "auto")))
    pretrain(paths, str(cfg.out), arch=arch, views=views, reference_view=str(cfg.reference_view or ""),
             stride=int(cfg.stride), steps=int(cfg.steps), batch_size=int(cfg.batch_size), lr=float(cfg.lr),
             weight_decay=float(cfg.weight_decay), warmup=float(cfg.warmup), shift=int(cfg.shift),
             save_every=int(cfg.save_every), seed=seed, text_cache=cfg.text_cache, pairs=pairs,
             resume=bool(cfg.resume), log_dir=str(cfg.log_dir) if cfg.log_dir else None,
             config_text=OmegaConf.to_yaml(cfg), prepare=prepare, ranks=ranks)
    ranks.close()
    return 0


def _eval_references(cfg: DictConfig, model) -> dict | None:
    """{task: episodes} of the ``reference=`` file (None when not given)."""
    if cfg.get("reference") is None:
        return None
    path = _existing([str(cfg.reference)], "reference")[0]
    eps = read_episodes(path, views=model.views, image_size=model.config.image_size)
    if not eps:
        raise ValueError(f"reference={path!r} holds no episodes")
    apply_task_text(eps, cfg.get("task"), "task")
    out: dict = {}
    for e in eps:
        out.setdefault(e.task, []).append(e)
    return out


def _texts_from_checkpoint(episodes, meta: dict) -> None:
    """Episodes whose file states no task text take the checkpoint's text for their task."""
    for e in episodes:
        ref = meta["references"].get(e.task)
        if not e.task_text and ref is not None:
            e.task_text = ref["text"]


def run_eval(cfg: DictConfig) -> int:
    """Per-task table of VOC, completion accuracy and progress MAE of a GRM checkpoint on episode
    files; saves tracked-vs-true progress plots (PNG) and a metrics JSON into ``out``.

    Reference frames come from the checkpoint or a ``reference=`` episode file, never from the
    episodes under evaluation. Without ground-truth progress MAE is skipped (said so); episodes
    the tracker follows without its anchors are warned about one by one and counted."""
    paths = _paths(cfg.data)
    if not paths:
        raise ValueError("data=[...] must name at least one episode file, e.g. data=[data/lift.hdf5]")
    check_int("stride", cfg.stride, 1)
    check_float("completion_threshold", cfg.completion_threshold, 0.0, 1.0, low_open=True)
    out = _check_out_folder(cfg.out)
    fusion = resolve_fusion(check_fusion(cfg.fusion), has_distribution=True)  # a GRM checkpoint: it has one
    if cfg.get("task") is not None:
        check_task_text(str(cfg.task))
    check_grm_checkpoint(cfg.checkpoint)
    torch.set_num_threads(int(cfg.threads))
    model, meta = load_checkpoint(str(cfg.checkpoint))
    episodes = read_episodes(paths, views=model.views, image_size=model.config.image_size, stride=int(cfg.stride))
    if not episodes:
        raise ValueError(f"no episodes in {paths}")
    _texts_from_checkpoint(episodes, meta)
    apply_task_text(episodes, cfg.get("task"))
    reference = _eval_references(cfg, model)
    results = evaluate_checkpoint(model, meta, episodes, fusion, float(cfg.completion_threshold), out,
                                  reference=reference)
    print(f"fusion: {fusion}" + (" (auto)" if str(cfg.fusion) == "auto" else ""))
    print_table(results)
    write_json(out / "metrics.json", _finite({t: {k: v for k, v in r.items() if k != "curves"} for t, r in results.items()}))
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
    check_seed(cfg.seed)
    check_int("demo_index", cfg.demo_index, 0)
    if str(cfg.get("loss", "mse")) not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {cfg.get('loss')!r}")
    check_float("replay_share", cfg.replay_share, 0.0, 1.0)
    if float(cfg.replay_share) >= 1.0:
        raise ValueError(f"replay_share must be below 1 (a share of each batch; the rest is the demonstration), "
                         f"got {cfg.replay_share}")
    fusion = resolve_fusion(check_fusion(cfg.fusion), has_distribution=True)  # a GRM checkpoint: it has one
    if cfg.task is not None:
        check_task_text(str(cfg.task))
    _check_out_folder(cfg.out)
    check_grm_checkpoint(cfg.checkpoint)
    if not Path(str(cfg.demo)).is_file():
        raise FileNotFoundError(f"demo={str(cfg.demo)!r} is not a file (an episode file: dopa demos or dopa import)")
    _existing(_paths(cfg.eval_data), "eval_data")
    _existing(_paths(cfg.replay_data), "replay_data")
    return fusion


def _adapt_episodes(cfg: DictConfig, model, meta: dict) -> tuple:
    """(the demonstration, the episodes to report on: the demo file's others, or ``eval_data``'s
    episodes of every task), task texts and the demo's keyframes resolved."""
    size, stride = model.config.image_size, int(cfg.stride)
    demos = read_episodes(str(cfg.demo), views=model.views, image_size=size, stride=stride)
    idx = int(cfg.demo_index)
    if not 0 <= idx < len(demos):
        raise ValueError(f"demo_index {idx} out of range: {cfg.demo} holds {len(demos)} episode(s)")
    demo = demos[idx]
    if cfg.task is not None:
        demo.task_text = resolve_task_text(cfg.task, demo.task)
    apply_task_text([demo], None)
    apply_keyframes([demo], _keyframes(cfg.get("keyframes")))
    labelled([demo], "demonstration")
    eval_paths = _paths(cfg.eval_data)
    others = [e for i, e in enumerate(demos) if i != idx] if not eval_paths else []
    for p in eval_paths:  # the demonstration itself is never evaluated, also when its file is in eval_data
        same = Path(p).resolve() == Path(str(cfg.demo)).resolve()
        others += [e for e in read_episodes(p, views=model.views, image_size=size, stride=stride)
                   if not (same and e.name == demo.name)]
    same_run = demo.task in TASKS  # a simulation task's seed names the run; an imported file's does not
    others = [e for e in others if not (same_run and e.task == demo.task and e.seed == demo.seed and e.seed >= 0)]
    for e in others:
        if e.task == demo.task:
            e.task_text = demo.task_text
    _texts_from_checkpoint(others, meta)  # another task the checkpoint lacks is refused by evaluate_checkpoint
    return demo, others


def _replay_episodes(cfg: DictConfig, model, meta: dict, new_task: str) -> list:
    """Episodes of the pretrained tasks to rehearse: ``replay_data=``, else the checkpoint's own
    pretraining files (``info.data``) when they are here; [] (with a warning) otherwise."""
    if float(cfg.replay_share) <= 0:
        return []
    paths = _paths(cfg.replay_data)
    if not paths:
        stored = [str(p) for p in meta["config"].get("info", {}).get("data", [])]
        paths = [p for p in stored if Path(p).is_file()]
        if not paths:
            print("warning: the checkpoint's pretraining files " + (f"{stored} are not here" if stored else
                  "are not recorded") + "; adaptation does not rehearse the pretrained tasks and may lose them "
                  "(give replay_data=[...])")
            return []
    eps = read_episodes(paths, views=model.views, image_size=model.config.image_size, stride=int(cfg.stride))
    eps = [e for e in eps if e.task != new_task]
    _texts_from_checkpoint(eps, meta)
    apply_task_text(eps, None, hint="the checkpoint holds no text for that task either; give replay_data= files "
                    "that state their task_text")
    if not eps:
        print(f"the replay files {paths} hold no task other than {new_task}: nothing to rehearse")
        return []
    eps = labelled(eps, "replay")
    print(f"rehearsing {len(eps)} episodes of {sorted({e.task for e in eps})} from {paths} "
          f"({float(cfg.replay_share):.0%} of every batch)")
    return eps


def _compare(before: dict, after: dict, new_task: str) -> tuple[dict, list[str]]:
    """Per task {"before": metrics, "after": metrics} and warnings where a pretrained task lost more
    than 0.02 VOC or 0.05 completion accuracy."""
    keep = ("voc", "completion_accuracy", "mae", "episodes", "successful", "anchors_off")
    table, warns = {}, []
    for t in after:
        b, a = before.get(t, {}), after[t]
        table[t] = {"before": {k: b.get(k) for k in keep}, "after": {k: a.get(k) for k in keep}}
        if t == new_task or not b:
            continue
        dv = (b["voc"] - a["voc"]) if math.isfinite(b["voc"]) and math.isfinite(a["voc"]) else 0.0
        dc = b["completion_accuracy"] - a["completion_accuracy"]
        if dv > 0.02 or dc > 0.05:
            warns.append(f"warning: pretrained task {t} dropped: VOC {b['voc']:.3f} -> {a['voc']:.3f}, completion "
                         f"accuracy {b['completion_accuracy']:.3f} -> {a['completion_accuracy']:.3f}")
    return table, warns


def _finite(obj):
    """``obj`` with NaN / inf floats as None (JSON has no NaN) and numpy numbers as Python ones."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def run_adapt(cfg: DictConfig) -> int:
    """Fine-tune a GRM checkpoint from one demonstration of a new task (MSE on hops) and report VOC
    before and after on every task of ``eval_data`` (the new one and the pretrained ones); saves
    the adapted checkpoint to ``out``.

    ``task`` is the task TEXT the model is conditioned on, a sentence such as
    ``task='open the door'`` (default: the demonstration file's own task text); a registered task
    name (``dopa tasks``, e.g. ``task=door``) stands for that task's text. The demonstration may be
    of a task the stack has no simulation for (``dopa import``); without ground-truth progress its
    hop labels come from ``keyframes=[...]`` or time-uniform progress. Pairs of the pretraining
    episodes (``replay_data``, default the checkpoint's own files) make up ``replay_share`` of
    every batch so the pretrained tasks are kept; a drop of one of them is warned about."""
    fusion = _check_adapt(cfg)
    torch.set_num_threads(int(cfg.threads))
    model, meta = load_checkpoint(str(cfg.checkpoint))
    demo, others = _adapt_episodes(cfg, model, meta)
    replay = _replay_episodes(cfg, model, meta, demo.task)
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
          cfg.text_cache, replay=replay, replay_share=float(cfg.replay_share), loss=str(cfg.get("loss", "mse")))
    after = evaluate_checkpoint(model, meta, others, fusion, out=out, tag="_after") if others else {}
    if after:
        print("after adaptation:")
        print_table(after)
    tasks, warns = _compare(before, after, demo.task)
    for w in warns:
        print(w)
    refs = {t: {**r, "text_emb": np.asarray(r["text_emb"], np.float32)} for t, r in meta["references"].items()}
    info = dict(meta["config"].get("info", {}))
    info["adapted_to"] = {"task": demo.task, "text": demo.task_text, "demo": str(cfg.demo), "steps": int(cfg.steps),
                          "labels": label_source(demo), "replay_tasks": sorted({e.task for e in replay})}
    save_checkpoint(out / "checkpoint", model, refs, None, info)
    b, a = before.get(demo.task, {}), after.get(demo.task, {})
    summary = {"task": demo.task, "voc_before": b.get("voc"), "voc_after": a.get("voc"),
               "completion_accuracy_before": b.get("completion_accuracy"),
               "completion_accuracy_after": a.get("completion_accuracy"),
               "mae_before": b.get("mae"), "mae_after": a.get("mae"), "labels": label_source(demo),
               "eval_episodes": sum(e.task == demo.task for e in others), "fusion": fusion, "steps": int(cfg.steps), "loss": str(cfg.get("loss", "mse")),
               "replay_share": float(cfg.replay_share) if replay else 0.0,
               "replay_tasks": sorted({e.task for e in replay}), "tasks": tasks, "warnings": warns,
               "skipped": a.get("skipped", {})}
    write_json(out / "adapt.json", _finite(summary))
    print(f"VOC before {summary['voc_before']}, after {summary['voc_after']}; adapted checkpoint {out / 'checkpoint'}")
    return 0
