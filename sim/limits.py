"""The allowed ranges of the simulation API's physical inputs, checked the same way by every backend.

Pure functions: each returns the value in a plain form or raises :class:`ValueError` with one line
naming the argument, the value and what is allowed. The CPU backend (:mod:`sim.vector`,
:mod:`sim.base`), the MuJoCo Warp backend (:mod:`sim.warp_env`) and any other backend call these, so
a value one backend refuses is refused by all.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

#: allowed physics scale factors relative to nominal (mass, friction, damping, gain): a scale outside
#: makes MuJoCo's integrator unstable (e.g. mass 1e-300) long before it models anything physical.
SCALE_RANGE = (0.01, 100.0)

#: pixels per side of a rendered view (square)
IMAGE_SIZE_RANGE = (8, 1024)


def _is_real(value) -> bool:
    """A real number: int, float or numpy scalar; never bool or str."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_wrench_bounds(max_force, max_torque) -> tuple[float, float]:
    """The clip of external wrench components: ``max_force`` (N) and ``max_torque`` (N m).

    Returns:
        ``(max_force, max_torque)`` as floats.
    Raises:
        ValueError: ``"max_force must be a finite real number >= 0 (N), got nan"`` for a NaN, inf,
            negative, bool, str or other non-number (the same for ``max_torque``, N m).
    """
    out = []
    for name, value, unit in (("max_force", max_force, "N"), ("max_torque", max_torque, "N m")):
        if not (_is_real(value) and math.isfinite(float(value)) and float(value) >= 0):
            raise ValueError(f"{name} must be a finite real number >= 0 ({unit}), got {value!r}")
        out.append(float(value))
    return out[0], out[1]


def _check_scale(name: str, value) -> float | np.ndarray | None:
    if value is None:
        return None
    lo, hi = SCALE_RANGE
    allowed = f"a real number (or one per env) in [{lo:g}, {hi:g}] relative to nominal, or None"
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, (list, tuple, np.ndarray)):
        arr = np.asarray(value)
        if arr.dtype.kind not in "iuf" or arr.ndim != 1 or arr.size == 0:
            raise ValueError(f"{name} scale must be {allowed}, got {value!r}")
        arr = arr.astype(np.float64)
        if not (np.isfinite(arr).all() and (arr >= lo).all() and (arr <= hi).all()):
            raise ValueError(f"{name} scale must be {allowed}, got {arr.tolist()}")
        return arr
    if not (_is_real(value) and math.isfinite(float(value)) and lo <= float(value) <= hi):
        raise ValueError(f"{name} scale must be {allowed}, got {value!r}")
    return float(value)


def check_scales(**scales) -> dict[str, float | np.ndarray | None]:
    """Physics scale factors relative to nominal, e.g. ``check_scales(mass=1.2, friction=None)``.

    Each value is ``None`` (unchanged), a real number, or a 1-D sequence / array / tensor of them
    (one per env; the caller checks its length), every number in :data:`SCALE_RANGE` = [0.01, 100].

    Returns:
        ``{name: float | float64 [B] array | None}`` in the order given.
    Raises:
        ValueError: ``"mass scale must be a real number ... in [0.01, 100] ..., got '2'"`` for a
            str, bool, NaN, inf or a value outside the range.
    """
    return {name: _check_scale(name, value) for name, value in scales.items()}


def check_image_size(image_size, name: str = "image_size") -> int:
    """Pixels per side of a rendered view: an int (not bool, not a float like 2.7) in [8, 1024].

    Raises:
        ValueError: ``"image_size must be an int in [8, 1024], got 2.7"``.
    """
    lo, hi = IMAGE_SIZE_RANGE
    if not (isinstance(image_size, numbers.Integral) and not isinstance(image_size, (bool, np.bool_))
            and lo <= int(image_size) <= hi):
        raise ValueError(f"{name} must be an int in [{lo}, {hi}], got {image_size!r}")
    return int(image_size)


def check_views(views, allowed) -> list[str]:
    """Camera view names: a name or a non-empty sequence of distinct names, each one of ``allowed``.

    Returns:
        the views as a list of str, in the order given.
    Raises:
        ValueError: ``"unknown view 'wrist2'; known: front, side"``, ``"view 'front' is repeated in
            ['front', 'front']; give each view once"``, or an empty list.
    """
    allowed = list(allowed)
    views = [views] if isinstance(views, str) else list(views)
    if not views:
        raise ValueError(f"views must name at least one view; known: {', '.join(allowed)}")
    seen = set()
    for v in views:
        if not isinstance(v, str) or v not in allowed:
            raise ValueError(f"unknown view {v!r}; known: {', '.join(allowed)}")
        if v in seen:
            raise ValueError(f"view {v!r} is repeated in {views}; give each view once")
        seen.add(v)
    return views


def check_gravity(gravity) -> np.ndarray:
    """A gravity vector: 3 finite real numbers, m/s^2, world frame (MuJoCo's ``opt.gravity``).

    Returns:
        float64 ``[3]``.
    Raises:
        ValueError: ``"gravity must be 3 finite real numbers (m/s^2), got ..."``.
    """
    if hasattr(gravity, "detach"):  # a torch tensor
        gravity = gravity.detach().cpu().numpy()
    try:
        arr = np.asarray(gravity)
    except Exception:
        arr = np.asarray([None])
    if arr.shape != (3,) or arr.dtype.kind not in "iuf" or not np.isfinite(arr.astype(np.float64)).all():
        raise ValueError(f"gravity must be 3 finite real numbers (m/s^2, world frame), got {gravity!r}")
    return arr.astype(np.float64)


def gravity_tilt(degrees, axis: str = "x", magnitude: float = 9.81) -> np.ndarray:
    """Gravity of ``magnitude`` m/s^2 tilted by ``degrees`` about world ``axis`` from straight down.

    ``[0, 0, -magnitude]`` rotated by ``degrees`` about +``axis`` (right-handed): ``gravity_tilt(0)`` is
    ``[0, 0, -9.81]``; ``gravity_tilt(90, "x")`` is ``[0, 9.81, 0]``; ``gravity_tilt(90, "y")`` is ``[-9.81, 0, 0]``.

    Returns:
        float64 ``[3]``, m/s^2, for :meth:`set_gravity`.
    Raises:
        ValueError: ``degrees`` not a finite real number in [-180, 180], ``axis`` not x/y, or
            ``magnitude`` not a finite real number >= 0.
    """
    if not (_is_real(degrees) and math.isfinite(float(degrees)) and -180 <= float(degrees) <= 180):
        raise ValueError(f"gravity tilt must be a finite real number of degrees in [-180, 180], got {degrees!r}")
    if axis not in ("x", "y"):
        raise ValueError(f"gravity tilt axis must be 'x' or 'y', got {axis!r}")
    if not (_is_real(magnitude) and math.isfinite(float(magnitude)) and float(magnitude) >= 0):
        raise ValueError(f"gravity magnitude must be a finite real number >= 0 (m/s^2), got {magnitude!r}")
    a, g = math.radians(float(degrees)), float(magnitude)
    if axis == "x":  # R_x(a) @ [0, 0, -g]
        return np.array([0.0, g * math.sin(a), -g * math.cos(a)])
    return np.array([-g * math.sin(a), 0.0, -g * math.cos(a)])  # R_y(a) @ [0, 0, -g]
