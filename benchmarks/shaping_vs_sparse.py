"""Reward shaping benchmark: sparse reward vs GRM-shaped (potential-based) vs naive Phi(s') - Phi(s).

    .venv/bin/python benchmarks/shaping_vs_sparse.py --preset small      # CPU setting (~20 min, 2 cores)
    .venv/bin/python benchmarks/shaping_vs_sparse.py --preset full       # the issue's setting (hours)
    .venv/bin/python benchmarks/shaping_vs_sparse.py --grm runs/grm_bench --seeds 0,1,2 --total-steps 3000

Same learner, same seeds, same task, side by side in one process, through the training loop's own
Python API (:func:`control.train.train`, what ``dopa train`` runs, with the pieces built by
:func:`jobs.train.setup` from configs composed with :func:`jobs.cli.compose`). The three reward modes differ *only* in the shaping term:

- ``sparse``: r = 1[success] (``reward=sparse``);
- ``grm``: r = 1[success] + gamma * Phi(s') - Phi(s), Phi = the GRM progress tracker
  (``reward=grm``; Ng et al. 1999, the policy-invariant form);
- ``naive``: r = 1[success] + Phi(s') - Phi(s) (``reward=naive``; the "semantic trap").

All three take r_gold from the task's own success (``reward.gold=env``), so the GRM's completion
flag never decides success and the comparison isolates the shaping term. The GRM is queried every
``--query-every`` steps and held in between (rendering is the CPU cost; still potential-based, see
``reward_models/shaping.py``).

Why robosuite Lift from state: it is the project's default task (the GRM is pretrained on the
robosuite tasks' demonstrations, with Lift references), its state holds everything the policy
needs, so the *only* difference between modes is the information in the reward; with
``terminate_on_success`` and a short horizon an episode ends at the first success, so episodes
are cheap, the sparse signal is genuinely sparse, and the number of training episodes is the
natural cost measure.

Measured per (mode, seed): the loop's periodic evaluation (:func:`control.evaluate.evaluate` on
``--eval-episodes`` fixed seeds, deterministic policy) gives the success-rate curve; the number of
finished training episodes at each evaluation is counted by :func:`count_observations` (it wraps
the learner's ``observe``). Episodes to 80 % = training episodes finished when the evaluation success
rate first reaches 0.8; a mode's figure is the mean over seeds, and null when any seed never
reached it (never extrapolated). Final success = the last evaluation pooled over seeds, with its
95 % Wilson interval (:func:`control.evaluate.wilson_interval`).

Targets (issue 9, item 5): sparse needs >= 2x the episodes of GRM-shaped (the published figure is
1.42x in simulation); naive shaping no better than sparse. A target counts as met only when it
was measured: the ratio needs both modes to reach 80 % on every seed; "naive no better" needs
sparse to reach 80 % and naive to need at least as many episodes (or never reach it).

GRM checkpoint: ``--grm <folder>`` (a ``dopa reward-train`` / ``dopa reward-adapt`` output holding
references for the task). When the folder does not exist it is built with the existing jobs:
``dopa demos`` (``--demo-episodes`` scripted episodes of the task, two views, 64 px, into
``--data-dir``, reused when present) then ``dopa reward-train`` (``--grm-steps`` steps).

Presets (flags override any value):
  small: Lift, SAC (hidden 64x64, batch 64, 200 random steps first), 3 seeds, 800 env steps per
         run, 40-step episodes, GRM every 10 steps, evaluation every 400 steps on 5 episodes. Nine
         runs took 280 s on 2 busy CPU cores; with ``--total-steps 3000 --eval-every 750`` about
         14 minutes (~95 s per run). Far too short for SAC to learn Lift from any of these rewards:
         it runs the whole pipeline and shows the reward each mode gives, not the episodes-to-80 %
         ratio (nulls are recorded, the targets are marked not met).
  full:  Lift, SAC (the configs/learner/sac.yaml defaults, 5000 random steps), 5 seeds, 300k env
         steps per run, 100-step episodes, GRM every step (query_every 1), evaluation every 10k
         steps on 50 episodes. Not run here. Expected duration: the GRM runs are rendering bound at
         ~10 steps/s on one CPU core (two 64 px views + the GRM forward), ~9 h per GRM run; a
         sparse run ~1 h; ~95 h for all 15 runs on one core, ~10 h with one process per run on
         a 16-core machine. With ``--query-every 5`` roughly a third of that.

Writes ``benchmarks/results/shaping_vs_sparse.json`` (format of DESIGN.md) and
``shaping_vs_sparse.png`` (left: success vs training episodes, one curve per mode, band = pooled
95 % Wilson interval over seeds, thin lines = seeds; right: mean learning reward per env step of
each mode). ``--replot`` redraws the PNG from the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.common import save_figure  # noqa: E402
from control.evaluate import wilson_interval  # noqa: E402
from jobs.cli import compose  # noqa: E402
from jobs.demos import run as run_demos  # noqa: E402
from jobs.reward import run_train as run_reward_train  # noqa: E402
from jobs.train import setup  # noqa: E402
from sim.tasks import get_task  # noqa: E402

NAME = "shaping_vs_sparse"
MODES = ("sparse", "grm", "naive")
TARGETS = {"sparse_over_grm_episodes_to_80": 2.0, "naive_no_better_than_sparse": True}

PRESETS = {
    "small": dict(task="lift", learner="sac", seeds=[0, 1, 2], total_steps=800, episode_steps=40,
                  query_every=10, eval_every=400, eval_episodes=5, learner_overrides=[
                      "learner.hidden=[64,64]", "learner.batch_size=64", "learner.learning_starts=200",
                      "learner.buffer_size=10000"]),
    "full": dict(task="lift", learner="sac", seeds=[0, 1, 2, 3, 4], total_steps=300_000, episode_steps=100,
                 query_every=1, eval_every=10_000, eval_episodes=50, learner_overrides=[]),
}


def count_observations(learner):
    """Count what ``learner`` observes, wrapping its ``observe``: ``episodes_done`` (finished
    training episodes), ``episodes_at_step`` (list, the count after each loop step),
    ``reward_sum`` / ``reward_abs_sum`` (float, over all rewards it learned from) and
    ``rewards_head`` (the first 256 rewards of env 0). The loop trains, checkpoints and evaluates
    the real learner unchanged. Returns ``learner``.
    """
    observe = learner.observe
    learner.episodes_done, learner.episodes_at_step = 0, []
    learner.reward_sum, learner.reward_abs_sum, learner.rewards_head = 0.0, 0.0, []

    def counting_observe(batch):
        learner.episodes_done += int((batch.terminated | batch.truncated).sum())
        learner.episodes_at_step.append(learner.episodes_done)
        r = batch.reward.double()
        learner.reward_sum += float(r.sum())
        learner.reward_abs_sum += float(r.abs().sum())
        if len(learner.rewards_head) < 256:
            learner.rewards_head.append(float(r[0]))
        return observe(batch)

    learner.observe = counting_observe
    return learner


def ensure_grm(checkpoint: str, task: str, data_dir: str, demo_episodes: int, grm_steps: int, log=print) -> str:
    """The GRM checkpoint folder ``checkpoint``; built with ``dopa demos`` + ``dopa reward-train`` when missing.

    Returns:
        the checkpoint folder as a str.
    Raises:
        ValueError: ``demo_episodes`` or ``grm_steps`` < 1 when a build is needed.
    """
    if (Path(checkpoint) / "config.json").exists():
        return str(checkpoint)
    if demo_episodes < 1 or grm_steps < 1:
        raise ValueError(f"building a GRM needs demo_episodes >= 1 and grm_steps >= 1, got "
                         f"{demo_episodes} and {grm_steps}")
    data = Path(data_dir) / f"{task}.hdf5"
    if not data.exists():
        log(f"recording {demo_episodes} scripted {task} demonstrations -> {data}")
        run_demos(compose("demos", [f"task={task}", f"n={demo_episodes}", "views=[front,wrist]", "image_size=64",
                                f"out={data}"]))
    log(f"training a GRM for {grm_steps} steps on {data} -> {checkpoint}")
    run_reward_train(compose("reward_train", [f"data=[{data}]", f"steps={grm_steps}", f"out={checkpoint}"]))
    return str(checkpoint)


def train_config(mode: str, seed: int, p: dict, grm: str | None, run_dir: Path, image_size: int):
    """The ``dopa train`` config of one run (composed from ``configs/train.yaml`` with overrides)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    ov = [f"env={p['task']}", f"learner={p['learner']}", f"seed={seed}", f"total_steps={p['total_steps']}",
          f"checkpoint_every={p['total_steps']}", f"eval.every={p['eval_every']}",
          f"eval.episodes={p['eval_episodes']}", "eval.seed=1000000", "eval.at_start=false", "progress=false",
          f"log_every={p['eval_every']}", f"run_dir={run_dir}", f"env.image_size={image_size}",
          f"+env.kwargs.max_episode_steps={p['episode_steps']}", "env.kwargs.terminate_on_success=true",
          *p["learner_overrides"]]
    if mode == "sparse":
        ov += ["reward=sparse"]
    else:
        if grm is None:
            raise ValueError(f"mode {mode!r} needs a GRM checkpoint")
        ov += [f"reward={'grm' if mode == 'grm' else 'naive'}", f"reward.checkpoint={grm}", "reward.gold=env",
               f"reward.query_every={p['query_every']}"]
    cfg = compose("train", ov)
    if mode != "sparse" and cfg.reward.potential.get("task_text") is None:
        with open_dict(cfg):
            cfg.reward.potential.task_text = get_task(p["task"]).text  # the checkpoint may hold several tasks
    return cfg


def run_one(mode: str, seed: int, p: dict, grm: str | None, out_dir: Path, image_size: int, log=print) -> dict:
    """Train one (mode, seed) with :func:`control.train.train` (pieces built by :func:`jobs.train.setup`,
    the learner wrapped by :func:`count_observations`); returns its curve and reward statistics.

    Returns:
        ``{"curve": [[env_steps, episodes, success_rate, successes, n]], "episodes_to_80": int | None,
        "final_successes", "final_episodes", "train_episodes", "reward_sum", "reward_abs_sum",
        "rewards_head": [<=256 floats], "wall_s", "run_dir"}``.
    """
    run_dir = out_dir / f"{mode}_seed{seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    t0 = time.time()
    pieces = setup(train_config(mode, seed, p, grm, run_dir, image_size))
    count_observations(pieces.learner)
    out = pieces.train()
    learner = out["learner"]
    counts = learner.episodes_at_step
    curve = []
    with open(run_dir / "eval.jsonl") as f:
        for line in f:
            r = json.loads(line)
            steps = int(r["env_steps"])
            loop_step = steps // max(1, out["env_steps"] // max(1, out["steps"]))  # env steps -> loop steps
            eps = counts[min(len(counts), loop_step) - 1] if loop_step > 0 else 0
            curve.append([steps, int(eps), float(r["success_rate"]), int(sum(bool(s) for s in r["successes"])),
                          int(r["episodes"])])
    reached = next((c[1] for c in curve if c[2] >= 0.8), None)
    res = {"curve": curve, "episodes_to_80": reached, "final_successes": curve[-1][3] if curve else 0,
           "final_episodes": curve[-1][4] if curve else 0, "train_episodes": int(learner.episodes_done),
           "reward_sum": learner.reward_sum, "reward_abs_sum": learner.reward_abs_sum,
           "rewards_head": learner.rewards_head, "wall_s": round(time.time() - t0, 1), "run_dir": str(run_dir)}
    log(f"  {mode:6s} seed {seed}: final success {res['final_successes']}/{res['final_episodes']}, "
        f"{res['train_episodes']} training episodes, episodes to 80 %: {reached}, "
        f"reward sum {res['reward_sum']:.3f}, {res['wall_s']:.0f} s")
    return res


def summarize(runs: dict) -> tuple[dict, dict]:
    """Metrics and met flags from ``{mode: [run_one results per seed]}`` (see the module docstring)."""
    metrics: dict = {}
    per_mode = {}
    for mode, rs in runs.items():
        e80 = [r["episodes_to_80"] for r in rs]
        mean80 = float(np.mean(e80)) if rs and all(e is not None for e in e80) else None
        k, n = sum(r["final_successes"] for r in rs), sum(r["final_episodes"] for r in rs)
        lo, hi = wilson_interval(k, n) if n else (0.0, 1.0)
        per_mode[mode] = {"episodes_to_80": mean80, "episodes_to_80_per_seed": e80,
                          "final_success": k / n if n else None, "final_success_ci": [lo, hi],
                          "final_successes": k, "final_episodes": n,
                          "train_episodes_per_seed": [r["train_episodes"] for r in rs],
                          "reward_mean_per_step": float(np.mean([r["reward_sum"] for r in rs])) /
                          max(1, max(r["curve"][-1][0] if r["curve"] else 1 for r in rs)),
                          "wall_s": float(sum(r["wall_s"] for r in rs))}
    g = per_mode.get("grm", {}).get("episodes_to_80")
    s = per_mode.get("sparse", {}).get("episodes_to_80")
    nv = per_mode.get("naive", {}).get("episodes_to_80")
    metrics["sparse_over_grm_episodes_to_80"] = (s / g) if (s is not None and g) else None
    metrics["naive_no_better_than_sparse"] = (s is not None and (nv is None or nv >= s))
    for mode, m in per_mode.items():
        metrics[f"{mode}_episodes_to_80"] = m["episodes_to_80"]
        metrics[f"{mode}_final_success"] = m["final_success"]
    metrics["modes"] = per_mode
    met = {"sparse_over_grm_episodes_to_80": metrics["sparse_over_grm_episodes_to_80"] is not None
           and metrics["sparse_over_grm_episodes_to_80"] >= TARGETS["sparse_over_grm_episodes_to_80"],
           "naive_no_better_than_sparse": bool(metrics["naive_no_better_than_sparse"])}
    return metrics, met


def plot(runs: dict, path: Path, title: str) -> None:
    """Left: success rate vs training episodes; per mode the pooled success over seeds at each
    evaluation (x = mean episodes over seeds), a 95 % Wilson band, thin lines per seed. Right: the
    mean learning reward per env step of each mode (bars; dots = seeds), i.e. what the shaping added.
    Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"sparse": "tab:gray", "grm": "tab:red", "naive": "tab:blue"}
    styles = {"sparse": "-", "grm": "--", "naive": ":"}
    labels = {"sparse": "sparse", "grm": "GRM potential-based", "naive": "naive Phi(s')-Phi(s)"}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
    for mode, rs in runs.items():
        if not rs or not rs[0]["curve"]:
            continue
        n_pts = min(len(r["curve"]) for r in rs)
        for r in rs:
            c = np.asarray(r["curve"], dtype=float)
            ax.plot(c[:n_pts, 1], c[:n_pts, 2], color=colors.get(mode), alpha=0.25, lw=1)
        x = np.array([np.mean([r["curve"][i][1] for r in rs]) for i in range(n_pts)])
        k = np.array([sum(r["curve"][i][3] for r in rs) for i in range(n_pts)])
        n = np.array([sum(r["curve"][i][4] for r in rs) for i in range(n_pts)])
        ci = np.array([wilson_interval(int(a), int(b)) for a, b in zip(k, n, strict=True)])
        ax.plot(x, k / n, color=colors.get(mode), ls=styles.get(mode, "-"), lw=2.2,
                label=f"{labels.get(mode, mode)} ({len(rs)} seeds)")
        ax.fill_between(x, ci[:, 0], ci[:, 1], color=colors.get(mode), alpha=0.12)
    ax.axhline(0.8, color="black", ls="--", lw=0.8)
    ax.set_xlabel("training episodes")
    ax.set_ylabel("evaluation success rate (band: 95 % Wilson)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    names = [m for m in runs if runs[m]]
    for j, mode in enumerate(names):
        per_step = [r["reward_sum"] / max(1, r["curve"][-1][0] if r["curve"] else 1) for r in runs[mode]]
        bx.bar(j, np.mean(per_step), color=colors.get(mode), alpha=0.6)
        bx.scatter([j] * len(per_step), per_step, color="black", s=10, zorder=3)
    bx.set_xticks(range(len(names)), [labels.get(m, m).split(" ")[0] for m in names])
    bx.set_ylabel("mean learning reward per env step")
    bx.set_title("reward the learner received", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def plot_title(p: dict) -> str:
    return (f"{p['task']}, {p['learner'].upper()}, {len(p['seeds'])} seeds, {p['total_steps']} steps/run, "
            f"GRM every {p['query_every']} steps")


def run_benchmark(p: dict, grm: str | None, out_dir: Path, modes=MODES, results_dir: Path | None = None,
                  log=print) -> dict:
    """Run every mode for every seed of preset dict ``p``; write the JSON and PNG; return the JSON dict.

    Args:
        p: ``task, learner, seeds, total_steps, episode_steps, query_every, eval_every, eval_episodes,
            learner_overrides`` (see :data:`PRESETS`).
        grm: GRM checkpoint folder (needed for ``grm`` and ``naive``).
        out_dir: run folders go to ``out_dir/<mode>_seed<seed>/``.
        results_dir: where ``shaping_vs_sparse.{json,png}`` go (default ``benchmarks/results``).
    Raises:
        ValueError: an unknown mode, fewer than 1 seed, non-positive step counts.
    """
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"unknown modes {bad}; known: {', '.join(MODES)}")
    if not p["seeds"]:
        raise ValueError("need at least one seed")
    for k in ("total_steps", "episode_steps", "query_every", "eval_every", "eval_episodes"):
        if int(p[k]) < 1:
            raise ValueError(f"{k} must be >= 1, got {p[k]}")
    image_size = 64
    if grm is not None:
        cfg = json.loads((Path(grm) / "config.json").read_text())
        image_size = int(cfg["grm"]["image_size"])
    runs: dict = {m: [] for m in modes}
    for seed in p["seeds"]:
        for mode in modes:
            runs[mode].append(run_one(mode, int(seed), p, grm, Path(out_dir), image_size, log))
    metrics, met = summarize(runs)
    metrics["setting"] = {k: v for k, v in p.items()}
    metrics["setting"]["grm"] = grm
    metrics["runs"] = {m: [{k: v for k, v in r.items() if k != "rewards_head"} for r in rs] for m, rs in runs.items()}
    results_dir = Path(results_dir) if results_dir is not None else common.RESULTS
    results_dir.mkdir(parents=True, exist_ok=True)
    orig = common.RESULTS
    common.RESULTS = results_dir
    try:
        path = common.write_result(NAME, metrics, TARGETS, met)
    finally:
        common.RESULTS = orig
    plot(runs, results_dir / f"{NAME}.png", plot_title(p))
    out = json.loads(path.read_text())
    out["_runs"] = runs  # in memory only: includes rewards_head per run
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--task")
    ap.add_argument("--learner", help="configs/learner/<name>.yaml")
    ap.add_argument("--seeds", help="comma-separated, e.g. 0,1,2")
    for k in ("total_steps", "episode_steps", "query_every", "eval_every", "eval_episodes"):
        ap.add_argument(f"--{k.replace('_', '-')}", type=int)
    ap.add_argument("--learner-override", action="append", default=None,
                    help="extra Hydra override for the learner, e.g. learner.batch_size=128 (repeatable)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--grm", default="runs/grm_bench", help="GRM checkpoint folder (built when missing)")
    ap.add_argument("--data-dir", default="data/shaping_bench")
    ap.add_argument("--demo-episodes", type=int, default=20)
    ap.add_argument("--grm-steps", type=int, default=500)
    ap.add_argument("--out-dir", default="runs/shaping_vs_sparse")
    ap.add_argument("--results-dir", default=None,
                    help="where shaping_vs_sparse.{json,png} go (default benchmarks/results; use another "
                         "folder for trial runs)")
    ap.add_argument("--replot", action="store_true", help="only redraw the PNG from the existing JSON")
    args = ap.parse_args(argv)
    if args.replot:
        data = json.loads((common.RESULTS / f"{NAME}.json").read_text())
        plot(data["metrics"]["runs"], common.RESULTS / f"{NAME}.png", plot_title(data["metrics"]["setting"]))
        return 0
    p = dict(PRESETS[args.preset])
    for k in ("task", "learner", "total_steps", "episode_steps", "query_every", "eval_every", "eval_episodes"):
        if getattr(args, k) is not None:
            p[k] = getattr(args, k)
    if args.seeds:
        p["seeds"] = [int(s) for s in args.seeds.split(",")]
    if args.learner_override is not None:
        p["learner_overrides"] = list(p["learner_overrides"]) + args.learner_override
    modes = tuple(m for m in args.modes.split(",") if m)
    grm = None
    if any(m != "sparse" for m in modes):
        grm = ensure_grm(args.grm, p["task"], args.data_dir, args.demo_episodes, args.grm_steps)
    t0 = time.time()
    out = run_benchmark(p, grm, Path(args.out_dir), modes, results_dir=args.results_dir)
    m = out["metrics"]
    print(f"{NAME}: {time.time() - t0:.0f} s")
    for mode in modes:
        pm = m["modes"][mode]
        print(f"  {mode:6s}: episodes to 80 % {pm['episodes_to_80']}, final success {pm['final_success']:.2f} "
              f"[{pm['final_success_ci'][0]:.2f}, {pm['final_success_ci'][1]:.2f}]")
    print(f"  sparse/grm episodes ratio: {m['sparse_over_grm_episodes_to_80']} (target >= 2); met: {out['met']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
