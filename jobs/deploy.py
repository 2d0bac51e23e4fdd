"""The ``dopa deploy`` and ``dopa sim-robot`` jobs."""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from basics.checks import check_float, check_int, check_threads
from control.export import load_policy, sampling_overrides
from reward_models.grm import check_grm_checkpoint
from reward_models.tracker import GRMPotentialConfig
from ros.policy_core import achieved_rate, check_deploy_config, latency_stats, resolve_policy_folder
from ros.robot import Robot

ROBOT_TARGET = "ros.robot.Robot"


def build_robot(cfg) -> Robot:
    """The :class:`ros.robot.Robot` of a robot config (``configs/robot/<name>.yaml``), built with
    ``hydra.utils.instantiate`` (its ``_target_``, :data:`ROBOT_TARGET` when the config names none).

    Raises:
        ValueError: the robot's own one-line message (bad limits, unknown field, ...), or a missing
            or unknown key of the config.
    """
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = {"_target_": ROBOT_TARGET, **dict(cfg)}
    for key in ("name", "joints", "topics"):
        if key not in cfg:
            raise ValueError(f"robot config lacks {key!r}")
    try:
        return instantiate(cfg, _convert_="all")
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, ValueError):
            raise cause from None
        if isinstance(cause, TypeError):
            raise ValueError(f"robot config {cfg.get('name', '?')!r}: {cause}") from None
        raise


def _discovery(robot) -> None:
    """DDS discovery range from the robot config (LOCALHOST unless the config opts in to more)."""
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = robot.discovery_range
    if robot.discovery_range != "LOCALHOST":
        print(f"ROS 2 discovery range {robot.discovery_range} (from the robot config): traffic leaves this machine")


class NodeSpinner:
    """Spin each node with its own ``rclpy.executors.SingleThreadedExecutor`` in its own thread.

    Why not one ``MultiThreadedExecutor`` for all nodes: in this rclpy (9.1), a callback that the
    multi-threaded executor has handed to its pool but that has not started yet is handed over again
    on every pass of its wait loop (rclpy issues #1452 / #1223, fixed upstream by PR #1547), so the
    spinning thread busy-loops in Python, holding the GIL: 1,400-2,000 redundant hand-overs per
    second for the stand-in + policy loop at 20 Hz (``benchmarks/ros_loop_jitter.py``). Every other
    thread then waits for the GIL each time it takes it back, the stand-in's stepping thread included
    (its 5 ms of CPU per step stretched to 0.1-0.3 s), so its JointState arrives late and the
    policy's watchdog holds. A single-threaded executor runs each callback before it waits again (no
    re-submission) and sleeps in ``rcl_wait`` while idle; one per node keeps a slow node (the GRM
    reward node) from delaying another (the policy). The callbacks of one node run one at a time,
    as they did in each node's default mutually exclusive callback group.

    Args:
        nodes: ``rclpy`` nodes (more with :meth:`add`).
        context: their ``rclpy.Context``.
    """

    def __init__(self, nodes=(), context=None):
        self.context = context
        self.executors: list = []
        self.threads: list[threading.Thread] = []
        for n in nodes:
            self.add(n)

    def add(self, node):
        """Start spinning ``node`` in a new thread (named after it); returns the node."""
        from rclpy.executors import SingleThreadedExecutor

        ex = SingleThreadedExecutor(context=self.context)
        ex.add_node(node)
        thread = threading.Thread(target=self._spin, args=(ex, node), name=f"spin-{node.get_name()}", daemon=True)
        self.executors.append(ex)
        self.threads.append(thread)
        thread.start()
        return node

    @staticmethod
    def _spin(ex, node) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            ex.spin()
        except ExternalShutdownException:  # the context was shut down first
            pass
        except Exception as exc:  # a callback raised: the node is no longer spun; say so loudly
            node.get_logger().error(f"executor stopped: a callback raised {type(exc).__name__}: {exc}")
            raise

    def stop(self, timeout_sec: float = 5.0) -> bool:
        """Shut the executors down and join their threads (``timeout_sec`` each).

        Returns True when every thread has ended.
        """
        for ex in self.executors:
            ex.shutdown(timeout_sec=timeout_sec)
        for t in self.threads:
            t.join(timeout=timeout_sec)
        return not any(t.is_alive() for t in self.threads)


def _spin(nodes, ctx, duration_s) -> NodeSpinner:
    """Spin ``nodes`` (one executor thread each) until ``duration_s`` seconds pass (None: until
    Ctrl-C / SIGTERM); returns the running :class:`NodeSpinner` (the caller stops it)."""
    spinner = NodeSpinner(nodes, ctx)
    stop = threading.Event()
    old = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        end = None if duration_s is None else time.monotonic() + float(duration_s)
        while not stop.is_set() and (end is None or time.monotonic() < end):
            stop.wait(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
    return spinner


def _check_duration(cfg: DictConfig) -> None:
    """``duration_s`` is null (run until Ctrl-C) or a finite number of seconds >= 0."""
    d = cfg.get("duration_s")
    if d is not None and not (isinstance(d, (int, float)) and math.isfinite(float(d)) and float(d) >= 0):
        raise ValueError(f"duration_s must be null (until Ctrl-C) or a number of seconds >= 0, got {d!r}")


def policy_path(checkpoint) -> str:
    """The deployment policy folder for ``checkpoint=``: a policy folder (``policy.json``), a
    checkpoint with ``deploy/``, or a run folder (its newest ``checkpoints/step_*`` with
    ``deploy/``), checked before any node starts.

    Raises:
        FileNotFoundError: nothing there; a GRM checkpoint (it belongs in ``reward.checkpoint``);
            a folder holding none of those.
    """
    p = Path(str(checkpoint))
    if not p.exists():
        raise FileNotFoundError(f"checkpoint={str(checkpoint)!r} does not exist")
    if (p / "policy.json").is_file() or (p / "deploy" / "policy.json").is_file():
        return str(p)
    steps = sorted(c for c in (p / "checkpoints").glob("step_*") if (c / "deploy" / "policy.json").is_file())
    if steps:
        return str(steps[-1])
    if (p / "config.json").is_file() and (p / "model.safetensors").is_file():
        raise FileNotFoundError(f"checkpoint={str(checkpoint)!r} is a GRM (reward model) checkpoint, not a "
                                "policy; deploy takes a policy folder, checkpoint or run (a GRM goes in "
                                "reward.checkpoint=)")
    raise FileNotFoundError(f"checkpoint={str(checkpoint)!r} is not a deployment policy: no policy.json, "
                            "deploy/policy.json or checkpoints/step_*/deploy/policy.json in it")


def ros_init_args(cfg) -> list[str]:
    """The ``rclpy.init`` arguments of a ROS job: ``ros_args`` (the words of ``--ros-args ...`` on
    the command line, or a list given as ``ros_args=[...]``) and ``use_sim_time=true``, which is the
    same as ``--ros-args -p use_sim_time:=true`` (every node of the job then runs on ``/clock``).

    Returns:
        ``["dopa", "--ros-args", ...]`` (just ``["dopa"]`` when there are none).
    Raises:
        ValueError: ``use_sim_time`` not true/false, ``ros_args`` not a list of strings.
    """
    sim_time = cfg.get("use_sim_time", False)
    if not isinstance(sim_time, bool):
        raise ValueError(f"use_sim_time must be true or false, got {sim_time!r}")
    extra = cfg.get("ros_args") or []
    if isinstance(extra, str) or not all(isinstance(a, str) for a in extra):
        raise ValueError(f"ros_args must be a list of strings (the words after --ros-args), got {extra!r}")
    extra = [str(a) for a in extra]
    if extra and extra[0] != "--ros-args":
        extra = ["--ros-args", *extra]
    return ["dopa", *extra, *(["--ros-args", "-p", "use_sim_time:=true"] if sim_time else [])]


def _init_ros(ctx, args: list[str]) -> None:
    """``rclpy.init`` with the job's ROS arguments; bad ones are one line naming them.

    Raises:
        ValueError: ``"ros_args ['--ros-args', '-p', 'x'] are not valid ROS 2 arguments: ..."``.
    """
    import rclpy
    from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy

    try:
        rclpy.init(context=ctx, args=args)
    except (_rclpy.RCLError, _rclpy.UnknownROSArgsError) as exc:
        reason = " ".join(str(exc).split(", at ")[0].split())
        raise ValueError(f"ros_args {args[1:]!r} are not valid ROS 2 arguments: {reason}") from None


def _check_ros_names(cfg: DictConfig) -> None:
    """``node_name`` (and ``namespace`` when set) are valid ROS 2 names, as one line.

    Raises:
        ValueError: ``"node_name='1 bad' is not a valid ROS 2 node name: ..."``.
    """
    from rclpy.exceptions import NameValidationException
    from rclpy.validate_namespace import validate_namespace
    from rclpy.validate_node_name import validate_node_name

    checks = [("node_name", "node name", validate_node_name, str(cfg.node_name))]
    ns = cfg.get("namespace")
    if ns:
        full = str(ns) if str(ns).startswith("/") else f"/{ns}"
        checks.append(("namespace", "namespace", validate_namespace, full))
    for key, what, validate, value in checks:
        try:
            validate(value)
        except NameValidationException as exc:
            reason = str(exc).splitlines()[0].split(": ", 1)[-1].rstrip(":")
            raise ValueError(f"{key}={cfg[key]!r} is not a valid ROS 2 {what}: {reason}") from None


def _check_deploy(cfg: DictConfig) -> None:
    """Input checks of ``dopa deploy`` that need no ROS: warmup, threads, sampling overrides (the
    policy is loaded with them once), the reward node's values and checkpoint."""
    check_int("warmup", cfg.warmup, 0)
    if cfg.get("threads") is not None:
        check_threads(cfg.threads)
    sampling = sampling_overrides(cfg)
    if sampling:
        load_policy(resolve_policy_folder(cfg.checkpoint), sampling)
    if cfg.get("reward") and cfg.reward.get("checkpoint"):
        check_float("reward.rate_hz", cfg.reward.rate_hz, low=0.0, low_open=True)
        check_float("reward.max_age", cfg.reward.max_age, low=0.0, low_open=True)
        check_grm_checkpoint(cfg.reward.checkpoint, key="reward.checkpoint")


def run_deploy(cfg: DictConfig) -> int:
    """Run a deployment policy on a ros2_control arm: the lifecycle policy node (configure = load and
    check the policy, activate = control loop; it starts DISARMED, arm it with the ~/arm SetBool
    service), and optionally the reward node (``reward.checkpoint``) publishing GRM progress."""
    _check_duration(cfg)
    if OmegaConf.is_missing(cfg, "checkpoint"):
        raise SystemExit("dopa deploy: set checkpoint=<policy folder, checkpoint with deploy/, or run folder>")
    cfg.checkpoint = policy_path(cfg.checkpoint)
    _check_deploy(cfg)
    _check_ros_names(cfg)
    robot = build_robot(cfg.robot)
    dcfg = OmegaConf.to_container(cfg, resolve=True)
    check_deploy_config(dcfg, robot)  # the node's own rules for rate, safety, watchdog, periods
    ros_args = ros_init_args(cfg)
    import rclpy
    import torch

    if cfg.get("threads") is not None:
        torch.set_num_threads(int(cfg.threads))

    from ros.policy_node import PolicyNode  # lazy: rclpy is imported only once the checks have passed
    _discovery(robot)
    ctx = rclpy.Context()
    _init_ros(ctx, ros_args)
    nodes = []
    try:
        node = PolicyNode(dcfg, robot, context=ctx, node_name=str(cfg.node_name), namespace=str(cfg.namespace))
        nodes.append(node)
        if cfg.autostart:
            if node.trigger_configure().to_label() != "transition_success":
                print(f"dopa deploy: error: configure failed: {node.configure_error or 'see the log above'}",
                      file=sys.stderr)
                return 1
            node.trigger_activate()
            if cfg.arm:
                node.get_logger().warning("armed at start (arm=true): use only with the simulated stand-in")
                node.armed = True
        if cfg.get("reward") and cfg.reward.get("checkpoint"):
            from ros.reward_node import RewardNode  # lazy: rclpy

            pot = GRMPotentialConfig(str(cfg.reward.checkpoint), task_text=cfg.reward.get("task_text"),
                                     fusion=str(cfg.reward.get("fusion", "auto"))).make(num_envs=1)
            nodes.append(RewardNode(pot, dict(robot.topics.get("images") or {}), rate_hz=float(cfg.reward.rate_hz),
                                    max_age=float(cfg.reward.max_age), context=ctx))
        spinner = _spin(nodes, ctx, cfg.duration_s)
        core = node.core  # kept for the summary; shutdown releases it
        if node.active:
            node.trigger_shutdown()  # one hold if it was commanding
        spinner.stop(timeout_sec=5.0)
        lat = latency_stats(node.latencies)
        print(f"dopa deploy: published {dict(node.published)}; safety-clamped entries {dict(node.clamped)}; "
              f"late commands dropped {core.late if core else 0}; "
              f"rejected {dict(core.rejected) if core else {}}; "
              f"latency {lat}; loop {achieved_rate(node.tick_times):.1f} Hz")
        return 0
    finally:
        for n in nodes:
            n.destroy_node()
        rclpy.shutdown(context=ctx)


def run_sim_robot(cfg: DictConfig) -> int:
    """Run the MuJoCo stand-in robot: publishes JointState, camera Images and the task state on the
    robot config's topics and executes JointTrajectory (or Float64MultiArray) commands."""
    _check_duration(cfg)
    _check_ros_names(cfg)
    rate, cam = cfg.get("rate_hz"), cfg.get("camera_rate_hz")
    if isinstance(rate, (int, float)) and isinstance(cam, (int, float)) and cam > rate:
        raise ValueError(f"camera_rate_hz must be <= rate_hz ({rate}), got {cam}")
    import rclpy

    from ros.sim_robot import SimRobotNode  # lazy: rclpy (and the simulator) only when the job runs

    robot = build_robot(cfg.robot)
    ros_args = ros_init_args(cfg)
    _discovery(robot)
    scfg = OmegaConf.to_container(cfg, resolve=True)
    ctx = rclpy.Context()
    _init_ros(ctx, ros_args)
    node = None
    try:
        node = SimRobotNode(robot, scfg, context=ctx, node_name=str(cfg.node_name))
        print(f"dopa sim-robot: {robot.name} as {node.arm.task!r}; joint states on {robot.topics['joint_states']}, "
              f"commands on {robot.topics['joint_trajectory' if cfg.command == 'trajectory' else 'forward_command']}, "
              f"views {list(cfg.views)}")
        spinner = _spin([node], ctx, cfg.duration_s)
        node.stop()
        spinner.stop(timeout_sec=5.0)
        first = node.arm.first_success
        print(f"dopa sim-robot: {node.arm.steps} steps in this episode, success first reached at step "
              f"{first if first is not None else 'never'}, success now {node.arm.success}, "
              f"rejected commands {node.rejected}")
        return 0
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.shutdown(context=ctx)
