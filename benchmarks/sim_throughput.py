"""Simulation throughput: the batched API against raw ``mujoco.mj_step`` on the same model.

In one run, for one dm_control task and one robosuite task (state only):
  - raw:     ``mujoco.mj_step`` on a copy of the task's model, as many physics steps per control
             step as the task uses (no observation, no reward);
  - library: the wrapped library's own step (dm_control ``Environment.step`` / robosuite ``env.step``);
  - api:     ``sim.make_env(...).step`` (Gymnasium vector semantics, torch tensors, input checks).
and frames/s of the API on robosuite Lift with 1 and 3 views at 64 px.

Batched, side by side for cheetah-run and hopper-stand at 1, 16 and 64 envs with 1 and 2 threads
(env steps/s; each figure the best of ``--repeats`` timed windows of ``--seconds``, so that a
shared machine's other load disturbs every column alike):
  - raw:      ``mujoco.mj_step`` (``n_sub_steps`` per env step) over B ``MjData``, in one thread or
              a ``ThreadPoolExecutor`` (the bindings release the GIL), and ``mujoco.rollout`` with
              its persistent thread pool (MuJoCo's own C++ threads);
  - dm_control: ``Environment.step`` over B suite envs (one thread);
  - cpu:      ``sim.make_env(task, B)`` (the ``"cpu"`` backend, one thread);
  - mujoco:   ``sim.make_env(task, B, backend="mujoco", threads=T)``;
  - envpool:  EnvPool's dm_control task (``pip install -e .[bench]``; skipped with a note if missing).
Prints the ratios and writes benchmarks/results/sim_throughput.json and sim_throughput.png.

    .venv/bin/python benchmarks/sim_throughput.py [--steps 2000] [--render-steps 60] [--seconds 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import sim  # noqa: E402
from benchmarks.common import RESULTS, save_figure, write_result  # noqa: E402
from sim.render import gl_guard  # noqa: E402


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


def _interleaved_rates(columns: dict, seconds: float, repeats: int) -> dict:
    """Env steps/s of every column ``{name: (step, env_steps_per_call)}``: ``repeats`` rounds, each
    timing one window of ``seconds`` per column in turn (so a shared machine's load changes touch
    every column alike); the best window of each column is kept."""
    best = {}
    for name, (step, _) in columns.items():
        step()  # warm-up
        best[name] = 0.0
    for _ in range(repeats):
        for name, (step, per_call) in columns.items():
            n, t0 = 0, time.perf_counter()
            while True:
                step()
                n += 1
                dt = time.perf_counter() - t0
                if dt >= seconds:
                    break
            best[name] = max(best[name], n * per_call / dt)
    return best


def _chunks(n: int, threads: int) -> list[range]:
    bounds = np.linspace(0, n, threads + 1).astype(int)
    return [range(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def _raw_steppers(model, qpos, substeps: int, num_envs: int, threads: int, closers: list) -> dict:
    """Raw physics: mj_step loops (in a thread pool for threads > 1) and mujoco.rollout."""
    from mujoco import rollout

    datas = [mujoco.MjData(model) for _ in range(num_envs)]
    for d in datas:
        d.qpos[:] = qpos
        mujoco.mj_forward(model, d)
    chunks = _chunks(num_envs, threads)

    def run(rng):
        for i in rng:
            mujoco.mj_step(model, datas[i], substeps)

    pool = ThreadPoolExecutor(len(chunks) - 1) if len(chunks) > 1 else None

    def loop():
        futures = [pool.submit(run, c) for c in chunks[1:]] if pool else []
        run(chunks[0])
        for f in futures:
            f.result()

    if pool:
        closers.append(pool.shutdown)
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    state = np.zeros((num_envs, mujoco.mj_stateSize(model, spec)))
    for i, d in enumerate(datas):
        mujoco.mj_getState(model, d, state[i], spec)
    control = np.zeros((num_envs, substeps, model.nu))
    thread_datas = [mujoco.MjData(model) for _ in range(threads)]
    out_state = np.zeros((num_envs, substeps, state.shape[1]))
    out_sensor = np.zeros((num_envs, substeps, model.nsensordata))

    def roll():
        rollout.rollout(model, thread_datas, state, control, nstep=substeps, state=out_state, sensordata=out_sensor,
                        persistent_pool=threads > 1)
        state[:] = out_state[:, -1]

    if threads > 1:
        closers.append(rollout.shutdown_persistent_pool)
    return {"raw_mj_step": (loop, num_envs), "raw_rollout": (roll, num_envs)}


def _envpool_stepper(task: str, num_envs: int, threads: int, closers: list):
    try:
        import envpool  # lazy: benchmark-only dependency (extra "bench"), absent in a plain install
    except ImportError:
        return None
    env_id = "".join(p.capitalize() for p in task.split("-")) + "-v1"
    env = envpool.make(env_id, env_type="dm", num_envs=num_envs, batch_size=num_envs, num_threads=threads, seed=0)
    env.reset()
    action = np.zeros((num_envs,) + env.action_spec().shape, dtype=np.float64)
    ids = np.arange(num_envs)
    closers.append(env.close)
    return lambda: env.step(action, ids)


def measure_batched(task: str, sizes, thread_counts, seconds: float, repeats: int) -> dict:
    """Env steps/s of every column at every (num_envs, threads): ``{f"{B}x{T}": {column: rate}}``
    (``envpool``: None when EnvPool is not installed)."""
    probe = sim.make_env(task, num_envs=1, seed=0, backend="mujoco")
    probe.reset()
    model, qpos, substeps = probe.models[0], probe.datas[0].qpos.copy(), probe.n_sub_steps
    probe.close()
    out = {"physics_steps_per_step": substeps}
    with gl_guard():  # dm_control sets up its GL platform at import
        from dm_control import suite
    for B in sizes:
        suite_envs = [suite.load(*sim.get_task(task).source, task_kwargs={"random": i}) for i in range(min(B, 16))]
        zero = np.zeros(suite_envs[0].action_spec().shape)
        for e in suite_envs:
            e.reset()

        def dmc_step(suite_envs=suite_envs, zero=zero):
            for e in suite_envs:
                if e.step(zero).last():
                    e.reset()

        cpu = sim.make_env(task, num_envs=B, seed=0)
        cpu.reset()
        act = torch.zeros(B, cpu.action_dim)
        for T in thread_counts:
            closers = []
            columns = _raw_steppers(model, qpos, substeps, B, T, closers)
            env = sim.make_env(task, num_envs=B, seed=0, backend="mujoco", threads=T)
            env.reset()
            closers.append(env.close)
            columns.update(mujoco=(lambda env=env, act=act: env.step(act), B),
                           dm_control=(dmc_step, len(suite_envs)), cpu=(lambda cpu=cpu, act=act: cpu.step(act), B))
            pool = _envpool_stepper(task, B, T, closers)
            if pool is not None:
                columns["envpool"] = (pool, B)
            row = _interleaved_rates(columns, seconds, repeats)
            row.setdefault("envpool", None)
            # the backend's own choice (at most T): what its first steps timed (sim/mujoco_batched.py)
            out.setdefault("mujoco_physics_threads", {})[f"{B}x{T}"] = env.physics_threads
            for close in closers:
                close()
            out[f"{B}x{T}"] = row
            print(f"{task:<13} {B:>3} envs {T} threads: " + " | ".join(
                f"{k} {'n/a' if v is None else f'{v:8.0f}'}" for k, v in row.items())
                + f" | mujoco stepped on {env.physics_threads} thread(s)", flush=True)
        cpu.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="control steps per state-only measurement")
    parser.add_argument("--render-steps", type=int, default=60, help="control steps per rendering measurement")
    parser.add_argument("--dmc-task", default="cheetah-run")
    parser.add_argument("--robosuite-task", default="lift")
    parser.add_argument("--batched-tasks", nargs="*", default=["cheetah-run", "hopper-stand"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 64], help="num_envs of the batched columns")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one timed window (batched columns)")
    parser.add_argument("--repeats", type=int, default=3, help="timed windows per figure; the best is kept")
    args = parser.parse_args()

    torch.set_num_threads(1)
    batched = {t: measure_batched(t, args.sizes, args.threads, args.seconds, args.repeats) for t in args.batched_tasks}
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
        "batched": batched,
    }
    targets = {f"{args.dmc_task}_api_cost_vs_raw": "<= 1.3", f"{args.robosuite_task}_api_cost_vs_raw": "<= 1.3"}
    met = {k: metrics[k] <= 1.3 for k in targets}
    big, mid, two = max(args.sizes), 16, max(args.threads)
    for task, b in batched.items():
        if f"{big}x1" in b:  # the cost of an env step against raw mj_step, same threads (physics substeps counted)
            for T in args.threads:
                key = f"{task}_mujoco_cost_vs_raw_{big}envs_{T}threads"
                metrics[key] = b[f"{big}x{T}"]["raw_mj_step"] / b[f"{big}x{T}"]["mujoco"]
            key = f"{task}_mujoco_cost_vs_raw_{big}envs_1threads"
            targets[key], met[key] = "<= 1.5", metrics[key] <= 1.5
        row = b.get(f"{mid}x{two}")
        if row:
            metrics[f"{task}_mujoco_vs_cpu_{mid}envs"] = row["mujoco"] / row["cpu"]
            key = f"{task}_mujoco_vs_envpool_{mid}envs_{two}threads"
            metrics[key] = None if row["envpool"] is None else row["mujoco"] / row["envpool"]
            targets[key] = ">= 1.0"
            met[key] = None if metrics[key] is None else metrics[key] >= 1.0
    path = write_result("sim_throughput", metrics, targets, met)

    for name, m in ((args.dmc_task, dmc), (args.robosuite_task, rs)):
        print(f"{name:<14} raw {m['raw_steps_per_s']:9.0f} steps/s | library {m['library_steps_per_s']:8.0f} | "
              f"api {m['api_steps_per_s']:8.0f} | api costs {m['api_cost_vs_raw']:.2f}x raw, "
              f"{m['api_cost_vs_library']:.2f}x the library ({m['physics_steps_per_step']} physics steps/step)")
    print(f"{args.robosuite_task} rendering 64 px: 1 view {one['frames_per_s']:.1f} frames/s, "
          f"3 views {three['frames_per_s']:.1f} frames/s ({three['steps_per_s']:.1f} steps/s)")
    for key in metrics:
        if "_mujoco_" in key:
            value = metrics[key]
            print(f"{key:<52} {'n/a (envpool not installed)' if value is None else f'{value:.2f}'}")
    print(f"targets met: {met}  ->  {path}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2 + len(batched), figsize=(9 + 4.5 * len(batched), 3.5))
    for a, (task, b) in zip(ax[2:], batched.items(), strict=True):
        configs = [k for k in b if k[:1].isdigit()]  # "16x2"
        for column in ("raw_mj_step", "raw_rollout", "dm_control", "cpu", "mujoco", "envpool"):
            a.plot(configs, [b[c][column] if b[c][column] is not None else np.nan for c in configs], "o-", label=column)
        a.set_yscale("log")
        a.set_xlabel("envs x threads")
        a.set_ylabel(f"env steps / s, {task}")
        a.legend(fontsize=7)
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
