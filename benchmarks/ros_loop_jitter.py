"""JointState jitter in the stand-in robot -> policy node loop, per way of spinning the nodes.

The loop of ``tests/test_ros_nodes.py::TestRunningLoop`` in one process: the MuJoCo stand-in
robot (no cameras, 20 Hz, its own stepping thread), a test camera publishing one real frame at
20 Hz, and an armed MLP policy node (timer at 20 Hz, watchdog bound 0.14 s, reading the camera).
Each setup runs in a fresh child process for ``--seconds``:

  - ``multi_threaded``: all nodes in one ``rclpy.executors.MultiThreadedExecutor(num_threads=4)``
    (how the jobs and tests spun them before);
  - ``node_spinner``: :class:`jobs.deploy.NodeSpinner`, one ``SingleThreadedExecutor`` thread per node
    (how ``dopa deploy``, ``dopa sim-robot`` and the tests spin them now).

Measured: inter-arrival gaps of JointState at the policy node (p50/p99/max, count over the 0.14 s
bound), JointState age at arrival, the stand-in's publish gaps and step times split into CPU,
run-queue wait (``/proc/thread-self/schedstat``) and the rest (blocked, i.e. waiting for the GIL),
watchdog holds, late commands dropped, the process's CPU use, and for the multi-threaded executor
how often it hands its pool a callback that is already queued (rclpy issues #1452 / #1223).
``--load`` adds a busy Python process beside it (the machine is shared and already busy).

DDS stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, a domain id of its own).
Writes benchmarks/results/ros_loop_jitter.json and ros_loop_jitter.png.

    .venv/bin/python benchmarks/ros_loop_jitter.py [--seconds 30] [--load]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(151 + os.getpid() % 50))
os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

import sim  # noqa: E402
from benchmarks.common import arm_when_fresh, save_figure, write_result  # noqa: E402
from control.export import MLPPolicy, policy_meta, save_policy  # noqa: E402
from jobs.deploy import NodeSpinner, build_robot  # noqa: E402
from ros.messages import rgb_to_image, stamp_to_sec  # noqa: E402
from ros.policy_node import PolicyNode  # noqa: E402
from ros.sim_robot import SimRobotNode  # noqa: E402

MODES = ("multi_threaded", "node_spinner")
BOUND = 0.14  # s, the watchdog bound of the test loop
TARGETS = {"node_spinner_js_gap_p99_ms": 100.0, "node_spinner_watchdog_holds": 0}


def _stats(name: str, a, out: dict) -> None:
    a = np.asarray(a, dtype=np.float64) * 1e3
    if a.size == 0:
        out[f"{name}_n"] = 0
        return
    out[f"{name}_p50_ms"] = float(np.percentile(a, 50))
    out[f"{name}_p99_ms"] = float(np.percentile(a, 99))
    out[f"{name}_max_ms"] = float(a.max())


def _schedstat() -> tuple[float, float]:
    """(CPU s, run-queue wait s) of the calling thread."""
    with open("/proc/thread-self/schedstat") as f:
        run, wait = f.read().split()[:2]
    return int(run) * 1e-9, int(wait) * 1e-9


def _child(mode: str, seconds: float) -> dict:
    torch.set_num_threads(1)
    robot = build_robot(OmegaConf.load(ROOT / "configs" / "robot" / "panda.yaml"))
    env = sim.make_env("lift", controller="joint_position", image_size=32)
    env.reset(seed=0)
    frame = env.render(("front",), image_size=32)["front"][0].numpy()
    meta = policy_meta(env, "mlp", views=["front"])
    env.close()
    folder = Path(tempfile.mkdtemp(prefix="ros_loop_jitter_")) / "policy"
    torch.manual_seed(0)
    save_policy(folder, MLPPolicy(meta["state_dim"], meta["action_dim"], hidden=[32]), meta)
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "deploy.yaml"), resolve=False)
    cfg.pop("defaults")
    cfg.update(checkpoint=str(folder), rate_hz=20.0)
    cfg["watchdog"] = {**cfg["watchdog"], "max_age": BOUND}

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    cam = rclpy.create_node("jitter_camera", context=ctx)
    pub = cam.create_publisher(Image, robot.image_topic("front"), qos_profile_sensor_data)
    cam.create_timer(0.05, lambda: pub.publish(rgb_to_image(frame, cam.get_clock().now().nanoseconds * 1e-9)))
    stand_in = SimRobotNode(robot, {"views": [], "rate_hz": 20.0}, context=ctx)
    node = PolicyNode(cfg, robot, context=ctx)

    # instrumentation: the stand-in's publications and steps, the policy node's JointState intake
    pub_t, step_wall, step_cpu, step_rq, js_t, js_age = [], [], [], [], [], []
    publish, step, on_js = stand_in._publish, stand_in.arm.step, node._on_joint_state

    def timed_publish(stamp):
        pub_t.append(time.monotonic())
        publish(stamp)

    def timed_step(now):
        c0, q0 = _schedstat()
        t0 = time.monotonic()
        step(now)
        step_wall.append(time.monotonic() - t0)
        c1, q1 = _schedstat()
        step_cpu.append(c1 - c0)
        step_rq.append(q1 - q0)

    def timed_js(msg):
        js_t.append(time.monotonic())
        js_age.append(node.now() - stamp_to_sec(msg.header.stamp))
        on_js(msg)

    stand_in._publish, stand_in.arm.step, node._on_joint_state = timed_publish, timed_step, timed_js
    nodes = [cam, stand_in, node]
    submits = [0, 0]  # all hand-overs to the pool, hand-overs of a callback already queued
    if mode == "multi_threaded":
        from rclpy.executors import MultiThreadedExecutor

        ex = MultiThreadedExecutor(num_threads=4, context=ctx)
        submit = ex._executor.submit

        def counting_submit(fn, *a, **k):
            submits[0] += 1
            submits[1] += int(fn in ex._futures and not fn.done())
            return submit(fn, *a, **k)

        ex._executor.submit = counting_submit
        for n in nodes:
            ex.add_node(n)
        thread = threading.Thread(target=ex.spin, daemon=True)
        thread.start()

        def stop():
            ex.shutdown(timeout_sec=5.0)
            thread.join(5.0)
    else:
        spinner = NodeSpinner(nodes, ctx)
        stop = spinner.stop
    try:
        arm_when_fresh(node)  # the 1 s warm-up is excluded: the lists are cleared next
        for lst in (pub_t, step_wall, step_cpu, step_rq, js_t, js_age):
            lst.clear()
        holds0, cmds0, late0, sub0 = node.published["hold"], node.published["command"], node.core.late, list(submits)
        cpu0, t0 = time.process_time(), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = time.process_time(), time.monotonic()
        n = min(len(step_wall), len(step_cpu), len(step_rq))
        blocked = np.asarray(step_wall[:n]) - np.asarray(step_cpu[:n]) - np.asarray(step_rq[:n])
        gaps = np.diff(js_t)
        out = {"js_gaps_ms": (gaps * 1e3).round(2).tolist()}
        _stats("js_gap", gaps, out)
        out["js_gaps_over_bound"] = int((gaps > BOUND).sum())
        _stats("js_age", js_age, out)
        _stats("standin_publish_gap", np.diff(pub_t), out)
        _stats("standin_step", step_wall[:n], out)
        _stats("standin_step_cpu", step_cpu[:n], out)
        _stats("standin_step_runqueue", step_rq[:n], out)
        _stats("standin_step_blocked", blocked, out)
        out.update(watchdog_holds=int(node.published["hold"] - holds0),
                   commands=int(node.published["command"] - cmds0),
                   late_dropped=int(node.core.late - late0),
                   process_cpu_cores=float((cpu1 - cpu0) / (t1 - t0)),
                   pool_submissions_per_s=float((submits[0] - sub0[0]) / (t1 - t0)),
                   pool_resubmissions_per_s=float((submits[1] - sub0[1]) / (t1 - t0)))
        node.trigger_shutdown()
        return out
    finally:
        stand_in.stop()
        stop()
        for n in nodes:
            n.destroy_node()
        rclpy.shutdown(context=ctx)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="measured seconds per setup")
    ap.add_argument("--load", action="store_true", help="run a busy Python process beside the loop")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(_child(args.child, args.seconds)), flush=True)
        return 0

    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.load else None
    results, loads = {}, []
    try:
        for mode in MODES:
            proc = subprocess.run([sys.executable, __file__, "--child", mode, "--seconds", str(args.seconds)],
                                  cwd=ROOT, capture_output=True, text=True, timeout=args.seconds + 300)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                raise RuntimeError(f"{mode}: the measurement process failed (exit {proc.returncode})")
            results[mode] = json.loads(lines[-1][len("RESULT "):])
            loads.append(os.getloadavg()[0])
            r = results[mode]
            print(f"{mode:>15}: JointState gap p50 {r['js_gap_p50_ms']:.1f} ms, p99 {r['js_gap_p99_ms']:.1f} ms, "
                  f"max {r['js_gap_max_ms']:.1f} ms, {r['js_gaps_over_bound']} over {BOUND * 1e3:.0f} ms; "
                  f"stand-in step blocked p99 {r['standin_step_blocked_p99_ms']:.1f} ms; "
                  f"watchdog holds {r['watchdog_holds']}, late dropped {r['late_dropped']}; "
                  f"CPU {r['process_cpu_cores']:.2f} cores; pool re-submissions {r['pool_resubmissions_per_s']:.0f}/s")
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()

    metrics = {f"{mode}_{k}": v for mode, r in results.items() for k, v in r.items() if k != "js_gaps_ms"}
    metrics.update(seconds_per_setup=args.seconds, extra_busy_process=bool(args.load),
                   load_average_1min=float(np.mean(loads)), watchdog_bound_ms=BOUND * 1e3, rate_hz=20.0)
    met = {"node_spinner_js_gap_p99_ms": metrics["node_spinner_js_gap_p99_ms"] <= TARGETS["node_spinner_js_gap_p99_ms"],
           "node_spinner_watchdog_holds": metrics["node_spinner_watchdog_holds"] <= TARGETS["node_spinner_watchdog_holds"]}
    path = write_result("ros_loop_jitter", metrics, TARGETS, met)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for mode, r in results.items():
        g = np.sort(np.asarray(r["js_gaps_ms"]))
        ax.plot(g, 1.0 - np.arange(g.size) / g.size, drawstyle="steps-post",
                label=f"{mode} (p99 {r['js_gap_p99_ms']:.0f} ms, holds {r['watchdog_holds']})")
    ax.axvline(BOUND * 1e3, ls="--", lw=0.8, color="k", label="watchdog bound")
    ax.set_yscale("log")
    ax.set_xlabel("JointState inter-arrival gap at the policy node (ms)")
    ax.set_ylabel("fraction of gaps > x")
    ax.set_title("Stand-in -> policy loop at 20 Hz, one process")
    ax.legend(fontsize=7)
    fig.tight_layout()
    png = path.with_suffix(".png")
    save_figure(fig, png, dpi=120)
    print(f"wrote {path} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
