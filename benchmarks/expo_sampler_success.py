"""Does a faster sampler keep a trained EXPO policy's success? DDPM-10 against DDIM-k, same seeds.

The deployment policy of a trained EXPO checkpoint (its exported ``deploy/`` folder) is evaluated
with each sampler variant (``ddpm10``: as trained and exported, the authors' ancestral DDPM over all
10 steps; ``ddim<k>``: diffusers' DDIM over k of those steps, the same weights, through
``load_policy(sampling=)``, i.e. ``dopa eval sampler=ddim sample_steps=k``) on the same fixed
episode seeds, with the evaluation routine of training and ``dopa eval``
(:func:`control.evaluate.evaluate`, deterministic OTF choice, the checkpoint's own env config).

Each (checkpoint, variant) evaluation is written to its own file under
``benchmarks/results/runs/expo_sampler_success/<label>_<variant>.json`` (``dopa eval``'s JSON) and
skipped when it exists, so the comparison is built up over several sittings. Reported per variant:
success over all checkpoints x episodes with a Wilson 95 % interval; against ``ddpm10``, paired by
(checkpoint, seed): the success difference with a paired bootstrap 95 % interval, the discordant
pairs and the exact two-sided sign-test p-value (McNemar). DDIM-k counts as measured-equivalent for
deployment when the interval of its difference to DDPM-10 lies within +-0.10.

    .venv/bin/python benchmarks/expo_sampler_success.py                 # the shaping benchmark's finished EXPO runs
    .venv/bin/python benchmarks/expo_sampler_success.py --checkpoints runs/<run> --variants ddpm10 ddim5 --episodes 40

Default checkpoints: the newest checkpoint of every finished run under ``runs/shaping_vs_sparse/``
(trained EXPO policies on robosuite Lift). Writes ``benchmarks/results/expo_sampler_success.json``
and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from benchmarks.common import RESULTS, repo_relative, save_figure, write_result  # noqa: E402
from control.checkpoint import load_checkpoint  # noqa: E402
from control.evaluate import wilson_interval  # noqa: E402
from jobs.evaluate import run as run_eval  # noqa: E402

NAME = "expo_sampler_success"
RECORDS = RESULTS / "runs" / NAME
EQUIVALENCE_MARGIN = 0.10  # |success difference| bound that both ends of the paired interval must meet


def parse_variant(v: str) -> dict:
    """``ddpm10`` -> {} (as exported); ``ddim<k>`` -> {"sampler": "ddim", "sample_steps": k}.

    Raises:
        ValueError: any other name (the allowed forms named).
    """
    if v == "ddpm10":
        return {}
    if v.startswith("ddim") and v[4:].isdigit() and int(v[4:]) >= 1:
        return {"sampler": "ddim", "sample_steps": int(v[4:])}
    raise ValueError(f"unknown variant {v!r}; allowed: ddpm10 (as exported) or ddim<k> with k >= 1, e.g. ddim5")


def default_checkpoints() -> list[Path]:
    """The newest checkpoint of every run under runs/shaping_vs_sparse/<group>/<arm>_seed<seed>/ that
    has a result file (a finished run)."""
    found = []
    for run in sorted((ROOT / "runs" / "shaping_vs_sparse").glob("*/*_seed*")):
        record = RESULTS / "runs" / "shaping_vs_sparse" / run.parent.name / f"{run.name}.json"
        steps = sorted((run / "checkpoints").glob("step_*"))
        if record.is_file() and steps:
            found.append(steps[-1])
    return found


def label(ckpt: Path) -> str:
    """A file-name label of a checkpoint: <group>_<run>_<step> for runs/<bench>/<group>/<run>/checkpoints/<step>."""
    parts = ckpt.resolve().parts
    return "_".join(parts[-4:-2] + parts[-1:]) if len(parts) >= 4 and parts[-2] == "checkpoints" else ckpt.name


def evaluate_one(ckpt: Path, variant: str, episodes: int, seed: int, out: Path) -> dict:
    """``dopa eval`` of ``ckpt``'s deployment policy with the variant's sampling; its JSON written to
    ``out`` (atomically) and returned."""
    cfg = OmegaConf.load(ROOT / "configs" / "eval.yaml")
    cfg.merge_with({"checkpoint": str(ckpt), "episodes": episodes, "seed": seed, "out": str(out),
                    **parse_variant(variant)})
    run_eval(cfg)
    return json.loads(out.read_text())


def paired(base: np.ndarray, other: np.ndarray, rng: np.random.Generator, n_boot: int = 10000) -> dict:
    """Paired comparison of two bool [n] success vectors over the same episodes: difference
    other - base with a bootstrap 95 % interval, discordant pairs, exact sign-test p-value."""
    from scipy.stats import binomtest

    d = other.astype(float) - base.astype(float)
    idx = rng.integers(0, d.size, (n_boot, d.size))
    boot = d[idx].mean(axis=1)
    only_base, only_other = int(((base) & (~other)).sum()), int(((~base) & (other)).sum())
    p = binomtest(only_other, only_base + only_other).pvalue if only_base + only_other else 1.0
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"difference": float(d.mean()), "difference_ci": [float(lo), float(hi)],
            "only_base_succeeded": only_base, "only_variant_succeeded": only_other, "sign_test_p": float(p),
            "equivalent": bool(-EQUIVALENCE_MARGIN <= lo and hi <= EQUIVALENCE_MARGIN)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoints", nargs="+", type=Path, default=None,
                    help="EXPO checkpoint or run folders (default: the shaping benchmark's finished runs)")
    ap.add_argument("--variants", nargs="+", default=["ddpm10", "ddim5", "ddim3"])
    ap.add_argument("--episodes", type=int, default=40, help="episodes per (checkpoint, variant), seeds seed..")
    ap.add_argument("--seed", type=int, default=2_000_000, help="first episode seed (disjoint from training's evaluation)")
    args = ap.parse_args(argv)
    for v in args.variants:
        try:
            parse_variant(v)
        except ValueError as exc:
            ap.error(str(exc))
    if "ddpm10" not in args.variants:
        ap.error("--variants must include ddpm10 (the reference every other variant is paired with)")
    ckpts = args.checkpoints if args.checkpoints is not None else default_checkpoints()
    ckpts = [load_checkpoint(c).path for c in ckpts]  # a run folder -> its newest checkpoint
    RECORDS.mkdir(parents=True, exist_ok=True)

    def same(r: dict) -> bool:  # an evaluation on this run's episodes and seeds
        return r.get("episodes") == args.episodes and (r.get("seeds") or [None])[0] == args.seed

    for ckpt in ckpts:
        for v in args.variants:
            out = RECORDS / f"{label(ckpt)}_{v}.json"
            if out.is_file() and same(json.loads(out.read_text())):
                print(f"{out.name}: done already, skipped")
                continue
            r = evaluate_one(ckpt, v, args.episodes, args.seed, out)
            print(f"{label(ckpt)} {v}: success {r['success_rate']:.2f} over {r['episodes']} episodes", flush=True)
    # every checkpoint evaluated with every variant on these seeds, now or in an earlier sitting
    results: dict[str, dict[str, dict]] = {v: {} for v in args.variants}
    for v in args.variants:
        for f in sorted(RECORDS.glob(f"*_{v}.json")):
            r = json.loads(f.read_text())
            if same(r):
                results[v][f.name[: -len(f"_{v}.json")]] = r
    labels = sorted(set.intersection(*(set(results[v]) for v in args.variants)))
    if not labels:
        ap.error("nothing to compare: no checkpoint given or found (runs/shaping_vs_sparse/ has no finished "
                 f"run) and no earlier evaluations of all of {args.variants} in {repo_relative(RECORDS)}")

    rng = np.random.default_rng(0)
    succ = {v: np.concatenate([np.asarray(results[v][k]["successes"], bool) for k in labels]) for v in args.variants}
    metrics: dict = {"checkpoints": labels, "episodes_per_checkpoint": args.episodes,
                     "first_seed": args.seed, "variants": list(args.variants)}
    for v in args.variants:
        n, k = succ[v].size, int(succ[v].sum())
        metrics[f"{v}_success"] = k / n
        metrics[f"{v}_success_ci"] = list(wilson_interval(k, n))
        metrics[f"{v}_per_checkpoint"] = {lb: results[v][lb]["success_rate"] for lb in labels}
        lengths = np.concatenate([np.asarray(results[v][lb]["lengths"]) for lb in labels])
        metrics[f"{v}_episode_length_mean"] = float(lengths.mean())
        if v != "ddpm10":
            pr = paired(succ["ddpm10"], succ[v], rng)
            metrics.update({f"{v}_minus_ddpm10_{key}": val for key, val in pr.items()})
    # headline metrics first (the README's Results table shows each file's first scalars)
    first = [f"{v}_minus_ddpm10_difference" for v in args.variants if v != "ddpm10"] + \
        [f"{v}_success" for v in args.variants]
    metrics = {**{k: metrics[k] for k in first}, **{k: v for k, v in metrics.items() if k not in first}}
    targets = {f"{v}_minus_ddpm10_equivalent": f"paired 95 % interval within +-{EQUIVALENCE_MARGIN}"
               for v in args.variants if v != "ddpm10"}
    met = {k: bool(metrics[k]) for k in targets}
    path = write_result(NAME, metrics, targets, met)
    for v in args.variants:
        line = f"{v:>7}: success {metrics[f'{v}_success']:.3f} [{metrics[f'{v}_success_ci'][0]:.3f}, " \
               f"{metrics[f'{v}_success_ci'][1]:.3f}] over {succ[v].size} episodes"
        if v != "ddpm10":
            lo, hi = metrics[f"{v}_minus_ddpm10_difference_ci"]
            line += (f"; minus ddpm10 {metrics[f'{v}_minus_ddpm10_difference']:+.3f} [{lo:+.3f}, {hi:+.3f}], "
                     f"sign test p {metrics[f'{v}_minus_ddpm10_sign_test_p']:.2f}")
        print(line)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    xs = np.arange(len(args.variants))
    vals = [metrics[f"{v}_success"] for v in args.variants]
    err = np.array([[vals[i] - metrics[f"{v}_success_ci"][0], metrics[f"{v}_success_ci"][1] - vals[i]]
                    for i, v in enumerate(args.variants)]).T
    ax.bar(xs, vals, yerr=err, capsize=4, color="tab:blue")
    ax.set_xticks(xs, args.variants)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success (Wilson 95 %)")
    ax.set_title(f"EXPO policies, {len(labels)} checkpoint(s) x {args.episodes} episodes")
    fig.tight_layout()
    save_figure(fig, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
