"""State I/O without pickle: nested states (dicts, lists, tuples, tensors, numpy arrays, scalars)
as a JSON tree + a safetensors file, JSON files with a format and version, and the global RNG
states. The one reader and writer behind checkpoints, GRM training states and deployment policies.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


class StateFileError(RuntimeError):
    """A state file is missing, corrupt or of another format (the message names the file)."""


# ---------------------------------------------------------------------------------------------
# Nested state <-> (JSON tree, flat tensors)
# ---------------------------------------------------------------------------------------------

def flatten_state(tree, prefix: str = "") -> tuple[object, dict[str, torch.Tensor]]:
    """Split a nested state (dicts, lists, tuples, tensors, numpy arrays, scalars, None) into a
    JSON-able tree and a flat ``{key: tensor}`` dict for safetensors.

    Raises:
        TypeError: a leaf of another type (names its path).
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(x, path):
        if isinstance(x, torch.Tensor):
            key = path or "_"
            tensors[key] = x.detach().cpu().contiguous().clone()
            return {"__tensor__": key}
        if isinstance(x, np.ndarray):
            key = path or "_"
            tensors[key] = torch.from_numpy(np.ascontiguousarray(x).astype(np.int64 if x.dtype.kind in "ui" else x.dtype))
            return {"__ndarray__": key, "dtype": str(x.dtype)}
        if isinstance(x, dict):
            return {"__dict__": [[k if isinstance(k, (int, str)) else str(k), walk(v, f"{path}/{k}")]
                                 for k, v in x.items()]}
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v, f"{path}/{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(x)]
        if isinstance(x, (np.integer,)):
            return int(x)
        if isinstance(x, (np.floating,)):
            return float(x)
        if x is None or isinstance(x, (bool, int, float, str)):
            if isinstance(x, float) and not np.isfinite(x):
                return {"__float__": repr(x)}
            return x
        raise TypeError(f"cannot store {type(x).__name__} at {path or '<root>'} in a checkpoint")

    return walk(tree, prefix), tensors


def unflatten_state(tree, tensors: dict[str, torch.Tensor], error: type[Exception] | None = None):
    """Inverse of :func:`flatten_state`.

    Raises:
        error (default :class:`StateFileError`): a tensor key the tree names is missing, or an
            unknown node.
    """
    error = error or StateFileError

    def walk(x):
        if isinstance(x, dict):
            if "__tensor__" in x:
                if x["__tensor__"] not in tensors:
                    raise error(f"tensor {x['__tensor__']!r} missing from the checkpoint")
                return tensors[x["__tensor__"]]
            if "__ndarray__" in x:
                if x["__ndarray__"] not in tensors:
                    raise error(f"array {x['__ndarray__']!r} missing from the checkpoint")
                return tensors[x["__ndarray__"]].numpy().astype(x["dtype"])
            if "__dict__" in x:
                return {k: walk(v) for k, v in x["__dict__"]}
            if "__tuple__" in x:
                return tuple(walk(v) for v in x["__tuple__"])
            if "__float__" in x:
                return float(x["__float__"])
            raise error(f"unknown node in checkpoint tree: {sorted(x)}")
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    return walk(tree)


def read_json(path, error: type[Exception], *, label: str = "", fmt: str | None = None,
              version: int | None = None):
    """Read a JSON file dopa wrote and, with ``fmt``, check its ``format`` and ``version`` fields
    (the one reader behind checkpoints, training states and deployment policy files).

    Args:
        path: the file.  error: the exception class raised (e.g. :class:`CheckpointError`).
        label: words naming the kind of file in the messages, e.g. ``"checkpoint file"``.
        fmt, version: when ``fmt`` is given the file must be a JSON object with ``"format": fmt``
            and ``"version": version``.
    Returns:
        The parsed JSON value.
    Raises:
        error: ``"<label> <path> is missing"``, ``"corrupt <label> <path>: <reason>"``,
            ``"<path> is not a <fmt> file (format=...)"`` or
            ``"<path> has version V; this code reads version N"``.
    """
    path = Path(path)
    name = f"{label} {path}" if label else str(path)
    if not path.is_file():
        raise error(f"{name} is missing")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"corrupt {name}: {exc}") from None
    if fmt is not None:
        found = data.get("format") if isinstance(data, dict) else None
        if found != fmt:
            raise error(f"{path} is not a {fmt} file (format={found!r})")
        if data.get("version") != version:
            raise error(f"{path} has version {data.get('version')!r}; this code reads version {version}")
    return data


def load_tensors(path, error: type[Exception] | None = None, *, label: str = "checkpoint file",
                 finite: bool = False) -> dict[str, torch.Tensor]:
    """Read a safetensors file (CPU tensors), checked: the one reader behind checkpoints, GRM
    checkpoints, training states and deployment policies.

    Args:
        path: the ``.safetensors`` file.  error: the exception class raised (default
            :class:`StateFileError`).  label: words naming the kind of file in the messages.
        finite: refuse a floating-point tensor holding NaN or inf (weights: a policy or reward
            model that would act on garbage).
    Returns:
        ``{name: tensor}`` as stored.
    Raises:
        error: ``"<label> <path> is missing"``, ``"corrupt <label> <path>: <reason>"`` (truncated
            or not a safetensors file), or ``"<label> <path>: tensor 'k' contains NaN or inf"``.
    """
    error = error or StateFileError
    path = Path(path)
    if not path.is_file():
        raise error(f"{label} {path} is missing")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error(f"corrupt {label} {path}: {reason}") from None
    if finite:
        for k, v in tensors.items():
            if v.is_floating_point() and not bool(torch.isfinite(v).all()):
                raise error(f"{label} {path}: tensor {k!r} contains NaN or inf; refusing to load it")
    return tensors


def check_keys(data: dict, allowed, where: str, error: type[Exception] | None = None) -> None:
    """Refuse keys of a JSON object dopa wrote that this code does not know (a misspelt or foreign
    key would otherwise be ignored and a default used in its place).

    Args:
        data: the JSON object.  allowed: the keys it may have.  where: what it is, for the message
            (e.g. ``"runs/grm/config.json: grm"``).  error: the exception class (default
            :class:`StateFileError`).
    Raises:
        error: ``"<where>: unknown key 'widht'; known keys: ..."``.
    """
    error = error or StateFileError
    unknown = [k for k in data if k not in set(allowed)]
    if unknown:
        raise error(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                    f"known keys: {', '.join(sorted(allowed))}")


def write_state(folder: Path, name: str, state) -> None:
    """Write a nested state as ``<folder>/<name>.safetensors`` (its tensors) + ``<name>.json`` (the
    tree and every other leaf; :func:`flatten_state`). No pickle."""
    tree, tensors = flatten_state(state)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(tree))


def read_state(folder: Path, name: str, error: type[Exception] | None = None):
    """Read a nested state written by :func:`write_state`.

    Raises:
        error (default :class:`StateFileError`; checkpoints pass their ``CheckpointError``): a
            missing or corrupt file, or a tensor the tree names that is missing.
    """
    error = error or StateFileError
    jpath, tpath = folder / f"{name}.json", folder / f"{name}.safetensors"
    for p in (jpath, tpath):
        if not p.is_file():
            raise error(f"checkpoint file {p} is missing")
    tree = read_json(jpath, error, label="checkpoint file")
    return unflatten_state(tree, load_tensors(tpath, error), error)


# ---------------------------------------------------------------------------------------------
# RNG states
# ---------------------------------------------------------------------------------------------

def rng_state() -> dict:
    """torch, numpy and python global RNG states (CPU)."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].to(torch.uint8))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.asarray(np_state[1], dtype=np.uint32), *np_state[2:]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
