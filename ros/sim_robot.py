"""A MuJoCo-backed stand-in for a ros2_control arm, so the policy loop runs without hardware.

It speaks the topics of the robot config (``configs/robot/<name>.yaml``):

- publishes ``sensor_msgs/JointState`` (arm + gripper joints under the robot's names, stamped),
  ``sensor_msgs/Image`` (rgb8) per view at ``camera_rate_hz`` (sensor-data QoS), the task state
  (non-joint state keys such as ``robot0_eef_pos``, ``cube_pos``; see
  :func:`ros.messages.make_task_state`) and ``~/success`` (``std_msgs/Bool``, the task's check);
- executes ``trajectory_msgs/JointTrajectory`` like a joint_trajectory_controller: the trajectory
  starts at its header stamp (zero: on receipt) from the position at receipt and is interpolated
  linearly in time between points; after the last point it holds it. Or, with
  ``command=forward``, ``std_msgs/Float64MultiArray`` absolute positions held until the next one;
- gripper: ``std_msgs/Float64MultiArray`` [finger position m] on the gripper's command topic;
- one commander per robot: a command (arm or gripper) is **rejected** while commands from two
  publishers (told apart by the GID in the message info) arrived within
  :data:`COMMANDER_WINDOW_S` s; the arm keeps executing the last accepted command (it ends in a
  hold at its last point). Each rejection is counted in ``rejected`` and logged with the reason;
- services: ``~/reset`` (``std_srvs/Trigger``, new episode) and ``~/set_cameras``
  (``std_srvs/SetBool``, stop/start the cameras to rehearse a camera failure).

The simulator is ``sim.make_env(task, controller="joint_position")`` (robosuite Panda, 20 Hz
control). Each step its joint servo aims at where the commanded trajectory will be one control
period ahead: the action is ``clip((q_target - q) / joint_step, -1, 1)``, so a policy's chunk
replayed through the node reproduces the training env's actions.

The node (:class:`SimRobotNode`) imports rclpy at the top of this module; :class:`SimArm` is the
simulator side without ROS I/O.
"""

from __future__ import annotations

import math
import threading
import time

import mujoco
import numpy as np
import torch
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

import sim
from ros.messages import (
    MessageError,
    joint_trajectory_to_arrays,
    make_joint_state,
    make_task_state,
    publisher_id,
    rgb_to_image,
)
from ros.robot import Robot

COMMANDS = ("trajectory", "forward")
#: Seconds within which commands from two publishers make the stand-in reject commands.
COMMANDER_WINDOW_S = 1.0



class SimArm:
    """The simulator side of the stand-in (no ROS): command interpolation, stepping, readouts.

    Args:
        robot: robot description with a ``sim`` section (task, joint_map, gripper_sign).
        task: robosuite task name (default ``robot.sim["task"]``).
        views: camera views rendered by :meth:`render`.
        image_size: pixels per side.
        seed: episode seed (``reset`` without a seed continues the stream).
        joint_step: rad per unit action of the simulator's joint controller (0.05).
        lookahead: seconds ahead of "now" at which the servo samples the commanded trajectory.
    Raises:
        ValueError: the robot has no ``sim`` section, or its joint map names joints the simulator
            or the robot lacks (named).
    """

    def __init__(self, robot: Robot, task: str | None = None, views=(), image_size: int = 64, seed: int = 0,
                 joint_step: float = 0.05, lookahead: float = 0.05):
        if not robot.sim:
            raise ValueError(f"robot {robot.name!r} has no 'sim' section: no MuJoCo stand-in is configured for it")
        self.robot = robot
        self.task = str(task or robot.sim["task"])
        self.views = tuple(views)
        self.env = sim.make_env(self.task, num_envs=1, views=(), image_size=int(image_size), seed=int(seed),
                                controller="joint_position", max_episode_steps=10**9)
        self.image_size = int(image_size)
        self.tenv = self.env.envs[0]
        m = self.tenv.model
        jmap = dict(robot.sim["joint_map"])
        inv = {v: k for k, v in jmap.items()}
        missing = [j for j in robot.all_joints if j not in inv]
        if missing:
            raise ValueError(f"robot {robot.name!r}: sim.joint_map has no simulator joint for {missing}")
        self.qadr, self.vadr = [], []
        for j in robot.all_joints:
            jid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, inv[j])
            if jid < 0:
                raise ValueError(f"simulator task {self.task!r} has no joint {inv[j]!r} (mapped to {j!r})")
            self.qadr.append(int(m.jnt_qposadr[jid]))
            self.vadr.append(int(m.jnt_dofadr[jid]))
        ng = len(robot.gripper.joints) if robot.gripper else 0
        self.gripper_sign = np.asarray(robot.sim.get("gripper_sign") or [1.0] * ng, dtype=np.float64)
        self.n_arm = len(robot.arm_joints)
        self.joint_step = float(joint_step)
        self.lookahead = float(lookahead)
        joint_keys = set(robot.state_from_joints)
        self.task_layout = [(k, n) for k, n in self.env.state_layout if k not in joint_keys]
        self.lock = threading.Lock()
        self.success = False
        self.first_success: int | None = None  # step of this episode at which the task first succeeded
        self.steps = 0
        self.reset(seed)

    # ----- state -----------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> None:
        with self.lock:
            obs, _ = self.env.reset(seed=seed)
            self._state = obs["state"][0].numpy().astype(np.float64)
            self.success = False
            self.first_success = None
            self.steps = 0
            q = self.joint_positions()[: self.n_arm]
            self._traj = None  # (t0, times [P], positions [P, N], q_start [N])
            self._hold = q.copy()
            self._grip_action = -1.0  # open

    def joint_positions(self) -> np.ndarray:
        """Arm + gripper positions in the robot's convention: float64 [N + G] (rad, m)."""
        q = self.tenv.data.qpos[self.qadr].astype(np.float64)
        q[self.n_arm:] *= self.gripper_sign
        return q

    def joint_velocities(self) -> np.ndarray:
        v = self.tenv.data.qvel[self.vadr].astype(np.float64)
        v[self.n_arm:] *= self.gripper_sign
        return v

    def task_state(self) -> dict[str, np.ndarray]:
        """Non-joint state keys of the simulator's state (``{key: float64 [n]}``)."""
        out, i = {}, 0
        keys = dict(self.task_layout)
        for key, n in self.env.state_layout:
            if key in keys:
                out[key] = self._state[i:i + n].copy()
            i += n
        return out

    def render(self) -> dict[str, np.ndarray]:
        """``{view: uint8 [H, W, 3]}`` of the current state."""
        if not self.views:
            return {}
        with self.lock:
            return self.tenv.render_views(self.views, self.image_size)

    # ----- commands ----------------------------------------------------------------------------
    def set_trajectory(self, now: float, stamp: float, times: np.ndarray, positions: np.ndarray) -> None:
        """Follow a trajectory: ``positions`` float [P, N] (rad) at ``stamp + times`` (s); stamp 0 = now."""
        with self.lock:
            t0 = now if stamp <= 0 else stamp
            self._traj = (t0, np.asarray(times, np.float64), np.asarray(positions, np.float64),
                          self.joint_positions()[: self.n_arm].copy())

    def set_forward(self, positions: np.ndarray) -> None:
        """Hold absolute positions float [N] (rad) until the next command."""
        with self.lock:
            self._traj = None
            self._hold = np.asarray(positions, np.float64).copy()

    def set_gripper(self, position: float) -> None:
        """Finger position command (m) -> simulator gripper action in [-1, 1]."""
        with self.lock:
            self._grip_action = self.robot.gripper.position_to_action(position)

    def target(self, t: float) -> np.ndarray:
        """Commanded arm position at time ``t`` (s): float64 [N] rad (linear interpolation)."""
        if self._traj is None:
            return self._hold
        t0, times, pos, q_start = self._traj
        tt = np.concatenate([[0.0], times])
        pp = np.concatenate([q_start[None], pos])
        s = t - t0
        if s >= tt[-1]:
            self._hold = pos[-1].copy()
            return pos[-1]
        if s <= 0:
            return q_start
        return np.array([np.interp(s, tt, pp[:, j]) for j in range(pp.shape[1])])

    def step(self, now: float) -> None:
        """Advance the simulator one control step (1/20 s of simulated time) toward the command."""
        with self.lock:
            q = self.joint_positions()[: self.n_arm]
            a = np.clip((self.target(now + self.lookahead) - q) / self.joint_step, -1.0, 1.0)
            action = np.concatenate([a, [self._grip_action]]) if self.robot.gripper else a
            obs, _, _, _, info = self.env.step(torch.as_tensor(action[None], dtype=torch.float32))
            self._state = obs["state"][0].numpy().astype(np.float64)
            self.success = bool(info["success"][0])
            self.steps += 1
            if self.success and self.first_success is None:
                self.first_success = self.steps

    def close(self) -> None:
        self.env.close()


class SimRobotNode(Node):
    """The stand-in robot node (it starts stepping at once).

    Args:
        robot: robot description with a ``sim`` section.
        cfg: ``configs/sim_robot.yaml`` fields as a plain mapping: ``task``, ``seed``, ``rate_hz``,
            ``views``, ``image_size``, ``camera_rate_hz``, ``publish_task_state``, ``command``.
        context: an ``rclpy.Context`` (None: the global one).
        node_name, namespace: the ROS 2 node name and namespace.
    Attributes: ``arm`` (:class:`SimArm`), ``rejected`` (count of rejected commands: malformed,
    or sent while two publishers command), ``commander_conflicts`` (those of the second kind) and
    ``cameras_on``. ROS arguments of the context apply (``--ros-args -p use_sim_time:=true``: the
    stand-in stamps and times commands on ``/clock``).
    Raises:
        ValueError: unknown ``command`` (allowed listed), a view with no topic, bad rates.
    """

    def __init__(self, robot: Robot, cfg, context=None, node_name: str = "dopa_sim_robot", namespace: str = ""):
        command = str(cfg.get("command", "trajectory"))
        if command not in COMMANDS:
            raise ValueError(f"unknown command {command!r}; allowed: {', '.join(COMMANDS)}")
        rate = float(cfg.get("rate_hz", 20.0))
        cam_rate = float(cfg.get("camera_rate_hz", rate))
        if not (math.isfinite(rate) and rate > 0 and math.isfinite(cam_rate) and 0 < cam_rate):
            raise ValueError(f"rate_hz and camera_rate_hz must be > 0, got {rate}, {cam_rate}")
        views = tuple(cfg.get("views") or ())
        topics = {v: robot.image_topic(v) for v in views}
        super().__init__(node_name, namespace=namespace, context=context)
        self.robot = robot
        self._period = 1.0 / rate
        self._stop = threading.Event()
        self._thread = None
        self.arm = SimArm(robot, cfg.get("task"), views, int(cfg.get("image_size", 64)), int(cfg.get("seed", 0)),
                          lookahead=1.0 / rate)
        self.rejected = 0
        self.commander_conflicts = 0
        self.last_reject = ""
        self._commanders: dict[str, dict[bytes | None, float]] = {"arm": {}, "gripper": {}}  # id -> steady s
        self.cameras_on = True
        self.js_pub = self.create_publisher(JointState, robot.topics["joint_states"], 10)
        self.img_pubs = {v: self.create_publisher(Image, t, qos_profile_sensor_data) for v, t in topics.items()}
        self.task_pub = None
        if cfg.get("publish_task_state", True) and robot.topics.get("task_state"):
            self.task_pub = self.create_publisher(JointState, robot.topics["task_state"], 10)
        self.success_pub = self.create_publisher(Bool, "~/success", 10)
        reliable = QoSProfile(depth=10)
        if command == "trajectory":
            self.create_subscription(JointTrajectory, robot.topics["joint_trajectory"], self._on_traj, reliable)
        else:
            self.create_subscription(Float64MultiArray, robot.topics["forward_command"], self._on_forward, reliable)
        if robot.gripper is not None:
            self.create_subscription(Float64MultiArray, robot.gripper.command_topic, self._on_gripper, reliable)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_service(SetBool, "~/set_cameras", self._on_cameras)
        self._cam_period = 1.0 / cam_rate
        self._last_cam = -math.inf
        # Stepping, rendering and state publishing run in one dedicated thread: an EGL context is
        # current in one thread only, and executor callbacks may run in any thread of a pool.
        self._thread = threading.Thread(target=self._loop, name=f"{node_name}-sim", daemon=True)
        self._thread.start()

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _reject(self, what: str, exc: Exception) -> None:
        self.rejected += 1
        self.last_reject = f"{what}: {exc}"
        self.get_logger().warning(f"rejected {self.last_reject}", throttle_duration_sec=1.0)

    def _one_commander(self, what: str, group: str, info) -> bool:
        """Record the command's publisher; False (and the command rejected) while commands from
        two publishers arrived within :data:`COMMANDER_WINDOW_S` s."""
        now = time.monotonic()
        seen = self._commanders[group]
        seen[publisher_id(info)] = now
        for k in [k for k, t in seen.items() if now - t > COMMANDER_WINDOW_S]:
            del seen[k]
        if len(seen) < 2:
            return True
        self.commander_conflicts += 1
        self._reject(what, MessageError(
            f"commands from {len(seen)} publishers within {COMMANDER_WINDOW_S} s; one commander per robot: "
            "none is executed until only one publishes"))
        return False

    def _on_traj(self, msg, info) -> None:
        if not self._one_commander("JointTrajectory", "arm", info):
            return
        try:
            times, pos, stamp = joint_trajectory_to_arrays(msg, self.robot.arm_joints)
        except MessageError as exc:
            self._reject("JointTrajectory", exc)
            return
        self.arm.set_trajectory(self.now(), stamp, times, pos)

    def _on_forward(self, msg, info) -> None:
        if not self._one_commander("Float64MultiArray", "arm", info):
            return
        v = np.asarray(msg.data, dtype=np.float64)
        names = self.robot.arm_joints
        if v.shape != (len(names),) or not np.isfinite(v).all():
            self._reject("Float64MultiArray", MessageError(
                f"need {len(names)} finite positions for {list(names)}, got {v.tolist()}"))
            return
        self.arm.set_forward(v)

    def _on_gripper(self, msg, info) -> None:
        if not self._one_commander("gripper command", "gripper", info):
            return
        v = np.asarray(msg.data, dtype=np.float64)
        if v.size < 1 or not np.isfinite(v[0]):
            self._reject("gripper command", MessageError(f"need one finite finger position, got {v.tolist()}"))
            return
        self.arm.set_gripper(float(v[0]))

    def _on_reset(self, req, resp):
        self.arm.reset()
        resp.success, resp.message = True, "episode reset"
        return resp

    def _on_cameras(self, req, resp):
        self.cameras_on = bool(req.data)
        resp.success, resp.message = True, f"cameras {'on' if self.cameras_on else 'off'}"
        self.get_logger().info(resp.message)
        return resp

    def _publish(self, stamp: float) -> None:
        arm = self.arm
        self.js_pub.publish(make_joint_state(self.robot.all_joints, arm.joint_positions(), arm.joint_velocities(),
                                             stamp))
        if self.task_pub is not None:
            self.task_pub.publish(make_task_state(arm.task_state(), stamp))
        self.success_pub.publish(Bool(data=arm.success))
        if self.img_pubs and self.cameras_on and stamp - self._last_cam >= self._cam_period - 1e-3:
            self._last_cam = stamp
            for v, img in arm.render().items():
                self.img_pubs[v].publish(rgb_to_image(img, stamp, frame_id=f"camera_{v}"))

    def _loop(self) -> None:
        period = self._period
        try:
            self._publish(self.now())
            next_t = time.monotonic() + period
            while not self._stop.is_set():
                delay = next_t - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                next_t = max(next_t + period, time.monotonic() - period)  # no burst after a stall
                self.arm.step(self.now())
                self._publish(self.now())
        except Exception as exc:  # the context went away during shutdown, or the simulator failed
            if not self._stop.is_set():
                self.get_logger().error(f"simulation loop stopped: {type(exc).__name__}: {exc}")
        finally:
            self.arm.tenv.close()  # the renderer belongs to this thread

    def stop(self) -> None:
        """Stop stepping (joins the simulation thread)."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=10.0)

    def destroy_node(self):
        self.stop()
        if getattr(self, "arm", None) is not None:
            self.arm.close()
        return super().destroy_node()
