"""EXPO against RLPD from a few imperfect demonstrations: env steps to 80 % success.

EXPO's claim (Dong et al. 2025): 2-3x fewer environment steps than the best prior online RL with
offline data (RLPD, Ball et al. 2023). Three arms, the same task, demos, sparse reward, seeds and
budget; they differ only in the learner config (``configs/learner/``):

- ``expo``: EXPO (``learner=expo``; ``learner=expo_cpu`` for the CPU size): a behaviour-cloned
  diffusion base policy, a Gaussian edit policy, Q-argmax over the candidates;
- ``rlpd``: RLPD at its published settings (``learner=rlpd``: 10 LayerNorm critics, actor on their
  mean, TD target over a random pair, UTD 20, symmetric 50/50 offline/online batches);
- ``rlpd_bc``: RLPD whose actor is first behaviour-cloned on the demos (``learner=rlpd_bc``,
  ``bc_steps``), to separate an offline start from what the online part adds.

Setting (``benchmarks/expo_vs_rlpd.yaml``, which is ``configs/train.yaml`` plus ``bench``): robosuite
Lift with the ``joint_position`` controller, 300-step episodes (the scripted expert needs 130 steps),
an episode ends at its first success; sparse reward r = 1[success] (offline transitions relabelled
the same way); ``bench.demos`` scripted demos with ``bench.imperfections`` (clean, noisy, stopped
short), recorded once into ``bench.data_dir``; 20,000 env steps; evaluation on 20 fixed-seed episodes
every 2,000 env steps and at env step 0 (the offline start alone).

One run = one (arm, seed) = one process, a Hydra app with the project's own training loop
(:func:`jobs.train.setup` then :func:`control.train.train`, as ``dopa train``)::

    .venv/bin/python benchmarks/expo_vs_rlpd.py learner=rlpd seed=0                # one run
    .venv/bin/python benchmarks/expo_vs_rlpd.py -m learner=expo,rlpd,rlpd_bc seed=0,1,2,3,4 \\
        hydra/launcher=joblib hydra.launcher.n_jobs=2                              # all, one per core
    .venv/bin/python benchmarks/expo_vs_rlpd.py --aggregate                        # JSON + PNG

Each run trains in ``<bench.out_dir>/<group>/<arm>_seed<seed>/`` (not tracked) and writes its result
file ``<bench.record_dir>/<group>/<arm>_seed<seed>.json`` (default
``benchmarks/results/runs/<last part of out_dir>/``; with the default out_dir
``benchmarks/results/runs/expo_vs_rlpd/``, tracked) atomically when it ends; a run whose file exists
is skipped, so the benchmark is built up over several sittings. ``<group>`` names what the arms share
(demos, imperfections and a hash of the env, reward, budget and evaluation settings; not the learner,
which is the arm: override a learner key for every arm or for none).

``--aggregate`` (the runs' overrides; ``learner=`` and ``seed=`` ignored) writes
``benchmarks/results/<bench.name>.json`` and ``.png``: per arm, env steps and training episodes to
80 % with bootstrap 95 % intervals over seeds (null, never the budget, when a seed never reached
it), final success with its Wilson interval, the success at env step 0, wall time per run; the
ratios rlpd / expo and rlpd_bc / expo of env steps to 80 % with bootstrap intervals.
Target (issue 17): rlpd / expo env steps to 80 % >= 2 with the lower end of its interval above 1.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")

import hydra  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.success_curves import _ratio, bootstrap_ci, plot_success, summarize_arm, train_and_record  # noqa: E402
from sim.demos import record_demos  # noqa: E402

NAME = "expo_vs_rlpd"
ARMS = ("expo", "rlpd", "rlpd_bc")
TARGETS = {"rlpd_over_expo_env_steps_to_80": 2.0, "rlpd_over_expo_ci_low_above_1": True}
#: train-config keys every arm shares (the learner is the arm); seed does not define the group
GROUP_KEYS = ("env", "reward", "total_steps", "num_envs", "eval", "checkpoint_every")
GROUP_BENCH_KEYS = ("demos", "imperfections", "threshold")


def demo_file(cfg: DictConfig) -> Path:
    """``<data_dir>/lift-<controller>-<demos>-<hash of the imperfection weights>.hdf5``: ``bench.demos``
    scripted Lift demos (env seeds 0..demos-1, state only, each ending at its first success),
    ``bench.imperfections`` of them imperfect; recorded when missing (written atomically).

    Raises:
        ValueError: bad imperfection weights (:func:`sim.demos.record_demos`).
    """
    weights = common.plain(cfg.bench.imperfections)
    controller = str(cfg.env.kwargs.controller)
    tag = common.settings_digest(cfg, (), ("imperfections",))[:8]
    path = Path(cfg.bench.data_dir) / f"lift-{controller}-{int(cfg.bench.demos)}-{tag}.hdf5"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        record_demos("lift", int(cfg.bench.demos), path, views=(), seed=0, controller=controller,
                     imperfections=weights, post_success_steps=0)
    return path


def arm_of(cfg: DictConfig) -> str:
    """The arm: ``expo`` (an EXPO learner config), ``rlpd_bc`` (RLPD with ``bc_steps`` > 0) or ``rlpd``.

    Raises:
        ValueError: another learner, naming it and the arms.
    """
    target = str(cfg.learner._target_)
    if target == "control.expo.EXPOConfig":
        return "expo"
    if target == "control.sac.RLPDConfig":
        return "rlpd_bc" if int(cfg.learner.get("bc_steps", 0)) > 0 else "rlpd"
    raise ValueError(f"unknown arm learner {target!r}; the benchmark's arms: learner=expo (or expo_cpu), rlpd, rlpd_bc")


def group_of(cfg: DictConfig) -> str:
    """``lift_demos<n>_<sha256 of GROUP_KEYS and GROUP_BENCH_KEYS, 10 hex>``: what every arm shares."""
    return f"lift_demos{cfg.bench.demos}_{common.settings_digest(cfg, GROUP_KEYS, GROUP_BENCH_KEYS)}"


def paths(cfg: DictConfig, arm: str | None = None, seed: int | None = None) -> dict:
    """``group`` and ``results`` folders, and for an (arm, seed) its ``run`` folder and ``result`` file."""
    return common.run_paths(cfg.bench.out_dir, cfg.bench.get("record_dir"), group_of(cfg), arm, seed)


def train_config(cfg: DictConfig, run_dir: Path, offline: Path) -> DictConfig:
    """The ``dopa train`` config of one run: ``cfg`` without ``bench`` and ``hydra``, with the demos
    and the run folder."""
    tc = common.run_config(cfg, run_dir)
    with open_dict(tc):
        tc.offline_data = [str(offline)]
    OmegaConf.resolve(tc)
    return tc


def run_one(cfg: DictConfig, log=print) -> dict:
    """Train one (arm, seed) and write its result file; when the file exists, return it untouched.

    Returns:
        ``{"arm", "seed", "group", "curve", "env_steps_to_80", "episodes_to_80", "final_successes",
        "final_episodes", "train_episodes", "env_steps", "wall_s", "eval_s", "env_steps_per_s",
        "settings", "skipped"}`` (``skipped`` is not stored); ``curve`` rows as
        :class:`benchmarks.success_curves.Curve` records them.
    """
    arm, seed = arm_of(cfg), int(cfg.seed)
    p = paths(cfg, arm, seed)
    if p["result"].exists():
        log(f"{arm} seed {seed}: done already ({p['result']}), skipped")
        return {**json.loads(p["result"].read_text()), "skipped": True}
    offline = demo_file(cfg)
    tc = train_config(cfg, p["run"], offline)
    return train_and_record(tc, p, arm, seed, float(cfg.bench.threshold), {"demo_file": str(offline)}, log)


def summarize(runs: dict) -> tuple[dict, dict]:
    """Metrics and met flags from ``{arm: [result dicts]}``: the ratios to EXPO first, then per arm."""
    arms = {a: summarize_arm(rs) for a, rs in runs.items() if rs}
    metrics: dict = {}
    e = arms.get("expo", {})
    for arm in ("rlpd", "rlpd_bc"):
        a = arms.get(arm, {})
        ratio = ci = None
        if e.get("env_steps_to_80") and a.get("env_steps_to_80") is not None:
            x = np.asarray(a["env_steps_to_80_per_seed"], float)
            y = np.asarray(e["env_steps_to_80_per_seed"], float)
            ratio = a["env_steps_to_80"] / e["env_steps_to_80"]
            ci = bootstrap_ci([x, y], _ratio) if y.min() > 0 else None
        metrics[f"{arm}_over_expo_env_steps_to_80"], metrics[f"{arm}_over_expo_env_steps_to_80_ci"] = ratio, ci
    for arm, m in arms.items():
        metrics[f"{arm}_env_steps_to_80"] = m["env_steps_to_80"]
        metrics[f"{arm}_final_success"] = m["final_success"]
        metrics[f"{arm}_start_success"] = m["start_success"]
    metrics["arms"] = arms
    r, ci = metrics["rlpd_over_expo_env_steps_to_80"], metrics["rlpd_over_expo_env_steps_to_80_ci"]
    met = {"rlpd_over_expo_env_steps_to_80": r is not None and r >= TARGETS["rlpd_over_expo_env_steps_to_80"],
           "rlpd_over_expo_ci_low_above_1": ci is not None and ci[0] > 1.0}
    return metrics, met


COLORS = {"expo": "tab:red", "rlpd": "tab:gray", "rlpd_bc": "tab:blue"}
STYLES = {"expo": "-", "rlpd": "--", "rlpd_bc": "-."}
LABELS = {"expo": "EXPO", "rlpd": "RLPD", "rlpd_bc": "RLPD + BC start"}


def aggregate(cfg: DictConfig, name: str, pilot: bool = False, results_dir: Path | None = None, log=print) -> dict:
    """The group's result files into ``<results_dir>/<name>.{json,png}`` (DESIGN.md's format).
    Returns the JSON dict written.

    Raises:
        SystemExit: no finished run in the group (naming its folder).
    """
    results = paths(cfg)["results"]
    runs = common.load_group(results, ARMS)
    if not runs:
        raise SystemExit(f"no finished runs under {results}")
    metrics, met = summarize(runs)
    metrics["setting"] = {"group": results.name, "demos": int(cfg.bench.demos),
                          "imperfections": common.plain(cfg.bench.imperfections), "total_steps": int(cfg.total_steps),
                          "eval_every": int(cfg.eval.every), "eval_episodes": int(cfg.eval.episodes),
                          "episode_steps": int(cfg.env.kwargs.max_episode_steps),
                          "controller": str(cfg.env.kwargs.controller), "threshold": float(cfg.bench.threshold),
                          "learners": {a: rs[0]["settings"]["config"]["learner"] for a, rs in runs.items()},
                          "results": common.repo_relative(results)}
    metrics["runs"] = {a: [{k: v for k, v in r.items() if k != "settings"} for r in rs] for a, rs in runs.items()}
    metrics["pilot"] = bool(pilot)
    if cfg.bench.get("note"):
        metrics["note"] = str(cfg.bench.note)
    log(f"{results.name}: " + ", ".join(f"{a} {len(rs)} runs" for a, rs in runs.items()))
    results_dir = Path(results_dir) if results_dir is not None else common.RESULTS
    path = common.write_result(name, metrics, TARGETS, met, results_dir=results_dir)
    title = (f"Lift {cfg.env.kwargs.controller}, {cfg.bench.demos} demos, sparse reward, {cfg.total_steps} env steps, "
             f"eval {cfg.eval.episodes} episodes every {cfg.eval.every}")
    plot_success({title: runs}, results_dir / f"{name}.png", float(cfg.bench.threshold), COLORS, STYLES, LABELS)
    return json.loads(path.read_text())


def _aggregate_cli(argv: list[str]) -> int:
    """``--aggregate [overrides]``: compose the benchmark's config with the runs' overrides and aggregate."""
    cfg = common.compose_groups(NAME, argv)[0]
    out = aggregate(cfg, str(cfg.bench.name), bool(cfg.bench.pilot))
    m = out["metrics"]
    for arm, a in m["arms"].items():
        fs = a["final_success_ci"]
        print(f"{arm:8s}: env steps to 80 % {a['env_steps_to_80']} ({a['env_steps_to_80_reached']} seeds), "
              f"final success {a['final_success']} [{fs[0]:.2f}, {fs[1]:.2f}], {a['env_steps_per_s']:.2f} env steps/s")
    print(f"rlpd / expo env steps to 80 %: {m['rlpd_over_expo_env_steps_to_80']} "
          f"{m['rlpd_over_expo_env_steps_to_80_ci']}; met: {out['met']}")
    return 0


@hydra.main(config_path=".", config_name=NAME, version_base="1.3")
def main(cfg: DictConfig) -> None:
    """One (arm, seed) run (see the module docstring)."""
    run_one(cfg)


if __name__ == "__main__":
    if "--aggregate" in sys.argv[1:]:
        sys.exit(_aggregate_cli([a for a in sys.argv[1:] if a != "--aggregate"]))
    main()
