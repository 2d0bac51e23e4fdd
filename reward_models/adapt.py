"""One-shot adaptation of a pretrained GRM to a new task (Robo-Dopamine §3.2.1; ``dopa reward-adapt``).

    dopa reward-adapt checkpoint=runs/grm demo=data/door_one.hdf5 task="open the door" \
        eval_data=[data/door_test.hdf5] out=runs/grm_door

Fine-tunes the GRM with the MSE between predicted and ground-truth hops (Eq. 12) on balanced hop
pairs built from a single demonstration of the new task, whose first and last frames become the
task's reference start/goal. So that the pretrained tasks are kept (not the paper's: its Eq. 12
uses the demonstration alone), a share of every batch can rehearse pairs of the pretraining
episodes (``replay``, :class:`reward_models.pairs.MixedData`). VOC (and completion accuracy, MAE)
on held-out episodes of every task are reported before and after by the job; the adapted
checkpoint keeps the pretrained tasks' references and adds the new one.
"""

from __future__ import annotations

import numpy as np
import torch

from reward_models.fit import fit
from reward_models.pairs import HopData, MixedData
from reward_models.text import check_task_text, text_embeddings
from sim.tasks import TASKS

__all__ = ["adapt", "resolve_task_text", "demo_reference"]


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
          writer=None, progress_bar: bool = True, replay=None, replay_share: float = 0.5,
          loss: str = "mse") -> dict:
    """Fine-tune ``model`` in place on one demonstration (MSE on hops); returns the new task's
    reference entry ``{"text", "start", "goal", "text_emb"}`` and adds it to ``meta["references"]``.

    Args:
        model: a :class:`reward_models.grm.GRM`.  meta: its checkpoint meta (``references``).
        demo: one :class:`sim.episodes.Episode` of the new task with the model's views.
        steps, batch_size, lr, shift: see :func:`reward_models.fit.fit` (loss ``"mse"``, Eq. 12).
        replay: episodes of the pretraining tasks (:class:`sim.episodes.Episode` list with the
            model's views) rehearsed during adaptation, so the model keeps them: a
            ``replay_share`` of every batch are their pairs (labelled and anchored as in
            pretraining, their hop distribution trained too; :class:`reward_models.pairs.MixedData`).
            None or empty: the demonstration alone (the paper's Eq. 12).
        loss: ``"mse"`` (Eq. 12: the demonstration's pairs train the hop's mean; rehearsed rows add
            their cross-entropy) or ``"ce+mse"`` (every row, the demonstration's too, also trains
            the hop distribution, as pretraining does).
    Raises:
        ValueError: a demonstration shorter than two frames or with other views than the model;
            ``replay_share`` outside [0, 1).
    """
    views = model.views
    missing = [v for v in views if v not in demo.frames]
    if missing:
        raise ValueError(f"the demonstration lacks view(s) {missing}; the model takes {list(views)}")
    frames = min(int(demo.frames[v].shape[0]) for v in views)
    if frames < 2:
        raise ValueError(f"the demonstration has {frames} frame(s); at least 2 are needed")
    text_emb = text_embeddings([demo.task_text] + [e.task_text for e in replay or ()], text_cache)
    data = HopData([demo], views, model.config.reference_view, text_emb, replace_prob=0.0,
                   samples_per_subtask=samples_per_subtask, chunk=chunk, seed=seed)
    new = data
    if replay and replay_share > 0:
        rehearse = HopData(list(replay), views, model.config.reference_view, text_emb, seed=seed + 1)
        data = MixedData(new, rehearse, replay_share)
    torch.manual_seed(seed)
    fit(model, data, steps, batch_size, lr, weight_decay=0.01, warmup=0.1, loss=loss, shift=shift,
        writer=writer, progress_bar=progress_bar, desc="adapt")
    r = new.references(demo.task_text)
    ref = {"text": demo.task_text, "start": r["start"], "goal": r["goal"],
           "text_emb": np.asarray(text_emb[demo.task_text], np.float32)}
    meta["references"][demo.task] = ref
    return ref


def demo_reference(demo, views, text_cache=None) -> dict:
    """The demonstration as its task's reference entry before adaptation: ``{"text", "start",
    "goal" (uint8 [V, H, W, 3], its first and last frames in ``views`` order), "text_emb"
    (float32 [384])}`` (the model has never seen the task, so its "before" numbers use the demo).
    """
    text_emb = text_embeddings([demo.task_text], text_cache)
    start = torch.stack([torch.from_numpy(demo.frames[v][0]) for v in views])
    goal = torch.stack([torch.from_numpy(demo.frames[v][-1]) for v in views])
    return {"text": demo.task_text, "start": start, "goal": goal, "text_emb": torch.from_numpy(text_emb[demo.task_text])}
