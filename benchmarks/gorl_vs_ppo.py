"""GoRL against Gaussian PPO on dm_control tasks at equal environment steps, all steps counted.

Both learners run through the one training loop (``control.train.train``) with the task's own
reward (``reward=dense``), so GoRL's collection steps for the decoder are counted on the same
x-axis as every other step. The baseline is the project's Gaussian PPO (``learner=ppo``,
``control/ppo.py``) with the same rollout length, epochs, minibatches and learning rate as
GoRL's encoder. Evaluation is the loop's own: deterministic policy, ``--eval-episodes`` episodes
on fixed seeds, every ``--eval-every`` env steps.

Per task: final return (last evaluation) and best return (max over evaluations), each as mean
and standard deviation over seeds, and the GoRL / PPO ratios; ``metrics["curves"]`` holds every run's evaluation curve. Writes
``benchmarks/results/gorl_vs_ppo.json`` and ``gorl_vs_ppo.png`` (return curves, mean +- std over
seeds, GoRL's decoder refits marked).

    .venv/bin/python benchmarks/gorl_vs_ppo.py                      # the small CPU setting
    .venv/bin/python benchmarks/gorl_vs_ppo.py --steps 180000000 --num-envs 2048 ...   # see README

The paper's figure (HopperStand ~880 after 180M steps against ~280-345 for Gaussian PPO) needs
batched GPU simulation; the configuration meant for it is in the README section "GoRL".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from basics.atomic import write_json  # noqa: E402
from benchmarks.common import RESULTS, save_figure, write_result  # noqa: E402
from jobs.cli import compose  # noqa: E402
from jobs.train import train_from_config  # noqa: E402

PAPER_TARGET = {"hopper-stand": 880.0}  # GoRL-Diff after 180M steps (paper Fig. results)


def run_one(task: str, learner: str, seed: int, args, run_dir: Path) -> dict:
    """Train one (task, learner, seed) through control.train (pieces built by jobs.train from the
    ``dopa train`` config); returns the eval curve and timing."""
    common = [f"env={task}", f"learner={learner}", "reward=dense", f"seed={seed}", f"num_envs={args.num_envs}",
              f"total_steps={args.steps}", f"checkpoint_every={args.steps}", f"eval.every={args.eval_every}",
              f"eval.episodes={args.eval_episodes}", "progress=false", f"log_every={args.eval_every}",
              f"run_dir={run_dir}", f"threads={args.threads}"]
    if learner == "ppo":
        extra = [f"learner.num_steps={args.num_steps}", f"learner.update_epochs={args.update_epochs}",
                 f"learner.num_minibatches={args.num_minibatches}", f"learner.learning_rate={args.lr}"]
    else:
        stage0 = int(args.stage0_frac * args.steps)
        collect = int(args.collect_frac * args.steps)
        extra = [f"learner.num_steps={args.num_steps}", f"learner.update_epochs={args.update_epochs}",
                 f"learner.num_minibatches={args.num_minibatches}", f"learner.lr={args.lr}",
                 f"learner.decoder={args.decoder}", f"learner.stage_steps=[{stage0},1000000000000]",
                 f"learner.collect_steps={collect}",
                 f"learner.decoder_dataset_size={max(int(args.dataset_frac * args.steps), collect, 10)}",
                 f"learner.decoder_epochs={args.decoder_epochs}", f"learner.decoder_batch_size={args.decoder_batch_size}"]
    cfg = compose("train", common + extra + list(args.override))
    t0 = time.perf_counter()
    out = train_from_config(cfg)
    seconds = time.perf_counter() - t0
    curve = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines() if line.strip()]
    L = out["learner"]
    refits = [h["env_steps"] for h in getattr(L, "history", [])]
    return {"steps": [c["env_steps"] for c in curve], "returns": [c["return_mean"] for c in curve],
            "seconds": seconds, "env_steps": out["env_steps"], "refits": refits}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=["cartpole-swingup", "hopper-stand"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=16000, help="env steps per run (all envs, collection included)")
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--num-steps", type=int, default=64, help="rollout length per env (both learners)")
    p.add_argument("--update-epochs", type=int, default=10)
    p.add_argument("--num-minibatches", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--decoder", choices=["flow", "diffusion"], default="flow")
    p.add_argument("--stage0-frac", type=float, default=0.5, help="share of --steps for stage 0 (Gaussian PPO)")
    p.add_argument("--collect-frac", type=float, default=0.125, help="share of --steps for decoder-data collection")
    p.add_argument("--dataset-frac", type=float, default=0.0,
                   help="share of --steps in the decoder's data (the most recent pairs); at most --collect-frac "
                        "(the default) means the collection phase's pairs only")
    p.add_argument("--decoder-epochs", type=int, default=100)
    p.add_argument("--decoder-batch-size", type=int, default=128,
                   help="small batches for small data: the refit needs hundreds of gradient steps")
    p.add_argument("--eval-every", type=int, default=4000)
    p.add_argument("--eval-episodes", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for both learners")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = p.parse_args(argv)
    if args.steps % args.eval_every:
        p.error(f"--steps {args.steps} must be a multiple of --eval-every {args.eval_every}")

    torch.set_num_threads(args.threads)
    runs: dict = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gorl_vs_ppo_") as tmp:
        for task in args.tasks:
            for learner in ("gorl", "ppo"):
                for seed in args.seeds:
                    r = run_one(task, learner, seed, args, Path(tmp) / f"{task}_{learner}_{seed}")
                    runs.setdefault(task, {}).setdefault(learner, []).append(r)
                    print(f"{task:18s} {learner:5s} seed {seed}: final {r['returns'][-1]:7.1f} "
                          f"best {max(r['returns']):7.1f} ({r['env_steps']} env steps, {r['seconds']:.0f} s)", flush=True)

    metrics: dict = {}
    targets: dict = {}
    met: dict = {}
    for task, by in runs.items():
        for learner, rs in by.items():
            final = np.array([r["returns"][-1] for r in rs])
            best = np.array([max(r["returns"]) for r in rs])
            metrics[f"{task}/{learner}_final_mean"] = float(final.mean())
            metrics[f"{task}/{learner}_final_std"] = float(final.std(ddof=1)) if len(final) > 1 else 0.0
            metrics[f"{task}/{learner}_best_mean"] = float(best.mean())
            metrics[f"{task}/{learner}_best_std"] = float(best.std(ddof=1)) if len(best) > 1 else 0.0
            metrics[f"{task}/{learner}_seconds_per_run"] = float(np.mean([r["seconds"] for r in rs]))
        g, q = metrics[f"{task}/gorl_final_mean"], metrics[f"{task}/ppo_final_mean"]
        gb, qb = metrics[f"{task}/gorl_best_mean"], metrics[f"{task}/ppo_best_mean"]
        # a ratio is undefined (None in the JSON) when PPO's return is 0
        ratios = {f"{task}/ratio_final": g / q if q > 0 else None,
                  f"{task}/ratio_best": gb / qb if qb > 0 else None}
        metrics = {**ratios, **metrics}
        if task in PAPER_TARGET:
            targets[f"{task}/gorl_final_mean"] = PAPER_TARGET[task]
            met[f"{task}/gorl_final_mean"] = bool(g >= PAPER_TARGET[task])
    metrics.update({"env_steps_per_run": float(args.steps), "num_envs": float(args.num_envs),
                    "seeds": float(len(args.seeds)), "total_seconds": time.perf_counter() - t_all})
    # per-run eval curves, kept beside the figures (a nested entry; the README table skips it)
    curves = {task: {learner: [{k: r[k] for k in ("steps", "returns", "refits", "seconds")} for r in rs]
                     for learner, rs in by.items()} for task, by in runs.items()}
    ratio_keys = sorted(k for k in metrics if "/ratio_" in k)
    metrics = {**{k: metrics[k] for k in ratio_keys}, **{k: v for k, v in metrics.items() if k not in ratio_keys},
               "curves": curves}

    out_dir = Path(args.out) if args.out else RESULTS
    if args.out:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "gorl_vs_ppo.json"
        payload = {"benchmark": "gorl_vs_ppo", "metrics": metrics, "targets": targets, "met": met}
        write_json(path, payload)
    else:
        path = write_result("gorl_vs_ppo", metrics, targets, met)
    plot(runs, out_dir / "gorl_vs_ppo.png", args)
    print(json.dumps({k: v for k, v in metrics.items() if k != "curves"}, indent=2))
    print(f"wrote {path}")
    return 0


def plot(runs: dict, path: Path, args) -> None:
    """Eval return vs env steps (all counted), mean +- std over seeds; dotted lines: GoRL refits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 4), squeeze=False)
    for ax, (task, by) in zip(axes[0], runs.items(), strict=True):
        for learner, color, label in (("gorl", "C0", f"GoRL ({args.decoder})"), ("ppo", "C1", "Gaussian PPO")):
            rs = by[learner]
            x = np.array(rs[0]["steps"])
            y = np.array([r["returns"] for r in rs])
            m, s = y.mean(0), y.std(0)
            ax.plot(x, m, color=color, label=f"{label}, {len(rs)} seeds")
            ax.fill_between(x, m - s, m + s, color=color, alpha=0.2)
        for step in sorted({s for r in by["gorl"] for s in r["refits"]}):
            ax.axvline(step, color="C0", ls=":", lw=1)
        ax.set_title(task)
        ax.set_xlabel("environment steps (decoder-data collection included)")
        ax.set_ylabel("eval return (deterministic)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
