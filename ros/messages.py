"""Conversion between ROS 2 messages and numpy, without cv_bridge.

Every decoder checks what it reads and raises :class:`MessageError` (a ``ValueError``) naming the
bad field and what is allowed, so a node can log the reason, drop the message and keep running.

- ``sensor_msgs/JointState`` -> joint positions/velocities reordered **by name** (never by index).
- ``sensor_msgs/Image`` (``rgb8``, ``bgr8``, ``mono8``, ``rgba8``, ``bgra8``) -> ``uint8 [H, W, 3]``
  RGB, row 0 at the top (REP 118 / sensor_msgs layout: row-major, ``step`` bytes per row).
- numpy -> ``sensor_msgs/Image``, ``sensor_msgs/JointState``, ``trajectory_msgs/JointTrajectory``
  (an action chunk becomes a multi-point trajectory) and ``std_msgs/Float64MultiArray``.

Times are float seconds on the ROS clock (``builtin_interfaces/Time`` sec + nanosec).
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

#: Image encodings the decoder reads (sensor_msgs/image_encodings.hpp names).
ENCODINGS = ("rgb8", "bgr8", "mono8", "rgba8", "bgra8")
_CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}
#: Largest image side accepted, in pixels (a guard against absurd height/width fields).
MAX_IMAGE_SIDE = 8192


class MessageError(ValueError):
    """A message is malformed or does not fit what the node expects (the text says why)."""


# ---------------------------------------------------------------------------------------------
# Time
# ---------------------------------------------------------------------------------------------

def stamp_to_sec(stamp) -> float:
    """``builtin_interfaces/Time`` -> float seconds."""
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)


def publisher_id(info) -> bytes | None:
    """The publisher's GID (bytes) from rclpy's message info (the second argument of a two-argument
    subscription callback, ``rclpy.subscription.MessageInfo``); None when the RMW gives none."""
    gid = info.get("publisher_gid") if isinstance(info, dict) else None
    return bytes(gid["data"]) if gid and gid.get("data") is not None else None


def sec_to_stamp(t: float):
    """Float seconds (>= 0) -> ``builtin_interfaces/Time``.

    Raises:
        MessageError: ``t`` negative, NaN or inf.
    """
    from builtin_interfaces.msg import Time

    if not math.isfinite(t) or t < 0:
        raise MessageError(f"time must be finite and >= 0 s, got {t!r}")
    sec = int(math.floor(t))
    nsec = min(int(round((t - sec) * 1e9)), 999_999_999)
    return Time(sec=sec, nanosec=nsec)


def sec_to_duration(d: float):
    """Float seconds (>= 0) -> ``builtin_interfaces/Duration``."""
    from builtin_interfaces.msg import Duration

    if not math.isfinite(d) or d < 0:
        raise MessageError(f"duration must be finite and >= 0 s, got {d!r}")
    sec = int(math.floor(d))
    return Duration(sec=sec, nanosec=min(int(round((d - sec) * 1e9)), 999_999_999))


def duration_to_sec(d) -> float:
    """``builtin_interfaces/Duration`` -> float seconds."""
    return float(d.sec) + 1e-9 * float(d.nanosec)


# ---------------------------------------------------------------------------------------------
# JointState
# ---------------------------------------------------------------------------------------------

def joint_state_to_arrays(msg, joint_names: Sequence[str], need_velocity: bool = False):
    """Pick ``joint_names`` out of a ``sensor_msgs/JointState`` by name.

    Args:
        msg: ``sensor_msgs/JointState``; it may hold other joints too (they are ignored).
        joint_names: the N joints wanted, in the order wanted.
        need_velocity: require a finite velocity for every wanted joint.
    Returns:
        ``(position float64 [N] rad, velocity float64 [N] rad/s or None, stamp float s)``.
        ``velocity`` is None when the message has no velocities and ``need_velocity`` is False.
    Raises:
        MessageError: unequal name/position/velocity lengths, repeated names, missing joints (named),
            NaN or inf values (joint named), or a zero header stamp.
    """
    names = list(msg.name)
    pos = np.asarray(msg.position, dtype=np.float64)
    vel = np.asarray(msg.velocity, dtype=np.float64)
    if len(pos) != len(names):
        raise MessageError(f"JointState has {len(names)} names but {len(pos)} positions")
    if len(vel) not in (0, len(names)):
        raise MessageError(f"JointState has {len(names)} names but {len(vel)} velocities (allowed: 0 or {len(names)})")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise MessageError(f"JointState repeats joint names {dup}")
    index = {n: i for i, n in enumerate(names)}
    missing = [n for n in joint_names if n not in index]
    if missing:
        raise MessageError(f"JointState lacks joints {missing}; it has {names}")
    idx = np.array([index[n] for n in joint_names], dtype=np.int64)
    q = pos[idx]
    bad = [joint_names[i] for i in np.flatnonzero(~np.isfinite(q))]
    if bad:
        raise MessageError(f"JointState position of {bad} is NaN or inf")
    dq = None
    if len(vel):
        dq = vel[idx]
        bad = [joint_names[i] for i in np.flatnonzero(~np.isfinite(dq))]
        if bad:
            raise MessageError(f"JointState velocity of {bad} is NaN or inf")
    elif need_velocity:
        raise MessageError(f"JointState has no velocities; the policy needs them for {list(joint_names)}")
    stamp = stamp_to_sec(msg.header.stamp)
    if stamp <= 0.0:
        raise MessageError("JointState header stamp is zero; a stamped message is required")
    return q, dq, stamp


def make_joint_state(names: Sequence[str], position, velocity=None, stamp: float = 0.0, frame_id: str = ""):
    """numpy -> ``sensor_msgs/JointState`` (position rad [N], velocity rad/s [N] or None, stamp s)."""
    from sensor_msgs.msg import JointState

    msg = JointState()
    msg.header.stamp = sec_to_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.name = [str(n) for n in names]
    msg.position = [float(x) for x in np.asarray(position, dtype=np.float64).ravel()]
    if velocity is not None:
        msg.velocity = [float(x) for x in np.asarray(velocity, dtype=np.float64).ravel()]
    return msg


# ---------------------------------------------------------------------------------------------
# Image
# ---------------------------------------------------------------------------------------------

def image_to_rgb(msg, size: int | None = None) -> np.ndarray:
    """Decode a ``sensor_msgs/Image`` to RGB, optionally resized to ``size`` x ``size``.

    Args:
        msg: ``sensor_msgs/Image`` with an encoding in :data:`ENCODINGS` (8 bits per channel);
            ``step`` may include row padding.
        size: output side in pixels (``cv2.INTER_AREA`` when shrinking, ``INTER_LINEAR`` when
            growing); None keeps the message's size.
    Returns:
        ``uint8 [H, W, 3]`` RGB, row 0 at the top (a fresh array).
    Raises:
        MessageError: unknown encoding (allowed ones listed), zero or absurd height/width, a
            ``step`` smaller than ``width * channels``, or ``data`` shorter than ``step * height``.
    """
    enc = str(msg.encoding).lower()
    if enc not in _CHANNELS:
        raise MessageError(f"unsupported image encoding {msg.encoding!r}; allowed: {', '.join(ENCODINGS)}")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if not (0 < h <= MAX_IMAGE_SIDE and 0 < w <= MAX_IMAGE_SIDE):
        raise MessageError(f"image size {w}x{h} outside 1..{MAX_IMAGE_SIDE} pixels")
    c = _CHANNELS[enc]
    if step < w * c:
        raise MessageError(f"image step {step} < width*channels = {w * c} for {enc}")
    buf = np.frombuffer(memoryview(msg.data), dtype=np.uint8) if len(msg.data) else np.zeros(0, np.uint8)
    if buf.size < step * h:
        raise MessageError(f"image data has {buf.size} bytes; {enc} {w}x{h} with step {step} needs {step * h}")
    img = buf[: step * h].reshape(h, step)[:, : w * c].reshape(h, w, c)
    if enc == "rgb8":
        rgb = img
    elif enc == "bgr8":
        rgb = img[..., ::-1]
    elif enc == "mono8":
        rgb = np.repeat(img, 3, axis=2)
    elif enc == "rgba8":
        rgb = img[..., :3]
    else:  # bgra8
        rgb = img[..., 2::-1]
    rgb = np.array(rgb, dtype=np.uint8, order="C", copy=True)  # detached from the message buffer
    if size is not None and (h, w) != (size, size):
        interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (int(size), int(size)), interpolation=interp)
    return rgb


def rgb_to_image(rgb: np.ndarray, stamp: float, frame_id: str = "", encoding: str = "rgb8"):
    """``uint8 [H, W, 3]`` RGB -> ``sensor_msgs/Image`` in ``rgb8``, ``bgr8`` or ``mono8``.

    Raises:
        MessageError: not ``uint8 [H, W, 3]``, or an encoding other than rgb8/bgr8/mono8.
    """
    from sensor_msgs.msg import Image

    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise MessageError(f"image must be uint8 [H, W, 3], got {rgb.dtype} {list(rgb.shape)}")
    if encoding == "rgb8":
        arr = rgb
    elif encoding == "bgr8":
        arr = rgb[..., ::-1]
    elif encoding == "mono8":
        arr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)[..., None]
    else:
        raise MessageError(f"unsupported output encoding {encoding!r}; allowed: rgb8, bgr8, mono8")
    arr = np.ascontiguousarray(arr)
    msg = Image()
    msg.header.stamp = sec_to_stamp(stamp)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(arr.shape[1] * arr.shape[2])
    msg.data = arr.tobytes()
    return msg


# ---------------------------------------------------------------------------------------------
# Named float vectors (task state)
# ---------------------------------------------------------------------------------------------

def flat_names(layout: Sequence[tuple[str, int]]) -> list[str]:
    """Entry names of a state layout: ``[("cube_pos", 3)] -> ["cube_pos/0", "cube_pos/1", "cube_pos/2"]``."""
    return [f"{key}/{i}" for key, n in layout for i in range(int(n))]


def task_state_to_dict(msg, layout: Sequence[tuple[str, int]]) -> tuple[dict[str, np.ndarray], float]:
    """Read the keys of ``layout`` from a task-state message, by entry name.

    The task state travels as a ``sensor_msgs/JointState`` used as a stamped, named float vector:
    ``name[i] = "<key>/<j>"`` and ``position[i]`` its value (see :func:`make_task_state`). It has a
    header stamp, which the watchdog needs and ``std_msgs/Float64MultiArray`` lacks.

    Returns:
        ``({key: float64 [n]}, stamp s)``.
    Raises:
        MessageError: missing entries (the keys named), NaN/inf values, bad lengths, zero stamp.
    """
    want = flat_names(layout)
    try:
        values, _, stamp = joint_state_to_arrays(msg, want)
    except MessageError as exc:
        raise MessageError(f"task state: {exc}") from None
    out, i = {}, 0
    for key, n in layout:
        out[key] = values[i:i + int(n)]
        i += int(n)
    return out, stamp


def make_task_state(values: dict[str, np.ndarray], stamp: float, frame_id: str = "world"):
    """``{key: float [n]}`` -> task-state message (``sensor_msgs/JointState``, names ``key/j``)."""
    layout = [(k, int(np.asarray(v).size)) for k, v in values.items()]
    flat = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in values.values()]) if values else []
    return make_joint_state(flat_names(layout), flat, None, stamp, frame_id)


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

def make_joint_trajectory(joint_names: Sequence[str], positions: np.ndarray, dt: float, stamp: float,
                          velocities: np.ndarray | None = None):
    """An action chunk -> ``trajectory_msgs/JointTrajectory``.

    Args:
        joint_names: N joint names.
        positions: float [P, N] absolute joint targets (rad); point k is reached at ``(k+1) * dt``.
        dt: seconds between points (> 0).
        stamp: header stamp (s): the time the trajectory starts (ros2_control's
            joint_trajectory_controller starts it then; 0 would mean "on receipt").
        velocities: optional float [P, N] (rad/s), e.g. zeros for a hold point.
    Raises:
        MessageError: shape mismatch, NaN/inf, or ``dt <= 0``.
    """
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != len(joint_names) or pos.shape[0] < 1:
        raise MessageError(f"positions must be [P >= 1, {len(joint_names)}], got {list(pos.shape)}")
    if not np.isfinite(pos).all():
        raise MessageError("trajectory positions contain NaN or inf")
    if not (math.isfinite(dt) and dt > 0):
        raise MessageError(f"dt must be > 0 s, got {dt!r}")
    msg = JointTrajectory()
    msg.header.stamp = sec_to_stamp(stamp)
    msg.joint_names = [str(n) for n in joint_names]
    for k in range(pos.shape[0]):
        pt = JointTrajectoryPoint()
        pt.positions = [float(x) for x in pos[k]]
        if velocities is not None:
            pt.velocities = [float(x) for x in np.asarray(velocities, dtype=np.float64)[k]]
        pt.time_from_start = sec_to_duration((k + 1) * dt)
        msg.points.append(pt)
    return msg


def joint_trajectory_to_arrays(msg, joint_names: Sequence[str]):
    """``trajectory_msgs/JointTrajectory`` -> ``(times float64 [P] s from start, positions float64 [P, N], stamp s)``.

    Columns are reordered to ``joint_names`` by name.

    Raises:
        MessageError: no points, missing joints, repeated names, a point with the wrong number of
            positions, NaN/inf, or times that do not strictly increase.
    """
    names = list(msg.joint_names)
    if len(set(names)) != len(names):
        raise MessageError(f"JointTrajectory repeats joint names {names}")
    missing = [n for n in joint_names if n not in names]
    if missing:
        raise MessageError(f"JointTrajectory lacks joints {missing}; it has {names}")
    if len(msg.points) == 0:
        raise MessageError("JointTrajectory has no points")
    idx = [names.index(n) for n in joint_names]
    times, rows = [], []
    for k, pt in enumerate(msg.points):
        p = np.asarray(pt.positions, dtype=np.float64)
        if p.shape != (len(names),):
            raise MessageError(f"JointTrajectory point {k} has {p.size} positions for {len(names)} joints")
        if not np.isfinite(p).all():
            raise MessageError(f"JointTrajectory point {k} has NaN or inf positions")
        rows.append(p[idx])
        times.append(duration_to_sec(pt.time_from_start))
    t = np.asarray(times)
    if (np.diff(t) <= 0).any() or t[0] < 0:
        raise MessageError(f"JointTrajectory time_from_start must strictly increase, got {t.tolist()}")
    return t, np.stack(rows), stamp_to_sec(msg.header.stamp)


def make_float64_array(values) -> object:
    """float [N] -> ``std_msgs/Float64MultiArray`` (the forward_command_controller's command).

    Raises:
        MessageError: NaN or inf.
    """
    from std_msgs.msg import Float64MultiArray, MultiArrayDimension

    v = np.asarray(values, dtype=np.float64).ravel()
    if not np.isfinite(v).all():
        raise MessageError("command contains NaN or inf")
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label="joints", size=int(v.size), stride=int(v.size))]
    msg.data = [float(x) for x in v]
    return msg
