"""MuJoCo Warp backend throughput against the CPU backend, same task, several world counts.

Env steps per second (worlds x control steps / s) of the full ``env.step`` (physics, suite
observation and reward, autoreset, input checks), for
  - warp: ``sim.make_env(task, n, backend="warp")`` on CUDA when present, else Warp's CPU device;
  - cpu:  ``sim.make_env(task, n, backend="cpu")`` (dm_control, one MuJoCo per env, sync).
Random actions in [-1, 1] fixed before timing; one untimed warm-up step (kernel load/compile).
Writes benchmarks/results/warp_throughput.json and warp_throughput.png.

    .venv/bin/python benchmarks/warp_throughput.py [--task hopper-stand] [--worlds 1 4 16] [--steps 50]

Defaults: on CUDA ``--worlds 1 64 1024 4096 16384 --steps 200``; on CPU ``--worlds 1 16 256 1024
--steps 20``. The CPU backend is measured up to ``--cpu-max-worlds`` (default 16) envs, over
``--cpu-steps`` (default 100) steps; its throughput hardly depends on the env count (one process).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import sim  # noqa: E402
from benchmarks.common import RESULTS, save_figure, write_result  # noqa: E402
from sim.warp_env import default_device  # noqa: E402

TARGET_GPU_STEPS_PER_S = 1e5  # 10^8 hopper-stand steps (GoRL) in under 20 minutes of simulation


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure(task: str, backend: str, worlds: int, steps: int, device: str | None) -> float:
    """Env steps/s of ``env.step`` for ``worlds`` envs over ``steps`` control steps."""
    kwargs = {"device": device} if backend == "warp" else {}
    env = sim.make_env(task, num_envs=worlds, backend=backend, seed=0, max_episode_steps=10**9, **kwargs)
    try:
        env.reset()
        dev = env.device if backend == "warp" else "cpu"
        g = torch.Generator(device="cpu").manual_seed(0)
        actions = (torch.rand(steps, worlds, env.action_dim, generator=g) * 2 - 1).to(dev)
        env.step(actions[0])  # warm-up: loads (first time: compiles) kernels
        _sync(dev)
        t = time.perf_counter()
        for a in actions:
            env.step(a)
        _sync(dev)
        return worlds * steps / (time.perf_counter() - t)
    finally:
        env.close()


def plot(path: Path, task: str, warp_device: str, warp: dict, cpu: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(list(map(int, warp)), list(warp.values()), "o-", label=f"warp ({warp_device})")
    ax.plot(list(map(int, cpu)), list(cpu.values()), "s-", label="cpu (dm_control, sync)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("worlds (envs)")
    ax.set_ylabel("env steps / s")
    ax.set_title(f"{task}: env.step throughput")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="hopper-stand", choices=sim.warp_env.supported_tasks())
    p.add_argument("--device", default=None, help="warp device: cuda | cpu (default: cuda if present)")
    p.add_argument("--worlds", type=int, nargs="+", default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--cpu-max-worlds", type=int, default=16)
    p.add_argument("--cpu-steps", type=int, default=None, help="control steps for the CPU backend")
    args = p.parse_args(argv)
    device = args.device or default_device()
    on_gpu = device.startswith("cuda")
    worlds = args.worlds or ([1, 64, 1024, 4096, 16384] if on_gpu else [1, 16, 256, 1024])
    steps = args.steps or (200 if on_gpu else 20)
    cpu_steps = args.cpu_steps or 100

    warp, cpu = {}, {}
    for n in worlds:
        warp[str(n)] = measure(args.task, "warp", n, steps, device)
        print(f"warp/{device} {n:6d} worlds: {warp[str(n)]:10.1f} env steps/s", flush=True)
        if n <= args.cpu_max_worlds:
            cpu[str(n)] = measure(args.task, "cpu", n, cpu_steps, None)
            print(f"cpu        {n:6d} envs:   {cpu[str(n)]:10.1f} env steps/s", flush=True)
    common = [k for k in warp if k in cpu]
    ratios = {k: warp[k] / cpu[k] for k in common}
    best = max(warp, key=warp.get)
    metrics = {
        "warp_best_over_cpu_best": warp[best] / max(cpu.values()) if cpu else None,
        "warp_over_cpu_at_largest_common_worlds": ratios[common[-1]] if common else None,
        "warp_over_cpu": ratios,
        "warp_env_steps_per_s": warp,
        "cpu_env_steps_per_s": cpu,
        "warp_best_env_steps_per_s": warp[best],
        "warp_best_worlds": int(best),
        "task": args.task,
        "warp_device": device,
        "steps_per_measure": steps,
    }
    targets = {"warp_cuda_env_steps_per_s": TARGET_GPU_STEPS_PER_S}
    # Measured only on a CUDA device; on a CPU-only machine the target stays unmet (not measured).
    met = {"warp_cuda_env_steps_per_s": bool(on_gpu and warp[best] >= TARGET_GPU_STEPS_PER_S)}
    if not on_gpu:
        metrics["note"] = "no CUDA device: warp ran on Warp's CPU device; the GPU target was not measured"
    path = write_result("warp_throughput", metrics, targets, met)
    plot(RESULTS / "warp_throughput.png", args.task, device, warp, cpu)
    print(f"wrote {path}")
    return metrics


if __name__ == "__main__":
    main()
