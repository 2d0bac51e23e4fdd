"""Command safety for the policy node: joint limits, a per-step delta clamp, a velocity limit and a
stamp-based watchdog. Pure Python and numpy (no ROS import), so every rule is unit-testable.

The guarantees, for any input (property-tested in ``tests/test_safety.py``):

- :meth:`SafetyFilter.filter` returns finite positions inside ``[lower + margin, upper - margin]``
  for every joint, and consecutive points (the first one against the measured position, itself
  clipped into the limits) differ by at most ``min(max_delta, velocity_scale * max_velocity * dt)``
  per joint; a non-finite target raises instead of passing through.
- :meth:`Watchdog.check` reports a reason whenever a required observation is missing or was last
  **received** more than ``max_age`` ago on a steady clock (``time.monotonic``), so liveness never
  depends on a clock that can stop or jump (simulated time); header stamps are checked for order
  and plausibility where the messages are taken in (:class:`ros.policy_core.PolicyCore`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Iterable, Mapping, Sequence

import numpy as np


class SafetyError(ValueError):
    """A command or measurement violates a safety rule the filter cannot repair (the text says which)."""


@dataclasses.dataclass(frozen=True)
class JointLimits:
    """Per-joint limits of an arm, in the robot's joint order.

    Attributes:
        names: N joint names.
        lower, upper: float64 [N] position limits (rad), lower < upper.
        velocity: float64 [N] velocity limits (rad/s), > 0.
    """

    names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray

    def __post_init__(self):
        n = len(self.names)
        object.__setattr__(self, "names", tuple(str(x) for x in self.names))
        for field in ("lower", "upper", "velocity"):
            arr = np.asarray(getattr(self, field), dtype=np.float64).reshape(-1)
            if arr.shape != (n,):
                raise ValueError(f"joint limits {field} has {arr.size} entries for {n} joints {list(self.names)}")
            if not np.isfinite(arr).all():
                raise ValueError(f"joint limits {field} must be finite, got {arr.tolist()}")
            arr.setflags(write=False)
            object.__setattr__(self, field, arr)
        bad = [self.names[i] for i in np.flatnonzero(self.lower >= self.upper)]
        if bad:
            raise ValueError(f"joint limits: lower >= upper for {bad}")
        bad = [self.names[i] for i in np.flatnonzero(self.velocity <= 0)]
        if bad:
            raise ValueError(f"joint limits: velocity limit must be > 0 rad/s for {bad}")
        if len(set(self.names)) != n:
            raise ValueError(f"joint names repeat: {list(self.names)}")

    @classmethod
    def from_config(cls, joints: Sequence[Mapping]) -> "JointLimits":
        """Build from a robot config's ``joints`` list: ``[{name, lower, upper, velocity}, ...]`` (rad, rad/s).

        Raises:
            ValueError: a joint entry lacks a key (named) or the limits are inconsistent.
        """
        rows = []
        for i, j in enumerate(joints):
            missing = [k for k in ("name", "lower", "upper", "velocity") if k not in j]
            if missing:
                raise ValueError(f"robot joint {i} ({dict(j).get('name', '?')}) lacks {missing}")
            rows.append((j["name"], float(j["lower"]), float(j["upper"]), float(j["velocity"])))
        if not rows:
            raise ValueError("robot config lists no joints")
        names, lo, hi, vel = zip(*rows, strict=True)
        return cls(tuple(names), np.array(lo), np.array(hi), np.array(vel))


class SafetyFilter:
    """Make joint-position targets safe: delta clamp, velocity limit, then position limits.

    Args:
        limits: the arm's :class:`JointLimits`.
        max_delta: largest change per trajectory point (rad), scalar or [N]; None disables the
            delta clamp (it is on by default in ``configs/deploy.yaml``).
        velocity_scale: fraction (0, 1] of the velocity limits allowed; each point may move at most
            ``velocity_scale * velocity * dt``.
        margin: stay this far (rad) inside the position limits.
        position_tolerance: a *measured* position may be this far (rad) outside the limits (sensor
            noise, controller overshoot) before :meth:`check_measurement` refuses it.
    Raises:
        ValueError: non-positive ``max_delta``, ``velocity_scale`` outside (0, 1], a negative margin
            or a margin that leaves no room between the limits.
    """

    def __init__(self, limits: JointLimits, max_delta: float | Sequence[float] | None = 0.05,
                 velocity_scale: float = 1.0, margin: float = 0.0, position_tolerance: float = 0.05):
        self.limits = limits
        n = len(limits.names)
        if max_delta is not None:
            md = np.broadcast_to(np.asarray(max_delta, dtype=np.float64), (n,)).copy()
            if not (np.isfinite(md).all() and (md > 0).all()):
                raise ValueError(f"max_delta must be a finite number > 0 rad (one, or one per joint) or null "
                                 f"(no delta clamp), got {max_delta!r}")
            self.max_delta = md
        else:
            self.max_delta = None
        if not (math.isfinite(velocity_scale) and 0.0 < float(velocity_scale) <= 1.0):
            raise ValueError(f"velocity_scale must be in (0, 1], got {velocity_scale!r}")
        self.velocity_scale = float(velocity_scale)
        if not (math.isfinite(margin) and margin >= 0):
            raise ValueError(f"margin must be a finite number >= 0 rad, got {margin!r}")
        self.lower = limits.lower + float(margin)
        self.upper = limits.upper - float(margin)
        if (self.lower >= self.upper).any():
            raise ValueError(f"margin {margin} rad leaves no room inside the limits of "
                             f"{[limits.names[i] for i in np.flatnonzero(self.lower >= self.upper)]}")
        if not (math.isfinite(position_tolerance) and position_tolerance >= 0):
            raise ValueError(f"position_tolerance must be a finite number >= 0 rad, got {position_tolerance!r}")
        self.position_tolerance = float(position_tolerance)

    def step_bound(self, dt: float) -> np.ndarray:
        """Largest allowed change per point (rad) for points ``dt`` seconds apart: float64 [N]."""
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be > 0 s, got {dt!r}")
        bound = self.velocity_scale * self.limits.velocity * float(dt)
        return bound if self.max_delta is None else np.minimum(bound, self.max_delta)

    def check_measurement(self, q: np.ndarray) -> None:
        """Refuse a measured position that is non-finite or beyond the limits by more than the tolerance.

        Raises:
            SafetyError: naming the joints, their values and their limits.
        """
        q = np.asarray(q, dtype=np.float64)
        if q.shape != self.lower.shape:
            raise SafetyError(f"measured position has shape {q.shape}, expected {self.lower.shape}")
        lo, hi = self.limits.lower - self.position_tolerance, self.limits.upper + self.position_tolerance
        bad = np.flatnonzero(~np.isfinite(q) | (q < lo) | (q > hi))
        if bad.size:
            desc = ", ".join(f"{self.limits.names[i]}={q[i]:.4g} not in [{self.limits.lower[i]:.4g}, "
                             f"{self.limits.upper[i]:.4g}]" for i in bad)
            raise SafetyError(f"measured joint position outside the limits (+-{self.position_tolerance} rad): {desc}")

    def hold(self, q: np.ndarray) -> np.ndarray:
        """The hold target for measured position ``q`` [N]: ``q`` clipped into the limits (float64 [N])."""
        q = np.asarray(q, dtype=np.float64)
        if not np.isfinite(q).all():
            raise SafetyError("cannot hold a non-finite position")
        return np.clip(q, self.lower, self.upper)

    def filter(self, targets: np.ndarray, reference: np.ndarray, dt: float) -> tuple[np.ndarray, dict]:
        """Clamp a chunk of joint targets.

        Args:
            targets: float [P, N] (or [N]) absolute joint targets (rad), point k due at ``(k+1) * dt``.
            reference: float [N] measured joint position (rad) the first point starts from.
            dt: seconds between points (> 0).
        Returns:
            ``(safe float64 [P, N], report)`` where ``report`` counts the entries changed by each rule:
            ``{"delta": int, "limits": int}``.
        Raises:
            SafetyError: a NaN/inf target or reference, or wrong shapes.
        """
        t = np.asarray(targets, dtype=np.float64)
        if t.ndim == 1:
            t = t[None]
        n = self.lower.size
        if t.ndim != 2 or t.shape[1] != n or t.shape[0] < 1:
            raise SafetyError(f"targets must be [P >= 1, {n}], got {list(np.shape(targets))}")
        if not np.isfinite(t).all():
            raise SafetyError("targets contain NaN or inf")
        ref = np.asarray(reference, dtype=np.float64)
        if ref.shape != (n,) or not np.isfinite(ref).all():
            raise SafetyError(f"reference must be finite [{n}], got {ref.tolist()}")
        bound = self.step_bound(dt)
        prev = np.clip(ref, self.lower, self.upper)
        out = np.empty_like(t)
        n_delta = n_limits = 0
        for k in range(t.shape[0]):
            d = np.clip(t[k], prev - bound, prev + bound)
            n_delta += int(np.count_nonzero(d != t[k]))
            p = np.clip(d, self.lower, self.upper)
            n_limits += int(np.count_nonzero(p != d))
            out[k] = p
            prev = p
        return out, {"delta": n_delta, "limits": n_limits}


class Watchdog:
    """Judges observation liveness by **receipt time on a steady clock**, never by header stamps.

    A header stamp is on the ROS clock, which stops when a simulator pauses its ``/clock`` and jumps
    when it resets; the receipt time (``time.monotonic`` in the node) does neither. The stamps are
    checked where the messages are taken in (in the future by more than ``max_future``, older than
    ``max_age`` when received, or older than the same publisher's last one: refused).

    Args:
        required: names of the observations that must be fresh (e.g. ``joint_states``,
            ``image/front``, ``task_state``).
        max_age: largest allowed time since an observation was received (s, steady clock), > 0.
        max_future: largest allowed ``stamp - now`` (s, ROS clock) of a message taken in, >= 0.
        clock: the steady clock (s) that :meth:`check` reads when given no time.
    Raises:
        ValueError: ``max_age`` not a finite number > 0, ``max_future`` not a finite number >= 0.
    """

    def __init__(self, required: Iterable[str], max_age: float, max_future: float = 0.05, clock=time.monotonic):
        if not (math.isfinite(max_age) and max_age > 0):
            raise ValueError(f"watchdog.max_age must be a finite number > 0 s, got {max_age!r}")
        if not (math.isfinite(max_future) and max_future >= 0):
            raise ValueError(f"watchdog.max_future must be a finite number >= 0 s, got {max_future!r}")
        self.required = tuple(required)
        self.max_age = float(max_age)
        self.max_future = float(max_future)
        self.clock = clock
        self.received: dict[str, float] = {}
        """Steady receipt time (s) of the newest accepted observation of each name."""
        self.stamps: dict[str, float] = {}
        """Header stamp (s, ROS clock) of the newest accepted observation of each name."""

    def observe(self, name: str, received: float, stamp: float | None = None) -> None:
        """Record that observation ``name`` stamped ``stamp`` (s, ROS clock; None: not kept) was
        received (and accepted) at steady time ``received`` (s).

        Raises:
            ValueError: ``received`` or ``stamp`` not finite.
        """
        for what, t in (("receipt time", received), ("stamp", 0.0 if stamp is None else stamp)):
            if not math.isfinite(t):
                raise ValueError(f"{what} of {name!r} must be finite, got {t!r}")
        self.received[name] = max(float(received), self.received.get(name, -math.inf))
        if stamp is not None:
            self.stamps[name] = float(stamp)

    def forget(self) -> None:
        """Drop every receipt and stamp (after a clock jump, or on cleanup): each input must arrive again."""
        self.received.clear()
        self.stamps.clear()

    def check(self, now: float | None = None, ros_now: float | None = None) -> str | None:
        """``None`` when every required observation was received within ``max_age`` of steady time
        ``now`` (s; None: ``clock()``) and, when ``ros_now`` (s, ROS clock) is given, its stamp is
        at most ``max_age`` older than ``ros_now`` (a clock that stops can only make this hold
        less, never more, so liveness rests on the receipt times); else the reason (one line)."""
        now = self.clock() if now is None else now
        for name in self.required:
            r = self.received.get(name)
            if r is None:
                return f"no {name!r} observation received yet"
            age = now - r
            if age > self.max_age:
                return f"{name!r} last received {age:.3f} s ago (bound {self.max_age:.3f} s)"
            if ros_now is not None and name in self.stamps and ros_now - self.stamps[name] > self.max_age:
                return (f"{name!r} is stamped {ros_now - self.stamps[name]:.3f} s before ROS time now "
                        f"(bound {self.max_age:.3f} s)")
        return None

    def oldest(self, now: float | None = None) -> float:
        """Time (s, steady clock) since the stalest required observation was received (inf when one is missing)."""
        now = self.clock() if now is None else now
        ages = [now - self.received[n] if n in self.received else math.inf for n in self.required]
        return max(ages) if ages else 0.0
