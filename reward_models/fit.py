"""The GRM's fit loop: AdamW with linear warmup and cosine decay over hop pairs.

Pretraining minimises the two-hot cross-entropy over the hop bins plus the MSE of the mean hop
(:meth:`reward_models.grm.GRM.loss`); one-shot adaptation (Robo-Dopamine §3.2.1, Eq. 12) the MSE
between predicted and ground-truth hops alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm import tqdm

from reward_models.grm import GRM
from reward_models.pairs import HopData

__all__ = ["fit", "LOSSES"]


def _rows(out, mask):
    """The rows ``mask`` (bool [B]) of a :class:`reward_models.grm.HopOutput`."""
    return type(out)(out.hop[mask], out.probs[mask], out.std[mask], out.logits[mask])

LOSSES = ("ce+mse", "mse")


def fit(model: GRM, data: HopData, steps: int, batch_size: int, lr: float, weight_decay: float = 0.05,
        warmup: float = 0.05, loss: str = "ce+mse", shift: int = 0, optimizer=None, start_step: int = 0,
        writer=None, log_every: int = 20, on_step=None, progress_bar: bool = True, desc: str = "train",
        grad_hook=None) -> dict:
    """Train ``model`` on ``data`` for steps ``start_step .. steps-1`` (AdamW, linear warmup, cosine decay).

    Args:
        steps: total optimizer steps of the schedule.  batch_size: pairs per step.
        lr: peak learning rate.  warmup: share of ``steps`` for the linear warmup.
        loss: ``"ce+mse"`` (pretraining: two-hot cross-entropy + MSE) or ``"mse"`` (one-shot
            adaptation, Robo-Dopamine Eq. 12; rows a batch marks ``replay``, rehearsed pairs of the
            pretraining tasks (:class:`reward_models.pairs.MixedData`), add their cross-entropy).
        shift: random image translation, px (seeded per step, so a resumed run draws the same ones).
        optimizer: an AdamW to continue (a resumed run); default: a new one.
        writer: a TensorBoard ``SummaryWriter`` (``<desc>/loss``, ``hop_mse``, ``hop_ce``, ``lr``) or None.
        on_step: optional ``fn(step, optimizer)`` called after every step (checkpointing).
        grad_hook: optional ``fn(model)`` called after each backward pass, before the gradient
            clipping (data-parallel training averages the gradients over its ranks there:
            :meth:`reward_models.distributed.Ranks.average_gradients`).
    Returns:
        {"loss": last smoothed loss, "mse": last smoothed hop MSE, "optimizer": the optimizer}.
    Raises:
        ValueError: an unknown loss.  FloatingPointError: the loss became NaN or inf.
    """
    if loss not in LOSSES:
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
            mask = b.get("replay")
            if mask is not None and bool(mask.any()):  # rehearsed pretraining pairs: their distribution too
                ce, _ = model.loss(_rows(out, mask), b["hop"][mask], mse_weight=0.0)
                total = total + ce
                parts["ce"] = float(ce.detach())
        else:
            total, parts = model.loss(out, b["hop"])
        if not torch.isfinite(total):
            raise FloatingPointError(f"loss became {float(total)} at step {step}")
        opt.zero_grad(set_to_none=True)
        total.backward()
        if grad_hook is not None:
            grad_hook(model)
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
