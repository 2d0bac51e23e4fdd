"""Scale-out on one machine: a sweep through the local parallel launcher vs one job after another,
and data-parallel GRM pretraining with 1 vs 2 ranks.

    .venv/bin/python benchmarks/scale_out.py --grm-data lift.hdf5     # both parts (~6 min on 2 idle cores)

Part 1 runs four short ``dopa train`` jobs (SAC on cartpole-swingup, dense reward, updates
from env step 100 with batches of 64, seeds
0-3, ``--steps`` env steps each, no evaluation) three ways and times each whole command: four
``dopa train`` commands one after another (the baseline), one ``dopa train -m seed=0,1,2,3``
through ``hydra/launcher=local`` with ``n_jobs=<cores>`` (parallel processes) and with
``n_jobs=1`` (joblib runs the jobs in turn in the calling process); the ratio is one-after-another
/ parallel wall time. Each job's own wall time (its ``result.json``) is stored too. Part 2 runs
``dopa reward-train`` on ``--grm-data`` (the Lift demonstrations ``dopa train`` records) for
``--grm-steps`` steps with ``distributed.nproc=1`` and ``2`` (``batch_size`` pairs per rank, one
torch thread per rank) and reads the steps per second between the first and last logged step from
its TensorBoard events, so start-up is not counted; pairs per second = steps/s x ranks x batch.

Writes ``benchmarks/results/scale_out.json`` (with the load average before and after: the
machine may be shared) and ``scale_out.png``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402

NAME = "scale_out"
TARGETS = {"sweep_parallel_speedup": 1.6}
TRAIN = ["env=cartpole-swingup", "learner=sac", "learner.learning_starts=100", "learner.batch_size=64", "reward=dense",
         "preset=none", "eval.every=0", "eval.at_start=false",
         "progress=false", "threads=1", "log_every=100000"]


def _env() -> dict:
    return dict(os.environ, MUJOCO_GL="egl", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", HF_HUB_OFFLINE="1",
                TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))


def _dopa(args: list[str], log) -> float:
    """Run ``dopa <args>``; returns its wall time, s. Raises RuntimeError with its last output on failure."""
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=ROOT, env=_env(), capture_output=True, text=True)
    wall = time.time() - t0
    if r.returncode != 0:
        raise RuntimeError(f"dopa {' '.join(args)} failed ({r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
    log(f"  dopa {' '.join(args[:3])} ...: {wall:.1f} s")
    return wall


def sweep(steps: int, jobs: int, work: Path, log=print) -> dict:
    """Part 1: four ``dopa train`` commands one after another, then the same four jobs as one
    ``dopa train -m seed=0,1,2,3`` through the local launcher (``n_jobs=jobs``), and in that launcher
    with ``n_jobs=1`` (one process, the jobs in turn); wall times and ratios."""
    train = [f"total_steps={steps}", f"checkpoint_every={steps}", *TRAIN]
    one_by_one = sum(_dopa(["train", f"seed={s}", *train, f"run_dir={work / f'run{s}'}"], log) for s in range(4))
    base = ["train", "-m", "seed=0,1,2,3", *train, "hydra/launcher=local"]
    out = {}
    for n in (1, jobs):
        out[n] = _dopa([*base, f"hydra.launcher.n_jobs={n}", f"hydra.sweep.dir={work / f'sweep_n{n}'}"], log)
    job_s = {n: [json.loads(f.read_text())["wall_s"] for f in sorted((work / f"sweep_n{n}").glob("*/result.json"))]
             for n in (1, jobs)}
    return {"jobs": 4, "env_steps_per_job": steps, "n_jobs_parallel": jobs, "sequential_s": round(one_by_one, 1),
            "multirun_n_jobs_1_s": round(out[1], 1), "parallel_s": round(out[jobs], 1),
            "speedup": round(one_by_one / out[jobs], 3), "speedup_vs_n_jobs_1": round(out[1] / out[jobs], 3),
            "job_wall_s_n_jobs_1": job_s[1], "job_wall_s_parallel": job_s[jobs]}


def _steps_per_s(log_dir: Path) -> tuple[float, int]:
    """(optimizer steps/s between the first and last logged step, steps between them) from TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    ev = acc.Scalars("pretrain/loss")
    first, last = ev[0], ev[-1]
    return (last.step - first.step) / max(1e-9, last.wall_time - first.wall_time), last.step - first.step


def grm(data: list[str], steps: int, batch: int, work: Path, log=print) -> dict:
    """Part 2: GRM pretraining steps/s and pairs/s with 1 and 2 ranks."""
    out = {}
    for n in (1, 2):
        tb = work / f"grm_tb_n{n}"
        _dopa(["reward-train", f"data=[{','.join(data)}]", f"out={work / f'grm_n{n}'}", f"log_dir={tb}",
               f"steps={steps}", f"batch_size={batch}", f"save_every={steps}", f"threads={n}",
               f"text_cache={work / 'tc'}", f"distributed.nproc={n}"], log)
        rate, counted = _steps_per_s(tb)
        out[n] = {"steps_per_s": round(rate, 3), "pairs_per_s": round(rate * n * batch, 1), "steps_counted": counted}
    return {"steps": steps, "batch_per_rank": batch, "ranks": out,
            "steps_per_s_ratio_2_over_1": round(out[2]["steps_per_s"] / out[1]["steps_per_s"], 3),
            "pairs_per_s_ratio_2_over_1": round(out[2]["pairs_per_s"] / out[1]["pairs_per_s"], 3)}


def plot(res: dict, path: Path) -> None:
    """Bars: sweep wall time sequential vs parallel; GRM pairs/s with 1 and 2 ranks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    s = res["sweep"]
    a.bar(["one after another", f"local launcher, {s['n_jobs_parallel']} at a time"],
          [s["sequential_s"], s["parallel_s"]], color=["tab:gray", "tab:blue"])
    a.set_ylabel("wall time of 4 training jobs, s")
    a.set_title(f"sweep: {s['speedup']:.2f}x", fontsize=9)
    g = res["grm"]["ranks"]
    b.bar(["1 rank", "2 ranks (gloo)"], [g[1]["pairs_per_s"], g[2]["pairs_per_s"]], color=["tab:gray", "tab:red"])
    b.set_ylabel("GRM training pairs / s")
    b.set_title(f"data-parallel GRM: {res['grm']['pairs_per_s_ratio_2_over_1']:.2f}x pairs/s", fontsize=9)
    fig.tight_layout()
    common.save_figure(fig, path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=2000,
                   help="env steps of each training job (long enough that a process's start-up, ~8 s, is not the job)")
    p.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)), help="parallel jobs (default: cores)")
    p.add_argument("--grm-data", nargs="+", default=sorted(glob.glob(str(ROOT / "data/demos/lift-*.hdf5")))[:1])
    p.add_argument("--grm-steps", type=int, default=60)
    p.add_argument("--grm-batch", type=int, default=16, help="pairs per rank and step")
    args = p.parse_args(argv)
    if not args.grm_data:
        raise SystemExit("no GRM episode files: pass --grm-data (e.g. the data/demos files `dopa train` records)")
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dopa-scale-out-") as work:
        res = {"sweep": sweep(args.steps, args.jobs, Path(work)),
               "grm": grm(args.grm_data, args.grm_steps, args.grm_batch, Path(work))}
    res["load_average_before"] = [round(x, 2) for x in load0]
    res["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    res["cores"] = len(os.sched_getaffinity(0))
    if max(load0[0], res["load_average_after"][0]) > res["cores"]:
        res["note"] = (f"measured on a shared machine: 1-min load average {load0[0]:.1f} -> "
                       f"{res['load_average_after'][0]:.1f} on {res['cores']} cores, so the parallel jobs and ranks "
                       "competed with other work; the ratios are not this code's scaling on idle cores")
    metrics = {"sweep_parallel_speedup": res["sweep"]["speedup"],
               "grm_steps_per_s_1_rank": res["grm"]["ranks"][1]["steps_per_s"],
               "grm_steps_per_s_2_ranks": res["grm"]["ranks"][2]["steps_per_s"],
               "grm_pairs_per_s_ratio_2_over_1": res["grm"]["pairs_per_s_ratio_2_over_1"], **res}
    met = {"sweep_parallel_speedup": res["sweep"]["speedup"] >= TARGETS["sweep_parallel_speedup"]}
    path = common.write_result(NAME, metrics, TARGETS, met)
    plot(res, path.with_suffix(".png"))
    print(f"sweep of 4 jobs: {res['sweep']['sequential_s']} s one after another, {res['sweep']['parallel_s']} s "
          f"through the local launcher: {res['sweep']['speedup']}x (target >= 1.6)")
    g = res["grm"]["ranks"]
    print(f"GRM pretraining: {g[1]['steps_per_s']} steps/s on 1 rank, {g[2]['steps_per_s']} on 2 "
          f"({res['grm']['pairs_per_s_ratio_2_over_1']}x pairs/s); load average {res['load_average_before']} -> "
          f"{res['load_average_after']}; {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
