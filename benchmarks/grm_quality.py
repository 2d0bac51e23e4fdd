"""GRM quality: pretrain on three tasks, evaluate on held-out seeds, one-shot adapt to a fourth task,
and measure batched hop throughput on CPU.

    .venv/bin/python benchmarks/grm_quality.py --data-dir data/grm_bench --minutes 10
    .venv/bin/python benchmarks/grm_quality.py --data-dir data/demos   # the main job's own demos

The default split is the main job's (``dopa train``): pretrain on stack, pick-place-can and door,
adapt to lift from one demonstration.

Data: ``<data-dir>/<task>*.hdf5`` episode files from the scripted experts (``dopa demos``), made
here when missing (``--episodes`` per task, two views, 64 px); ``data/demos`` holds the ones
``dopa train`` made (``<task>-<hash>.hdf5``). The pretraining tasks' held-out episodes are
recorded apart, at seeds the training files do not use (``--heldout-dir``, ``--heldout-episodes``
from ``--heldout-seed``, with the training file's controller; made when missing), so the model
trains on every episode of the training files. ``--heldout-episodes 0`` splits the training files
by seed instead (the highest-seed ``--holdout`` share is held out). The new task's first
successful unperturbed episode is the one demonstration; its other episodes are the evaluation
set before and after adaptation.

Writes ``benchmarks/results/grm_quality.json`` ({"benchmark", "date", "machine", "command",
"metrics", "targets", "met"}) and PNGs beside it: held-out progress curves per task, the
new task's curves before/after adaptation, and a VOC summary bar chart.

Leave-one-task-out (``--leave-one-out``): for every task of ``--tasks`` (default: every robosuite
task with a scripted expert), pretrain on the others, adapt from one demonstration of the left-out
task (its first successful unperturbed episode; the others rehearsed, ``--replay-share``), and
evaluate it before and after on its held-out episodes (``--heldout-episodes``, imperfect ones
included), and the pretrained tasks' held-out episodes before and after (their drop). One result
file per (left-out task, seed) under ``<out>/grm_loo/`` (skipped when present, so a stopped run
resumes); the summary ``grm_loo.json`` + ``grm_loo.png`` has the table and the worst task as the
headline, its targets (VOC >= 0.95, completion accuracy >= 0.90) recorded as met or not.
``--left`` restricts which tasks are left out in turn. Each pretrained model is kept under
``--checkpoint`` (named by the pretraining settings and the left-out task), so a second run that
changes only the adaptation (``--adapt-steps``, ``--adapt-loss``, ``--replay-share``; give it its
own ``--out``) adapts the same pretrained model without pretraining again.

    .venv/bin/python benchmarks/grm_quality.py --leave-one-out --data-dir data/grm_bench --minutes 10
"""

from __future__ import annotations

import argparse
import datetime
import glob
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402

from basics.atomic import atomic_file, write_json  # noqa: E402
from benchmarks.sweep import multirun  # noqa: E402
from jobs.cli import compose  # noqa: E402
from jobs.demos import run as demos  # noqa: E402
from reward_models.adapt import adapt, demo_reference  # noqa: E402
from reward_models.evaluate import evaluate_checkpoint, plot_curves, print_table, voc  # noqa: E402
from reward_models.fit import fit  # noqa: E402
from reward_models.grm import GRM, GRMConfig, load_checkpoint, save_checkpoint  # noqa: E402
from reward_models.pairs import HopData, build_references  # noqa: E402
from reward_models.text import text_embeddings  # noqa: E402
from reward_models.tracker import FUSION_CHOICES, FUSIONS, GRMBackend, ProgressTracker, resolve_fusion  # noqa: E402
from sim.episodes import read_episodes  # noqa: E402

TARGETS = {"voc_pretrain_min": 0.95, "voc_new_after": 0.90, "completion_accuracy": 0.93, "hops_per_s": 500.0}
LOO_TARGETS = {"worst_voc_after": 0.95, "worst_completion_accuracy_after": 0.90}


def ensure_data(data_dir: Path, task: str, episodes: int, seed: int) -> list[str]:
    files = sorted(glob.glob(str(data_dir / f"{task}*.hdf5")))
    if files:
        return files
    out = data_dir / f"{task}.hdf5"
    demos(compose("demos", [f"task={task}", f"n={episodes}", "views=[front,wrist]", "image_size=64",
                            f"seed={seed}", f"out={out}"]))
    return [str(out)]


def ensure_heldout(heldout_dir: Path, task: str, episodes: int, seed: int, like: list[str]) -> list[str]:
    """Held-out episodes of ``task`` at seeds ``seed .. seed + episodes - 1``, recorded (``dopa demos``)
    with the controller of the training file ``like[0]`` (its ``.settings.json``) when missing.

    Raises:
        SystemExit: the held-out seeds overlap the training file's.
    """
    files = sorted(glob.glob(str(heldout_dir / f"{task}*.hdf5")))
    if files:
        return files
    settings = Path(like[0] + ".settings.json")
    info = json.loads(settings.read_text()) if settings.is_file() else {}
    first, n = int(info.get("seed", 0)), int(info.get("n", 0))
    if n and first < seed + episodes and seed < first + n:
        raise SystemExit(f"--heldout-seed {seed}: seeds {seed}..{seed + episodes - 1} overlap the training "
                         f"file's {first}..{first + n - 1} ({like[0]})")
    out = heldout_dir / f"{task}.hdf5"
    demos(compose("demos", [f"task={task}", f"n={episodes}", "views=[front,wrist]", "image_size=64",
                            f"seed={seed}", f"controller={info.get('controller', 'osc_pose')}", f"out={out}"]))
    return [str(out)]


def split_by_seed(eps, holdout: float):
    eps = sorted(eps, key=lambda e: e.seed)
    k = max(1, int(round(len(eps) * holdout)))
    train, test = eps[:-k], eps[-k:]
    if not any(e.success for e in test):  # keep a successful episode in the held-out set for VOC
        j = max(i for i, e in enumerate(train) if e.success)
        test.append(train.pop(j))
    return train, test


def throughput(model, batch: int, repeats: int, frames: dict, fusion: str) -> dict:
    """Batched hops/s at the model's size: uncached (6 images encoded per hop) and in the tracker."""
    views = model.views
    n = next(iter(frames.values())).shape[0]
    idx = torch.randint(0, n, (batch,))
    imgs = {v: torch.from_numpy(frames[v])[idx] for v in views}
    text = torch.randn(batch, model.config.text_dim)
    best = float("inf")  # best of 3 timings (timeit's convention: the others measure interference)
    with torch.inference_mode():
        model(text, imgs[views[0]], imgs[views[0]], imgs, imgs)  # warm-up
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(repeats):
                model(text, imgs[views[0]], imgs[views[0]], imgs, imgs)
            best = min(best, time.perf_counter() - t0)
    raw = batch * repeats / best
    be = GRMBackend(model, {"t": torch.zeros(model.config.text_dim)})
    ref = {v: frames[v][0] for v in views}
    tr = ProgressTracker(be, "t", ref, {v: frames[v][-1] for v in views}, batch, fusion=fusion)
    tr.reset(torch.arange(batch), {"images": imgs})
    tr.anchors_ok[:] = True
    dt = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeats):
            tr({"images": imgs})
        dt = min(dt, time.perf_counter() - t0)
    return {"hops_per_s": raw, "tracker_env_steps_per_s": batch * repeats / dt,
            "tracker_hops_per_s": 3 * batch * repeats / dt}


def bar_plot(path: Path, metrics: dict, pretrain: list[str], new: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [*pretrain, f"{new}\nbefore", f"{new}\nafter"]
    vals = [metrics[f"voc_{t}"] for t in pretrain] + [metrics["voc_new_before"], metrics["voc_new_after"]]
    vals = [0.0 if v is None else v for v in vals]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(names, vals, color=["C0"] * len(pretrain) + ["C3", "C2"])
    ax.axhline(TARGETS["voc_pretrain_min"], ls="--", c="k", lw=0.8, label="target 0.95 (pretrain)")
    ax.axhline(TARGETS["voc_new_after"], ls=":", c="k", lw=0.8, label="target 0.90 (new task)")
    ax.set_ylim(min(0.0, min(vals) - 0.05), 1.02)
    ax.set_ylabel("VOC (held-out)")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="data/grm_bench")
    ap.add_argument("--pretrain", default="stack,pick-place-can,door")
    ap.add_argument("--new", default="lift")
    ap.add_argument("--episodes", type=int, default=20, help="episodes per task when data must be made")
    ap.add_argument("--heldout-dir", default="data/grm_heldout", help="held-out episode files per pretraining task")
    ap.add_argument("--heldout-episodes", type=int, default=20,
                    help="held-out episodes per task, recorded apart (0: split the training files by seed)")
    ap.add_argument("--heldout-seed", type=int, default=100, help="first env seed of the held-out episodes")
    ap.add_argument("--holdout", type=float, default=0.34,
                    help="with --heldout-episodes 0: share of each task's seeds held out")
    ap.add_argument("--steps", type=int, default=6000, help="most pretraining steps")
    ap.add_argument("--minutes", type=float, default=15.0, help="pretraining time budget (steps are cut to fit)")
    ap.add_argument("--batch", type=int, default=48)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--goal-pair-prob", type=float, default=0.25,
                    help="share of training pairs anchored on a reference goal frame (reward_train's pairs.goal_pair_prob)")
    ap.add_argument("--start-pair-prob", type=float, default=0.15,
                    help="share of training pairs anchored on the episode's first frame (pairs.start_pair_prob)")
    ap.add_argument("--fusion", default="auto", choices=FUSION_CHOICES,
                    help="the tracker's fusion for the headline metrics (the main job's; auto = precision for the GRM)")
    ap.add_argument("--also-fusion", default="mean,damped",
                    help="other fusions reported beside it, comma-separated ('' for none)")
    ap.add_argument("--adapt-steps", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", default="runs/grm_bench",
                    help="GRM checkpoints; --leave-one-out: each pretrained model, reused by a run with the same "
                         "pretraining settings (so adaptation settings compare on one pretrained model)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--leave-one-out", action="store_true",
                    help="leave-one-task-out adaptation over --tasks (see the module docstring)")
    ap.add_argument("--tasks", default="lift,stack,pick-place-can,door", help="--leave-one-out: the tasks")
    ap.add_argument("--left", default="", help="--leave-one-out: the tasks left out in turn (default: every one of --tasks)")
    ap.add_argument("--launcher", default="local", help="--leave-one-out: configs/hydra/launcher (local | slurm | slurm_local)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="--leave-one-out, local launcher: left-out tasks trained at a time (each uses --threads)")
    ap.add_argument("--adapt-loss", default="ce+mse", choices=["ce+mse", "mse"],
                    help="adaptation loss (reward-adapt loss): ce+mse trains the demonstration's hop distribution too")
    ap.add_argument("--replay-share", type=float, default=0.5,
                    help="share of every adaptation batch rehearsing the pretraining tasks (reward-adapt replay_share)")
    args = ap.parse_args()
    args.fusion = resolve_fusion(args.fusion, has_distribution=True)
    args.others = [f.strip() for f in args.also_fusion.split(",") if f.strip() and f.strip() != args.fusion]
    bad = [f for f in args.others if f not in FUSIONS]
    if bad:
        ap.error(f"--also-fusion: unknown fusion(s) {bad}; known: {', '.join(FUSIONS)}")
    args.pretrain = [t.strip() for t in args.pretrain.split(",") if t.strip()]
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.leave_one_out and len(args.tasks) < 2:
        ap.error("--leave-one-out needs at least two --tasks")
    args.left = [t.strip() for t in args.left.split(",") if t.strip()] or list(args.tasks)
    if any(t not in args.tasks for t in args.left):
        ap.error(f"--left {','.join(args.left)}: each must be one of --tasks ({','.join(args.tasks)})")
    return args


def load_data(args, views) -> dict:
    """Training episodes, held-out episodes per pretraining task, the new task's demonstration and
    evaluation episodes, and a note saying where they came from."""
    data_dir = ROOT / args.data_dir
    train_eps, held = [], {}
    for t in args.pretrain:
        files = ensure_data(data_dir, t, args.episodes, args.seed)
        eps = read_episodes(files, views=views, image_size=64)
        if args.heldout_episodes > 0:
            tr = eps
            te = read_episodes(ensure_heldout(ROOT / args.heldout_dir, t, args.heldout_episodes,
                                                   args.heldout_seed, files), views=views, image_size=64)
            if {e.seed for e in te} & {e.seed for e in tr}:
                raise SystemExit(f"{t}: held-out seeds {sorted({e.seed for e in te})} overlap the training seeds")
        else:
            tr, te = split_by_seed(eps, args.holdout)
        train_eps += tr
        held[t] = te
        print(f"{t}: {len(tr)} training episodes (seeds {[e.seed for e in tr]}), {len(te)} held out "
              f"(seeds {[e.seed for e in te]}, {sum(e.success for e in te)} successful)")
    note = (f"training: every episode of {args.data_dir}/<task>*.hdf5 for {', '.join(args.pretrain)}; held out: "
            + (f"{args.heldout_episodes} episodes per task recorded apart at seeds {args.heldout_seed}.."
               f"{args.heldout_seed + args.heldout_episodes - 1} ({args.heldout_dir})" if args.heldout_episodes > 0
               else f"the highest-seed {args.holdout:.0%} of each file") + f"; new task: {args.new}")
    new_eps = sorted(read_episodes(ensure_data(data_dir, args.new, max(4, args.episodes // 2), args.seed),
                                        views=views, image_size=64), key=lambda e: e.seed)
    demo = next((e for e in new_eps if e.success and e.imperfection == "none"), None)
    if demo is None:
        raise SystemExit(f"no successful unperturbed {args.new} episode to adapt from")
    new_eval = [e for e in new_eps if e is not demo]
    print(f"{args.new}: demonstration seed {demo.seed} ({demo.num_frames} frames), {len(new_eval)} evaluation episodes")
    return {"train": train_eps, "held": held, "demo": demo, "new_eval": new_eval, "note": note}


def pretrain_model(args, d: dict, views) -> dict:
    """Pretrain within the time budget (a few timed steps first, then the step count that fits);
    saves and reloads the checkpoint. Returns {"model", "meta", "steps", "seconds", "mse"}."""
    text_emb = text_embeddings([e.task_text for e in d["train"]] + [d["demo"].task_text], ROOT / ".cache" / "text_emb")
    data = HopData(d["train"], views, "front", text_emb, seed=args.seed, goal_pair_prob=args.goal_pair_prob,
                   start_pair_prob=args.start_pair_prob)
    model = GRM(GRMConfig(views=views, image_size=64))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    probe = 10
    t0 = time.time()
    # time a few steps first, then fit the step count into the budget (cosine schedule over it)
    fit(model, data, probe, args.batch, args.lr, optimizer=opt, progress_bar=False, shift=3)
    per_step = (time.time() - t0) / probe
    steps = int(min(args.steps, max(probe + 1, args.minutes * 60 / per_step)))
    print(f"{per_step:.2f} s/step -> {steps} pretraining steps")
    res = fit(model, data, steps, args.batch, args.lr, optimizer=opt, start_step=probe, shift=3, desc="pretrain")
    seconds = time.time() - t0
    ck = ROOT / args.checkpoint
    save_checkpoint(ck, model, build_references(data, text_emb), None, {"tasks": args.pretrain, "steps": steps})
    model, meta = load_checkpoint(ck)
    return {"model": model, "meta": meta, "steps": steps, "seconds": seconds, "mse": res["mse"]}


def heldout_metrics(args, model, meta, held: dict, out: Path) -> dict:
    """VOC, completion accuracy and MAE on the pretraining tasks' held-out episodes (headline fusion
    and the others), and the same of the ground-truth progress; plots per task."""
    pretrain, metrics = args.pretrain, {}
    results = evaluate_checkpoint(model, meta, [e for t in pretrain for e in held[t]], fusion=args.fusion)
    print_table(results)
    for t in pretrain:
        r = results[t]
        plot_curves(out / f"grm_quality_heldout_{t}.png", held[t], r["curves"],
                    f"{t} held-out: VOC {r['voc']:.3f}, MAE {r['mae']:.3f}")
        metrics[f"voc_{t}"] = r["voc"]
        metrics[f"completion_accuracy_{t}"] = r["completion_accuracy"]
        metrics[f"mae_{t}"] = r["mae"]
    n_all = sum(results[t]["episodes"] for t in pretrain)
    metrics["heldout_episodes"] = n_all
    metrics["voc_pretrain_min"] = min(results[t]["voc"] for t in pretrain)
    metrics["voc_pretrain_mean"] = float(np.mean([results[t]["voc"] for t in pretrain]))
    metrics["completion_accuracy"] = sum(results[t]["completion_accuracy"] * results[t]["episodes"]
                                         for t in pretrain) / n_all
    metrics["mae_pretrain_mean"] = float(np.mean([results[t]["mae"] for t in pretrain]))
    for f in args.others:  # the same checkpoint, other fusions
        other = evaluate_checkpoint(model, meta, [e for t in pretrain for e in held[t]], fusion=f)
        for t in pretrain:
            metrics[f"voc_{t}_{f}"] = other[t]["voc"]
        metrics[f"voc_pretrain_min_{f}"] = min(other[t]["voc"] for t in pretrain)
        metrics[f"completion_accuracy_{f}"] = sum(other[t]["completion_accuracy"] * other[t]["episodes"]
                                                  for t in pretrain) / n_all
        print(f"fusion={f}: VOC " + ", ".join(f"{t} {other[t]['voc']:.3f}" for t in pretrain) +
              f"; completion accuracy {metrics[f'completion_accuracy_{f}']:.3f}")
    # the same metrics of the ground-truth progress: what a perfect tracker would score
    for t in pretrain:
        metrics[f"voc_{t}_ground_truth"] = float(np.mean([voc(e.progress) for e in held[t] if e.success]))
    gt = [bool(e.progress[-1] >= 0.95) == bool(e.success) for t in pretrain for e in held[t]]
    metrics["completion_accuracy_ground_truth"] = float(np.mean(gt))
    near = [f"{e.task} seed {e.seed} (progress {e.progress[-1]:.3f}, success {bool(e.success)})"
            for t in pretrain for e in held[t] if bool(e.progress[-1] >= 0.95) != bool(e.success)]
    print(f"completion accuracy {metrics['completion_accuracy']:.3f}; of the ground-truth progress under the same "
          f"rule {metrics['completion_accuracy_ground_truth']:.3f}" + (f" (it misjudges {', '.join(near)})" if near else ""))
    return metrics


def adaptation_metrics(args, model, meta, demo, new_eval, views, out: Path, d: dict | None = None) -> dict:
    """One-shot adaptation to the new task: its metrics before and after (plots of both), rehearsing
    the pretraining episodes (``--replay-share``, reward-adapt's default); with ``d`` also the
    pretrained tasks' held-out metrics after adaptation and their drop."""
    te = text_embeddings([demo.task_text], ROOT / ".cache" / "text_emb")
    meta["references"][args.new] = {
        "text": demo.task_text, "text_emb": torch.from_numpy(te[demo.task_text]),
        "start": torch.stack([torch.from_numpy(demo.frames[v][0]) for v in views]),
        "goal": torch.stack([torch.from_numpy(demo.frames[v][-1]) for v in views])}
    before = evaluate_checkpoint(model, meta, new_eval, fusion=args.fusion)[args.new]
    t1 = time.time()
    adapt(model, meta, demo, steps=args.adapt_steps, batch_size=32, lr=3e-4, seed=args.seed,
          text_cache=ROOT / ".cache" / "text_emb", progress_bar=False, replay=d["train"] if d else None,
          replay_share=args.replay_share, loss=args.adapt_loss)
    metrics = {"adapt_seconds": time.time() - t1, "replay_share": args.replay_share if d else 0.0,
               "adapt_loss": args.adapt_loss}
    if d:
        held = evaluate_checkpoint(model, meta, [e for t in args.pretrain for e in d["held"][t]], fusion=args.fusion)
        for t in args.pretrain:
            metrics[f"voc_{t}_after_adaptation"] = held[t]["voc"]
            metrics[f"completion_accuracy_{t}_after_adaptation"] = held[t]["completion_accuracy"]
        print("pretrained tasks after adaptation: " + ", ".join(
            f"{t} VOC {held[t]['voc']:.3f} completion {held[t]['completion_accuracy']:.3f}" for t in args.pretrain))
    after = evaluate_checkpoint(model, meta, new_eval, fusion=args.fusion)[args.new]
    plot_curves(out / f"grm_quality_{args.new}_before.png", new_eval, before["curves"],
                f"{args.new} before adaptation: VOC {before['voc']:.3f}")
    plot_curves(out / f"grm_quality_{args.new}_after.png", new_eval, after["curves"],
                f"{args.new} after one-shot adaptation: VOC {after['voc']:.3f}")
    print(f"{args.new}: VOC before {before['voc']:.3f} -> after {after['voc']:.3f}; "
          f"completion accuracy {before['completion_accuracy']:.3f} -> {after['completion_accuracy']:.3f}")
    for f in args.others:
        other = evaluate_checkpoint(model, meta, new_eval, fusion=f)[args.new]
        metrics[f"voc_new_after_{f}"] = other["voc"]
        metrics[f"completion_accuracy_new_after_{f}"] = other["completion_accuracy"]
        print(f"fusion={f}: {args.new} after adaptation VOC {other['voc']:.3f}, completion accuracy "
              f"{other['completion_accuracy']:.3f}")
    metrics.update({"voc_new_before": before["voc"], "voc_new_after": after["voc"],
                    "completion_accuracy_new_before": before["completion_accuracy"],
                    "completion_accuracy_new_after": after["completion_accuracy"],
                    "mae_new_before": before["mae"], "mae_new_after": after["mae"]})
    return metrics


def _loo_data(args, views) -> dict:
    """{task: (training episodes, held-out episodes)} for --leave-one-out."""
    data = {}
    for t in args.tasks:
        files = ensure_data(ROOT / args.data_dir, t, args.episodes, args.seed)
        eps = read_episodes(files, views=views, image_size=64)
        if args.heldout_episodes > 0:
            te = read_episodes(ensure_heldout(ROOT / args.heldout_dir, t, args.heldout_episodes, args.heldout_seed,
                                              files), views=views, image_size=64)
            tr = eps
        else:
            tr, te = split_by_seed(eps, args.holdout)
        data[t] = (tr, te)
        print(f"{t}: {len(tr)} training episodes, {len(te)} held out ({sum(e.success for e in te)} successful)")
    return data


def _summary(r: dict) -> dict:
    return {t: {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in m.items()
                if k in ("voc", "completion_accuracy", "mae", "episodes", "successful", "anchors_off")}
            for t, m in r.items()}


def loo_one(args, left: str, data: dict, views) -> dict:
    """One left-out task: pretrain on the others (within --minutes), adapt from one demonstration
    of ``left`` rehearsing the others, evaluate every task's held-out episodes before and after."""
    train = [e for t, (tr, _) in data.items() if t != left for e in tr]
    held = [e for _, (_, te) in data.items() for e in te]
    demo = next((e for e in sorted(data[left][0], key=lambda e: e.seed) if e.success and e.imperfection == "none"),
                None)
    if demo is None:
        raise SystemExit(f"no successful unperturbed {left} episode to adapt from")
    cache = ROOT / ".cache" / "text_emb"
    text_emb = text_embeddings([e.task_text for e in train + held], cache)
    hop = HopData(train, views, "front", text_emb, seed=args.seed, goal_pair_prob=args.goal_pair_prob,
                  start_pair_prob=args.start_pair_prob)
    # the pretrained model is kept (GRM checkpoint folder under --checkpoint, named by the pretraining
    # settings), so adaptation settings can be compared on the same pretrained model without pretraining again
    key = {k: getattr(args, k, None) for k in ("data_dir", "episodes", "seed", "steps", "minutes", "batch", "lr",
                                               "goal_pair_prob", "start_pair_prob", "tasks")}
    digest = hashlib.sha256(json.dumps({**key, "left": left, "views": list(views)}, sort_keys=True).encode()).hexdigest()
    cached = ROOT / args.checkpoint / f"loo-{left}-seed{args.seed}-{digest[:10]}"
    t0 = time.time()
    if (cached / "model.safetensors").is_file():
        model, _ = load_checkpoint(cached, views=views)
        info = json.loads((cached / "config.json").read_text())["info"]
        steps, pretrain_s = int(info["steps"]), float(info["pretrain_seconds"])
        print(f"pretrained model without {left}: {cached} ({steps} steps)")
    else:
        torch.manual_seed(args.seed)
        model = GRM(GRMConfig(views=views, image_size=64))
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
        probe = 10
        fit(model, hop, probe, args.batch, args.lr, optimizer=opt, progress_bar=False, shift=3)
        steps = int(min(args.steps, max(probe + 1, args.minutes * 60 / ((time.time() - t0) / probe))))
        fit(model, hop, steps, args.batch, args.lr, optimizer=opt, start_step=probe, shift=3,
            desc=f"pretrain -{left}")
        pretrain_s = time.time() - t0
        save_checkpoint(cached, model, None, None, {"left_out": left, "steps": steps, "pretrain_seconds": pretrain_s})
    meta = {"references": build_references(hop, text_emb)}
    meta["references"][left] = demo_reference(demo, views, cache)
    before = evaluate_checkpoint(model, meta, held, fusion=args.fusion)
    t1 = time.time()
    adapt(model, meta, demo, steps=args.adapt_steps, batch_size=32, lr=3e-4, seed=args.seed, text_cache=cache,
          progress_bar=False, replay=train, replay_share=args.replay_share,
          loss=getattr(args, "adapt_loss", "mse"))  # settings.json of a sweep begun before the key: mse
    after = evaluate_checkpoint(model, meta, held, fusion=args.fusion)
    b, a = before[left], after[left]
    drops = {t: {"voc": before[t]["voc"] - after[t]["voc"],
                 "completion_accuracy": before[t]["completion_accuracy"] - after[t]["completion_accuracy"]}
             for t in before if t != left}
    print(f"left out {left}: VOC {b['voc']:.3f} -> {a['voc']:.3f}, completion accuracy "
          f"{b['completion_accuracy']:.3f} -> {a['completion_accuracy']:.3f}, MAE {b['mae']:.3f} -> {a['mae']:.3f}")
    return {"left_out": left, "seed": args.seed, "pretrain_tasks": sorted({e.task for e in train}),
            "pretrain_steps": steps, "pretrain_seconds": pretrain_s, "adapt_steps": args.adapt_steps,
            "adapt_seconds": time.time() - t1, "replay_share": args.replay_share, "adapt_loss": getattr(args, "adapt_loss", "mse"),
            "demo_seed": demo.seed,
            "eval_episodes": b["episodes"], "eval_successful": b["successful"],
            "before": _summary(before), "after": _summary(after), "pretrained_drop": drops}


def loo_task(cfg) -> None:
    """One job of the leave-one-out sweep: the left-out task ``cfg.left`` with the script's
    arguments from ``<cfg.folder>/settings.json``, into ``<left>-seed<seed>.json``; nothing when that
    file exists."""
    import argparse

    folder, left = Path(str(cfg.folder)), str(cfg.left)
    args = argparse.Namespace(**json.loads((folder / "settings.json").read_text()))
    if left not in args.tasks:
        raise ValueError(f"left={left!r} is not one of --tasks: {', '.join(args.tasks)}")
    f = folder / f"{left}-seed{args.seed}.json"
    if f.is_file():
        print(f"{left}: {f} exists, skipped")
        return
    torch.set_num_threads(int(args.threads))
    views = tuple(args.views)
    write_json(f, json.loads(json.dumps(loo_one(args, left, _loo_data(args, views), views), default=float)))


def leave_one_out(args, out: Path, views) -> int:
    """--leave-one-out: every left-out task as one job of a Hydra multirun (``benchmarks/sweep.py``,
    ``--launcher``, ``--jobs`` at a time; result files per (task, seed) skipped when present), then
    the table, the worst task as the headline, and its targets met or not."""
    folder = out / "grm_loo"
    folder.mkdir(parents=True, exist_ok=True)
    todo = [t for t in args.left if not (folder / f"{t}-seed{args.seed}.json").is_file()]
    if todo:
        _loo_data(args, views)  # records any missing episode files once, before the jobs read them
        write_json(folder / "settings.json", {**vars(args), "views": list(views)})
        failures = multirun("grm_loo", loo_task, [f"left={','.join(todo)}", f"folder={folder}"],
                            launcher=args.launcher, n_jobs=args.jobs)
        for line in failures:
            print(f"  failed: {line}")
    results = {}
    for left in args.left:
        f = folder / f"{left}-seed{args.seed}.json"
        if f.is_file():
            results[left] = json.loads(f.read_text())
    if not results:
        raise SystemExit(f"no left-out task finished in {folder}")
    rows = {t: r["after"][t] for t, r in results.items()}
    worst_voc = min((rows[t]["voc"] if rows[t]["voc"] is not None else -1.0) for t in rows)
    worst_ca = min(rows[t]["completion_accuracy"] for t in rows)
    worst = min(rows, key=lambda t: (rows[t]["voc"] if rows[t]["voc"] is not None else -1.0))
    print(f"{'left out':<16} {'VOC before':>10} {'VOC after':>9} {'compl. before':>13} {'compl. after':>12} "
          f"{'MAE after':>9} {'max drop (VOC)':>14}")
    for t, r in results.items():
        b, a = r["before"][t], r["after"][t]
        drop = max([d["voc"] for d in r["pretrained_drop"].values() if d["voc"] is not None] or [float("nan")])
        nan = float("nan")
        print(f"{t:<16} {nan if b['voc'] is None else b['voc']:>10.3f} {nan if a['voc'] is None else a['voc']:>9.3f} "
              f"{b['completion_accuracy']:>13.3f} {a['completion_accuracy']:>12.3f} "
              f"{nan if a['mae'] is None else a['mae']:>9.3f} {drop:>14.3f}")
    metrics = {"worst_task": worst, "worst_voc_after": worst_voc, "worst_completion_accuracy_after": worst_ca}
    met = {k: bool(metrics[k] >= v) for k, v in LOO_TARGETS.items()}
    print(f"worst left-out task {worst}: VOC {worst_voc:.3f}, worst completion accuracy {worst_ca:.3f}; met: {met}")
    loo_plot(out / "grm_loo.png", results)
    doc = {"benchmark": "grm_quality --leave-one-out", "date": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}",
           "command": " ".join([".venv/bin/python", "benchmarks/grm_quality.py", *sys.argv[1:]]),
           "fusion": args.fusion, "results": results, "metrics": metrics, "targets": LOO_TARGETS, "met": met}
    write_json(out / "grm_loo.json", doc)
    return 0


def loo_plot(path: Path, results: dict) -> None:
    """Bars of VOC and completion accuracy before/after per left-out task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results)
    x = np.arange(len(tasks))
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, key, target in ((axes[0], "voc", 0.95), (axes[1], "completion_accuracy", 0.90)):
        for j, when in enumerate(("before", "after")):
            vals = [results[t][when][t][key] or 0.0 for t in tasks]
            ax.bar(x + (j - 0.5) * 0.38, vals, 0.38, label=when, color="C3" if j == 0 else "C2")
        ax.axhline(target, ls="--", c="k", lw=0.8)
        ax.set_xticks(x, tasks, fontsize=7)
        ax.set_title(f"left-out task: {key.replace('_', ' ')}", fontsize=9)
        ax.set_ylim(0, 1.02)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.leave_one_out:
        return leave_one_out(args, out, ("front", "wrist"))
    views = ("front", "wrist")
    t_start = time.time()
    d = load_data(args, views)
    p = pretrain_model(args, d, views)
    model, meta = p["model"], p["meta"]
    metrics = heldout_metrics(args, model, meta, d["held"], out)
    metrics.update(adaptation_metrics(args, model, meta, d["demo"], d["new_eval"], views, out, d))
    for t in args.pretrain:  # what adaptation cost the pretrained tasks (target: <= 0.02 VOC, <= 0.05 completion)
        metrics[f"voc_drop_{t}"] = metrics[f"voc_{t}"] - metrics[f"voc_{t}_after_adaptation"]
        metrics[f"completion_accuracy_drop_{t}"] = (metrics[f"completion_accuracy_{t}"]
                                                    - metrics[f"completion_accuracy_{t}_after_adaptation"])
    tp = throughput(model, 256, 5, d["demo"].frames, args.fusion)
    metrics.update(tp)
    print(f"throughput: {tp['hops_per_s']:.0f} hops/s uncached (6 images each), tracker "
          f"{tp['tracker_env_steps_per_s']:.0f} env steps/s = {tp['tracker_hops_per_s']:.0f} hops/s")
    metrics.update({"pretrain_steps": p["steps"], "pretrain_seconds": p["seconds"],
                    "train_episodes": len(d["train"]), "new_task_eval_episodes": len(d["new_eval"]),
                    "final_hop_mse": p["mse"], "total_seconds": time.time() - t_start})
    metrics = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in metrics.items()}
    met = {k: bool(metrics[k] is not None and metrics[k] >= v) for k, v in TARGETS.items()}
    bar_plot(out / "grm_quality.png", metrics, args.pretrain, args.new)
    doc = {"benchmark": "grm_quality", "date": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}, "
                      f"load average {os.getloadavg()[0]:.1f} at the end",
           "command": " ".join([".venv/bin/python", "benchmarks/grm_quality.py", *sys.argv[1:]]),
           "data": d["note"], "fusion": args.fusion, "metrics": metrics, "targets": TARGETS, "met": met}
    write_json(out / "grm_quality.json", json.loads(json.dumps(doc, default=float)))
    print(json.dumps({"met": met}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
