"""Data-parallel GRM pretraining with ``torch.distributed`` (one process per rank, as DDP does).

Every rank holds the same model (rank 0's weights broadcast at the start), draws its own hop pairs
from the same episode files with a rank-dependent seed (:func:`stream_seed`; rank 0 keeps the run's
``seed``, so one rank is exactly single-process training), and after each backward pass the
gradients are averaged over the ranks (one flat ``all_reduce``, :meth:`Ranks.average_gradients`,
before the gradient clipping), so every rank takes the same optimizer step: training with
``batch_size`` pairs per rank on W ranks is training with the summed batch of W x ``batch_size``
pairs. Rank 0 alone writes the checkpoint folder (atomically, :func:`reward_models.grm.save_checkpoint`),
the training state, TensorBoard and the progress bar.

Resume across a changed number of ranks: the model, the optimizer and the step are the same on
every rank, so they are rank 0's; the pair streams of a data-parallel run (or a run resumed from
one) are re-seeded from (``seed``, rank, step) (:meth:`Ranks.reseed`), since a stream per rank
cannot be carried over to another number of ranks.

:class:`Ranks` with ``streams`` (several ranks' pair streams drawn in one process) is the
single-process equivalent of a data-parallel run: the same pairs as W ranks, in one batch.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Ranks", "StreamBatches", "stream_seed", "init_from_env", "backend_for", "saved_world_size", "RANK_ENV"]

#: environment variables ``torchrun`` sets in each rank's process
RANK_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def stream_seed(seed: int, rank: int, step: int = 0) -> int:
    """The pair-sampling seed of ``rank`` (``seed`` itself for rank 0 at step 0; else a 31-bit
    seed drawn from ``numpy.random.SeedSequence([seed, rank, step])``)."""
    if rank == 0 and step == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(rank), int(step)]).generate_state(1)[0] >> 1)


def backend_for(device: str = "cpu") -> str:
    """``nccl`` for a CUDA device (one GPU per rank), else ``gloo``."""
    return "nccl" if str(device).startswith("cuda") else "gloo"


class StreamBatches:
    """Several pair streams (:class:`reward_models.pairs.HopData`) drawn as one: ``batch(n)``
    concatenates ``n / len(datas)`` pairs of each stream, in stream order."""

    def __init__(self, datas: list):
        self.datas = list(datas)

    def __getattr__(self, name):  # sampler, rng, episodes, ...: the first stream's
        return getattr(self.datas[0], name)

    def batch(self, n: int, shift: int = 0, gen: torch.Generator | None = None) -> dict:
        """Like :meth:`HopData.batch`; ``n`` must be a multiple of the number of streams."""
        k = len(self.datas)
        if n % k:
            raise ValueError(f"batch of {n} pairs cannot be split over {k} streams")
        parts = [d.batch(n // k, shift=shift, gen=gen) for d in self.datas]
        out = {}
        for key, v in parts[0].items():
            if isinstance(v, dict):
                out[key] = {view: torch.cat([p[key][view] for p in parts]) for view in v}
            else:
                out[key] = torch.cat([p[key] for p in parts])
        return out


@dataclass
class Ranks:
    """This process's place in a data-parallel run.

    Args:
        rank, world_size: as ``torch.distributed`` numbers them (0 and 1: one process).
        streams: the ranks whose pair streams this process draws (default: its own rank); more
            than one emulates those ranks in one process (:class:`StreamBatches`).
    """

    rank: int = 0
    world_size: int = 1
    streams: tuple[int, ...] | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints and logs."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        """Gradients are averaged over processes (an initialised process group of > 1 ranks)."""
        return self.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()

    @property
    def reseeds_on_resume(self) -> bool:
        """Whether the pair streams are re-seeded on resume rather than restored (more than one stream)."""
        return self.world_size > 1 or len(self.stream_ranks) > 1

    @property
    def stream_ranks(self) -> tuple[int, ...]:
        return tuple(self.streams) if self.streams else (self.rank,)

    def make_data(self, make, seed: int, step: int = 0):
        """The pair data of this process: ``make(seed)`` per stream (:func:`stream_seed`); one
        :class:`HopData` or a :class:`StreamBatches` of several."""
        datas = [make(stream_seed(seed, r, step)) for r in self.stream_ranks]
        return datas[0] if len(datas) == 1 else StreamBatches(datas)

    def reseed(self, data, seed: int, step: int) -> None:
        """Re-seed every stream of ``data`` (its sampler and reference draws) from (seed, rank, step)."""
        for r, d in zip(self.stream_ranks, getattr(data, "datas", [data]), strict=True):
            s = stream_seed(seed, r, step)
            d.sampler.rng = np.random.default_rng(s)
            d.rng = np.random.default_rng(s + 1)

    def broadcast(self, model: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers to every rank (all start from the same weights)."""
        if self.parallel:
            for t in list(model.parameters()) + list(model.buffers()):
                torch.distributed.broadcast(t.data, src=0)

    def average_gradients(self, model: torch.nn.Module) -> None:
        """Average the gradients over the ranks (one flat all_reduce; a parameter without a
        gradient counts as zero), as DDP does; nothing on one process."""
        if not self.parallel:
            return
        params = list(model.parameters())
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        flat /= self.world_size
        i = 0
        for p in params:
            n = p.numel()
            p.grad = flat[i:i + n].view_as(p).clone()
            i += n

    def close(self) -> None:
        """Leave the process group (when this process joined one), all ranks together.

        ``destroy_process_group`` is collective: a rank that tears its connections down while
        another still works (rank 0 saving and reloading the checkpoint) can abort either
        process, so every rank first waits at a barrier."""
        if self.parallel:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def init_from_env(timeout_s: float = 120.0, backend: str = "auto", device: str = "cpu") -> Ranks:
    """Join the process group ``torchrun`` set up (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
    ``MASTER_PORT`` in the environment); a process started without them is rank 0 of 1.

    Args:
        timeout_s: the process group's timeout, s: a collective that waits longer (a rank died
            without its connection closing) fails instead of hanging.
        backend: ``gloo`` | ``nccl`` | ``auto`` (:func:`backend_for` ``device``).
    Raises:
        ValueError: a timeout <= 0 or an unknown backend.
    """
    if not timeout_s > 0:
        raise ValueError(f"distributed.timeout_s must be > 0 s, got {timeout_s}")
    if not all(k in os.environ for k in RANK_ENV):
        return Ranks()
    world = int(os.environ["WORLD_SIZE"])
    rank = int(os.environ["RANK"])
    if world == 1:
        return Ranks()
    backend = backend_for(device) if backend == "auto" else backend
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"distributed.backend must be auto, gloo or nccl, got {backend!r}")
    torch.distributed.init_process_group(backend, timeout=datetime.timedelta(seconds=float(timeout_s)))
    return Ranks(rank=rank, world_size=world)


def saved_world_size(folder) -> int:
    """The number of ranks that trained the GRM checkpoint ``folder`` (``info.world_size`` of its
    ``config.json``; 1 when absent or unreadable)."""
    import json
    from pathlib import Path

    try:
        info = json.loads((Path(folder) / "config.json").read_text()).get("info", {})
        return max(1, int(info.get("world_size", 1)))
    except (OSError, ValueError, TypeError, AttributeError):
        return 1
