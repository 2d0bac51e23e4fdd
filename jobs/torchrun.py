"""``dopa reward-train ... distributed.nproc=2``: data-parallel GRM pretraining launched with torchrun.

:func:`launch` checks the ``distributed`` keys (one line, before anything starts), writes the job's
resolved config to a temporary file and runs ``torch.distributed.run`` (torchrun, in this process)
with a c10d rendezvous: on one node it is bound to 127.0.0.1 on a free port (``--local-addr`` and
``GLOO_SOCKET_IFNAME=lo``), so nothing listens beyond loopback; ``distributed.master_addr`` names
another host for several nodes (the same command on each node, ``distributed.nnodes`` of them, or
one Slurm task per node). Each rank runs ``python -m jobs.torchrun <config>``, which calls the job
again inside the rank (:func:`reward_models.distributed.init_from_env` joins the process group).
A rank that dies or fails ends the job: torchrun stops the others and :func:`launch` names the rank
and how it ended in one line; the process group's ``timeout_s`` bounds any wait on a dead peer.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from reward_models.distributed import RANK_ENV

__all__ = ["wants_launch", "in_rank", "check_distributed", "launch", "rank_threads"]

#: the rendezvous port across nodes when ``distributed.master_port`` is null (torchrun's default)
MULTI_NODE_PORT = 29400


def in_rank() -> bool:
    """Whether this process is a rank torchrun started (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` set)."""
    return all(k in os.environ for k in RANK_ENV)


def wants_launch(cfg: DictConfig) -> bool:
    """Whether ``cfg`` asks for more than one rank and this process is not one of them yet."""
    d = cfg.get("distributed") or {}
    return not in_rank() and (int(d.get("nproc", 1) or 1) != 1 or int(d.get("nnodes", 1) or 1) != 1)


def rank_threads(threads: int) -> int:
    """Torch CPU threads of one rank: ``threads`` shared by the ranks of this node (at least 1)."""
    return max(1, int(threads) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _int(d, key: str, low: int, high: int | None = None) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
        rng = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"distributed.{key} must be an int {rng}, got {v!r}")
    return v


def check_distributed(cfg: DictConfig) -> dict:
    """The ``distributed`` keys, checked before anything starts.

    Returns:
        ``{"nproc", "nnodes", "addr", "port", "backend", "timeout_s", "loopback"}`` (port None: pick a free one).
    Raises:
        ValueError: ``nproc`` < 1 or more than this machine's cores (gloo) or GPUs (nccl),
            ``nnodes`` < 1, several nodes without ``master_addr``, a ``master_addr`` that does not
            resolve or (one node) is not an address of this machine, a bad port, backend or timeout.
    """
    d = cfg.distributed
    backend = str(d.get("backend", "auto"))
    if backend not in ("auto", "gloo", "nccl"):
        raise ValueError(f"distributed.backend must be auto, gloo or nccl, got {backend!r}")
    import torch  # third-party; the GPU count decides nccl's limit

    gpu = backend == "nccl"
    if gpu and not torch.cuda.is_available():
        raise ValueError("distributed.backend=nccl needs CUDA GPUs; this machine has none (use gloo)")
    limit, what = (torch.cuda.device_count(), "GPUs") if gpu else (_cores(), "CPU cores")
    nproc = _int(d, "nproc", 1)
    if nproc > limit:
        raise ValueError(f"distributed.nproc={nproc} is more than this machine's {limit} {what}; allowed: 1..{limit}")
    nnodes = _int(d, "nnodes", 1)
    timeout = d.get("timeout_s")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"distributed.timeout_s must be a number > 0 (seconds), got {timeout!r}")
    port = None if d.get("master_port") is None else _int(d, "master_port", 1, 65535)
    addr = d.get("master_addr")
    if addr is None:
        if nnodes > 1:
            raise ValueError(f"distributed.nnodes={nnodes} needs distributed.master_addr=<the first node's "
                             "address> (the rendezvous host every node reaches)")
        addr = "127.0.0.1"
    addr = str(addr)
    try:
        infos = socket.getaddrinfo(addr, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ValueError(f"distributed.master_addr={addr!r} does not resolve ({exc.strerror or exc}); give a "
                         "host name or IP address every node reaches") from None
    if nnodes == 1:  # one node hosts the rendezvous itself: the address must be one of its own
        family, _, _, _, sockaddr = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((sockaddr[0], 0))
            except OSError as exc:
                raise ValueError(f"distributed.master_addr={addr!r} is not an address of this machine "
                                 f"({exc.strerror}); with one node leave it null (127.0.0.1)") from None
    loopback = all(str(i[4][0]).startswith("127.") or i[4][0] == "::1" for i in infos)
    return {"nproc": nproc, "nnodes": nnodes, "addr": addr, "port": port, "backend": backend,
            "timeout_s": float(timeout), "loopback": loopback}


def _free_port(addr: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((addr, 0))
        return int(s.getsockname()[1])


def torchrun_args(d: dict, config_file: str, target: str = "jobs.reward:run_train") -> list[str]:
    """torchrun's arguments for the checked ``distributed`` keys ``d``: c10d rendezvous at
    ``addr:port``, no restarts, each rank ``python -m jobs.torchrun <target> <config_file>``."""
    port = d["port"] or (_free_port(d["addr"]) if d["nnodes"] == 1 else MULTI_NODE_PORT)
    args = ["--nnodes", str(d["nnodes"]), "--nproc-per-node", str(d["nproc"]), "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"{d['addr']}:{port}", "--rdzv-id", f"dopa-reward-train-{port}",
            "--max-restarts", "0", "--monitor-interval", "0.5"]
    if d["loopback"]:
        args += ["--local-addr", "127.0.0.1"]
    return args + ["-m", "jobs.torchrun", target, config_file]


def _failure_line(exc, world: int) -> str:
    """One line for torchrun's ChildFailedError: the first rank that failed and how."""
    rank, failure = exc.get_first_failure()
    if failure.exitcode is not None and failure.exitcode < 0:
        how = f"was killed by {failure.signal_name()}"
    else:
        how = f"failed with exit code {failure.exitcode} (its error is above)"
    others = "; the other ranks were stopped" if world > 1 else ""
    return f"distributed training failed: rank {rank} of {world} {how}{others}"


def launch(cfg: DictConfig, job: str = "reward-train", target: str = "jobs.reward:run_train") -> int:
    """Run ``cfg``'s job (``target``: ``module:function``, run in every rank) on
    ``distributed.nproc`` ranks through torchrun (see the module docstring).

    Returns:
        0 when every rank finished, 1 after printing one line naming the rank that failed.
    Raises:
        ValueError: bad ``distributed`` keys (:func:`check_distributed`), before anything starts.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    d = check_distributed(cfg)
    folder = tempfile.mkdtemp(prefix="dopa-ranks-")
    try:
        config_file = str(Path(folder) / "config.yaml")
        OmegaConf.save(cfg, config_file, resolve=True)
        env = {"OMP_NUM_THREADS": str(rank_threads_for(cfg, d["nproc"]))}
        if d["loopback"]:
            env["GLOO_SOCKET_IFNAME"] = "lo"
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        world = d["nproc"] * d["nnodes"]
        print(f"dopa {job}: {world} ranks ({d['nproc']} per node x {d['nnodes']} node(s)), backend "
              f"{d['backend']}, rendezvous {d['addr']}", flush=True)
        try:
            run(parse_args(torchrun_args(d, config_file, target)))
        except ChildFailedError as exc:
            print(f"dopa {job}: error: {_failure_line(exc, world)}", file=sys.stderr, flush=True)
            return 1
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def rank_threads_for(cfg: DictConfig, nproc: int) -> int:
    """``threads`` shared by ``nproc`` ranks (at least 1 each)."""
    return max(1, int(cfg.get("threads", 1) or 1) // max(1, nproc))


def rank_main(target: str, config_file: str) -> int:
    """One rank (torchrun runs ``python -m jobs.torchrun <target> <config_file>``): the job
    function ``target`` (``module:function``) with the config; a bad value is one line naming the
    rank, exit code 1."""
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    cfg = OmegaConf.load(config_file)
    rank = os.environ.get("RANK", "?")
    try:
        return int(func(cfg) or 0)
    except (ValueError, TypeError, OSError) as exc:
        if os.environ.get("DOPA_DEBUG"):
            raise
        print(f"dopa (rank {rank}): error: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(rank_main(sys.argv[1], sys.argv[2]))
