"""The policy node: an rclpy lifecycle node that runs a deployment policy against a ros2_control arm.

Lifecycle (``rclpy.lifecycle.LifecycleNode``, services ``~/change_state`` etc.):

- **configure**: load the deployment policy (:func:`control.export.load_policy`), check it against
  the robot config (controller kind, action size = arm joints + gripper, every state key readable,
  a camera topic per view), warm it up, create the subscriptions.
- **activate**: start the control loop at ``rate_hz`` (the command publishers are lifecycle
  publishers: they only publish while active). The node stays **disarmed** until ``~/arm``
  (``std_srvs/SetBool``) is called with ``true``.
- **deactivate**: publish one hold command if it was commanding, then stop. **cleanup** /
  **shutdown**: release the policy, subscriptions and timer.

Inputs:

- ``sensor_msgs/JointState`` on ``topics.joint_states`` (arm and gripper joints, picked **by
  name**; a message lacking a joint is rejected, naming it).
- ``sensor_msgs/Image`` per policy view on ``topics.images.<view>`` (best-effort, depth 1; rgb8, bgr8,
  mono8, rgba8, bgra8; resized to the policy's ``image_size``).
- Task state: every policy state key that is not read from joints (``state_from_joints`` in the
  robot config), e.g. ``robot0_eef_pos`` or ``cube_pos``, comes from ``topics.task_state``: a
  ``sensor_msgs/JointState`` used as a stamped named vector with entries ``"<key>/<j>"``. The
  MuJoCo stand-in publishes it from the simulator; on a real robot, perception and forward
  kinematics publish it. A policy whose state is all joint-derived needs no task-state topic.

Output (``output`` in ``configs/deploy.yaml``):

- ``trajectory``: ``trajectory_msgs/JointTrajectory`` on ``topics.joint_trajectory``; an action
  chunk ``[h, A]`` becomes h points at ``(k+1) * action_period`` s, header stamp = publication
  time. A hold is a single point at the held position with zero velocities.
- ``forward``: ``std_msgs/Float64MultiArray`` (first point of the chunk) on
  ``topics.forward_command``.
- Gripper (when the robot has one): ``std_msgs/Float64MultiArray`` [finger position m] on
  ``gripper.command_topic``.

Actions: a ``joint_position`` policy outputs ``[dq_1..dq_N, gripper]`` in [-1, 1]; point k of the
chunk targets ``q + joint_step * sum_{j<=k} a_j`` (rad), then :class:`ros.safety.SafetyFilter`
clamps it. Safety: :class:`ros.safety.Watchdog` stops commanding (one hold at the last measured
position, clipped into the limits) when any required observation's header stamp is older than
``watchdog.max_age`` (checked before the policy call and again after it, so late actions are
dropped); commanding resumes once every input is fresh again. Nothing non-finite or
out of limits is ever published. ``~/status`` (``std_msgs/String``, JSON) reports the state
(``unconfigured`` / ``disarmed`` / ``commanding`` / ``holding`` / ``refusing``) and the reason.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ros.messages import (
    MessageError,
    image_to_rgb,
    joint_state_to_arrays,
    make_float64_array,
    make_joint_trajectory,
    stamp_to_sec,
    task_state_to_dict,
)
from ros.robot import Robot
from ros.safety import SafetyError, SafetyFilter, Watchdog

JOINTS_OBS = "joint_states"
TASK_OBS = "task_state"
OUTPUTS = ("trajectory", "forward")


def resolve_policy_folder(checkpoint: str | os.PathLike) -> Path:
    """A policy folder (holding ``policy.json``) or a training checkpoint holding one in ``deploy/``.

    Raises:
        FileNotFoundError: neither exists (both paths named).
    """
    from control.export import CONFIG_FILE

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
    ``stamp``: header stamp (s) of the JointState the command was computed from.
    ``checked_at``: the time (s) at which the observations were last found fresh; a command is
    stamped with it, so ``command stamp - observation stamp <= watchdog.max_age`` holds exactly.
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
        self.rejected: collections.Counter = collections.Counter()
        self.late = 0  # commands dropped because the policy answered after the watchdog bound
        self.last_reject = ""

    # ----- message intake (each raises MessageError / SafetyError; the node logs and drops) ------
    def _check_stamp(self, what: str, stamp: float, now: float) -> None:
        if stamp - now > self.watchdog.max_future:
            raise MessageError(f"{what} stamped {stamp - now:.3f} s in the future (bound {self.watchdog.max_future} s)")

    def reject(self, source: str, exc: Exception) -> str:
        self.rejected[source] += 1
        self.last_reject = f"{source}: {exc}"
        return self.last_reject

    def on_joint_state(self, msg, now: float) -> None:
        names = self.robot.all_joints
        pos, vel, stamp = joint_state_to_arrays(msg, names, need_velocity=self.need_velocity)
        self._check_stamp("JointState", stamp, now)
        n = len(self.robot.arm_joints)
        self.safety.check_measurement(pos[:n])
        if self.joint_stamp is not None and stamp < self.joint_stamp:
            raise MessageError(f"JointState stamp {stamp:.6f} is older than the last one ({self.joint_stamp:.6f})")
        self.q, self.qg = pos[:n], pos[n:]
        self.dq, self.dqg = (vel[:n], vel[n:]) if vel is not None else (None, None)
        self.joint_stamp = stamp
        self.watchdog.observe(JOINTS_OBS, stamp)

    def on_image(self, view: str, msg, now: float) -> None:
        stamp = stamp_to_sec(msg.header.stamp)
        if stamp <= 0:
            raise MessageError(f"image {view!r} header stamp is zero; a stamped message is required")
        self._check_stamp(f"image {view!r}", stamp, now)
        self.images[view] = image_to_rgb(msg, self.image_size or None)
        self.watchdog.observe(f"image/{view}", stamp)

    def on_task_state(self, msg, now: float) -> None:
        values, stamp = task_state_to_dict(msg, self.task_layout)
        self._check_stamp("task state", stamp, now)
        self.task = values
        self.watchdog.observe(TASK_OBS, stamp)

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

    def _stop(self, status: str, reason: str) -> Decision:
        if self.commanding and self.q is not None:
            self.commanding = False
            return Decision("hold", status, reason, positions=self.safety.hold(self.q)[None], stamp=self.joint_stamp)
        self.commanding = False
        return Decision("none", status, reason)

    def tick(self, now: float, armed: bool, clock=None) -> Decision:
        """One control step at ROS time ``now`` (s).

        ``clock`` (a callable returning the ROS time in s), when given, is read again once the policy
        has answered: a command whose observations have meanwhile grown older than the watchdog
        bound is dropped (a hold instead), so a slow policy never sends late actions.
        """
        if not armed:
            return self._stop("disarmed", "disarmed (call ~/arm with true to command)")
        reason = self.watchdog.check(now)
        if reason is not None:
            return self._stop("holding", f"watchdog: {reason}")
        try:
            state = self.state()
            chunk = self.policy.act(state, {v: self.images[v] for v in self.views} if self.views else None)
            n = len(self.robot.arm_joints)
            chunk = np.asarray(chunk, dtype=np.float64).reshape(-1, int(self.policy.meta["action_dim"]))
            targets = self.q[None] + self.joint_step * np.cumsum(np.clip(chunk[:, :n], -1, 1), axis=0)
            safe, clamped = self.safety.filter(targets, self.q, self.action_period)
            grip = self.robot.gripper.action_to_position(chunk[:, n]) if self.robot.gripper else None
        except (ValueError, FloatingPointError, SafetyError, KeyError) as exc:
            return self._stop("refusing", f"policy step failed: {type(exc).__name__}: {exc}")
        checked_at = now
        if clock is not None:
            checked_at = clock()
            reason = self.watchdog.check(checked_at)
            if reason is not None:
                self.late += 1
                return self._stop("holding", f"late command dropped: {reason} once the policy answered")
        self.commanding = True
        return Decision("command", "commanding", "", positions=safe, gripper=grip, stamp=self.joint_stamp,
                        clamped=clamped, checked_at=checked_at)


def _import_rclpy():
    import rclpy  # noqa: F401
    from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn  # noqa: F401

    return rclpy


def make_policy_node(cfg, robot: Robot, context=None, node_name: str = "dopa_policy", namespace: str = ""):
    """Create the lifecycle policy node (unconfigured).

    Args:
        cfg: the deploy config (``checkpoint``, ``output``, ``rate_hz``, ``trigger``,
            ``action_period``, ``joint_step``, ``safety``, ``watchdog``, ``warmup``); see
            ``configs/deploy.yaml``.
        robot: the robot description.
        context: an ``rclpy.Context`` (None: the global one).
    Returns:
        a ``rclpy.lifecycle.LifecycleNode`` subclass instance; drive it with
        ``trigger_configure()`` / ``trigger_activate()`` or the lifecycle services.
    Raises:
        ValueError: unknown ``output`` or ``trigger`` (allowed values listed), ``rate_hz <= 0``.
    """
    _import_rclpy()
    from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray, String
    from std_srvs.srv import SetBool
    from trajectory_msgs.msg import JointTrajectory

    output, trigger, rate = node_options(cfg)

    class _PolicyNode(LifecycleNode):
        def __init__(self):
            super().__init__(node_name, namespace=namespace, context=context)
            self.cfg, self.robot, self.output, self.trigger, self.rate = cfg, robot, output, trigger, rate
            self.core: PolicyCore | None = None
            self.configure_error = ""  # why the last configure failed (one line), "" if it did not
            self.armed = False
            self.active = False
            self._subs: list = []
            self._timer = None
            self._cmd_pub = None
            self._grip_pub = None
            self.latencies = collections.deque(maxlen=100_000)  # s, obs stamp -> command publication
            self.tick_times = collections.deque(maxlen=100_000)  # s, ROS time of each tick
            self.compute_times = collections.deque(maxlen=100_000)  # s, tick start -> command published
            self.published = collections.Counter()
            self.clamped = collections.Counter()  # entries changed by each safety rule ("delta", "limits")
            self._last_status = None
            # Transitions (from any thread or the lifecycle services) and callbacks (executor
            # threads) are serialised, so a callback never sees a half-configured or released node.
            self._lock = threading.RLock()
            self._closing = False
            self.status_pub = self.create_publisher(String, "~/status", 10)
            self.arm_srv = self.create_service(SetBool, "~/arm", self._on_arm)
            self._publish_status("unconfigured", "")

        # ----- helpers -------------------------------------------------------------------------
        def now(self) -> float:
            return self.get_clock().now().nanoseconds * 1e-9

        def _publish_status(self, status: str, reason: str) -> None:
            key = (status, re.sub(r"-?[0-9.]+", "#", reason))  # one log line per cause, not per tick
            if key == self._last_status:
                return
            self._last_status = key
            if status in ("holding", "refusing"):
                self.get_logger().warning(f"{status}: {reason}")
            else:
                self.get_logger().info(f"{status}{': ' + reason if reason else ''}")
            self.status_pub.publish(String(data=json.dumps({"status": status, "reason": reason,
                                                             "armed": self.armed})))

        def _guard(self, source: str, fn, msg) -> None:
            if self.core is None or self._closing:
                return
            try:
                fn(msg, self.now())
            except (MessageError, SafetyError, ValueError) as exc:
                text = self.core.reject(source, exc)
                self.get_logger().warning(f"rejected {text}", throttle_duration_sec=1.0)

        def _locked_guard(self, source: str, fn, msg) -> None:
            with self._lock:
                self._guard(source, fn, msg)

        # ----- lifecycle -----------------------------------------------------------------------
        def on_configure(self, state) -> TransitionCallbackReturn:
            with self._lock:
                return self._on_configure(state)

        def _on_configure(self, state) -> TransitionCallbackReturn:
            self.configure_error = ""
            try:
                from control.export import load_policy

                folder = resolve_policy_folder(self.cfg["checkpoint"])
                policy = load_policy(folder)
                core = PolicyCore(policy, self.robot, self.cfg)
                self._warmup(core, int(self.cfg.get("warmup", 3)))
            except Exception as exc:  # configure fails cleanly with the reason logged
                self.configure_error = " ".join(str(exc).split()) or type(exc).__name__
                self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}")
                return TransitionCallbackReturn.FAILURE
            self.core = core
            topics = self.robot.topics
            # Sensor-data QoS (best effort) with depth 1: a slow tick acts on the newest message,
            # never on a backlog.
            obs_qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                                 reliability=ReliabilityPolicy.BEST_EFFORT)
            sub = self.create_subscription(
                JointState, topics["joint_states"],
                lambda m: self._on_joint_state(m), obs_qos)
            self._subs = [sub]
            for v in core.views:
                self._subs.append(self.create_subscription(
                    Image, self.robot.image_topic(v),
                    (lambda view: (lambda m: self._locked_guard(f"image/{view}",
                                                                lambda mm, now: core.on_image(view, mm, now), m)))(v),
                    obs_qos))
            if core.task_layout:
                if not topics.get("task_state"):
                    self.configure_error = (f"the policy needs task-state keys {[k for k, _ in core.task_layout]} "
                                            f"but robot {self.robot.name!r} sets no topics.task_state")
                    self.get_logger().error(self.configure_error)
                    self._release()
                    return TransitionCallbackReturn.FAILURE
                self._subs.append(self.create_subscription(
                    JointState, topics["task_state"],
                    lambda m: self._locked_guard("task_state", core.on_task_state, m), obs_qos))
            reliable = QoSProfile(depth=10)
            if self.output == "trajectory":
                self._cmd_pub = self.create_lifecycle_publisher(JointTrajectory, topics["joint_trajectory"], reliable)
            else:
                self._cmd_pub = self.create_lifecycle_publisher(Float64MultiArray, topics["forward_command"], reliable)
            if self.robot.gripper is not None and self.robot.gripper.command_topic:
                self._grip_pub = self.create_lifecycle_publisher(Float64MultiArray, self.robot.gripper.command_topic,
                                                                 reliable)
            self.get_logger().info(f"configured: {policy!r} from {str(folder)!r}; robot {self.robot.name!r}; "
                                   f"inputs {list(core.watchdog.required)}; output {self.output}")
            self._publish_status("disarmed", "configured")
            return TransitionCallbackReturn.SUCCESS

        def _warmup(self, core: PolicyCore, iters: int) -> None:
            lim = self.robot.limits
            core.q = 0.5 * (lim.lower + lim.upper)
            core.dq = np.zeros_like(core.q)
            ng = len(self.robot.gripper.joints) if self.robot.gripper else 0
            core.qg, core.dqg = np.zeros(ng), np.zeros(ng)
            core.task = {k: np.zeros(n) for k, n in core.task_layout}
            size = core.image_size or 64
            core.images = {v: np.zeros((size, size, 3), np.uint8) for v in core.views}
            for _ in range(max(1, iters)):
                chunk = core.policy.act(core.state(), dict(core.images) if core.views else None)
                if not np.isfinite(chunk).all():
                    raise FloatingPointError("policy produced non-finite actions during warm-up")
            core.q = core.dq = core.qg = core.dqg = None
            core.task, core.images = {}, {}

        def on_activate(self, state) -> TransitionCallbackReturn:
            with self._lock:
                return self._on_activate(state)

        def _on_activate(self, state) -> TransitionCallbackReturn:
            self.armed = False
            self.active = True
            if self.trigger == "timer":
                self._timer = self.create_timer(1.0 / self.rate, self._tick)
            self._publish_status("disarmed", "active; call ~/arm with true to command")
            return super().on_activate(state)  # enables the lifecycle publishers

        def on_deactivate(self, state) -> TransitionCallbackReturn:
            with self._lock:
                return self._on_deactivate(state)

        def _on_deactivate(self, state) -> TransitionCallbackReturn:
            if self.core is not None:
                self._apply(self.core._stop("disarmed", "deactivated"))
            self.armed = False
            self.active = False
            if self._timer is not None:
                self.destroy_timer(self._timer)
                self._timer = None
            return super().on_deactivate(state)

        def _release(self) -> None:
            for s in self._subs:
                self.destroy_subscription(s)
            self._subs = []
            if self._timer is not None:
                self.destroy_timer(self._timer)
                self._timer = None
            for p in (self._cmd_pub, self._grip_pub):
                if p is not None:
                    self.destroy_lifecycle_publisher(p)
            self._cmd_pub = self._grip_pub = None
            self.core = None

        def on_cleanup(self, state) -> TransitionCallbackReturn:
            with self._lock:
                return self._on_cleanup(state)

        def _on_cleanup(self, state) -> TransitionCallbackReturn:
            self._release()
            self._publish_status("unconfigured", "cleaned up")
            return TransitionCallbackReturn.SUCCESS

        def on_shutdown(self, state) -> TransitionCallbackReturn:
            with self._lock:
                return self._on_shutdown(state)

        def _on_shutdown(self, state) -> TransitionCallbackReturn:
            if self.active and self.core is not None:
                self._apply(self.core._stop("disarmed", "shutting down"))
            self.active = False
            self._release()
            return TransitionCallbackReturn.SUCCESS

        def on_error(self, state) -> TransitionCallbackReturn:
            with self._lock:
                return self._on_error(state)

        def _on_error(self, state) -> TransitionCallbackReturn:
            self.active = self.armed = False
            self._release()
            return TransitionCallbackReturn.SUCCESS

        # ----- services, inputs, loop ----------------------------------------------------------
        def _on_arm(self, req, resp):
            with self._lock:
                return self._arm(req, resp)

        def _arm(self, req, resp):
            if req.data and not self.active:
                resp.success, resp.message = False, "cannot arm: node is not active (configure and activate it first)"
            else:
                self.armed = bool(req.data)
                resp.success, resp.message = True, "armed" if self.armed else "disarmed"
                self.get_logger().info(resp.message)
                if not self.armed and self.core is not None and self.active:
                    self._apply(self.core._stop("disarmed", "disarmed by ~/arm"))
            return resp

        def _on_joint_state(self, msg) -> None:
            with self._lock:
                self._guard("joint_states", self.core.on_joint_state if self.core else None, msg)
                if self.trigger == "joint_states" and self.active:
                    self._tick()

        def _tick(self) -> None:
            with self._lock:
                if self.core is None or self._closing:
                    return
                t0 = time.perf_counter()
                now = self.now()
                self.tick_times.append(now)
                d = self.core.tick(now, self.armed, clock=self.now)
                self._apply(d)
                if d.kind == "command":
                    self.compute_times.append(time.perf_counter() - t0)

        def destroy_node(self):
            with self._lock:
                self._closing = True
            return super().destroy_node()

        def _apply(self, d: Decision) -> None:
            """Publish a decision (the only place commands leave the node)."""
            if d.kind != "none" and self._cmd_pub is not None:
                pos = d.positions
                lo, hi = self.core.safety.lower, self.core.safety.upper
                if not (np.isfinite(pos).all() and ((pos >= lo) & (pos <= hi)).all()):  # second line of defence
                    self.get_logger().error(f"internal: unsafe {d.kind} {pos.tolist()} withheld")
                    self._publish_status("refusing", "internal safety check withheld a command")
                    return
                t_pub = d.checked_at if d.checked_at is not None else self.now()  # header stamp
                names = self.robot.arm_joints
                if self.output == "trajectory":
                    vel = np.zeros_like(pos) if d.kind == "hold" else None
                    msg = make_joint_trajectory(names, pos, self.core.action_period, t_pub, velocities=vel)
                else:
                    msg = make_float64_array(pos[0])
                self._cmd_pub.publish(msg)
                if d.gripper is not None and self._grip_pub is not None:
                    self._grip_pub.publish(make_float64_array(d.gripper[:1]))
                self.published[d.kind] += 1
                if d.clamped:
                    self.clamped.update(d.clamped)
                if d.kind == "command" and d.stamp is not None:
                    self.latencies.append(self.now() - d.stamp)
            self._publish_status(d.status, d.reason)

    return _PolicyNode()


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

