"""Simulation throughput: the batched API against raw ``mujoco.mj_step`` on the same model.

In one run, for one dm_control task and one robosuite task (state only):
  - raw:     ``mujoco.mj_step`` on a copy of the task's model, as many physics steps per control
             step as the task uses (no observation, no reward);
  - library: the wrapped library's own step (dm_control ``Environment.step`` / robosuite ``env.step``);
  - api:     ``sim.make_env(...).step`` (Gymnasium vector semantics, torch tensors, input checks).
and frames/s of the API on robosuite Lift with 1 and 3 views at 64 px.
Prints the ratios and writes benchmarks/results/sim_throughput.json and sim_throughput.png.

    .venv/bin/python benchmarks/sim_throughput.py [--steps 2000] [--render-steps 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import sim  # noqa: E402
from benchmarks.common import RESULTS, save_figure, write_result  # noqa: E402


def _rate(fn, n: int) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t)


def measure_state(task: str, steps: int) -> dict:
    env = sim.make_env(task, num_envs=1, seed=0, max_episode_steps=10**9)
    env.reset()
    sub = env.envs[0]
    substeps = sub.physics_steps_per_step
    action = torch.zeros(1, env.action_dim)
    api = _rate(lambda: env.step(action), steps)
    if sub.spec_.family == "dmc":
        lib_env = sub._env
        spec = lib_env.action_spec()
        zero = np.zeros(spec.shape)
        library = _rate(lambda: lib_env.step(zero), steps)
    else:
        lib_env = sub.robosuite_env
        zero = np.zeros(env.action_dim)
        library = _rate(lambda: lib_env.step(zero), steps)
    model = sub.model  # the same compiled model; a separate MjData so the env is untouched
    data = mujoco.MjData(model)
    mujoco.mj_resetData(model, data)
    data.qpos[:] = sub.data.qpos
    raw = _rate(lambda: mujoco.mj_step(model, data, substeps), steps)
    env.close()
    return {"physics_steps_per_step": substeps, "raw_steps_per_s": raw, "library_steps_per_s": library,
            "api_steps_per_s": api, "api_cost_vs_raw": raw / api, "api_cost_vs_library": library / api}


def measure_render(task: str, views: tuple[str, ...], steps: int, size: int = 64) -> dict:
    env = sim.make_env(task, num_envs=1, views=views, image_size=size, seed=0, max_episode_steps=10**9)
    env.reset()
    action = torch.zeros(1, env.action_dim)
    sps = _rate(lambda: env.step(action), steps)
    env.close()
    return {"views": list(views), "image_size": size, "steps_per_s": sps, "frames_per_s": sps * len(views)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="control steps per state-only measurement")
    parser.add_argument("--render-steps", type=int, default=60, help="control steps per rendering measurement")
    parser.add_argument("--dmc-task", default="cheetah-run")
    parser.add_argument("--robosuite-task", default="lift")
    args = parser.parse_args()

    torch.set_num_threads(1)
    dmc = measure_state(args.dmc_task, args.steps)
    rs = measure_state(args.robosuite_task, max(args.steps // 4, 50))
    one = measure_render(args.robosuite_task, ("front",), args.render_steps)
    three = measure_render(args.robosuite_task, ("front", "wrist", "side"), args.render_steps)

    metrics = {
        f"{args.dmc_task}_api_cost_vs_raw": dmc["api_cost_vs_raw"],
        f"{args.robosuite_task}_api_cost_vs_raw": rs["api_cost_vs_raw"],
        f"{args.dmc_task}_api_cost_vs_library": dmc["api_cost_vs_library"],
        f"{args.robosuite_task}_api_cost_vs_library": rs["api_cost_vs_library"],
        f"{args.robosuite_task}_frames_per_s_1view_64px": one["frames_per_s"],
        f"{args.robosuite_task}_frames_per_s_3views_64px": three["frames_per_s"],
        "details": {args.dmc_task: dmc, args.robosuite_task: rs, "render_1view": one, "render_3views": three},
    }
    targets = {f"{args.dmc_task}_api_cost_vs_raw": "<= 1.3", f"{args.robosuite_task}_api_cost_vs_raw": "<= 1.3"}
    met = {k: metrics[k] <= 1.3 for k in targets}
    path = write_result("sim_throughput", metrics, targets, met)

    for name, m in ((args.dmc_task, dmc), (args.robosuite_task, rs)):
        print(f"{name:<14} raw {m['raw_steps_per_s']:9.0f} steps/s | library {m['library_steps_per_s']:8.0f} | "
              f"api {m['api_steps_per_s']:8.0f} | api costs {m['api_cost_vs_raw']:.2f}x raw, "
              f"{m['api_cost_vs_library']:.2f}x the library ({m['physics_steps_per_step']} physics steps/step)")
    print(f"{args.robosuite_task} rendering 64 px: 1 view {one['frames_per_s']:.1f} frames/s, "
          f"3 views {three['frames_per_s']:.1f} frames/s ({three['steps_per_s']:.1f} steps/s)")
    print(f"targets met: {met}  ->  {path}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    labels = ["raw mj_step", "library", "dopa api"]
    for k, (name, m) in enumerate(((args.dmc_task, dmc), (args.robosuite_task, rs))):
        ax[0].bar(np.arange(3) + 0.4 * k, [m["raw_steps_per_s"], m["library_steps_per_s"], m["api_steps_per_s"]],
                  width=0.4, label=name)
    ax[0].set_xticks(np.arange(3) + 0.2, labels)
    ax[0].set_yscale("log")
    ax[0].set_ylabel("control steps / s (state only)")
    ax[0].legend()
    ax[1].bar(["1 view", "3 views"], [one["frames_per_s"], three["frames_per_s"]])
    ax[1].set_ylabel(f"frames / s, {args.robosuite_task}, 64 px")
    fig.tight_layout()
    save_figure(fig, RESULTS / "sim_throughput.png", dpi=100)


if __name__ == "__main__":
    main()
