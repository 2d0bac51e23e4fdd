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

The decisions are :class:`ros.policy_core.PolicyCore`'s (no ROS); this module is the rclpy I/O
around it and imports rclpy at the top, so the deploy job imports it only once ROS is needed.
"""

from __future__ import annotations

import collections
import functools
import json
import re
import threading
import time

import numpy as np
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from control.export import load_policy
from ros.messages import MessageError, make_float64_array, make_joint_trajectory
from ros.policy_core import Decision, PolicyCore, node_options, resolve_policy_folder
from ros.robot import Robot
from ros.safety import SafetyError


def locked(method):
    """Run ``method`` holding the node's ``_lock`` (a re-entrant lock): lifecycle transitions (from
    any thread or the lifecycle services) and callbacks (executor threads) are serialised, so a
    callback never sees a half-configured or released node."""

    @functools.wraps(method)
    def run_locked(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return run_locked


class PolicyNode(LifecycleNode):
    """The lifecycle policy node (created unconfigured).

    Args:
        cfg: the deploy config as a plain mapping (``checkpoint``, ``output``, ``rate_hz``,
            ``trigger``, ``action_period``, ``joint_step``, ``safety``, ``watchdog``, ``warmup``);
            see ``configs/deploy.yaml``.
        robot: the robot description.
        context: an ``rclpy.Context`` (None: the global one).
        node_name, namespace: the ROS 2 node name and namespace.
    Drive it with ``trigger_configure()`` / ``trigger_activate()`` or the lifecycle services.
    Attributes read by the job, tests and benchmarks: ``core`` (:class:`PolicyCore` or None),
    ``configure_error``, ``armed``, ``active``, ``latencies`` (s, observation stamp -> command
    publication), ``tick_times`` (s, ROS time), ``compute_times`` (s, tick start -> command
    published), ``published`` and ``clamped`` (counters).
    Raises:
        ValueError: unknown ``output`` or ``trigger`` (allowed values listed), ``rate_hz <= 0``.
    """

    def __init__(self, cfg, robot: Robot, context=None, node_name: str = "dopa_policy", namespace: str = ""):
        output, trigger, rate = node_options(cfg)
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
        self._lock = threading.RLock()  # see :func:`locked`
        self._closing = False
        self.status_pub = self.create_publisher(String, "~/status", 10)
        self.arm_srv = self.create_service(SetBool, "~/arm", self._on_arm)
        self._publish_status("unconfigured", "")

    # ----- helpers -----------------------------------------------------------------------------
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

    @locked
    def _guard(self, source: str, fn, msg) -> None:
        """Feed ``msg`` to the core's intake ``fn``; a malformed message is counted, logged, dropped."""
        if self.core is None or self._closing:
            return
        try:
            fn(msg, self.now())
        except (MessageError, SafetyError, ValueError) as exc:
            text = self.core.reject(source, exc)
            self.get_logger().warning(f"rejected {text}", throttle_duration_sec=1.0)

    # ----- lifecycle ---------------------------------------------------------------------------
    @locked
    def on_configure(self, state) -> TransitionCallbackReturn:
        self.configure_error = ""
        try:
            folder = resolve_policy_folder(self.cfg["checkpoint"])
            policy = load_policy(folder)
            core = PolicyCore(policy, self.robot, self.cfg)
            core.warmup(int(self.cfg.get("warmup", 3)))
        except Exception as exc:  # configure fails cleanly with the reason logged
            self.configure_error = " ".join(str(exc).split()) or type(exc).__name__
            self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.core = core
        if core.task_layout and not self.robot.topics.get("task_state"):
            self.configure_error = (f"the policy needs task-state keys {[k for k, _ in core.task_layout]} "
                                    f"but robot {self.robot.name!r} sets no topics.task_state")
            self.get_logger().error(self.configure_error)
            self._release()
            return TransitionCallbackReturn.FAILURE
        self._subscribe(core)
        self._create_command_publishers()
        self.get_logger().info(f"configured: {policy!r} from {str(folder)!r}; robot {self.robot.name!r}; "
                               f"inputs {list(core.watchdog.required)}; output {self.output}")
        self._publish_status("disarmed", "configured")
        return TransitionCallbackReturn.SUCCESS

    def _subscribe(self, core: PolicyCore) -> None:
        """JointState, one Image topic per policy view and, when the policy reads task-state keys,
        the task state. Sensor-data QoS (best effort) with depth 1: a slow tick acts on the newest
        message, never on a backlog."""
        topics = self.robot.topics
        obs_qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
        self._subs = [self.create_subscription(JointState, topics["joint_states"], self._on_joint_state, obs_qos)]
        for v in core.views:
            on_image = functools.partial(core.on_image, v)
            self._subs.append(self.create_subscription(
                Image, self.robot.image_topic(v), functools.partial(self._guard, f"image/{v}", on_image), obs_qos))
        if core.task_layout:
            self._subs.append(self.create_subscription(
                JointState, topics["task_state"], functools.partial(self._guard, "task_state", core.on_task_state),
                obs_qos))

    def _create_command_publishers(self) -> None:
        """Lifecycle publishers (they publish only while active): the arm command, and the gripper's."""
        topics, reliable = self.robot.topics, QoSProfile(depth=10)
        if self.output == "trajectory":
            self._cmd_pub = self.create_lifecycle_publisher(JointTrajectory, topics["joint_trajectory"], reliable)
        else:
            self._cmd_pub = self.create_lifecycle_publisher(Float64MultiArray, topics["forward_command"], reliable)
        if self.robot.gripper is not None and self.robot.gripper.command_topic:
            self._grip_pub = self.create_lifecycle_publisher(Float64MultiArray, self.robot.gripper.command_topic,
                                                             reliable)

    @locked
    def on_activate(self, state) -> TransitionCallbackReturn:
        self.armed = False
        self.active = True
        if self.trigger == "timer":
            self._timer = self.create_timer(1.0 / self.rate, self._tick)
        self._publish_status("disarmed", "active; call ~/arm with true to command")
        return super().on_activate(state)  # enables the lifecycle publishers

    @locked
    def on_deactivate(self, state) -> TransitionCallbackReturn:
        if self.core is not None:
            self._apply(self.core.stop("disarmed", "deactivated"))
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

    @locked
    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._release()
        self._publish_status("unconfigured", "cleaned up")
        return TransitionCallbackReturn.SUCCESS

    @locked
    def on_shutdown(self, state) -> TransitionCallbackReturn:
        if self.active and self.core is not None:
            self._apply(self.core.stop("disarmed", "shutting down"))
        self.active = False
        self._release()
        return TransitionCallbackReturn.SUCCESS

    @locked
    def on_error(self, state) -> TransitionCallbackReturn:
        self.active = self.armed = False
        self._release()
        return TransitionCallbackReturn.SUCCESS

    # ----- services, inputs, loop --------------------------------------------------------------
    @locked
    def _on_arm(self, req, resp):
        if req.data and not self.active:
            resp.success, resp.message = False, "cannot arm: node is not active (configure and activate it first)"
        else:
            self.armed = bool(req.data)
            resp.success, resp.message = True, "armed" if self.armed else "disarmed"
            self.get_logger().info(resp.message)
            if not self.armed and self.core is not None and self.active:
                self._apply(self.core.stop("disarmed", "disarmed by ~/arm"))
        return resp

    @locked
    def _on_joint_state(self, msg) -> None:
        self._guard("joint_states", self.core.on_joint_state if self.core else None, msg)
        if self.trigger == "joint_states" and self.active:
            self._tick()

    @locked
    def _tick(self) -> None:
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
