"""The ROS 2 nodes over real DDS on localhost (tests/conftest.py sets LOCALHOST discovery and a
per-run domain id): the MuJoCo stand-in robot, the lifecycle policy node, the reward node.

Each test uses its own ``rclpy.Context`` and executor threads, and shuts them down."""

import contextlib
import gc
import json
import threading
import time

import mujoco
import numpy as np
import pytest
import rclpy
import torch
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from omegaconf import OmegaConf
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float32, Float64MultiArray, String
from std_srvs.srv import SetBool
from torch import nn
from trajectory_msgs.msg import JointTrajectory

from control.export import MLPPolicy, policy_meta, register_kind, save_policy
from jobs.deploy import NodeSpinner, build_robot
from ros.messages import make_joint_state, rgb_to_image, sec_to_stamp, stamp_to_sec
from ros.policy_node import PolicyNode
from ros.sim_robot import SimRobotNode

PANDA = build_robot(OmegaConf.load("configs/robot/panda.yaml"))
INIT_Q = [0, np.pi / 16, 0, -np.pi / 2 - np.pi / 3, 0, np.pi - 0.2, np.pi / 4]  # robosuite's Panda start


@register_kind("test-joint-lift-expert")
class JointLiftExpert(nn.Module):
    """Scripted Lift expert acting in joint space, exported as a deployment policy.

    Resolved-rate control: damped least squares on the grip site's Jacobian of a MuJoCo model of the
    same scene (``xml``) maps a Cartesian step to joint deltas. Phases, decided from the state
    alone: go above the cube, descend, close, lift; the gripper yaw follows the cube's yaw.
    Output ``[dq_1..dq_7, gripper]`` in [-1, 1] (dq in units of ``joint_step`` rad).
    """

    def __init__(self, xml: str, state_layout, joint_step: float = 0.05):
        super().__init__()
        self.cfg = dict(xml=xml, state_layout=[[k, int(n)] for k, n in state_layout], joint_step=float(joint_step))
        self.register_buffer("version", torch.ones(1))
        self.m = mujoco.MjModel.from_xml_string(xml)
        self.d = mujoco.MjData(self.m)
        jids = [mujoco.mj_name2id(self.m, mujoco.mjtObj.mjOBJ_JOINT, f"robot0_joint{i}") for i in range(1, 8)]
        self.adr = [int(self.m.jnt_qposadr[j]) for j in jids]
        self.dof = [int(self.m.jnt_dofadr[j]) for j in jids]
        self.sid = mujoco.mj_name2id(self.m, mujoco.mjtObj.mjOBJ_SITE, "gripper0_right_grip_site")
        self.sl, i = {}, 0
        for k, n in self.cfg["state_layout"]:
            self.sl[k] = slice(i, i + n)
            i += n
        self.d.qpos[self.adr] = INIT_Q
        mujoco.mj_kinematics(self.m, self.d)
        self.R_down = self.d.site_xmat[self.sid].reshape(3, 3).copy()
        self.base_yaw = float(np.arctan2(self.R_down[1, 0], self.R_down[0, 0]))

    def export_config(self):
        return dict(self.cfg)

    def _act(self, s: np.ndarray) -> np.ndarray:
        q, eef, cube = s[self.sl["robot0_joint_pos"]], s[self.sl["robot0_eef_pos"]], s[self.sl["cube_pos"]]
        g = s[self.sl["robot0_gripper_qpos"]]
        width, dxy, dz = g[0] - g[1], np.linalg.norm(eef[:2] - cube[:2]), eef[2] - cube[2]
        if width < 0.052 and dxy < 0.02 and dz < 0.03:
            target, grip = cube + [0, 0, 0.15], 1.0  # grasped: lift
        elif dxy < 0.012 and dz < 0.012:
            target, grip = cube, 1.0  # at the cube: close
        elif dxy < 0.012:
            target, grip = cube, -1.0  # above it: descend
        else:
            target, grip = cube + [0, 0, 0.06], -1.0  # go above it
        self.d.qpos[self.adr] = q
        mujoco.mj_kinematics(self.m, self.d)
        mujoco.mj_comPos(self.m, self.d)
        jp, jr = np.zeros((3, self.m.nv)), np.zeros((3, self.m.nv))
        mujoco.mj_jacSite(self.m, self.d, jp, jr, self.sid)
        J = np.vstack([jp[:, self.dof], jr[:, self.dof]])
        x, y, z, w = s[self.sl["cube_quat"]]  # robosuite quaternions are xyzw
        yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
        dyaw = (yaw - self.base_yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4  # a cube repeats every 90 deg
        Rz = np.array([[np.cos(dyaw), -np.sin(dyaw), 0], [np.sin(dyaw), np.cos(dyaw), 0], [0, 0, 1]])
        R, R_des = self.d.site_xmat[self.sid].reshape(3, 3), Rz @ self.R_down
        rot = 0.5 * sum(np.cross(R[:, i], R_des[:, i]) for i in range(3))
        err = np.concatenate([np.clip(target - eef, -0.02, 0.02), np.clip(rot, -0.1, 0.1)])
        dq = J.T @ np.linalg.solve(J @ J.T + 1e-4 * np.eye(6), err)
        return np.concatenate([np.clip(dq / self.cfg["joint_step"], -1, 1), [grip]])

    def forward(self, state, images=None):
        out = np.stack([self._act(r) for r in state.detach().cpu().numpy().astype(np.float64)])
        return torch.as_tensor(out, dtype=torch.float32)[:, None, :]


# ----- helpers ----------------------------------------------------------------------------------

@contextlib.contextmanager
def ros_session(args=None):
    """A fresh rclpy context (``args``: its ``rclpy.init`` arguments, e.g. ``--ros-args ...``) whose
    nodes are spun as ``dopa deploy`` spins them (one executor thread per node,
    :class:`jobs.deploy.NodeSpinner`); yields ``add(node)``.

    A shut-down context's DDS participant lives on (advertising its last nodes in the ROS graph)
    until the Context object is collected: earlier tests' contexts are collected first, so the
    policy node's graph checks (one commander per robot) see only this test's nodes."""
    gc.collect()
    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=args)
    spinner = NodeSpinner(context=ctx)
    nodes = []

    def add(node):
        nodes.append(node)
        return spinner.add(node)

    try:
        yield add, ctx
    finally:
        for n in nodes:
            if hasattr(n, "stop"):
                n.stop()
            if getattr(n, "active", False):
                n.trigger_shutdown()  # lifecycle: stops the control loop before the context goes
        spinner.stop(timeout_sec=5.0)
        for n in nodes:
            n.destroy_node()
        rclpy.shutdown(context=ctx)


def wait_for(pred, timeout: float, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def deploy_cfg(checkpoint, **over):
    cfg = OmegaConf.load("configs/deploy.yaml")
    cfg = OmegaConf.to_container(cfg, resolve=False)
    cfg.pop("defaults")
    cfg["checkpoint"] = str(checkpoint)
    for k, v in over.items():
        if isinstance(v, dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


def call(node, srv_type, name, request, timeout=10.0):
    client = node.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
    fut = client.call_async(request)
    assert wait_for(fut.done, timeout), f"service {name} did not answer"
    node.destroy_client(client)
    return fut.result()


class Recorder:
    """Test-side node: records commands and status, publishes images as a camera would."""

    def __init__(self, ctx):
        self.node = rclpy.create_node("test_recorder", context=ctx)
        self.traj: list[tuple[float, JointTrajectory]] = []  # (arrival s, msg)
        self.status: list[dict] = []
        self.success = []
        self.lock = threading.Lock()
        rel = QoSProfile(depth=100)
        self.node.create_subscription(JointTrajectory, PANDA.topics["joint_trajectory"], self._on_traj, rel)
        self.node.create_subscription(String, "/dopa_policy/status", lambda m: self.status.append(json.loads(m.data)),
                                      rel)
        self.node.create_subscription(Bool, "/dopa_sim_robot/success", lambda m: self.success.append(m.data), rel)

    def _on_traj(self, msg):
        with self.lock:
            self.traj.append((time.time(), msg))

    def commands(self):
        with self.lock:
            return [m for _, m in self.traj if not _is_hold(m)]

    def holds(self):
        with self.lock:
            return [m for _, m in self.traj if _is_hold(m)]


def _is_hold(msg: JointTrajectory) -> bool:
    return len(msg.points) == 1 and len(msg.points[0].velocities) > 0 and not any(msg.points[0].velocities)


class Camera:
    """A camera stand-in on the test side: republishes one real rendered frame with fresh stamps at
    ``rate`` Hz until stopped (the stand-in robot's own cameras render on CPU at a few Hz)."""

    def __init__(self, node, ctx, frame: np.ndarray, rate: float):
        self.pub = node.create_publisher(Image, PANDA.topics["images"]["front"], qos_profile_sensor_data)
        self.frame, self.on, self.last_stamp, self.node = frame, True, None, node
        self.timer = node.create_timer(1.0 / rate, self._tick)

    def _tick(self):
        if self.on:
            t = self.node.get_clock().now().nanoseconds * 1e-9
            self.pub.publish(rgb_to_image(self.frame, t))
            self.last_stamp = t


@pytest.fixture(scope="module")
def lift_meta():
    import sim

    env = sim.make_env("lift", controller="joint_position", image_size=32)
    obs, _ = env.reset()
    frame = env.render(("front",), image_size=32)["front"][0].numpy()
    meta = policy_meta(env, "mlp", views=["front"])
    xml = env.envs[0].robosuite_env.model.get_xml()
    layout = list(env.state_layout)
    env.close()
    return meta, frame, xml, layout


# ----- tests ------------------------------------------------------------------------------------

def test_full_loop_scripted_policy_lifts_the_cube(tmp_path, lift_meta):
    """Stand-in robot + policy node over DDS: a joint-space expert exported with save_policy runs an
    episode of Lift to the task's own success check, commands flowing as JointTrajectory."""
    meta, _, xml, layout = lift_meta
    folder = tmp_path / "expert"
    expert_meta = {**meta, "kind": "test-joint-lift-expert", "views": []}
    save_policy(folder, JointLiftExpert(xml, layout), expert_meta)
    with ros_session() as (add, ctx):
        rec = Recorder(ctx)
        add(rec.node)
        sim_node = add(SimRobotNode(PANDA, {"views": [], "rate_hz": 20.0, "seed": 1}, context=ctx))
        node = add(PolicyNode(deploy_cfg(folder, rate_hz=20.0), PANDA, context=ctx))
        assert node.trigger_configure().to_label() == "transition_success"
        assert node.trigger_activate().to_label() == "transition_success"
        assert wait_for(lambda: node.core.joint_stamp is not None, 10.0)
        time.sleep(0.5)
        assert not rec.commands(), "the node must start disarmed"
        resp = call(rec.node, SetBool, "/dopa_policy/arm", SetBool.Request(data=True))
        assert resp.success, resp.message
        ok = wait_for(lambda: any(rec.success), 60.0)
        steps = sim_node.arm.steps
        cmds = rec.commands()
        assert ok, (f"no success after {steps} simulator steps; {len(cmds)} commands; status {rec.status[-3:]}; "
                    f"rejected {dict(node.core.rejected)}")
        assert len(cmds) > 30
        first = sim_node.arm.first_success  # the stand-in remembers when the episode first succeeded
        assert first is not None and 0 < first <= sim_node.arm.steps
        assert cmds[-1].joint_names == list(PANDA.arm_joints)
        assert stamp_to_sec(cmds[-1].header.stamp) > 0 and cmds[-1].points[0].time_from_start.nanosec == 50_000_000
        assert sum(node.core.rejected.values()) == 0
        assert node.latencies and max(node.latencies) < 10.0


@pytest.fixture(scope="class")
def running_loop(tmp_path_factory, lift_meta):
    """Stand-in robot (no rendering), a test camera on 'front', and an MLP policy that reads
    'front', at 20 Hz with a 0.14 s watchdog bound (< one camera period + two control periods)."""
    meta, frame, _, _ = lift_meta
    folder = tmp_path_factory.mktemp("mlp") / "policy"
    torch.manual_seed(0)
    save_policy(folder, MLPPolicy(meta["state_dim"], meta["action_dim"], hidden=[32]), meta)
    with ros_session() as (add, ctx):
        rec = Recorder(ctx)
        add(rec.node)
        cam = Camera(rec.node, ctx, frame, rate=20.0)
        sim_node = add(SimRobotNode(PANDA, {"views": [], "rate_hz": 20.0}, context=ctx))
        node = add(PolicyNode(deploy_cfg(folder, rate_hz=20.0, watchdog={"max_age": 0.14}), PANDA, context=ctx))
        assert node.trigger_configure().to_label() == "transition_success"
        assert node.trigger_activate().to_label() == "transition_success"
        yield dict(rec=rec, cam=cam, sim=sim_node, node=node)


def _arm(loop, on: bool):
    resp = call(loop["rec"].node, SetBool, "/dopa_policy/arm", SetBool.Request(data=on))
    assert resp.success, resp.message


class TestRunningLoop:
    """One running loop (torn down after this class, so later tests see no stray topics)."""

    def test_disarmed_at_start_then_arming_commands(self, running_loop):
        rec, node = running_loop["rec"], running_loop["node"]
        assert wait_for(lambda: node.core.watchdog.check() is None, 10.0), node.core.watchdog.check()
        time.sleep(0.3)
        assert rec.commands() == [] and node.published["command"] == 0
        _arm(running_loop, True)
        assert wait_for(lambda: len(rec.commands()) >= 5, 10.0), rec.status[-3:]
        m = rec.commands()[-1]
        q = np.array(m.points[0].positions)
        lim = PANDA.limits
        assert np.isfinite(q).all() and (q >= lim.lower).all() and (q <= lim.upper).all()

    def test_watchdog_stops_commands_within_two_periods_after_camera_stops(self, running_loop):
        rec, cam, node = running_loop["rec"], running_loop["cam"], running_loop["node"]
        if not node.armed:
            _arm(running_loop, True)
        assert wait_for(lambda: len(rec.commands()) >= 5, 10.0)
        period = 1.0 / 20.0
        cam.on = False
        time.sleep(0.05)
        t_stop = cam.last_stamp + period  # the frame after the last one never came
        assert wait_for(lambda: node.core.commanding is False, 5.0)
        time.sleep(0.5)
        late = [m for m in rec.commands() if stamp_to_sec(m.header.stamp) > t_stop + 2 * period]
        assert late == [], f"{len(late)} commands later than two control periods after the camera stopped"
        holds = [m for m in rec.holds() if stamp_to_sec(m.header.stamp) > t_stop - period]
        assert holds and _is_hold(rec.traj[-1][1]), "the watchdog ends commanding with a hold"
        hold_q = np.array(holds[-1].points[0].positions)
        assert np.abs(hold_q - running_loop["sim"].arm.joint_positions()[:7]).max() < 0.05  # where the arm is
        assert any(s["status"] == "holding" and "image/front" in s["reason"] for s in rec.status)
        n = len(rec.commands())
        time.sleep(0.3)
        assert len(rec.commands()) == n  # stays stopped while the camera is down
        cam.on = True  # fresh observations again: commanding resumes
        assert wait_for(lambda: len(rec.commands()) >= n + 3, 5.0)

    def test_disarm_stops_commands(self, running_loop):
        rec, node = running_loop["rec"], running_loop["node"]
        if not node.armed:
            _arm(running_loop, True)
        assert wait_for(lambda: len(rec.commands()) >= 3, 10.0)
        t_before = node.now()
        _arm(running_loop, False)  # returns once the node has disarmed
        t_after = node.now()
        time.sleep(0.5)
        assert not node.armed
        late = [m for m in rec.commands() if stamp_to_sec(m.header.stamp) > t_after]
        assert late == [], f"{len(late)} commands stamped after the disarm"
        holds = [m for m in rec.holds() if t_before <= stamp_to_sec(m.header.stamp) <= t_after]
        assert len(holds) == 1 and _is_hold(rec.traj[-1][1]), "disarming sends exactly one hold"
        n = len(rec.traj)
        time.sleep(0.3)
        assert len(rec.traj) == n  # silence afterwards
        assert rec.status[-1]["status"] == "disarmed"

    def test_malformed_messages_are_rejected_and_the_node_keeps_running(self, running_loop):
        rec, node = running_loop["rec"], running_loop["node"]
        _arm(running_loop, True)
        assert wait_for(lambda: len(rec.commands()) >= 3, 10.0)
        pub_js = rec.node.create_publisher(JointState, PANDA.topics["joint_states"], 10)
        pub_img = rec.node.create_publisher(Image, PANDA.topics["images"]["front"], qos_profile_sensor_data)
        before = dict(node.core.rejected)
        now = node.now()
        names = list(PANDA.all_joints)
        bad_js = [
            make_joint_state(names[:5], np.zeros(5), stamp=now),                          # joints missing
            make_joint_state(names, np.r_[np.nan, np.zeros(8)], stamp=now),               # NaN
            make_joint_state(names, np.r_[50.0, np.zeros(8)], stamp=now),                 # far outside limits
            make_joint_state(names, np.zeros(9), stamp=now + 100.0),                       # stamped in the future
        ]
        m = make_joint_state(names, np.zeros(9), stamp=now)
        m.position = [0.0] * 4                                                            # length mismatch
        bad_js.append(m)
        bad_img = Image(height=32, width=32, encoding="rgb8", step=96)
        bad_img.header.stamp = sec_to_stamp(now)
        bad_img.data = b"\x01" * 10                                                       # truncated
        enc = rgb_to_image(np.zeros((32, 32, 3), np.uint8), now)
        enc.encoding = "yuv422"                                                           # unsupported
        for _ in range(3):  # best-effort QoS: send a few times
            for msg in [*bad_js, bad_img, enc]:
                (pub_img if isinstance(msg, Image) else pub_js).publish(msg)
                time.sleep(0.02)  # the node keeps only the newest message of each topic
        assert wait_for(lambda: node.core.rejected["joint_states"] - before.get("joint_states", 0) >= 3
                        and node.core.rejected["image/front"] - before.get("image/front", 0) >= 1, 5.0), \
            dict(node.core.rejected)
        assert node.core.last_reject  # the reason is kept (and logged)
        n = len(rec.commands())
        assert wait_for(lambda: len(rec.commands()) >= n + 5, 5.0), "the node must keep commanding"
        lim = PANDA.limits
        for m in rec.commands():
            q = np.array([p.positions for p in m.points])
            assert np.isfinite(q).all() and (q >= lim.lower).all() and (q <= lim.upper).all()
        rec.node.destroy_publisher(pub_js)
        rec.node.destroy_publisher(pub_img)


def test_configure_fails_cleanly_for_a_robot_the_policy_does_not_fit(tmp_path, lift_meta):
    meta = lift_meta[0]
    folder = tmp_path / "p"
    save_policy(folder, MLPPolicy(meta["state_dim"], meta["action_dim"], hidden=[8]), meta)
    ur5e = build_robot(OmegaConf.load("configs/robot/ur5e.yaml"))
    with ros_session() as (add, ctx):
        node = add(PolicyNode(deploy_cfg(folder), ur5e, context=ctx))
        assert node.trigger_configure().to_label() == "transition_failure"
        assert node.core is None
        node2 = add(PolicyNode(deploy_cfg(tmp_path / "missing"), PANDA, context=ctx, node_name="p2"))
        assert node2.trigger_configure().to_label() == "transition_failure"


def test_forward_command_mode_moves_the_stand_in(tmp_path, lift_meta):
    meta = lift_meta[0]
    folder = tmp_path / "p"
    torch.manual_seed(1)
    save_policy(folder, MLPPolicy(meta["state_dim"], meta["action_dim"], hidden=[8]), {**meta, "views": []})
    with ros_session() as (add, ctx):
        rec = rclpy.create_node("fwd_rec", context=ctx)
        add(rec)
        got = []
        rec.create_subscription(Float64MultiArray, PANDA.topics["forward_command"], lambda m: got.append(m), 10)
        sim_node = add(SimRobotNode(PANDA, {"views": [], "command": "forward"}, context=ctx))
        node = add(PolicyNode(deploy_cfg(folder, output="forward"), PANDA, context=ctx))
        q0 = sim_node.arm.joint_positions()[:7].copy()
        # the lifecycle services, over DDS, as a launch system or `ros2 lifecycle set` would use them
        for tid in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
            assert call(rec, ChangeState, "/dopa_policy/change_state",
                        ChangeState.Request(transition=Transition(id=tid)), timeout=30.0).success
        assert call(rec, GetState, "/dopa_policy/get_state", GetState.Request()).current_state.label == "active"
        assert call(rec, SetBool, "/dopa_policy/arm", SetBool.Request(data=True)).success
        assert wait_for(lambda: len(got) >= 10, 10.0)
        assert len(got[-1].data) == 7
        assert wait_for(lambda: np.abs(sim_node.arm.joint_positions()[:7] - q0).max() > 0.01, 5.0)
        assert node.published["command"] >= 10 and node.output == "forward"


def test_deploy_job_commands_the_stand_in_and_stops_its_threads(tmp_path, lift_meta, capsys):
    """``dopa deploy`` (the job function; its nodes spun by jobs.deploy.NodeSpinner) armed at start
    commands the stand-in robot for ``duration_s``, ends with one hold, and joins its threads."""
    from jobs.cli import main

    meta = lift_meta[0]
    folder = tmp_path / "p"
    torch.manual_seed(2)
    save_policy(folder, MLPPolicy(meta["state_dim"], meta["action_dim"], hidden=[8]), {**meta, "views": []})
    with ros_session() as (add, ctx):
        rec = Recorder(ctx)
        add(rec.node)
        sim_node = add(SimRobotNode(PANDA, {"views": []}, context=ctx))
        assert main(["deploy", f"checkpoint={folder}", "arm=true", "duration_s=4"]) == 0
        out = capsys.readouterr().out
        assert wait_for(lambda: rec.traj and _is_hold(rec.traj[-1][1]), 5.0), "deploy ends with a hold"
        cmds = rec.commands()
        assert len(cmds) >= 10, (len(cmds), out)
        lim = PANDA.limits
        for m in cmds:
            q = np.array([p.positions for p in m.points])
            assert np.isfinite(q).all() and (q >= lim.lower).all() and (q <= lim.upper).all()
        assert "dopa deploy: published" in out and sim_node.rejected == 0
        assert not [t.name for t in threading.enumerate() if t.name == "spin-dopa_policy"], "spin thread left"


def test_reward_node_publishes_progress_from_stand_in_cameras(tmp_path):
    from reward_models.grm import GRM, GRMConfig, save_checkpoint
    from reward_models.tracker import GRMPotential
    from ros.reward_node import RewardNode

    torch.manual_seed(0)
    cfg = GRMConfig(views=("front",), image_size=32, channels=(8, 8), width=32, depth=1, heads=2)
    model = GRM(cfg)
    rng = np.random.default_rng(0)
    refs = {"lift": {"text": "lift the red cube", "start": rng.integers(0, 255, (1, 32, 32, 3), dtype=np.uint8),
                     "goal": rng.integers(0, 255, (1, 32, 32, 3), dtype=np.uint8),
                     "text_emb": rng.standard_normal(cfg.text_dim).astype(np.float32)}}
    save_checkpoint(tmp_path / "grm", model, refs)
    potential = GRMPotential(str(tmp_path / "grm"))
    with ros_session() as (add, ctx):
        rec = rclpy.create_node("reward_rec", context=ctx)
        add(rec)
        progress, complete = [], []
        rec.create_subscription(Float32, "/dopa_reward/progress", lambda m: progress.append(m.data), 10)
        rec.create_subscription(Bool, "/dopa_reward/complete", lambda m: complete.append(m.data), 10)
        sim_node = add(SimRobotNode(PANDA, {"views": ["front"], "image_size": 32, "camera_rate_hz": 4.0},
                                           context=ctx))
        node = add(RewardNode(potential, {"front": PANDA.topics["images"]["front"]}, rate_hz=4.0,
                                    max_age=2.0, context=ctx))
        assert wait_for(lambda: len(progress) >= 3, 30.0), f"progress messages: {progress}"
        assert all(0.0 <= p <= 1.0 for p in progress) and len(complete) >= 1
        assert node.started and len(node.history) >= 3
        stamps = [h[0] for h in node.history]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)  # each query on new frames
        assert all(t_query - stamp <= 2.0 for stamp, t_query, _, _ in node.history)
        sim_node.cameras_on = False  # stale frames: nothing more is published
        t_off = node.now()
        time.sleep(3.0)
        assert [h for h in node.history if h[1] > t_off + 2.0 + 0.3] == []
        assert wait_for(lambda: "old" in (node._last_reason or ""), 2.0), node._last_reason


def test_stand_in_interpolates_joint_trajectories_in_time():
    """The stand-in executes a multi-point JointTrajectory like a joint_trajectory_controller:
    it starts at the header stamp from the position at receipt and interpolates between points."""
    from ros.sim_robot import SimArm

    arm = SimArm(PANDA, views=(), seed=0)
    try:
        q0 = arm.joint_positions()[:7].copy()
        p = np.stack([q0 + 0.1, q0 + 0.3])
        arm.set_trajectory(now=10.0, stamp=10.5, times=np.array([0.2, 0.4]), positions=p)
        np.testing.assert_allclose(arm.target(10.4), q0)                  # not started yet
        np.testing.assert_allclose(arm.target(10.6), q0 + 0.05, atol=1e-9)  # halfway to point 0
        np.testing.assert_allclose(arm.target(10.8), q0 + 0.2, atol=1e-9)   # halfway from point 0 to 1
        np.testing.assert_allclose(arm.target(12.0), q0 + 0.3)              # holds the last point
        arm.set_trajectory(now=20.0, stamp=0.0, times=np.array([0.5]), positions=(q0 - 0.2)[None])
        for k in range(30):  # 1.5 s of simulated control at 20 Hz, the command 0.5 s long
            arm.step(20.0 + 0.05 * k)
        assert np.abs(arm.joint_positions()[:7] - (q0 - 0.2)).max() < 0.05
    finally:
        arm.close()
