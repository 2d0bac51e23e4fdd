"""The resumable training state of a GRM checkpoint folder (``<checkpoint>/training_state/``), no pickle.

``state.safetensors`` holds the AdamW moments, ``state.json`` the ``format``, ``version``, the
step, the optimizer's structure and scalars, the torch RNG state (a list of bytes) and the pair
sampler's numpy bit-generator state (:func:`basics.state.write_state`). ``dopa reward-train``
writes it inside the same atomic folder swap as the model (:func:`reward_models.grm.save_checkpoint`
with ``training_state=``:func:`training_state`), so a checkpoint folder never holds a model
without the state it was saved with. A checkpoint without it (e.g. from ``dopa reward-adapt``)
is complete but cannot be resumed. An older ``training_state/state.pt`` (``torch.save``) is read with
``torch.load(weights_only=True)`` (tensors and plain containers only) or refused with a message
naming the file: this module is the one reader of both.
"""

from __future__ import annotations

from pathlib import Path

import torch

from basics.atomic import atomic_folder
from basics.state import StateFileError, read_state, write_state

__all__ = ["STATE_FORMAT", "STATE_VERSION", "has_training_state", "training_state", "save_training_state",
           "write_training_state", "load_training_state"]

STATE_FORMAT = "dopa-grm-training-state"
STATE_VERSION = 1


def has_training_state(folder) -> bool:
    """Whether the GRM checkpoint ``folder`` holds a training state (new or old format)."""
    ts = Path(folder) / "training_state"
    return (ts / "state.json").is_file() or (ts / "state.pt").is_file()


def write_training_state(folder: Path, state: dict) -> None:
    """Write ``state`` (a nested dict of tensors, arrays and scalars) with its ``format`` and
    ``version`` into the existing folder ``folder`` (``state.json`` + ``state.safetensors``).
    Not atomic by itself: callers write into a temporary folder (:func:`save_training_state`,
    :func:`reward_models.grm.save_checkpoint`)."""
    write_state(Path(folder), "state", {"format": STATE_FORMAT, "version": STATE_VERSION, **state})


def training_state(step: int, optimizer: torch.optim.Optimizer, sampler_rng: dict,
                   reference_rng: dict | None = None) -> dict:
    """The resumable state of a GRM training run as a nested dict for :func:`write_training_state`
    (or ``save_checkpoint(..., training_state=...)``): ``step``, the optimizer's state dict,
    ``torch_rng`` (the global torch RNG state as a list of uint8), ``sampler_rng`` and, when given,
    ``reference_rng``.

    Args:
        step: optimizer steps done.
        sampler_rng: ``np.random.Generator.bit_generator.state`` of the pair sampler.
        reference_rng: the same of :class:`reward_models.pairs.HopData`'s reference-frame draws.
    """
    state = {"step": int(step), "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state().tolist(),
             "sampler_rng": sampler_rng}
    if reference_rng is not None:
        state["reference_rng"] = reference_rng
    return state


def save_training_state(folder, step: int, optimizer: torch.optim.Optimizer, sampler_rng: dict,
                        reference_rng: dict | None = None) -> Path:
    """Write (only) ``<folder>/training_state/`` atomically: ``state.safetensors`` (the optimizer's
    tensors) + ``state.json`` (``format``, ``version`` and :func:`training_state`). No pickle.
    ``dopa reward-train`` does not use it: it writes the state with the model in one swap.

    Args:
        folder: an existing GRM checkpoint folder.  step, sampler_rng, reference_rng: :func:`training_state`.
    Returns:
        The ``training_state`` folder.
    """
    state = training_state(step, optimizer, sampler_rng, reference_rng)
    path = Path(folder) / "training_state"
    with atomic_folder(path, marker="state.json") as tmp:
        write_training_state(tmp, state)
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
            more than tensors and plain containers (it is not unpickled; the message names it).
    """
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
        if "torch_rng" in state:
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
