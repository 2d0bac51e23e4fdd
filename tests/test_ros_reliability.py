"""Deployment reliability over real DDS on localhost (rclpy nodes, the MuJoCo stand-in robot):
one commander per robot, one JointState source, and liveness on a steady clock with simulated
time (``use_sim_time``, a ``/clock`` that stops or jumps back)."""

import gc
import time

import numpy as np
import pytest
import torch
from rclpy.clock import Clock, ClockType
from rclpy.qos import QoSProfile
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool
from test_ros_nodes import PANDA, Recorder, _is_hold, call, deploy_cfg, lift_meta, ros_session, wait_for  # noqa: F401
from trajectory_msgs.msg import JointTrajectory

from control.export import MLPPolicy, save_policy
from ros.messages import make_joint_state, make_joint_trajectory, sec_to_stamp, stamp_to_sec
from ros.policy_node import PolicyNode
from ros.sim_robot import SimRobotNode

SIM_TIME = ["--ros-args", "-p", "use_sim_time:=true"]


@pytest.fixture(scope="module")
def policy_folder(tmp_path_factory, lift_meta):  # noqa: F811
    """A small MLP deployment policy for the Panda Lift state (no camera views)."""
    meta = lift_meta[0]
    folder = tmp_path_factory.mktemp("reliability") / "policy"
    torch.manual_seed(3)
    save_policy(folder, MLPPolicy(meta["state_dim"], meta["action_dim"], hidden=[8]), {**meta, "views": []})
    return folder


def _arm(rec, on: bool = True):
    return call(rec.node, SetBool, "/dopa_policy/arm", SetBool.Request(data=on))


def _commanding(add, ctx, folder, rec):
    """Stand-in robot + policy node (configured, active, armed, commanding)."""
    sim_node = add(SimRobotNode(PANDA, {"views": []}, context=ctx))
    node = add(PolicyNode(deploy_cfg(folder), PANDA, context=ctx))
    assert node.trigger_configure().to_label() == "transition_success", node.configure_error
    assert node.trigger_activate().to_label() == "transition_success"
    assert wait_for(lambda: node.core.watchdog.check() is None, 15.0), node.core.watchdog.check()
    assert _arm(rec).success
    assert wait_for(lambda: len(rec.commands()) >= 5, 10.0), rec.status[-3:]
    return sim_node, node


def _statuses(rec, status: str, text: str) -> list[dict]:
    return [s for s in list(rec.status) if s["status"] == status and text in s["reason"]]


def test_one_commander_per_robot(policy_folder):
    """A second policy node (same name, or another name on the same command topic) is refused at
    configure; a second publisher appearing on the command topic while commanding disarms the node
    with one hold, arming is refused while it exists, and the stand-in executes neither commander."""
    with ros_session() as (add, ctx):
        rec = Recorder(ctx)
        add(rec.node)
        sim_node, node = _commanding(add, ctx, policy_folder, rec)
        for name in ("dopa_policy", "second_policy"):
            other = PolicyNode(deploy_cfg(policy_folder), PANDA, context=ctx, node_name=name)
            try:
                assert other.trigger_configure().to_label() == "transition_failure"
                err = other.configure_error
            finally:
                other.destroy_node()
                del other
                gc.collect()  # rclpy removes a destroyed node from the graph once its objects are collected
            expected = ("another node named /dopa_policy" if name == "dopa_policy" else
                        f"1 other publisher(s) on command topic {PANDA.topics['joint_trajectory']} (nodes: ")
            assert expected in err and "one commander per robot" in err and "\n" not in err, err
        # a same-name twin alive during the armed node's graph check disarms that node too (its ~/arm
        # and ~/status are ambiguous then); once the twin is gone it arms again
        assert wait_for(lambda: node.armed or _arm(rec).success, 10.0, step=0.5), rec.status[-3:]
        n0 = len(rec.commands())
        assert wait_for(lambda: len(rec.commands()) >= n0 + 3, 10.0), rec.status[-3:]

        # a second commander appears on the trajectory topic while the node commands
        rogue = rec.node.create_publisher(JointTrajectory, PANDA.topics["joint_trajectory"], QoSProfile(depth=10))
        q = sim_node.arm.joint_positions()[:7].copy()
        far = np.clip(q + 0.3, PANDA.limits.lower, PANDA.limits.upper)
        assert wait_for(lambda: rogue.get_subscription_count() >= 1, 5.0)
        for _ in range(5):
            rogue.publish(make_joint_trajectory(PANDA.arm_joints, far[None], 0.05, 0.0))
            time.sleep(0.05)
        assert wait_for(lambda: sim_node.commander_conflicts >= 1, 5.0), sim_node.last_reject
        assert "one commander per robot" in sim_node.last_reject
        assert wait_for(lambda: not node.armed, 5.0), rec.status[-3:]
        assert wait_for(lambda: _statuses(rec, "refusing", "other publisher(s) on command topic"), 3.0), \
            rec.status[-3:]

        def from_node():  # the trajectories on the topic that the policy node sent (not the rogue's)
            with rec.lock:
                return [m for _, m in rec.traj if not np.allclose([p.positions for p in m.points], far[None])]

        assert wait_for(lambda: _is_hold(from_node()[-1]), 3.0), "disarming ends with a hold"
        n_node = len(from_node())
        resp = _arm(rec)
        assert not resp.success and "one commander per robot" in resp.message, resp.message
        time.sleep(0.3)
        assert len(from_node()) == n_node and not node.armed
        assert np.abs(sim_node.arm.joint_positions()[:7] - far).max() > 0.2  # the rogue target was not executed

        rec.node.destroy_publisher(rogue)  # the other commander goes: arming works again
        assert wait_for(lambda: _arm(rec).success, 10.0, step=0.5)
        assert wait_for(lambda: len(from_node()) >= n_node + 3, 10.0), rec.status[-3:]


def test_a_second_joint_state_publisher_does_not_starve_the_robot(policy_folder):
    """A process publishing the robot's JointState with slightly newer stamps (inside the 0.05 s
    future allowance) is refused as a second source: the robot's own messages keep being taken in
    (none dropped as older), the node holds and disarms naming both publishers, and arming is
    refused until the second publisher stops."""
    with ros_session() as (add, ctx):
        rec = Recorder(ctx)
        add(rec.node)
        sim_node, node = _commanding(add, ctx, policy_folder, rec)
        pub = rec.node.create_publisher(JointState, PANDA.topics["joint_states"], 10)
        q_rogue = np.r_[np.clip(sim_node.arm.joint_positions()[:7] + 0.3, PANDA.limits.lower, PANDA.limits.upper),
                        0.02, 0.02]

        def publish_rogue():
            t = rec.node.get_clock().now().nanoseconds * 1e-9 + 0.03  # newer than the robot's, within max_future
            pub.publish(make_joint_state(PANDA.all_joints, q_rogue, np.zeros(9), t))

        timer = rec.node.create_timer(0.05, publish_rogue)
        assert wait_for(lambda: not node.armed, 5.0), rec.status[-3:]
        assert wait_for(lambda: _statuses(rec, "refusing", "second publisher"), 3.0), rec.status[-3:]
        reason = _statuses(rec, "refusing", "second publisher")[-1]["reason"]
        assert "/dopa_sim_robot" in reason and "/test_recorder" in reason, reason
        n_cmd = len(rec.commands())
        stamp0 = node.core.joint_stamp
        n_status = len(rec.status)
        time.sleep(1.0)  # both keep publishing
        assert rec.status[-1]["status"] == "refusing" and len(rec.status) - n_status <= 2, rec.status[n_status:][:5]
        assert "older than" not in node.core.last_reject, node.core.last_reject
        assert node.core.joint_stamp > stamp0  # the robot's messages are still taken in ...
        q_sim = sim_node.arm.joint_positions()[:7]
        assert np.abs(node.core.q - q_sim).max() < 0.05  # ... and the rogue's are not
        assert np.abs(node.core.q - q_rogue[:7]).max() > 0.2
        resp = _arm(rec)
        assert not resp.success and "second publisher" in resp.message, resp.message
        assert len(rec.commands()) == n_cmd

        rec.node.destroy_timer(timer)  # the second publisher stops: arming works again
        rec.node.destroy_publisher(pub)
        assert wait_for(lambda: _arm(rec).success, 5.0, step=0.3)
        assert wait_for(lambda: len(rec.commands()) >= n_cmd + 3, 10.0), rec.status[-3:]


class SimClock:
    """A simulator's ``/clock`` on the test side: simulated seconds advance with steady time from
    ``t0`` while ``running``; :meth:`jump` moves them."""

    def __init__(self, node, t0: float = 1000.0, rate: float = 100.0):
        self.node, self.t, self.running, self.dt = node, float(t0), True, 1.0 / rate
        self.pub = node.create_publisher(ClockMsg, "/clock", QoSProfile(depth=10))
        self.timer = node.create_timer(self.dt, self._tick, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _tick(self):
        if self.running:
            self.t += self.dt
        self.pub.publish(ClockMsg(clock=sec_to_stamp(self.t)))


def test_simulated_time_frozen_and_jumping_clock(policy_folder):
    """With use_sim_time the node commands on /clock; a frozen /clock (the stand-in keeps publishing,
    stamped with the frozen time) makes it hold with an honest status instead of stalling as
    "commanding", and it resumes when the clock runs again; a jump back by 5 s holds, and commanding
    resumes on the new time once the inputs arrive again (not 5 s later)."""
    with ros_session(args=SIM_TIME) as (add, ctx):
        rec = Recorder(ctx)
        add(rec.node)
        clock = SimClock(rec.node)
        _, node = _commanding(add, ctx, policy_folder, rec)
        assert node.get_parameter("use_sim_time").value is True
        assert 1000.0 < stamp_to_sec(rec.commands()[-1].header.stamp) < 1100.0  # stamped on /clock

        clock.running = False
        t_frozen = clock.t
        assert wait_for(lambda: _statuses(rec, "holding", "ROS clock stopped"), 5.0), rec.status[-3:]
        assert wait_for(lambda: rec.traj and _is_hold(rec.traj[-1][1]), 2.0), "a frozen clock ends in a hold"
        assert node.armed and not node.core.commanding
        n_cmd = len(rec.commands())
        time.sleep(0.4)
        assert len(rec.commands()) == n_cmd and rec.status[-1]["status"] == "holding"

        clock.running = True
        assert wait_for(lambda: len(rec.commands()) >= n_cmd + 3, 5.0), rec.status[-3:]
        assert stamp_to_sec(rec.commands()[-1].header.stamp) > t_frozen

        t_before = clock.t
        clock.t -= 5.0
        assert wait_for(lambda: _statuses(rec, "holding", "ROS clock jumped back"), 5.0), rec.status[-3:]
        assert wait_for(lambda: any(stamp_to_sec(m.header.stamp) < t_before - 4.0 for m in rec.commands()), 3.0), \
            (rec.status[-3:], node.core.last_reject)
        assert wait_for(lambda: rec.status[-1]["status"] == "commanding", 3.0), rec.status[-4:]


def test_deploy_job_runs_on_simulated_time(tmp_path, policy_folder, capsys):
    """``dopa deploy use_sim_time=true`` and ``dopa deploy ... --ros-args -p use_sim_time:=true``
    command the stand-in on /clock; bad ROS arguments are one line; other jobs refuse --ros-args."""
    from jobs.cli import main

    assert main(["deploy", f"checkpoint={policy_folder}", "--ros-args", "-p", "bogus"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("dopa deploy: error: ros_args ['--ros-args', '-p', 'bogus'] are not valid ROS 2 arguments")
    assert main(["eval", "--ros-args", "-p", "use_sim_time:=true"]) == 2
    assert "--ros-args is for the ROS 2 jobs" in capsys.readouterr().err
    with ros_session(args=SIM_TIME) as (add, ctx):
        rec = Recorder(ctx)
        add(rec.node)
        SimClock(rec.node)
        add(SimRobotNode(PANDA, {"views": []}, context=ctx))
        for extra in (["use_sim_time=true"], ["--ros-args", "-p", "use_sim_time:=true", "--"]):
            n = len(rec.commands())
            assert main(["deploy", f"checkpoint={policy_folder}", "arm=true", "duration_s=3", *extra]) == 0, \
                capsys.readouterr()
            gc.collect()  # the job's context goes with its DDS participant before the next run
            cmds = rec.commands()[n:]
            assert len(cmds) >= 5, (extra, capsys.readouterr())
            assert all(1000.0 < stamp_to_sec(m.header.stamp) < 1100.0 for m in cmds), extra
