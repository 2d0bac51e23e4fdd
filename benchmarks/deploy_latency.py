"""Deployment latency: observation stamp -> command publication, through the ROS 2 policy node.

In one run, for an MLP policy and EXPO policies (16 candidates = 8 base samples + 8 edits; ``expo``:
the reference DDPM sampler over 10 denoising steps; ``expo_ddim<k>``: diffusers' DDIM over k of those
steps, default k = 5, the count ``tests/test_expo.py`` checks against the reference distribution;
untrained weights, the same compute as trained ones) on the Lift state layout:

  - the MuJoCo stand-in robot runs in its own process (``dopa sim-robot``, no cameras) and
    publishes stamped JointState and task state at 20 Hz;
  - the policy node (this process) ticks on each JointState (``trigger=joint_states``), so the
    latency is DDS transport + decoding + state assembly + policy + safety + publication, measured
    as ``publication time - JointState header stamp``;
  - also the node's own compute time (tick start -> command published: state assembly, policy,
    safety, message building), the bare ``DeployPolicy.act`` time, and the achieved control rate
    (commands per second). The machine's 1-minute load average is recorded: on a shared 2-core
    machine, scheduling delays dominate the tail.

DDS stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, a domain id of its own).
Each policy is measured at each ``--threads`` count (torch intra-op threads, as ``dopa deploy
threads=``), the counts one after another in one run; metrics of 1 thread are named ``<kind>_*``,
of n > 1 threads ``<kind>_<n>threads_*``.

Writes benchmarks/results/deploy_latency.json and deploy_latency.png.

    .venv/bin/python benchmarks/deploy_latency.py [--seconds 15] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(101 + os.getpid() % 100))
os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

import sim  # noqa: E402
from basics.checks import check_threads  # noqa: E402
from benchmarks.common import RESULTS, arm_when_fresh, save_figure, write_result  # noqa: E402
from control.expo import EXPOPolicy  # noqa: E402
from control.export import MLPPolicy, load_policy, policy_meta, save_policy  # noqa: E402
from jobs.deploy import NodeSpinner, build_robot  # noqa: E402
from ros.policy_node import PolicyNode  # noqa: E402

MLP_P95_TARGET_MS = 5.0
EXPO_P95_TARGET_MS = 20.0  # any EXPO sampler, any thread count


def targets_for(kinds) -> dict:
    """The p95 target of every measured ``<kind>[_<n>threads]``: 5 ms for the MLP, 20 ms for EXPO."""
    return {f"{k}_p95_ms": MLP_P95_TARGET_MS if k.startswith("mlp") else EXPO_P95_TARGET_MS for k in kinds}


def _lift_meta(kind: str) -> dict:
    env = sim.make_env("lift", controller="joint_position")
    try:
        return policy_meta(env, kind)
    finally:
        env.close()


def _export(folder: Path, kind: str) -> None:
    meta = _lift_meta("mlp" if kind == "mlp" else "expo")  # the export kind: expo_ddim<k> is an EXPO policy
    torch.manual_seed(0)
    if kind == "mlp":
        module = MLPPolicy(meta["state_dim"], meta["action_dim"], hidden=[256, 256])
    elif kind == "expo" or kind.startswith("expo_ddim"):
        sampler = {} if kind == "expo" else {"sampler": "ddim", "sample_steps": int(kind.removeprefix("expo_ddim"))}
        module = EXPOPolicy(meta["state_dim"], meta["action_dim"], diffusion_steps=10, num_samples=8,
                            num_edit_samples=8, **sampler)
    else:
        raise SystemExit(f"unknown policy kind {kind!r}; known: mlp, expo, expo_ddim<steps in 1..10>")
    save_policy(folder, module, meta)


def _act_times(folder: Path, n: int) -> np.ndarray:
    policy = load_policy(folder)
    s = np.zeros(policy.state_dim, np.float32)
    for _ in range(5):
        policy.act(s)
    wall, cpu = [], []
    for _ in range(n):
        t, c = time.perf_counter(), time.thread_time()
        policy.act(s)
        wall.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
    return np.asarray(wall) * 1e3, np.asarray(cpu) * 1e3


def _run_node(folder: Path, robot, seconds: float, node_name: str) -> tuple[np.ndarray, np.ndarray, float, int, int]:
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "deploy.yaml"), resolve=False)
    cfg.pop("defaults")
    cfg.update(checkpoint=str(folder), trigger="joint_states", rate_hz=20.0)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    # a name of its own per policy: the previous node can linger in the ROS graph for a moment after
    # it is destroyed, and the node refuses to configure beside another commander of the same name
    node = PolicyNode(cfg, robot, context=ctx, node_name=node_name)
    spinner = NodeSpinner([node], ctx)
    try:
        arm_when_fresh(node)  # the 1 s warm-up is excluded below
        node.latencies.clear()
        node.compute_times.clear()
        n0, t0, late0 = node.published["command"], time.monotonic(), node.core.late
        time.sleep(seconds)
        n1, t1 = node.published["command"], time.monotonic()
        lat = np.asarray(list(node.latencies)) * 1e3
        comp = np.asarray(list(node.compute_times))[-lat.size:] * 1e3
        rejected = sum(node.core.rejected.values())
        late = node.core.late - late0
        node.trigger_shutdown()
    finally:
        spinner.stop()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
    return lat, comp, (n1 - n0) / (t1 - t0), rejected, late


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=15.0, help="measured seconds per policy")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="torch intra-op thread counts, each measured for every policy")
    ap.add_argument("--kinds", default="mlp,expo,expo_ddim5,expo_ddim3",
                    help="policies to measure, comma-separated: mlp, expo, expo_ddim<k>")
    args = ap.parse_args()
    for t in args.threads:  # the rule of every threads key (dopa deploy threads=, the mujoco backend)
        try:
            check_threads(t, key="--threads")
        except ValueError as exc:
            ap.error(str(exc))
    robot = build_robot(OmegaConf.load(ROOT / "configs" / "robot" / "panda.yaml"))
    tmp = Path(tempfile.mkdtemp(prefix="deploy_latency_"))
    env = dict(os.environ)
    sim_proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "sim-robot", "views=[]", "rate_hz=20",
                                 "duration_s=1800"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics, series = {}, {}
    try:
        runs = [(kind, threads) for threads in args.threads for kind in args.kinds.split(",")]
        for kind, threads in runs:
            torch.set_num_threads(threads)
            folder = tmp / kind
            if not folder.exists():
                _export(folder, kind)
            act, act_cpu = _act_times(folder, 200)
            lat, comp, rate, rejected, late = _run_node(folder, robot, args.seconds, f"dopa_policy_{kind}_{threads}")
            kind = kind if threads == 1 else f"{kind}_{threads}threads"
            series[kind] = lat
            metrics[f"{kind}_p50_ms"] = float(np.percentile(lat, 50))
            metrics[f"{kind}_p95_ms"] = float(np.percentile(lat, 95))
            metrics[f"{kind}_p99_ms"] = float(np.percentile(lat, 99))
            metrics[f"{kind}_node_compute_p50_ms"] = float(np.percentile(comp, 50))
            metrics[f"{kind}_node_compute_p95_ms"] = float(np.percentile(comp, 95))
            metrics[f"{kind}_act_p50_ms"] = float(np.percentile(act, 50))
            metrics[f"{kind}_act_p95_ms"] = float(np.percentile(act, 95))
            # CPU time of the calling thread: what act() costs without the waits of a busy machine
            metrics[f"{kind}_act_cpu_p50_ms"] = float(np.percentile(act_cpu, 50))
            metrics[f"{kind}_act_cpu_p95_ms"] = float(np.percentile(act_cpu, 95))
            metrics[f"{kind}_rate_hz"] = float(rate)
            metrics[f"{kind}_samples"] = int(lat.size)
            metrics[f"{kind}_rejected"] = int(rejected)
            metrics[f"{kind}_late_dropped"] = int(late)  # answered after the 0.2 s watchdog bound
            print(f"{kind:>5}: obs->command p50 {metrics[f'{kind}_p50_ms']:.2f} ms, p95 {metrics[f'{kind}_p95_ms']:.2f} ms, "
                  f"p99 {metrics[f'{kind}_p99_ms']:.2f} ms; node compute p95 {metrics[f'{kind}_node_compute_p95_ms']:.2f} ms; act() p50 {metrics[f'{kind}_act_p50_ms']:.2f} ms "
                  f"(CPU {metrics[f'{kind}_act_cpu_p50_ms']:.2f} ms); "
                  f"{rate:.1f} commands/s (JointState at 20 Hz); n={lat.size}")
    finally:
        sim_proc.terminate()
        try:
            sim_proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            sim_proc.kill()
    if "expo_p95_ms" in metrics and "mlp_p95_ms" in metrics:
        metrics = {"expo_over_mlp_p95": metrics["expo_p95_ms"] / metrics["mlp_p95_ms"], **metrics}
    for kind in series:  # what fewer DDIM steps buy against the reference sampler, same run
        if kind.startswith("expo_ddim") and "threads" not in kind and "expo_p95_ms" in metrics:
            metrics[f"{kind}_over_expo_p95"] = metrics[f"{kind}_p95_ms"] / metrics["expo_p95_ms"]
        base = kind.rsplit("_", 1)[0]  # expo_ddim5_2threads -> expo_ddim5
        if "threads" in kind and f"{base}_p95_ms" in metrics:  # what more threads buy, same policy, same run
            metrics[f"{kind}_over_1thread_p95"] = metrics[f"{kind}_p95_ms"] / metrics[f"{base}_p95_ms"]
    metrics.update(torch_threads=list(args.threads), joint_state_rate_hz=20.0,
                   load_average_1min=os.getloadavg()[0])
    targets = targets_for(series)
    met = {k: bool(metrics[k] <= v) for k, v in targets.items() if k in metrics}
    path = write_result("deploy_latency", metrics, targets, met)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for kind, lat in series.items():
        x = np.sort(lat)
        ax.plot(x, np.arange(1, x.size + 1) / x.size, label=f"{kind} (p95 {np.percentile(lat, 95):.1f} ms)")
        ax.axvline(targets[f"{kind}_p95_ms"], ls="--", lw=0.8, color=ax.lines[-1].get_color())
    ax.set_xscale("log")
    ax.set_xlabel("JointState stamp -> command publication (ms)")
    ax.set_ylabel("fraction of commands")
    ax.set_title("Policy node latency over DDS (dashed: p95 targets)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, RESULTS / "deploy_latency.png", dpi=120)
    print(f"wrote {path} and {RESULTS / 'deploy_latency.png'}; met: {met}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
