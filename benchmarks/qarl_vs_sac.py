"""QARL benchmark: does training against a quantal adversary make a policy robust to physics changes
without costing nominal return? (Reddi et al., ICLR 2024; published over 15 dm_control tasks:
+48.7 % robustness and +4.2 % nominal return relative to SAC.)

Three arms, the same protagonist (SAC, ``learner=sac``), task, seeds and number of environment
steps; they differ only in the adversary config (``configs/adversary/``):

- ``none``: SAC alone (a zero adversary), the baseline;
- ``qarl``: QARL, the self-paced curriculum over the adversary's temperature alpha;
- ``rarl``: RARL, alpha ~ the target (a rational adversary) from the start.

In the adversarial arms the protagonist learns in half of the episodes (the adversary's phases are
the other half), as in the authors' code; the arms get the same environment steps.

One run = one (arm, seed, task) = one process, a Hydra app with the project's own training loop
(:func:`jobs.train.setup` then :func:`control.train.train`, as ``dopa train``), then its evaluation
with the trained protagonist (deterministic, alpha = 0, no adversary):

- nominal return: ``bench.episodes`` episodes on fixed seeds;
- robustness grid: ``bench.mass`` x ``bench.friction`` scales (:meth:`set_scales`: every body's
  mass and inertia x every geom's friction, relative to nominal), ``bench.grid_episodes`` episodes
  per cell on the same seeds (:func:`jobs.robustness.evaluate_grid`); its mean over cells (the
  "robustness") and its worst cell.

    .venv/bin/python benchmarks/qarl_vs_sac.py adversary=qarl seed=0                     # one run
    .venv/bin/python benchmarks/qarl_vs_sac.py -m adversary=none,qarl,rarl seed=0,1,2 \\
        env=cartpole-swingup,cheetah-run hydra/launcher=joblib hydra.launcher.n_jobs=2   # all, one per core
    .venv/bin/python benchmarks/qarl_vs_sac.py --aggregate env=cartpole-swingup,cheetah-run   # JSON + PNG

Adversary settings shared by the adversarial arms go under ``bench.adversary`` (merged into the arm's
adversary config), so one sweep covers ``adversary=none`` too. Each run trains in
``<bench.out_dir>/<group>/<arm>_seed<seed>/`` (not tracked) and writes its result file
``<bench.record_dir>/<group>/<arm>_seed<seed>.json`` (default ``benchmarks/results/runs/<last part of out_dir>/``; with the default out_dir
``benchmarks/results/runs/qarl_vs_sac/``,
tracked) atomically when it ends; a run whose file exists is skipped (rerun an interrupted sweep to
finish it). ``<group>`` names the settings every
arm shares (task, learner, sizes, grid, ``bench.adversary``: a hash).

``--aggregate`` (the runs' overrides; ``adversary=`` and ``seed=`` ignored; one key may be a comma
list, e.g. ``env=a,b``: one group per value) writes ``benchmarks/results/<bench.name>.json``
(DESIGN.md's format) and ``.png`` (per task and arm, the grid's mean return over seeds as a
heatmap). Per task and arm: nominal return, grid mean and worst cell, each its mean over seeds with
a 95 % t interval (None with one seed); the ratios qarl/sac and rarl/sac of each, with a 95 %
bootstrap interval (:func:`ratio_ci`). Targets (issue 19, item 8), on the ratios averaged over
tasks: QARL's grid mean >= 1.3x SAC's with nominal >= 0.95x.
At the published scale: ``env.backend=warp num_envs=<thousands> device=cuda`` on a GPU.
"""

from __future__ import annotations

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

import hydra  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

from basics.atomic import write_json  # noqa: E402
from benchmarks import common  # noqa: E402
from benchmarks.success_curves import bootstrap_ci  # noqa: E402
from control.evaluate import evaluate, learner_policy, mean_interval  # noqa: E402
from jobs.build import build_env  # noqa: E402
from jobs.robustness import check_grids, evaluate_grid  # noqa: E402
from jobs.train import setup  # noqa: E402

NAME = "qarl_vs_sac"
ARMS = ("sac", "qarl", "rarl")
TARGETS = {"qarl_over_sac_grid_mean": 1.3, "qarl_over_sac_nominal": 0.95}
GROUP_KEYS = ("env", "learner", "reward", "total_steps", "num_envs", "checkpoint_every")
GROUP_BENCH_KEYS = ("episodes", "grid_episodes", "seed", "mass", "friction", "adversary")


def arm_of(cfg: DictConfig) -> str:
    """The arm: ``sac`` for ``adversary=none``, else the adversary's curriculum (``qarl``, ``rarl``)."""
    adv = cfg.get("adversary")
    arm = "sac" if adv is None else str(adv.get("curriculum"))
    if arm not in ARMS:
        raise ValueError(f"unknown arm adversary={arm!r}; the benchmark's arms: none, qarl, rarl")
    return arm


def group_of(cfg: DictConfig) -> str:
    """``<task>_<sha256 of GROUP_KEYS and GROUP_BENCH_KEYS, 10 hex>``: the settings every arm shares."""
    return f"{cfg.env.name}_{common.settings_digest(cfg, GROUP_KEYS, GROUP_BENCH_KEYS)}"


def paths(cfg: DictConfig, arm: str | None = None, seed: int | None = None) -> dict:
    """``group`` and ``results`` folders, and for an (arm, seed) its ``run`` folder and ``result`` file."""
    return common.run_paths(cfg.bench.out_dir, cfg.bench.get("record_dir"), group_of(cfg), arm, seed)


def grid_of(cfg: DictConfig) -> dict:
    """The mass x friction grid of ``bench`` (checked: :func:`jobs.robustness.check_grids`)."""
    return check_grids({"mass_friction": {"x": "mass", "y": "friction", "x_values": common.plain(cfg.bench.mass),
                                          "y_values": common.plain(cfg.bench.friction)}}, None)["mass_friction"]


def train_config(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """The ``dopa train`` config of one run: ``cfg`` without ``bench`` and ``hydra``, the run folder,
    and ``bench.adversary`` merged into the adversary of the adversarial arms."""
    tc = common.run_config(cfg, run_dir)
    with open_dict(tc):
        if tc.get("adversary") is not None and cfg.bench.get("adversary"):
            tc.adversary = OmegaConf.merge(tc.adversary, cfg.bench.adversary)
    OmegaConf.resolve(tc)
    return tc


def run_one(cfg: DictConfig, log=print) -> dict:
    """Train and evaluate one (arm, seed) and write its result file; when the file exists already,
    return it without training.

    Returns:
        ``{"arm", "seed", "group", "task", "nominal" {return_mean, return_ci, returns}, "grid" (see
        :func:`jobs.robustness.evaluate_grid`), "grid_mean", "worst", "env_steps", "train_s",
        "eval_s", "settings", "skipped"}`` (``skipped`` is not stored).
    """
    arm, seed = arm_of(cfg), int(cfg.seed)
    grid = grid_of(cfg)
    p = paths(cfg, arm, seed)
    if p["result"].exists():
        log(f"{arm} seed {seed}: done already ({p['result']}), skipped")
        return {**json.loads(p["result"].read_text()), "skipped": True}
    tc = train_config(cfg, p["run"])
    if p["run"].exists():  # an unfinished earlier attempt: start over
        shutil.rmtree(p["run"])
    t0 = time.time()
    out = setup(tc).train()
    t1 = time.time()
    fn = learner_policy(out["learner"])  # deterministic; QARL: the protagonist with alpha = 0, no force
    device, bseed = tc.get("device", "cpu"), int(cfg.bench.seed)
    env = build_env(tc.env, num_envs=int(cfg.bench.episodes), seed=bseed, device=device)
    try:
        r = evaluate(env, fn, bseed)
    finally:
        env.close()
    nominal = {"return_mean": r["return_mean"], "return_ci": r["return_ci"], "returns": r["returns"]}
    genv = build_env(tc.env, num_envs=int(cfg.bench.grid_episodes), seed=bseed, device=device)
    try:
        g = evaluate_grid(genv, fn, bseed, grid, log=lambda s: log(f"{arm} seed {seed}: {s}"))
    finally:
        genv.close()
    res = {"arm": arm, "seed": seed, "group": p["group"].name, "task": str(cfg.env.name), "nominal": nominal,
           "grid": g, "grid_mean": g["grid_mean"], "worst": g["worst"]["return"], "env_steps": int(out["env_steps"]),
           "train_s": round(t1 - t0, 1), "eval_s": round(time.time() - t1, 1),
           "settings": {"run_dir": common.repo_relative(p["run"]), "config": OmegaConf.to_container(tc, resolve=True)}}
    write_json(p["result"], res)
    log(f"{arm} seed {seed}: nominal {nominal['return_mean']:.1f}, grid mean {g['grid_mean']:.1f}, worst "
        f"{res['worst']:.1f} after {res['env_steps']} env steps ({res['train_s']:.0f} s training) -> {p['result']}")
    return {**res, "skipped": False}


# ---------------------------------------------------------------------------------------------
# Aggregate
# ---------------------------------------------------------------------------------------------

def _interval(values) -> dict:
    """Mean over seeds with its 95 % t interval (None below 2 seeds)."""
    vals = [float(v) for v in values]
    m, lo, hi = mean_interval(np.asarray(vals))
    ok = len(vals) >= 2 and np.isfinite([lo, hi]).all()
    return {"mean": float(np.mean(vals)), "ci": [float(lo), float(hi)] if ok else None, "per_seed": vals}


def summarize(runs: dict) -> dict:
    """Per arm (``{arm: [result dicts]}``): nominal, grid mean and worst cell over seeds, the mean
    grid; then the ratios qarl/sac and rarl/sac (None when SAC's figure is 0 or missing)."""
    arms = {}
    for arm, rs in runs.items():
        arms[arm] = {"seeds": [r["seed"] for r in rs], "nominal": _interval([r["nominal"]["return_mean"] for r in rs]),
                     "grid_mean": _interval([r["grid_mean"] for r in rs]), "worst": _interval([r["worst"] for r in rs]),
                     "mean_grid": np.mean([r["grid"]["return_mean"] for r in rs], axis=0).tolist(),
                     "env_steps": [r["env_steps"] for r in rs],
                     "train_s_per_run": float(np.mean([r["train_s"] for r in rs]))}
    out: dict = {}
    for arm in ("qarl", "rarl"):
        for key in ("grid_mean", "nominal", "worst"):
            s, a = arms.get("sac", {}).get(key), arms.get(arm, {}).get(key)
            out[f"{arm}_over_sac_{key}"] = a["mean"] / s["mean"] if (s and a and s["mean"] > 0) else None
    out["arms"] = arms
    return out


def ratio_ci(per_task: dict, key: str) -> list[float] | None:
    """95 % percentile bootstrap interval of ``key``: the mean over tasks of each task's ratio of
    means over seeds, every (task, arm) sample of per-seed figures resampled on its own
    (:func:`benchmarks.success_curves.bootstrap_ci`, 9999 resamples, fixed generator).

    Args:
        per_task: ``{task: summary}`` as :func:`summarize` returns it (``summary["arms"][arm][figure]
            ["per_seed"]``: one return per seed, float, in reward units summed over an episode);
            each task must hold the arm and ``sac``.
        key: ``<arm>_over_sac_<figure>``, e.g. ``qarl_over_sac_grid_mean``.

    Returns:
        ``[low, high]`` (dimensionless ratios); None with fewer than 2 seeds in an arm, or when a
        SAC figure is <= 0 (a resample of it could make the ratio meaningless).

    Raises:
        ValueError: ``key`` is not of the form ``<arm>_over_sac_<figure>``.
    """
    if "_over_sac_" not in key:
        raise ValueError(f"ratio key {key!r}: expected '<arm>_over_sac_<figure>', e.g. 'qarl_over_sac_grid_mean'")
    arm, figure = key.split("_over_sac_", 1)
    samples = []
    for m in per_task.values():
        samples += [m["arms"][arm][figure]["per_seed"], m["arms"]["sac"][figure]["per_seed"]]
    if any(min(s) <= 0 for s in samples[1::2]):
        return None

    def mean_ratio(*xs, axis=-1):
        pairs = zip(xs[::2], xs[1::2], strict=True)
        return np.mean([np.mean(a, axis=axis) / np.mean(s, axis=axis) for a, s in pairs], axis=0)

    return bootstrap_ci(samples, mean_ratio)


def load_group(results: Path) -> dict:
    """``{arm: [result dicts sorted by seed]}`` from the result files ``<results>/*.json``."""
    return common.load_group(results, ARMS)


def plot(per_task: dict, path: Path) -> None:
    """One row per task, one heatmap per arm (its mean grid over seeds; one colour scale per row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = max(len(m["arms"]) for m in per_task.values())
    fig, axes = plt.subplots(len(per_task), ncols, figsize=(3.6 * ncols, 3.2 * len(per_task)), squeeze=False)
    for row, (task, m) in enumerate(per_task.items()):
        grids = {a: np.asarray(v["mean_grid"]) for a, v in m["arms"].items()}
        lo, hi = min(g.min() for g in grids.values()), max(g.max() for g in grids.values())
        s = m["setting"]
        for col, (arm, g) in enumerate(grids.items()):
            ax = axes[row][col]
            im = ax.imshow(g, cmap="coolwarm", origin="lower", vmin=lo, vmax=hi, aspect="auto")
            ax.set_xticks(range(len(s["mass"])), [f"{v:g}" for v in s["mass"]], fontsize=6)
            ax.set_yticks(range(len(s["friction"])), [f"{v:g}" for v in s["friction"]], fontsize=6)
            ax.set_xlabel("mass scale", fontsize=7)
            ax.set_ylabel("friction scale", fontsize=7)
            a = m["arms"][arm]
            ax.set_title(f"{task} {arm} ({len(a['seeds'])} seeds)\nnominal {a['nominal']['mean']:.0f}, "
                         f"grid mean {a['grid_mean']['mean']:.0f}, worst {a['worst']['mean']:.0f}", fontsize=7)
            fig.colorbar(im, ax=ax)
        for col in range(len(grids), ncols):
            axes[row][col].axis("off")
    fig.tight_layout()
    common.save_figure(fig, path, dpi=110)
    plt.close(fig)


def aggregate(cfgs: list[DictConfig], name: str, pilot: bool = False, results_dir: Path | None = None,
              log=print) -> dict:
    """Aggregate each config's group (one per task) into ``<results_dir>/<name>.{json,png}``."""
    per_task = {}
    for cfg in cfgs:
        gdir = paths(cfg)["results"]
        runs = load_group(gdir)
        if not runs:
            log(f"{gdir.name}: no finished runs, left out")
            continue
        m = summarize(runs)
        m["setting"] = {"group": gdir.name, "total_steps": int(cfg.total_steps), "num_envs": int(cfg.num_envs),
                        "episode_steps": int(cfg.env.kwargs.max_episode_steps), "episodes": int(cfg.bench.episodes),
                        "grid_episodes": int(cfg.bench.grid_episodes), "mass": list(common.plain(cfg.bench.mass)),
                        "friction": list(common.plain(cfg.bench.friction)), "adversary": common.plain(cfg.bench.get("adversary")),
                        "learner": common.plain(cfg.learner), "results": common.repo_relative(gdir)}
        per_task[str(cfg.env.name)] = m
        log(f"{gdir.name}: " + ", ".join(f"{a} {len(rs)} runs" for a, rs in runs.items()))
    if not per_task:
        raise SystemExit(f"no finished runs under {', '.join(str(paths(c)['results']) for c in cfgs)}")
    metrics: dict = {}
    for key in ("qarl_over_sac_grid_mean", "qarl_over_sac_nominal", "qarl_over_sac_worst",
                "rarl_over_sac_grid_mean", "rarl_over_sac_nominal"):
        vals = [m[key] for m in per_task.values() if m.get(key) is not None]
        metrics[key] = float(np.mean(vals)) if vals and len(vals) == len(per_task) else None
        ci = ratio_ci(per_task, key) if metrics[key] is not None else None
        if ci is not None:  # written only as an interval (a None would read as a headline scalar)
            metrics[f"{key}_ci"] = ci
    for task, m in per_task.items():
        for key in ("qarl_over_sac_grid_mean", "qarl_over_sac_nominal", "rarl_over_sac_grid_mean"):
            metrics[f"{task}/{key}"] = m[key]
            ci = ratio_ci({task: m}, key) if m[key] is not None else None
            if ci is not None:
                metrics[f"{task}/{key}_ci"] = ci
        for arm, a in m["arms"].items():
            for k in ("nominal", "grid_mean", "worst"):
                metrics[f"{task}/{arm}_{k}"] = a[k]["mean"]
                metrics[f"{task}/{arm}_{k}_ci"] = a[k]["ci"]
    metrics["tasks"] = per_task
    metrics["pilot"] = bool(pilot)
    if cfgs[0].bench.get("note"):
        metrics["note"] = str(cfgs[0].bench.note)
    met = {k: metrics[k] is not None and metrics[k] >= v for k, v in TARGETS.items()}
    results_dir = Path(results_dir) if results_dir is not None else common.RESULTS
    path = common.write_result(name, metrics, TARGETS, met, results_dir=results_dir)
    plot(per_task, results_dir / f"{name}.png")
    return json.loads(path.read_text())


def _aggregate_cli(argv: list[str]) -> int:
    """``--aggregate [overrides]``: compose with the overrides (one key may be a comma list: one group
    per value), aggregate and print one line per task and arm."""
    argv = [a for a in argv if a.split("=", 1)[0].lstrip("+~") not in ("adversary", "seed")]
    cfgs = common.compose_groups(NAME, argv)
    out = aggregate(cfgs, str(cfgs[0].bench.name), bool(cfgs[0].bench.pilot))
    m = out["metrics"]
    for task, tm in m["tasks"].items():
        for arm, a in tm["arms"].items():
            print(f"{task} {arm:4s} ({len(a['seeds'])} seeds): nominal {a['nominal']['mean']:.1f}, grid mean "
                  f"{a['grid_mean']['mean']:.1f}, worst {a['worst']['mean']:.1f}")
    print(f"QARL/SAC grid mean {m['qarl_over_sac_grid_mean']}, nominal {m['qarl_over_sac_nominal']}; met: {out['met']}")
    return 0


@hydra.main(config_path=".", config_name=NAME, version_base="1.3")
def main(cfg: DictConfig) -> None:
    """One (arm, seed) run (see the module docstring)."""
    run_one(cfg)


if __name__ == "__main__":
    if "--aggregate" in sys.argv[1:]:
        sys.exit(_aggregate_cli([a for a in sys.argv[1:] if a != "--aggregate"]))
    main()
