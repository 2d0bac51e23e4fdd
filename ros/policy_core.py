"""The policy node's decisions without ROS I/O: message intake, state assembly, the policy call,
action -> joint targets, the safety filter and the watchdog (:class:`PolicyCore`), and the checks
of the node's config that ``dopa deploy`` runs before ROS starts.

Actions: a ``joint_position`` policy outputs ``[dq_1..dq_N, gripper]`` in [-1, 1]; point k of the
chunk targets ``q + joint_step * sum_{j<=k} a_j`` (rad), then :class:`ros.safety.SafetyFilter`
clamps it. Safety: :class:`ros.safety.Watchdog` stops commanding (one hold at the last measured
position, clipped into the limits) when any required observation was last received more than
``watchdog.max_age`` ago on a steady clock (checked before the policy call and again after it, so
late actions are dropped); commanding resumes once every input is fresh again. Header stamps (ROS
clock, simulated or not) are checked when a message is taken in: more than ``watchdog.max_future``
in the future, more than ``watchdog.max_age`` old when received, or older than the same
publisher's previous message: refused. The robot's JointState comes from one publisher at a time
(:class:`SourceConflict` otherwise). Nothing non-finite or out of limits is ever decided. The rclpy
node around it is :class:`ros.policy_node.PolicyNode`.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from control.export import CONFIG_FILE
from ros.messages import (
    MessageError,
    image_to_rgb,
    joint_state_to_arrays,
    stamp_to_sec,
    task_state_to_dict,
)
from ros.robot import Robot
from ros.safety import SafetyError, SafetyFilter, Watchdog

JOINTS_OBS = "joint_states"
TASK_OBS = "task_state"
OUTPUTS = ("trajectory", "forward")


class SourceConflict(MessageError):
    """A second publisher sends the robot's JointState while the first one is live (the text says which)."""


def resolve_policy_folder(checkpoint: str | os.PathLike) -> Path:
    """A policy folder (holding ``policy.json``) or a training checkpoint holding one in ``deploy/``.

    Raises:
        FileNotFoundError: neither exists (both paths named).
    """
    p = Path(checkpoint).expanduser()
    for cand in (p, p / "deploy"):
        if (cand / CONFIG_FILE).is_file():
            return cand
    raise FileNotFoundError(f"no deployment policy at {str(p)!r}: neither {str(p / CONFIG_FILE)!r} nor "
                            f"{str(p / 'deploy' / CONFIG_FILE)!r} exists (export one with control.export.save_policy)")


@dataclasses.dataclass
class Decision:
    """What one control tick decided.

    ``kind``: ``"command"`` (publish ``positions`` [P, N] rad and ``gripper`` [P] m or None),
    ``"hold"`` (publish ``positions`` [1, N] once, zero velocity) or ``"none"`` (publish nothing).
    ``stamp``: header stamp (s, ROS clock) of the JointState the command was computed from.
    ``checked_at``: the ROS time (s) at which the observations were last found fresh, after the
    policy answered (the steady time when the tick got no ROS clock); a command is stamped with it,
    so ``command stamp - observation stamp <= watchdog.max_age`` holds exactly, and every input had
    been received at most ``watchdog.max_age`` before on the steady clock.
    """

    kind: str
    status: str
    reason: str = ""
    positions: np.ndarray | None = None
    gripper: np.ndarray | None = None
    stamp: float | None = None
    clamped: dict | None = None
    checked_at: float | None = None


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def loop_config(cfg, robot: Robot) -> tuple[float, float, SafetyFilter, tuple[float, float]]:
    """The control-loop values of a deploy config, checked by the rules the node applies (the
    :class:`ros.safety.SafetyFilter` and :class:`ros.safety.Watchdog` constructors); needs no policy
    and no ROS, so ``dopa deploy`` runs it before ROS starts and :class:`PolicyCore` at configure.

    Args:
        cfg: mapping with ``action_period`` (s between chunk points), ``joint_step`` (rad per unit
            action), ``safety`` (SafetyFilter kwargs: ``max_delta``, ``velocity_scale``, ``margin``,
            ``position_tolerance``) and ``watchdog`` (``max_age``, ``max_future`` s).
        robot: the robot (its joint limits; a margin must leave room inside them).
    Returns:
        ``(action_period, joint_step, safety_filter, (max_age, max_future))``.
    Raises:
        ValueError: one line naming the key, the value and what is allowed, e.g.
            ``"safety.max_delta must be a finite number > 0 rad ... got -1"``.
    """
    for key, unit in (("action_period", "s"), ("joint_step", "rad per unit action")):
        if not (_finite_number(cfg.get(key)) and cfg[key] > 0):
            raise ValueError(f"{key} must be a finite number > 0 {unit}, got {cfg.get(key)!r}")
    safety = dict(cfg.get("safety") or {})
    for key, value in safety.items():
        if key == "max_delta" and (value is None or (isinstance(value, Sequence) and not isinstance(value, str))):
            continue  # per-joint lists are checked by SafetyFilter
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"safety.{key} must be a number, got {value!r}")
    try:
        safety_filter = SafetyFilter(robot.limits, **safety)
    except ValueError as exc:
        raise ValueError(f"safety.{exc}") from None
    wd = dict(cfg.get("watchdog") or {})
    max_age, max_future = wd.get("max_age"), wd.get("max_future", 0.05)
    for key, value in (("max_age", max_age), ("max_future", max_future)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"watchdog.{key} must be a number of seconds, got {value!r}")
    Watchdog((), float(max_age), float(max_future))  # its rules: finite, max_age > 0, max_future >= 0
    return float(cfg["action_period"]), float(cfg["joint_step"]), safety_filter, (float(max_age), float(max_future))


def node_options(cfg) -> tuple[str, str, float]:
    """``output``, ``trigger`` and ``rate_hz`` of a deploy config, checked.

    Returns:
        ``(output, trigger, rate_hz)``.
    Raises:
        ValueError: unknown ``output`` or ``trigger`` (allowed values listed), ``rate_hz`` not a
            finite number > 0.
    """
    output = str(cfg.get("output", "trajectory"))
    if output not in OUTPUTS:
        raise ValueError(f"unknown output {output!r}; allowed: {', '.join(OUTPUTS)}")
    trigger = str(cfg.get("trigger", "timer"))
    if trigger not in ("timer", "joint_states"):
        raise ValueError(f"unknown trigger {trigger!r}; allowed: timer, joint_states")
    rate = cfg.get("rate_hz", 20.0)
    if not (_finite_number(rate) and rate > 0):
        raise ValueError(f"rate_hz must be a finite number > 0 Hz, got {rate!r}")
    return output, trigger, float(rate)


def check_deploy_config(cfg, robot: Robot) -> None:
    """Every check of the policy node's config that needs no policy and no ROS
    (:func:`node_options`, :func:`loop_config`); the policy/robot fit is checked at configure.

    Raises:
        ValueError: one line naming the key, the value and what is allowed.
    """
    node_options(cfg)
    loop_config(cfg, robot)


class PolicyCore:
    """Everything the policy node decides, without ROS I/O: message intake, state assembly, policy
    call, action -> joint targets, safety and the watchdog. The node feeds it messages and publishes
    its decisions; tests drive it directly with real message objects.

    Args:
        policy: a :class:`control.export.DeployPolicy` (``meta["controller"] == "joint_position"``).
        robot: the :class:`ros.robot.Robot`.
        cfg: mapping with ``action_period`` (s), ``joint_step`` (rad per unit action), ``safety``
            (SafetyFilter kwargs), ``watchdog`` (``max_age``, ``max_future`` s).
    Raises:
        ValueError: the policy does not fit the robot (the mismatch is named).
    """

    def __init__(self, policy, robot: Robot, cfg):
        self.policy = policy
        self.robot = robot
        meta = policy.meta
        if meta.get("controller") != "joint_position":
            raise ValueError(f"policy controller {meta.get('controller')!r} cannot drive a joint controller; "
                             "the ROS node needs a policy trained with controller='joint_position'")
        n_arm = len(robot.arm_joints)
        want = n_arm + (1 if robot.gripper else 0)
        if int(meta["action_dim"]) != want:
            raise ValueError(f"policy action_dim {meta['action_dim']} does not fit robot {robot.name!r}, which takes "
                             f"{want} ({n_arm} arm joints{' + 1 gripper' if robot.gripper else ''})")
        self.views = tuple(meta.get("views") or ())
        for v in self.views:
            robot.image_topic(v)  # raises naming the configured views
        self.image_size = int(meta.get("image_size") or 0)
        self.layout = [(str(k), int(n)) for k, n in meta["state_layout"]]
        if not self.layout:
            raise ValueError("policy meta has an empty state_layout; the node cannot assemble its state")
        self.joint_keys = {}
        task_layout = []
        for key, n in self.layout:
            spec = robot.state_from_joints.get(key)
            if spec is None:
                task_layout.append((key, n))
                continue
            if robot.joint_count(spec.joints) != n:
                raise ValueError(f"state key {key!r} has size {n} in the policy but robot {robot.name!r} has "
                                 f"{robot.joint_count(spec.joints)} {spec.joints} joints")
            self.joint_keys[key] = spec
        self.task_layout = task_layout
        self.need_velocity = any(s.field == "velocity" for s in self.joint_keys.values())
        self.action_period, self.joint_step, self.safety, (max_age, max_future) = loop_config(cfg, robot)
        required = [JOINTS_OBS] + [f"image/{v}" for v in self.views] + ([TASK_OBS] if task_layout else [])
        self.watchdog = Watchdog(required, max_age, max_future)
        self.q: np.ndarray | None = None  # arm position (rad)
        self.dq: np.ndarray | None = None
        self.qg: np.ndarray | None = None  # gripper joint positions
        self.dqg: np.ndarray | None = None
        self.joint_stamp: float | None = None
        self.images: dict[str, np.ndarray] = {}
        self.task: dict[str, np.ndarray] = {}
        self.commanding = False  # a command is in force (a hold is owed when we stop)
        self.joint_source = None  # publisher id (GID bytes) of the JointState taken in; None: not known
        self.joint_source_at = -math.inf  # steady time (s) it was last taken in
        self.source_stamps: dict = {}  # publisher id -> its last JointState stamp (s): order per publisher
        self.conflict: tuple[float, str] | None = None  # (steady time, reason) of the last second-source message
        self.source_alive = None  # publisher id -> whether it still publishes (the node asks the ROS graph)
        self.rejected: collections.Counter = collections.Counter()
        self.late = 0  # commands dropped because the policy answered after the watchdog bound
        self.last_reject = ""

    # ----- message intake (each raises MessageError / SafetyError; the node logs and drops) ------
    def _check_stamp(self, what: str, stamp: float, now: float) -> None:
        """A stamp is plausible on the ROS clock at ``now`` (s): at most ``max_future`` ahead, at
        most ``max_age`` behind (a message that was already stale when it came is not fresh input)."""
        if stamp - now > self.watchdog.max_future:
            raise MessageError(f"{what} stamped {stamp - now:.3f} s in the future (bound {self.watchdog.max_future} s)")
        if now - stamp > self.watchdog.max_age:
            raise MessageError(f"{what} stamped {now - stamp:.3f} s before it was received "
                               f"(bound watchdog.max_age = {self.watchdog.max_age} s)")

    def restart_clock(self) -> None:
        """Forget every stamp and receipt (after the ROS clock jumped back): each input must arrive
        again, stamped on the new time, before commanding resumes."""
        self.source_stamps.clear()
        self.joint_source, self.joint_source_at, self.joint_stamp = None, -math.inf, None
        self.watchdog.forget()

    def conflict_reason(self, now: float) -> str | None:
        """The reason while a second JointState publisher was seen within ``max_age`` of steady
        time ``now`` (s), else None."""
        if self.conflict is not None and now - self.conflict[0] <= self.watchdog.max_age:
            return self.conflict[1]
        return None

    def reject(self, source: str, exc: Exception) -> str:
        self.rejected[source] += 1
        self.last_reject = f"{source}: {exc}"
        return self.last_reject

    def on_joint_state(self, msg, now: float, received: float | None = None, publisher=None) -> None:
        """Take in the robot's ``sensor_msgs/JointState``.

        Args:
            msg: the message (the robot's joints picked by name).
            now: ROS time (s) at receipt, for the stamp checks.
            received: steady time (s) at receipt, for liveness (None: ``now``, one clock).
            publisher: the publisher's id (its GID bytes from the message info; None: unknown).
        Raises:
            MessageError: malformed, implausible stamp, or older than this publisher's last one.
            SourceConflict: ``publisher`` differs from the publisher whose JointState was taken in,
                and that one is still live: taken in within ``watchdog.max_age``, or still a
                publisher by ``source_alive`` (the message is not taken in).
            SafetyError: a measured position far outside the limits.
        """
        received, source = (now if received is None else received), publisher
        names = self.robot.all_joints
        pos, vel, stamp = joint_state_to_arrays(msg, names, need_velocity=self.need_velocity)
        self._check_stamp("JointState", stamp, now)
        n = len(self.robot.arm_joints)
        self.safety.check_measurement(pos[:n])
        if source != self.joint_source and self.joint_source is not None and (
                received - self.joint_source_at <= self.watchdog.max_age
                or (self.source_alive is not None and self.source_alive(self.joint_source))):
            reason = ("JointState with the robot's joints from a second publisher while the first one is live: "
                      "one robot-state source per robot")
            self.conflict = (received, reason)
            raise SourceConflict(reason)
        last = self.source_stamps.get(source)
        if last is not None and stamp < last:
            raise MessageError(f"JointState stamp {stamp:.6f} is older than the same publisher's last one ({last:.6f})")
        if source != self.joint_source:
            self.source_stamps.clear()  # a new source (the old one went silent): its own order from here
        self.q, self.qg = pos[:n], pos[n:]
        self.dq, self.dqg = (vel[:n], vel[n:]) if vel is not None else (None, None)
        self.joint_stamp = stamp
        self.joint_source, self.joint_source_at = source, received
        self.source_stamps[source] = stamp
        self.watchdog.observe(JOINTS_OBS, received, stamp)

    def on_image(self, view: str, msg, now: float, received: float | None = None) -> None:
        """Take in camera ``view``'s image (ROS time ``now`` and steady ``received`` s, as :meth:`on_joint_state`)."""
        stamp = stamp_to_sec(msg.header.stamp)
        if stamp <= 0:
            raise MessageError(f"image {view!r} header stamp is zero; a stamped message is required")
        self._check_stamp(f"image {view!r}", stamp, now)
        self.images[view] = image_to_rgb(msg, self.image_size or None)
        self.watchdog.observe(f"image/{view}", now if received is None else received, stamp)

    def on_task_state(self, msg, now: float, received: float | None = None) -> None:
        """Take in the task state (ROS time ``now`` and steady ``received`` s, as :meth:`on_joint_state`)."""
        values, stamp = task_state_to_dict(msg, self.task_layout)
        self._check_stamp("task state", stamp, now)
        self.task = values
        self.watchdog.observe(TASK_OBS, now if received is None else received, stamp)

    # ----- decisions ---------------------------------------------------------------------------
    def state(self) -> np.ndarray:
        """The policy state float32 [D] in ``state_layout`` order from the latest inputs."""
        parts = []
        for key, _ in self.layout:
            spec = self.joint_keys.get(key)
            if spec is None:
                parts.append(self.task[key])
                continue
            if spec.field == "position":
                v = self.q if spec.joints == "arm" else self.qg
            else:
                v = self.dq if spec.joints == "arm" else self.dqg
            v = np.asarray(v, dtype=np.float64)
            if spec.sign is not None:
                v = v * np.asarray(spec.sign)
            if spec.fn == "cos":
                v = np.cos(v)
            elif spec.fn == "sin":
                v = np.sin(v)
            parts.append(v)
        with np.errstate(over="ignore"):
            state = np.concatenate(parts).astype(np.float32)
        if not np.isfinite(state).all():
            f32max = float(np.finfo(np.float32).max)
            bad = [k for (k, _), p in zip(self.layout, parts, strict=True) if (np.abs(p) > f32max).any()]
            raise ValueError(f"state keys {bad} do not fit float32 (|value| > 3.4e38)")
        return state

    def warmup(self, iters: int) -> None:
        """Call the policy ``max(1, iters)`` times on a neutral input (mid-range joints, zero
        velocities and task state, black images of ``image_size`` or 64 px), then forget it.

        Raises:
            FloatingPointError: the policy produced non-finite actions.
        """
        lim = self.robot.limits
        self.q = 0.5 * (lim.lower + lim.upper)
        self.dq = np.zeros_like(self.q)
        ng = len(self.robot.gripper.joints) if self.robot.gripper else 0
        self.qg, self.dqg = np.zeros(ng), np.zeros(ng)
        self.task = {k: np.zeros(n) for k, n in self.task_layout}
        size = self.image_size or 64
        self.images = {v: np.zeros((size, size, 3), np.uint8) for v in self.views}
        for _ in range(max(1, iters)):
            chunk = self.policy.act(self.state(), dict(self.images) if self.views else None)
            if not np.isfinite(chunk).all():
                raise FloatingPointError("policy produced non-finite actions during warm-up")
        self.q = self.dq = self.qg = self.dqg = None
        self.task, self.images = {}, {}

    def stop(self, status: str, reason: str) -> Decision:
        """Stop commanding: one hold at the last measured position if a command was in force, else nothing."""
        if self.commanding and self.q is not None:
            self.commanding = False
            return Decision("hold", status, reason, positions=self.safety.hold(self.q)[None], stamp=self.joint_stamp)
        self.commanding = False
        return Decision("none", status, reason)

    def tick(self, now: float, armed: bool, clock=None, ros_clock=None) -> Decision:
        """One control step at steady time ``now`` (s, the clock of the receipt times).

        ``clock`` (a callable returning the steady time in s), when given, is read again once the
        policy has answered: a command whose observations have meanwhile grown older than the
        watchdog bound is dropped (a hold instead), so a slow policy never sends late actions.
        ``ros_clock`` (a callable returning the ROS time in s), when given, is read at both checks:
        the stamps must also be within ``max_age`` of it, and the command is stamped with it.
        """
        if not armed:
            return self.stop("disarmed", "disarmed (call ~/arm with true to command)")
        conflict = self.conflict_reason(now)
        if conflict is not None:
            return self.stop("refusing", conflict)
        reason = self.watchdog.check(now, None if ros_clock is None else ros_clock())
        if reason is not None:
            return self.stop("holding", f"watchdog: {reason}")
        try:
            state = self.state()
            chunk = self.policy.act(state, {v: self.images[v] for v in self.views} if self.views else None)
            n = len(self.robot.arm_joints)
            chunk = np.asarray(chunk, dtype=np.float64).reshape(-1, int(self.policy.meta["action_dim"]))
            targets = self.q[None] + self.joint_step * np.cumsum(np.clip(chunk[:, :n], -1, 1), axis=0)
            safe, clamped = self.safety.filter(targets, self.q, self.action_period)
            grip = self.robot.gripper.action_to_position(chunk[:, n]) if self.robot.gripper else None
        except (ValueError, FloatingPointError, SafetyError, KeyError) as exc:
            return self.stop("refusing", f"policy step failed: {type(exc).__name__}: {exc}")
        checked_at = now
        if clock is not None:
            checked_at = clock()
            ros_at = None if ros_clock is None else ros_clock()
            reason = self.watchdog.check(checked_at, ros_at)
            if reason is not None:
                self.late += 1
                return self.stop("holding", f"late command dropped: {reason} once the policy answered")
            checked_at = checked_at if ros_at is None else ros_at
        self.commanding = True
        return Decision("command", "commanding", "", positions=safe, gripper=grip, stamp=self.joint_stamp,
                        clamped=clamped, checked_at=checked_at)


def latency_stats(latencies) -> dict[str, float]:
    """p50/p95/p99/mean/max (ms) of latencies in seconds."""
    a = np.asarray(list(latencies), dtype=np.float64) * 1e3
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean()), "max_ms": float(a.max())}


def achieved_rate(tick_times) -> float:
    """Achieved loop rate (Hz) from tick times in seconds (median interval)."""
    t = np.asarray(list(tick_times), dtype=np.float64)
    if t.size < 3:
        return float("nan")
    return float(1.0 / np.median(np.diff(t)))
