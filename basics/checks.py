"""Input checks: a bad value is refused with a ``ValueError`` (or ``TypeError``) that names it and
says what is allowed. The one set of checks every package uses (learners, the GRM, the jobs, the
ROS layer); validation happens once, where a value enters (a typed config's ``__post_init__``, a
file reader, a message intake), and code behind that boundary trusts it.
"""

from __future__ import annotations

import math
import numbers
import os

import torch


def check_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int when it is a whole number >= ``minimum`` (an integral float such as
    ``1e6`` is accepted; bool is not).

    Raises:
        ValueError: ``"{name} must be an int >= {minimum}, got {value!r}"``.
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok and not isinstance(value, numbers.Integral):
        ok = math.isfinite(float(value)) and float(value) == int(value)
    if not ok or int(value) < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def check_threads(threads, key: str = "threads") -> int:
    """A thread count: an int (numpy ints too, bool not) in ``[1, os.cpu_count()]``.

    Raises:
        ValueError: ``"threads must be an int in [1, 2] (this machine's CPU cores), got 0"``.
    """
    cores = os.cpu_count() or 1
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or not 1 <= int(threads) <= cores:
        raise ValueError(f"{key} must be an int in [1, {cores}] (this machine's CPU cores), got {threads!r}")
    return int(threads)


def check_float(name: str, value, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a float when it is finite and inside the interval given by ``low``/``high``
    (``None``: unbounded; ``*_open``: the bound itself is excluded).

    Raises:
        ValueError: ``"{name} must be a finite number in (0, 1], got {value!r}"`` (the interval as
            configured; ``"a finite number"`` alone when unbounded).
    """
    lo = "" if low is None else f"{'(' if low_open else '['}{low:g}"
    hi = "" if high is None else f"{high:g}{')' if high_open else ']'}"
    if low is None and high is None:
        allowed = "a finite number"
    elif high is None:
        allowed = f"a finite number {'>' if low_open else '>='} {low:g}"
    elif low is None:
        allowed = f"a finite number {'<' if high_open else '<='} {high:g}"
    else:
        allowed = f"a finite number in {lo}, {hi}"
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = ((low is None or (v > low if low_open else v >= low))
              and (high is None or (v < high if high_open else v <= high)))
    if not ok:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return float(value)


def check_states(name: str, x, dim: int, batch: int | None = None) -> torch.Tensor:
    """A batch of states or actions checked for shape and finiteness: float [B, dim] -> the same tensor.

    Args:
        name: what ``x`` is, for the message (e.g. ``"obs"``, ``"transition.action"``).
        x: a torch.Tensor [B, dim] (any float dtype, any device).
        dim: the expected last dimension (D for states, A for actions).
        batch: the expected B, or None for any B >= 1.
    Raises:
        TypeError: ``x`` is not a torch.Tensor.
        ValueError: a shape other than [B, dim] (both shapes named), or NaN/inf (first bad row named).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [B, {dim}], got {type(x).__name__}")
    want = f"[{'B' if batch is None else batch}, {dim}]"
    if x.ndim != 2 or x.shape[1] != dim or (batch is not None and x.shape[0] != batch):
        raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {want}")
    if x.is_floating_point() and not torch.isfinite(x).all():
        row = int(torch.nonzero(~torch.isfinite(x).all(1))[0, 0])
        raise ValueError(f"{name} contains NaN or inf (row {row})")
    return x


def check_widths(name: str, value) -> tuple[int, ...]:
    """Layer widths of an MLP: a non-empty list of whole numbers >= 1 -> a tuple of ints.

    Raises:
        ValueError: ``"{name} must be a non-empty list of ints >= 1, got {value!r}"``.
    """
    try:
        widths = tuple(value)
    except TypeError:
        widths = ()
    ok = bool(widths) and all(isinstance(w, numbers.Real) and not isinstance(w, bool) and math.isfinite(float(w))
                              and float(w) == int(w) and int(w) >= 1 for w in widths)
    if not ok:
        raise ValueError(f"{name} must be a non-empty list of ints >= 1, got {value!r}")
    return tuple(int(w) for w in widths)


def check_seed(value, *, key: str = "seed", count: int = 1) -> int:
    """A random seed for ``count`` sub-environments seeded ``value, value + 1, ..., value + count - 1``:
    a Python or numpy integer (not bool, float or str) with every one of those seeds in [0, 2**32 - 1]
    (the range numpy's ``SeedSequence`` / ``np.random.default_rng`` and HDF5's uint32 attributes take).

    Raises:
        ValueError: ``"{key}={value!r}: must be an integer in [0, {2**32 - count}] (...)"``.
    """
    high = 2**32 - int(count)
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= int(value) <= high
    if not ok:
        what = "" if count == 1 else f" so that {key} + i for each of the {count} sub-environments fits"
        raise ValueError(f"{key}={value!r}: must be an integer in [0, {high}]{what} "
                         f"(seeds are unsigned 32-bit)")
    return int(value)
