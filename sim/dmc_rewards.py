"""dm_control suite tasks batched over worlds: observations, rewards, initial states.

The MuJoCo Warp backend (:mod:`sim.warp_env`) steps the physics on the device; this module turns
the device state into what the dm_control suite would return, row by row, without leaving the
device. The batched CPU backend (:mod:`sim.mujoco_batched`) calls the same functions on numpy
views of its float64 state buffer. Each function names the dm_control 1.0.41 source it follows; the
numbers (stand height, speeds, margins, sigmoids) are the suite's.

Conventions: ``B`` worlds. Observation and reward functions take torch tensors (any device and
float dtype: the Warp backend's float32 on the GPU) or numpy arrays, and return the same kind: they
use only operations that numpy and torch spell alike (``xp.where``, ``xp.concatenate(axis=)``,
``xp.amin(axis=)``, operators), so one definition serves both, and on small CPU batches a numpy
operation costs about a third of a torch one. ``xmat`` rows are flattened MuJoCo rotation matrices
``[xx, xy, xz, yx, yy, yz, zx, zy, zz]`` (dm_control's named columns).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import mujoco
import numpy as np
import torch

Array = torch.Tensor | np.ndarray


def _xp(x: Array):
    """The module whose functions take ``x``: torch for a tensor, numpy for an array."""
    return torch if isinstance(x, torch.Tensor) else np


# ------------------------------------------------------------------------------------------------
# dm_control.utils.rewards.tolerance


def _sigmoid(x: Array, value_at_1: float, sigmoid: str) -> Array:
    """``dm_control.utils.rewards._sigmoids`` for ``x >= 0`` (a distance; NaN allowed): 1 at ``x == 0``,
    ``value_at_1`` at ``x == 1`` (``|x|`` needs no op here)."""
    if sigmoid == "gaussian":
        if not 0 < value_at_1 < 1:
            raise ValueError(f"value_at_1 must be in (0, 1) for the gaussian sigmoid, got {value_at_1}")
        scale = math.sqrt(-2.0 * math.log(value_at_1))
        return _xp(x).exp(-0.5 * (x * scale) ** 2)
    if not 0 <= value_at_1 < 1:
        raise ValueError(f"value_at_1 must be in [0, 1) for the {sigmoid} sigmoid, got {value_at_1}")
    if sigmoid == "linear":
        scaled = x * (1.0 - value_at_1)
        return _xp(x).where(scaled < 1, 1.0 - scaled, 0.0)
    if sigmoid == "quadratic":
        scaled = x * math.sqrt(1.0 - value_at_1)
        return _xp(x).where(scaled < 1, 1.0 - scaled ** 2, 0.0)
    raise ValueError(f"unknown sigmoid {sigmoid!r}; known: gaussian, linear, quadratic")


def _clamp_min0(d: Array) -> Array:
    """``max(d, 0)`` elementwise, NaN kept (torch ``clamp_min``, numpy ``maximum``)."""
    return d.clamp_min(0) if isinstance(d, torch.Tensor) else np.maximum(d, 0.0)


def tolerance(x: Array, bounds: tuple[float, float] = (0.0, 0.0), margin: float = 0.0,
              sigmoid: str = "gaussian", value_at_margin: float = 0.1) -> Array:
    """1 where ``x`` lies in ``bounds``, decaying with the distance to the nearest bound otherwise.

    Follows ``dm_control.utils.rewards.tolerance`` (same arguments and defaults; the sigmoids the
    supported tasks use: ``gaussian``, ``linear``, ``quadratic``).

    Args:
        x: float tensor or numpy array of any shape.
        bounds: inclusive ``(lower, upper)``; may be infinite.
        margin: distance at which the value falls to ``value_at_margin``; 0 gives an indicator.
    Returns:
        the same kind and float dtype as ``x``, shaped like it, values in [0, 1] (NaN where ``x``
        is NaN and the bounds are finite).
    Raises:
        ValueError: ``lower > upper``, a negative margin, or an unknown sigmoid.
    """
    lower, upper = bounds
    if lower > upper:
        raise ValueError(f"lower bound {lower} must be <= upper bound {upper}")
    if margin < 0:
        raise ValueError(f"margin must be non-negative, got {margin}")
    if margin == 0:
        inside = (x >= lower) & (x <= upper)
        return inside.to(x.dtype) if isinstance(x, torch.Tensor) else inside.astype(x.dtype)
    # the distance outside the bounds, 0 inside: every sigmoid is exactly 1 at 0, so this equals the
    # suite's where(in_bounds, 1, sigmoid(where(x < lower, lower - x, x - upper) / margin)) bit for bit
    # (NaN stays NaN) in fewer tensor ops (on small CPU batches each op costs microseconds)
    if math.isinf(lower) and math.isinf(upper):
        xp = _xp(x)
        d = xp.where(xp.isnan(x), x, 0.0)
    elif lower == upper:  # a - b is exactly -(b - a): the distance to the point in one op (two off 0)
        d = abs(x - lower) if lower else abs(x)
    elif math.isinf(lower):
        d = _clamp_min0(x - upper)
    elif math.isinf(upper):
        d = _clamp_min0(lower - x)
    else:
        d = _clamp_min0(lower - x) + _clamp_min0(x - upper)
    return _sigmoid(d / margin, value_at_margin, sigmoid)


# ------------------------------------------------------------------------------------------------
# The device state a task reads


@dataclasses.dataclass
class DeviceState:
    """Views (zero copy) of the ``Data`` fields the suite tasks read: torch tensors of MuJoCo Warp's
    arrays (float32, one device), or numpy arrays of the batched CPU backend's buffer (float64);
    all of one kind.

    Shapes: ``qpos [B, nq]``, ``qvel [B, nv]``, ``ctrl [B, nu]`` (the scaled action, as
    ``physics.control()``), ``xpos [B, nbody, 3]``, ``xipos [B, nbody, 3]``, ``xmat [B, nbody, 9]``,
    ``sensordata [B, nsensordata]``.
    """

    qpos: Array
    qvel: Array
    ctrl: Array
    xpos: Array
    xipos: Array
    xmat: Array
    sensordata: Array


_XX, _XZ, _ZZ = 0, 2, 8  # flat indices into a row-major 3x3 rotation matrix


def _body(model: mujoco.MjModel, name: str) -> int:
    i = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
    if i < 0:
        raise ValueError(f"model has no body {name!r}")
    return i


def _sensor_slice(model: mujoco.MjModel, name: str) -> slice:
    i = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SENSOR, name)
    if i < 0:
        raise ValueError(f"model has no sensor {name!r}")
    adr = int(model.sensor_adr[i])
    return slice(adr, adr + int(model.sensor_dim[i]))


# ------------------------------------------------------------------------------------------------
# Initial states


def randomize_limited_and_rotational_joints(model: mujoco.MjModel, qpos: torch.Tensor,
                                            generator: torch.Generator) -> None:
    """Randomise joint positions in place, row by row, as the suite does at reset.

    Follows ``dm_control.suite.utils.randomizers.randomize_limited_and_rotational_joints``:
    limited hinges/slides uniform in their range; unlimited hinges uniform in [-pi, pi];
    unlimited balls uniform on the unit 3-sphere; limited balls a random axis with an angle
    uniform in [0, limit]; free joints a quaternion ``rand(4)`` normalised (the suite's choice),
    positions unchanged. Draws come from ``generator`` (not the suite's numpy stream).

    Args:
        model: the host MuJoCo model (joint types, limits, qpos addresses).
        qpos: float ``[K, nq]`` on the generator's device, modified in place.
    """
    k, dev, dt = qpos.shape[0], qpos.device, qpos.dtype

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(k, *shape, generator=generator, device=dev, dtype=dt)

    for j in range(model.njnt):
        adr = int(model.jnt_qposadr[j])
        jtype = int(model.jnt_type[j])
        lo, hi = (float(v) for v in model.jnt_range[j])
        if model.jnt_limited[j]:
            if jtype in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE):
                qpos[:, adr] = uniform(lo, hi)
            elif jtype == mujoco.mjtJoint.mjJNT_BALL:
                axis = torch.randn(k, 3, generator=generator, device=dev, dtype=dt)
                axis = axis / axis.norm(dim=1, keepdim=True)
                angle = uniform(0.0, hi)
                qpos[:, adr] = torch.cos(angle / 2)
                qpos[:, adr + 1:adr + 4] = axis * torch.sin(angle / 2)[:, None]
        elif jtype == mujoco.mjtJoint.mjJNT_HINGE:
            qpos[:, adr] = uniform(-math.pi, math.pi)
        elif jtype == mujoco.mjtJoint.mjJNT_BALL:
            quat = torch.randn(k, 4, generator=generator, device=dev, dtype=dt)
            qpos[:, adr:adr + 4] = quat / quat.norm(dim=1, keepdim=True)
        elif jtype == mujoco.mjtJoint.mjJNT_FREE:
            quat = torch.rand(k, 4, generator=generator, device=dev, dtype=dt)
            qpos[:, adr + 3:adr + 7] = quat / quat.norm(dim=1, keepdim=True)


# ------------------------------------------------------------------------------------------------
# Tasks


@dataclasses.dataclass
class SuiteTask:
    """One dm_control suite task as batched functions (observation and reward: torch or numpy; initial state: torch).

    Attributes:
        observation: ``state -> {key: float [B, n]}`` in the suite's observation order (the kind and
            dtype of the state's arrays).
        reward: ``state -> float [B]`` in [0, 1] (the suite's ``get_reward``; kind and dtype likewise).
        initial_state: ``(qpos0 [K, nq], generator) -> (qpos [K, nq], qvel [K, nv])``, the suite's
            ``initialize_episode`` before any settling steps.
        settle_steps: physics steps with zero control after ``initial_state`` (cheetah: 200).
        source: the dm_control functions followed.
    """

    observation: Callable[[DeviceState], dict[str, Array]]
    reward: Callable[[DeviceState], Array]
    initial_state: Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]
    settle_steps: int = 0
    source: str = ""


def _cartpole_swingup(model: mujoco.MjModel) -> SuiteTask:
    """``dm_control.suite.cartpole``: ``Balance(swing_up=True, sparse=False)``."""
    nv = model.nv
    poles = list(range(2, model.nbody))  # xmat[2:] in Physics.bounded_position

    def observation(s: DeviceState):
        # Physics.bounded_position: hstack(cart position, xmat[2:, ['zz', 'xz']].ravel())
        angles = s.xmat[:, poles][:, :, [_ZZ, _XZ]].reshape(s.xmat.shape[0], -1)
        return {"position": _xp(angles).concatenate([s.qpos[:, :1], angles], axis=1), "velocity": s.qvel}

    def reward(s: DeviceState):
        # Balance._get_reward(sparse=False)
        upright = (s.xmat[:, poles, _ZZ] + 1) / 2
        centered = (1 + tolerance(s.qpos[:, 0], margin=2)) / 2
        small_control = tolerance(s.ctrl, margin=1, value_at_margin=0, sigmoid="quadratic")[:, 0]
        small_control = (4 + small_control) / 5
        small_velocity = _xp(s.qvel).amin(tolerance(s.qvel[:, 1:], margin=5), axis=1)
        small_velocity = (1 + small_velocity) / 2
        return upright.mean(axis=1) * small_control * small_velocity * centered

    def initial_state(qpos0: torch.Tensor, g: torch.Generator):
        # Balance.initialize_episode(swing_up=True)
        k, dev, dt = qpos0.shape[0], qpos0.device, qpos0.dtype
        qpos = qpos0.clone()
        qpos[:, 0] = 0.01 * torch.randn(k, generator=g, device=dev, dtype=dt)
        qpos[:, 1] = math.pi + 0.01 * torch.randn(k, generator=g, device=dev, dtype=dt)
        if nv > 2:
            qpos[:, 2:] = 0.1 * torch.randn(k, nv - 2, generator=g, device=dev, dtype=dt)
        qvel = 0.01 * torch.randn(k, nv, generator=g, device=dev, dtype=dt)
        return qpos, qvel

    return SuiteTask(observation, reward, initial_state, 0,
                     "dm_control/suite/cartpole.py: Physics.bounded_position, Balance.initialize_episode, "
                     "Balance._get_reward")


def _hopper_stand(model: mujoco.MjModel) -> SuiteTask:
    """``dm_control.suite.hopper``: ``Hopper(hopping=False)``, stand height 0.6 m."""
    torso, foot = _body(model, "torso"), _body(model, "foot")
    toe, heel = _sensor_slice(model, "touch_toe"), _sensor_slice(model, "touch_heel")

    def observation(s: DeviceState):
        # Hopper.get_observation; Physics.touch = log1p(touch sensors)
        xp = _xp(s.sensordata)
        touch = xp.log1p(xp.concatenate([s.sensordata[:, toe], s.sensordata[:, heel]], axis=1))
        return {"position": s.qpos[:, 1:], "velocity": s.qvel, "touch": touch}

    def reward(s: DeviceState):
        # Hopper.get_reward(hopping=False); Physics.height = xipos[torso, z] - xipos[foot, z]
        height = s.xipos[:, torso, 2] - s.xipos[:, foot, 2]
        standing = tolerance(height, (0.6, 2.0))
        small_control = tolerance(s.ctrl, margin=1, value_at_margin=0, sigmoid="quadratic").mean(axis=1)
        return standing * (small_control + 4) / 5

    def initial_state(qpos0: torch.Tensor, g: torch.Generator):
        qpos = qpos0.clone()
        randomize_limited_and_rotational_joints(model, qpos, g)
        return qpos, torch.zeros(qpos.shape[0], model.nv, device=qpos.device, dtype=qpos.dtype)

    return SuiteTask(observation, reward, initial_state, 0,
                     "dm_control/suite/hopper.py: Hopper.initialize_episode, Hopper.get_observation, "
                     "Hopper.get_reward")


def _walker_walk(model: mujoco.MjModel) -> SuiteTask:
    """``dm_control.suite.walker``: ``PlanarWalker(move_speed=1)``, stand height 1.2 m."""
    torso = _body(model, "torso")
    subtreelinvel = _sensor_slice(model, "torso_subtreelinvel")

    def observation(s: DeviceState):
        # PlanarWalker.get_observation; Physics.orientations = xmat[1:, ['xx', 'xz']].ravel()
        b = s.xmat.shape[0]
        return {"orientations": s.xmat[:, 1:][:, :, [_XX, _XZ]].reshape(b, -1),
                "height": s.xpos[:, torso, 2:3], "velocity": s.qvel}

    def reward(s: DeviceState):
        # PlanarWalker.get_reward
        standing = tolerance(s.xpos[:, torso, 2], (1.2, math.inf), margin=1.2 / 2)
        upright = (1 + s.xmat[:, torso, _ZZ]) / 2
        stand_reward = (3 * standing + upright) / 4
        move = tolerance(s.sensordata[:, subtreelinvel][:, 0], (1.0, math.inf), margin=0.5,
                         value_at_margin=0.5, sigmoid="linear")
        return stand_reward * (5 * move + 1) / 6

    def initial_state(qpos0: torch.Tensor, g: torch.Generator):
        qpos = qpos0.clone()
        randomize_limited_and_rotational_joints(model, qpos, g)
        return qpos, torch.zeros(qpos.shape[0], model.nv, device=qpos.device, dtype=qpos.dtype)

    return SuiteTask(observation, reward, initial_state, 0,
                     "dm_control/suite/walker.py: PlanarWalker.initialize_episode, "
                     "PlanarWalker.get_observation, PlanarWalker.get_reward")


def _cheetah_run(model: mujoco.MjModel) -> SuiteTask:
    """``dm_control.suite.cheetah``: ``Cheetah``, run speed 10 m/s."""
    speed_x = _sensor_slice(model, "torso_subtreelinvel").start  # Physics.speed: its x component
    if model.nq != model.njnt:
        raise ValueError("cheetah: every joint must have one DOF")
    limited = torch.from_numpy(np.flatnonzero(model.jnt_limited == 1))
    lower = torch.from_numpy(model.jnt_range[limited.numpy(), 0].copy())
    upper = torch.from_numpy(model.jnt_range[limited.numpy(), 1].copy())

    def observation(s: DeviceState):
        return {"position": s.qpos[:, 1:], "velocity": s.qvel}

    def reward(s: DeviceState):
        speed = s.sensordata[:, speed_x]
        return tolerance(speed, (10.0, math.inf), margin=10.0, value_at_margin=0, sigmoid="linear")

    def initial_state(qpos0: torch.Tensor, g: torch.Generator):
        # Cheetah.initialize_episode: limited joints uniform in range, then 200 settling steps
        qpos = qpos0.clone()
        dev, dt = qpos.device, qpos.dtype
        lo, hi = lower.to(dev, dt), upper.to(dev, dt)
        u = torch.rand(qpos.shape[0], len(limited), generator=g, device=dev, dtype=dt)
        qpos[:, limited.to(dev)] = lo + (hi - lo) * u
        return qpos, torch.zeros(qpos.shape[0], model.nv, device=dev, dtype=dt)

    return SuiteTask(observation, reward, initial_state, 200,
                     "dm_control/suite/cheetah.py: Cheetah.initialize_episode, Cheetah.get_observation, "
                     "Cheetah.get_reward")


SUITE_TASKS: dict[str, Callable[[mujoco.MjModel], SuiteTask]] = {
    "cartpole-swingup": _cartpole_swingup,
    "hopper-stand": _hopper_stand,
    "walker-walk": _walker_walk,
    "cheetah-run": _cheetah_run,
}


def make_suite_task(name: str, model: mujoco.MjModel) -> SuiteTask:
    """The batched version of dm_control task ``name`` for its MuJoCo ``model`` (torch or numpy).

    Raises:
        ValueError: ``name`` is not one of ``SUITE_TASKS`` (the message lists them).
    """
    if name not in SUITE_TASKS:
        raise ValueError(f"task {name!r} is not supported by the MuJoCo Warp backend; supported: "
                         f"{', '.join(SUITE_TASKS)} (use backend='cpu' for the others)")
    return SUITE_TASKS[name](model)
