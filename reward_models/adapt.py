"""``dopa reward-adapt``: one-shot adaptation of a pretrained GRM to a new task (Robo-Dopamine §3.2.1).

    dopa reward-adapt checkpoint=runs/grm demo=data/door_one.hdf5 task="open the door" \
        eval_data=[data/door_test.hdf5] out=runs/grm_door

Fine-tunes the GRM with the MSE between predicted and ground-truth hops (Eq. 12) on balanced hop
pairs built from a single demonstration of the new task, whose first and last frames become the
task's reference start/goal. VOC (and completion accuracy, MAE) on other episodes of the task are
reported before and after; the adapted checkpoint keeps the pretrained tasks' references and adds
the new one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from reward_models.evaluate import evaluate_checkpoint, print_table
from reward_models.grm import load_checkpoint, save_checkpoint
from reward_models.tracker import resolve_fusion
from reward_models.train import HopData, _text_embeddings, fit, load_episodes

__all__ = ["adapt", "run", "resolve_task_text"]


def resolve_task_text(task, demo_task: str) -> str:
    """The task text for ``task=``: a sentence describing the task is used as it is; a registered
    task name (:data:`sim.tasks.TASKS`, e.g. ``lift``) stands for that task's text.

    Args:
        task: the ``task=`` value (a str).  demo_task: the registered name the demonstration was
            recorded on (its episode file's ``task``).
    Returns:
        The task text (stripped).
    Raises:
        ValueError: an empty value, or the name of a registered task other than the
            demonstration's (its text would describe another task).
    """
    from reward_models.text import check_task_text
    from sim.tasks import TASKS

    text = check_task_text(str(task))
    if text in TASKS:
        if text != demo_task:
            raise ValueError(f"task={text!r} is the name of a registered task but the demonstration is of "
                             f"{demo_task!r}; give the task text (a sentence, e.g. task='{TASKS[text].text}') "
                             f"or the demonstration's task name")
        return TASKS[text].text
    return text


def adapt(model, meta: dict, demo, steps: int = 1000, batch_size: int = 32, lr: float = 3e-4,
          shift: int = 2, seed: int = 0, text_cache=None, samples_per_subtask=None, chunk: int = 2,
          writer=None, progress_bar: bool = True) -> dict:
    """Fine-tune ``model`` in place on one demonstration (MSE on hops); returns the new task's
    reference entry ``{"text", "start", "goal", "text_emb"}`` and adds it to ``meta["references"]``.

    Raises:
        ValueError: a demonstration shorter than two frames or with other views than the model.
    """
    views = model.views
    missing = [v for v in views if v not in demo.frames]
    if missing:
        raise ValueError(f"the demonstration lacks view(s) {missing}; the model takes {list(views)}")
    if demo.num_frames < 2:
        raise ValueError(f"the demonstration has {demo.num_frames} frame(s); at least 2 are needed")
    text_emb = _text_embeddings([demo.task_text], text_cache)
    data = HopData([demo], views, model.config.reference_view, text_emb, replace_prob=0.0,
                   samples_per_subtask=samples_per_subtask, chunk=chunk, seed=seed)
    torch.manual_seed(seed)
    fit(model, data, steps, batch_size, lr, weight_decay=0.01, warmup=0.1, loss="mse", shift=shift,
        writer=writer, progress_bar=progress_bar, desc="adapt")
    r = data.references(demo.task_text)
    ref = {"text": demo.task_text, "start": r["start"], "goal": r["goal"],
           "text_emb": np.asarray(text_emb[demo.task_text], np.float32)}
    meta["references"][demo.task] = ref
    return ref


def run(cfg) -> int:
    """Fine-tune a GRM checkpoint from one demonstration of a new task (MSE on hops) and report VOC
    before and after on other episodes of that task; saves the adapted checkpoint to ``out``.

    ``task`` is the task TEXT the model is conditioned on, a sentence such as
    ``task='open the door'`` (default: the demonstration file's own task text); a registered task
    name (``dopa tasks``, e.g. ``task=door``) stands for that task's text."""
    from basics.checks import check_float, check_int
    from reward_models.evaluate import check_grm_checkpoint

    check_int("steps", cfg.steps, 0)
    check_int("batch_size", cfg.batch_size, 1)
    check_float("lr", cfg.lr, low=0.0, low_open=True)
    check_int("shift", cfg.shift, 0)
    check_int("stride", cfg.stride, 1)
    check_int("seed", cfg.seed, 0)
    check_int("demo_index", cfg.demo_index, 0)
    fusion = resolve_fusion(str(cfg.fusion), has_distribution=True)  # a GRM checkpoint: it has one
    if cfg.task is not None:
        from reward_models.text import check_task_text

        check_task_text(str(cfg.task))
    if Path(str(cfg.out)).exists() and not Path(str(cfg.out)).is_dir():
        raise NotADirectoryError(f"out={str(cfg.out)!r} is a file; out is the folder to write into")
    check_grm_checkpoint(cfg.checkpoint)
    if not Path(str(cfg.demo)).is_file():
        raise FileNotFoundError(f"demo={str(cfg.demo)!r} is not a file (an episode file from dopa demos)")
    torch.set_num_threads(int(cfg.threads))
    model, meta = load_checkpoint(str(cfg.checkpoint))
    demos = load_episodes([str(cfg.demo)], views=model.views, image_size=model.config.image_size,
                          stride=int(cfg.stride))
    idx = int(cfg.demo_index)
    if not 0 <= idx < len(demos):
        raise ValueError(f"demo_index {idx} out of range: {cfg.demo} holds {len(demos)} episode(s)")
    demo = demos[idx]
    if cfg.task is not None:
        demo.task_text = resolve_task_text(cfg.task, demo.task)
    eval_paths = [] if cfg.eval_data is None else ([cfg.eval_data] if isinstance(cfg.eval_data, str) else list(cfg.eval_data))
    others = load_episodes(eval_paths, views=model.views, image_size=model.config.image_size,
                           stride=int(cfg.stride)) if eval_paths else [e for i, e in enumerate(demos) if i != idx]
    others = [e for e in others if e.task == demo.task and not (e.seed == demo.seed and e.seed >= 0)]
    for e in others:
        e.task_text = demo.task_text
    meta["references"].pop(demo.task, None)
    # the "before" numbers use the demonstration as the reference (the model has never seen the task)
    text_emb = _text_embeddings([demo.task_text], cfg.text_cache)
    start = torch.stack([torch.from_numpy(demo.frames[v][0]) for v in model.views])
    goal = torch.stack([torch.from_numpy(demo.frames[v][-1]) for v in model.views])
    meta["references"][demo.task] = {"text": demo.task_text, "start": start, "goal": goal,
                                     "text_emb": torch.from_numpy(text_emb[demo.task_text])}
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
    summary = {"task": demo.task, "voc_before": before.get(demo.task, {}).get("voc"),
               "voc_after": after.get(demo.task, {}).get("voc"),
               "completion_accuracy_before": before.get(demo.task, {}).get("completion_accuracy"),
               "completion_accuracy_after": after.get(demo.task, {}).get("completion_accuracy"),
               "mae_before": before.get(demo.task, {}).get("mae"), "mae_after": after.get(demo.task, {}).get("mae"),
               "eval_episodes": len(others), "fusion": fusion, "steps": int(cfg.steps)}
    tmp = out / f".adapt.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out / "adapt.json")
    print(f"VOC before {summary['voc_before']}, after {summary['voc_after']}; adapted checkpoint {out / 'checkpoint'}")
    return 0
