"""The policy node: an rclpy lifecycle node that runs a deployment policy against a ros2_control arm.

Lifecycle (``rclpy.lifecycle.LifecycleNode``, services ``~/change_state`` etc.):

- **configure**: load the deployment policy (:func:`control.export.load_policy`), check it against
  the robot config (controller kind, action size = arm joints + gripper, every state key readable,
  a camera topic per view), warm it up, check the ROS graph (one commander per robot, below),
  create the subscriptions.
- **activate**: start the control loop at ``rate_hz`` on the node's ROS clock (simulated time with
  ``use_sim_time``) and the steady-clock supervisor (below); the command publishers are lifecycle
  publishers: they only publish while active. The node stays **disarmed** until ``~/arm``
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
position, clipped into the limits) when any required observation was last received more than
``watchdog.max_age`` ago on a steady clock (checked before the policy call and again after it, so
late actions are dropped); commanding resumes once every input is fresh again. Header stamps are
checked on intake (see :class:`ros.policy_core.PolicyCore`). Nothing non-finite or out of limits
is ever published. ``~/status`` (``std_msgs/String``, JSON) reports the state (``unconfigured`` /
``disarmed`` / ``commanding`` / ``holding`` / ``refusing``) and the reason.

One commander per robot: configure and ``~/arm`` refuse (one line) while another node of this
node's name exists or another publisher is on a command topic (the trajectory or forward command,
the gripper's), found by ROS graph introspection (``get_node_names_and_namespaces``,
``get_publishers_info_by_topic``); while armed the graph is checked every
:data:`COMMANDER_CHECK_S` s, and a second publisher there disarms the node with one hold (status
``refusing``). The robot's JointState is taken from one publisher at a time (by the GID in the
message info): a second one sending the robot's joints while the first is live (still a publisher
in the graph, or heard within ``watchdog.max_age``) is refused, and an armed node holds and
disarms (status ``refusing``, the publishers' nodes named).

The steady-clock supervisor (every quarter control period, ``time.monotonic``) holds with an honest
status when the loop cannot: the ROS clock has not advanced for :data:`CLOCK_STALL_PERIODS`
control periods (a frozen ``/clock``; the ROS-clock timer does not fire then), or an input went
stale. A ROS clock that jumps back makes the node hold, forget every stamp and receipt, and resume
once each input has arrived again on the new time.

The decisions are :class:`ros.policy_core.PolicyCore`'s (no ROS); this module is the rclpy I/O
around it and imports rclpy at the top, so the deploy job imports it only once ROS is needed.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import re
import threading
import time

import numpy as np
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from control.export import load_policy, sampling_overrides
from ros.messages import MessageError, make_float64_array, make_joint_trajectory, publisher_id
from ros.policy_core import Decision, PolicyCore, SourceConflict, node_options, resolve_policy_folder
from ros.robot import Robot
from ros.safety import SafetyError

#: Seconds between the ROS-graph checks for a second commander while armed.
COMMANDER_CHECK_S = 1.0
#: Control periods of steady time the ROS clock may stand still before the node holds.
CLOCK_STALL_PERIODS = 1.25
#: Seconds since the node was created that configure waits for DDS discovery before the graph check.
DISCOVERY_WAIT_S = 0.5


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
    publication, ROS clock), ``tick_times`` (s, ROS time), ``compute_times`` (s, tick start -> command
    published), ``published`` and ``clamped`` (counters). ROS arguments of the context apply
    (``--ros-args -p use_sim_time:=true``).
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
        self._supervisor = None  # steady-clock timer (see the module docstring)
        self._steady_clock = Clock(clock_type=ClockType.STEADY_TIME)
        self._created = time.monotonic()
        self._ros_last: float | None = None  # the largest ROS time seen (s)
        self._ros_advanced = self._created  # steady time (s) the ROS time last advanced
        self._graph_checked = -float("inf")  # steady time (s) of the last commander check
        self._refused = ""  # why the node last refused to command (status while disarmed), "" if it did not
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
    def _guard(self, source: str, fn, msg, **kwargs) -> None:
        """Feed ``msg`` to the core's intake ``fn`` with the ROS time and the steady receipt time; a
        malformed message is counted, logged, dropped; a second JointState publisher disarms."""
        if self.core is None or self._closing:
            return
        try:
            fn(msg, self.now(), received=time.monotonic(), **kwargs)
        except SourceConflict as exc:
            self.core.reject(source, exc)
            who = self._publisher_nodes(self.robot.topics["joint_states"])
            self._refuse(f"{exc} (publishers on {self.robot.topics['joint_states']}: {who})")
        except (MessageError, SafetyError, ValueError) as exc:
            text = self.core.reject(source, exc)
            self.get_logger().warning(f"rejected {text}", throttle_duration_sec=1.0)

    # ----- one commander per robot, and the clock ------------------------------------------------
    def _publisher_nodes(self, topic: str) -> str:
        """The nodes publishing on ``topic``, fully qualified, comma separated."""
        infos = self.get_publishers_info_by_topic(topic)
        names = [f"{i.node_namespace.rstrip('/')}/{i.node_name}" if "_UNKNOWN_" not in i.node_name
                 else "(a node the graph does not name)" for i in infos]
        return ", ".join(names) or "(none)"

    def _joint_state_publisher_alive(self, gid) -> bool:
        """Whether the publisher with GID ``gid`` (bytes) is still on the JointState topic."""
        if gid is None:
            return False
        return any(bytes(i.endpoint_gid) == gid for i in self.get_publishers_info_by_topic(self.robot.topics["joint_states"]))

    def _graph_problem(self, own_publishers: bool) -> str | None:
        """Why this node must not command (one line), from the ROS graph: another node with this
        node's name, or another publisher on a command topic (``own_publishers``: this node's
        command publishers exist and are not counted). None when this node is the only commander."""
        name, ns = self.get_name(), self.get_namespace()
        if sum(1 for n, s in self.get_node_names_and_namespaces() if (n, s) == (name, ns)) > 1:
            return (f"another node named {self.get_fully_qualified_name()} is running; one commander per robot "
                    "(stop it, or give this node another node_name)")
        topics = [self.robot.topics["joint_trajectory" if self.output == "trajectory" else "forward_command"]]
        if self.robot.gripper is not None and self.robot.gripper.command_topic:
            topics.append(self.robot.gripper.command_topic)
        for topic in topics:
            others = len(self.get_publishers_info_by_topic(topic)) - (1 if own_publishers else 0)
            if others > 0:
                return (f"{others} other publisher(s) on command topic {topic} (nodes: {self._publisher_nodes(topic)}); "
                        "one commander per robot: stop the other commander first")
        return None

    def _refuse(self, reason: str) -> None:
        """Disarm with one hold if commanding; status ``refusing`` with ``reason`` (kept, while
        disarmed, until an arm succeeds)."""
        self.armed = False
        self._refused = f"{reason}; disarmed"
        if self.core is not None:
            self._apply(self.core.stop("refusing", self._refused))

    def _clock_problem(self, ros: float, steady: float) -> str | None:
        """Watch the ROS clock (``ros`` s) against the steady one (``steady`` s): the reason to hold
        when it jumped back (then every stamp and receipt is forgotten) or has not advanced for
        :data:`CLOCK_STALL_PERIODS` control periods; None otherwise."""
        last = self._ros_last
        if last is None or ros > last:
            self._ros_last, self._ros_advanced = ros, steady
            return None
        if ros < last:
            self._ros_last, self._ros_advanced = ros, steady
            if self.core is not None:
                self.core.restart_clock()
            return (f"ROS clock jumped back by {last - ros:.3f} s (to {ros:.3f} s); every input must arrive again "
                    "on the new time")
        stall, bound = steady - self._ros_advanced, CLOCK_STALL_PERIODS / self.rate
        if stall > bound:
            return (f"ROS clock stopped: ROS time {ros:.3f} s has not advanced for {stall:.3f} s of steady time "
                    f"(bound {bound:.3f} s; with use_sim_time, is /clock published?)")
        return None

    @locked
    def _supervise(self) -> None:
        """Steady-clock supervisor (every quarter control period while active): holds when the
        ROS clock stopped or jumped back or an input went stale, and disarms on a second commander."""
        if self.core is None or self._closing or not self.active:
            return
        steady = time.monotonic()
        reason = self._clock_problem(self.now(), steady)
        if not self.armed:
            return
        if steady - self._graph_checked >= COMMANDER_CHECK_S:
            self._graph_checked = steady
            problem = self._graph_problem(own_publishers=True)
            if problem is not None:
                self._refuse(problem)
                return
        if reason is None:
            stale = self.core.watchdog.check(steady)
            reason = None if stale is None else f"watchdog: {stale}"
        if reason is not None:
            self._apply(self.core.stop("holding", reason))

    # ----- lifecycle ---------------------------------------------------------------------------
    @locked
    def on_configure(self, state) -> TransitionCallbackReturn:
        self.configure_error = ""
        try:
            folder = resolve_policy_folder(self.cfg["checkpoint"])
            policy = load_policy(folder, sampling_overrides(self.cfg))
            core = PolicyCore(policy, self.robot, self.cfg)
            core.warmup(int(self.cfg.get("warmup", 3)))
        except Exception as exc:  # configure fails cleanly with the reason logged
            self.configure_error = " ".join(str(exc).split()) or type(exc).__name__
            self.get_logger().error(f"configure failed: {type(exc).__name__}: {exc}")
            return TransitionCallbackReturn.FAILURE
        wait = DISCOVERY_WAIT_S - (time.monotonic() - self._created)
        if wait > 0:
            time.sleep(wait)  # a node just created has not discovered the others yet
        problem = self._graph_problem(own_publishers=False)
        if problem is not None:
            self.configure_error = problem
            self.get_logger().error(f"configure refused: {problem}")
            self._publish_status("refusing", problem)
            return TransitionCallbackReturn.FAILURE
        self.core = core
        core.source_alive = self._joint_state_publisher_alive
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
        # (two-argument callback: rclpy passes the message info, whose publisher GID names the source)
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
        self._refused = ""
        self.active = True
        if self.trigger == "timer":
            self._timer = self.create_timer(1.0 / self.rate, self._tick)  # on the ROS clock (sim time too)
        self._ros_last, self._ros_advanced = None, time.monotonic()
        self._supervisor = self.create_timer(0.25 / self.rate, self._supervise, clock=self._steady_clock)
        self._publish_status("disarmed", "active; call ~/arm with true to command")
        return super().on_activate(state)  # enables the lifecycle publishers

    @locked
    def on_deactivate(self, state) -> TransitionCallbackReturn:
        if self.core is not None:
            self._apply(self.core.stop("disarmed", "deactivated"))
        self.armed = False
        self.active = False
        self._stop_timers()
        return super().on_deactivate(state)

    def _stop_timers(self) -> None:
        for t in (self._timer, self._supervisor):
            if t is not None:
                self.destroy_timer(t)
        self._timer = self._supervisor = None

    def _release(self) -> None:
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []
        self._stop_timers()
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
        problem = self._graph_problem(own_publishers=True) if req.data and self.active else None
        conflict = self.core.conflict_reason(time.monotonic()) if req.data and self.core is not None else None
        if req.data and not self.active:
            resp.success, resp.message = False, "cannot arm: node is not active (configure and activate it first)"
        elif problem or conflict:
            resp.success, resp.message = False, f"cannot arm: {problem or conflict}"
            self._refuse(problem or conflict)
            self.get_logger().error(resp.message)
        else:
            self.armed = bool(req.data)
            self._refused = ""
            resp.success, resp.message = True, "armed" if self.armed else "disarmed"
            self.get_logger().info(resp.message)
            if not self.armed and self.core is not None and self.active:
                self._apply(self.core.stop("disarmed", "disarmed by ~/arm"))
        return resp

    @locked
    def _on_joint_state(self, msg, info) -> None:
        self._guard("joint_states", self.core.on_joint_state if self.core else None, msg, publisher=publisher_id(info))
        if self.trigger == "joint_states" and self.active:
            self._tick()

    @locked
    def _tick(self) -> None:
        if self.core is None or self._closing:
            return
        t0 = time.perf_counter()
        now = self.now()
        self.tick_times.append(now)
        reason = self._clock_problem(now, time.monotonic())
        if reason is not None and self.armed:
            self._apply(self.core.stop("holding", reason))
            return
        d = self.core.tick(time.monotonic(), self.armed, clock=time.monotonic, ros_clock=self.now)
        if d.status == "disarmed" and self._refused:
            d = dataclasses.replace(d, status="refusing", reason=self._refused)
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
            # header stamp (ROS time, simulated with use_sim_time): a command's is the time its inputs were checked
            t_pub = d.checked_at if d.kind == "command" and d.checked_at is not None else self.now()
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
