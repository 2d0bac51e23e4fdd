"""Reward shaping benchmark: does a potential make RL from a few demonstrations learn faster?

Four arms, the same learner, demos, seeds and task; they differ only in the reward
(``configs/reward/``), and every arm takes r_gold from the task's own success (``reward.gold=env``):

- ``sparse``: r = 1[success];
- ``grm``: r = 1[success] + gamma Phi(s') - Phi(s), Phi = the GRM's tracked progress (PBRS, Ng et al. 1999);
- ``naive``: r = 1[success] + Phi(s') - Phi(s), the same Phi (the "semantic trap");
- ``oracle``: r = 1[success] + gamma Phi(s') - Phi(s), Phi = the simulator's ground-truth progress
  (``sim/experts.py``), the upper bound of any learned potential; no rendering.

Setting (``benchmarks/shaping_vs_sparse.yaml``, which is ``configs/train.yaml`` plus ``bench``):
robosuite Lift with the ``joint_position`` controller (the main job's, whose policies deploy to arms),
300-step episodes (the scripted expert needs 130 steps, so >= 2x), an episode ends at its first
success; EXPO at its CPU size (``learner=expo_cpu``, the main job's learner: behaviour cloning on the
demos, then online RL with 50/50 offline/online batches) from ``bench.demos`` = 10 clean scripted
demonstrations (recorded once into ``bench.data_dir``, state only); 20,000 env steps; evaluation on
20 fixed-seed episodes every 2,000 env steps and at env step 0 (the cloned base).
Why these (the pilots, README "Shaping vs sparse"): on ``osc_pose`` Lift no arm learned at all (the
cloned base 0-1/20 with 2-20 demos; EXPO-CPU 0/20 after 3,000 env steps; RLPD-style SAC at a CPU size
0/20 after 20,000); on ``joint_position`` Lift the sparse arm with 2 and 5 demos scored 0/20 up to
2,000 / 6,000 env steps, with 10 demos its cloned base scored 0/20 and 10/20 (seeds 0, 1) and it first
reached 80 % after 10,000 and 4,000 env steps (neither at once nor never). Why EXPO and not ``learner=rlpd``: RLPD at its published settings (UTD 20, ten 256-wide
critics) ran at 0.7 env steps/s on one of this machine's 2 CPU cores, EXPO-CPU at 4-6.

One run = one (arm, seed) = one process, a Hydra app with the project's own training loop
(:func:`jobs.train.setup` then :func:`control.train.train`, as ``dopa train``):

    .venv/bin/python benchmarks/shaping_vs_sparse.py reward=oracle seed=0            # one run
    .venv/bin/python benchmarks/shaping_vs_sparse.py -m reward=sparse,grm,naive,oracle seed=0,1,2,3,4 \\
        bench.grm=main hydra/launcher=joblib hydra.launcher.n_jobs=2                 # all, one per core
    .venv/bin/python benchmarks/shaping_vs_sparse.py --aggregate                      # JSON + PNG

``bench.grm``: a GRM checkpoint folder, or ``main`` (:func:`main_job_grm`: the main job's adapted
Lift GRM, found or built once by the launching process before any run starts).

Each run trains in ``<bench.out_dir>/<group>/<arm>_seed<seed>/`` (not tracked) and writes its result
file ``<bench.record_dir>/<group>/<arm>_seed<seed>.json`` (default
``benchmarks/results/runs/<last part of out_dir>/``; with the default out_dir
``benchmarks/results/runs/shaping_vs_sparse/``, tracked) atomically (:func:`basics.atomic.write_json`)
when it ends; a run whose file exists is skipped, so the
benchmark is built up over several sittings and an interrupted sweep is resumed by rerunning it.
``<group>`` names the settings every arm shares (learner, demos, a hash of the env, learner,
schedule and evaluation settings); any other override makes a new group.

``--aggregate`` (with the same overrides as the runs; ``reward=`` and ``seed=`` are ignored) reads the
group's result files and writes ``benchmarks/results/<bench.name>.json`` (DESIGN.md's format,
:func:`benchmarks.common.write_result`) and ``.png``. Per arm: env steps and training episodes to
80 % evaluation success (the first evaluation at or above ``bench.threshold``), their mean over
seeds with a bootstrap 95 % interval (``scipy.stats.bootstrap``, percentile, over seeds); a seed
that never reaches 80 % is null, and then the arm's mean is null (never the budget); final
success pooled over seeds with its 95 % Wilson interval; the wall time per run. The ratios
sparse/arm of episodes to 80 % get a bootstrap interval over both arms' seeds. Where unreached
seeds void a mean, two figures still say something: the median (defined while fewer than half the
seeds are unreached) and ``<arm>_minus_sparse_online_success``, the mean success over the evaluations
after env step 0 (the area under the online curve) minus the sparse arm's, paired by seed, with a
bootstrap interval over seeds. Several groups
(``--aggregate bench.demos=1,2``, a comma list of one key) go into one file, e.g. the pilot's.

Targets (issue 16, item 5): sparse / GRM episodes to 80 % >= 1.4 with the lower end of its 95 %
interval above 1.0; the GRM arm's speed-up at least 70 % of the oracle's (ratio_grm >= 0.7 ratio_oracle).
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import hydra  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

from benchmarks import common  # noqa: E402
from benchmarks.success_curves import (  # noqa: E402
    _mean,
    _ratio,
    bootstrap_ci,
    plot_success,
    ratio_bound,
    summarize_arm,
    train_and_record,
)
from jobs.cli import compose as compose_job  # noqa: E402
from jobs.multirun import expand_sweep  # noqa: E402
from jobs.prepare import prepare  # noqa: E402
from reward_models.grm import GRMConfig, check_grm_checkpoint  # noqa: E402
from sim.demos import record_demos  # noqa: E402
from sim.tasks import get_task  # noqa: E402

NAME = "shaping_vs_sparse"
ARMS = ("sparse", "grm", "naive", "oracle")
TARGETS = {"sparse_over_grm_episodes_to_80": 1.4, "sparse_over_grm_ci_low_above_1": True,
           "grm_over_oracle_speedup": 0.7}
#: seeds every compared arm must share before a target counts as met (the issue's "at least 5 seeds")
MIN_SEEDS = 5
#: train-config keys that define a group (every arm of a group shares them); reward and seed do not
GROUP_KEYS = ("env", "learner", "total_steps", "num_envs", "eval", "checkpoint_every")
#: bench keys that define a group
GROUP_BENCH_KEYS = ("demos", "threshold")


# ---------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------

def demo_file(data_dir, n: int, controller: str = "osc_pose", views: tuple[str, ...] = (),
              image_size: int = 64) -> Path:
    """``<data_dir>/lift-<controller>-clean-<n>.hdf5``: ``n`` clean scripted Lift demos (env seeds
    0..n-1, each ending at its first success) with the env's controller (``osc_pose`` |
    ``joint_position``), recorded when missing (written atomically). State only, or with ``views``
    rendered at ``image_size`` px (``...-clean-<n>-<view>+<view>-<px>px.hdf5``: the frames a GRM arm
    relabels the demos from; the same episodes, as rendering leaves the simulation alone)."""
    frames = f"-{'+'.join(views)}-{int(image_size)}px" if views else ""
    path = Path(data_dir) / f"lift-{controller}-clean-{int(n)}{frames}.hdf5"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        record_demos("lift", int(n), path, views=tuple(views), image_size=int(image_size), seed=0,
                     controller=controller, imperfections={"none": 1.0, "noise": 0.0, "stop": 0.0, "regress": 0.0},
                     post_success_steps=0)
    return path


def grm_checkpoint(cfg: DictConfig) -> str:
    """The GRM checkpoint folder of a GRM arm (``bench.grm``; ``main``: :func:`main_job_grm`).

    Raises:
        ValueError: ``bench.grm`` not set.
    """
    if not cfg.bench.grm:
        raise ValueError(f"reward={arm_of(cfg)} needs bench.grm=<GRM checkpoint folder> or bench.grm={MAIN_JOB_GRM} "
                         "(the main job's adapted Lift GRM, built when missing)")
    return main_job_grm() if cfg.bench.grm == MAIN_JOB_GRM else str(cfg.bench.grm)


def offline_file(cfg: DictConfig) -> Path:
    """The demo file of a run (:func:`demo_file`): state only, or for the GRM arms (grm, naive) with
    the views and image size the GRM reads (its checkpoint's ``config.json``), which relabelling
    the demos with the GRM's potential needs."""
    views, size = (), 64
    if arm_of(cfg) in ("grm", "naive"):
        path = check_grm_checkpoint(grm_checkpoint(cfg), key="bench.grm")
        grm = GRMConfig.from_dict(json.loads((path / "config.json").read_text())["grm"])
        views, size = tuple(grm.views), int(grm.image_size)
    return demo_file(cfg.bench.data_dir, int(cfg.bench.demos), str(cfg.env.kwargs.controller), views, size)


def arm_of(cfg: DictConfig) -> str:
    """The arm: the reward config's name (``reward=sparse|grm|naive|oracle``)."""
    arm = str(cfg.reward.get("name") or cfg.reward.mode)
    if arm not in ARMS:
        raise ValueError(f"unknown arm reward={arm!r}; the benchmark's arms: {', '.join(ARMS)}")
    return arm


def group_of(cfg: DictConfig) -> str:
    """The folder name of the settings every arm of a comparison shares:
    ``<learner>_demos<n>_<sha256 of GROUP_KEYS and GROUP_BENCH_KEYS, 10 hex>``."""
    learner = str(cfg.learner._target_).rsplit(".", 1)[-1].removesuffix("Config").lower()
    return f"{learner}_demos{cfg.bench.demos}_{common.settings_digest(cfg, GROUP_KEYS, GROUP_BENCH_KEYS)}"


def paths(cfg: DictConfig, arm: str | None = None, seed: int | None = None) -> dict:
    """``group`` folder, ``results`` folder, and for an (arm, seed) its ``run`` folder and ``result`` file."""
    return common.run_paths(cfg.bench.out_dir, cfg.bench.get("record_dir"), group_of(cfg), arm, seed)


def train_config(cfg: DictConfig, run_dir: Path, offline: Path) -> DictConfig:
    """The ``dopa train`` config of one run: ``cfg`` without ``bench`` and ``hydra``, with the demos,
    the run folder, and for the GRM arms the checkpoint, ``gold=env`` and ``bench.query_every``."""
    arm = arm_of(cfg)
    tc = common.run_config(cfg, run_dir)
    with open_dict(tc):
        tc.offline_data = [str(offline)]
        tc.reward.gold = "env"
        if arm in ("grm", "naive"):
            tc.reward.checkpoint = grm_checkpoint(cfg)
            tc.reward.query_every = int(cfg.bench.query_every)
            if tc.reward.potential.get("task_text") is None:
                tc.reward.potential.task_text = get_task(str(cfg.env.name)).text
    OmegaConf.resolve(tc)
    return tc


def run_one(cfg: DictConfig, log=print) -> dict:
    """Train one (arm, seed) through :func:`jobs.train.setup` / :func:`control.train.train` and write
    its result file; when the file exists already, return it without training.

    Returns:
        ``{"arm", "seed", "group", "curve", "env_steps_to_80", "episodes_to_80", "final_successes",
        "final_episodes", "train_episodes", "env_steps", "wall_s", "eval_s", "env_steps_per_s",
        "settings", "skipped"}`` (``skipped`` is not stored).
    """
    arm, seed = arm_of(cfg), int(cfg.seed)
    p = paths(cfg, arm, seed)
    if p["result"].exists():
        res = json.loads(p["result"].read_text())
        log(f"{arm} seed {seed}: done already ({p['result']}), skipped")
        return {**res, "skipped": True}
    if arm in ("grm", "naive") and cfg.bench.grm == MAIN_JOB_GRM:  # found (or built) once, then read twice
        cfg = copy.deepcopy(cfg)
        with open_dict(cfg):
            cfg.bench.grm = grm_checkpoint(cfg)
    offline = offline_file(cfg)
    tc = train_config(cfg, p["run"], offline)
    return train_and_record(tc, p, arm, seed, float(cfg.bench.threshold), {"demos": int(cfg.bench.demos), "demo_file": str(offline)}, log)


# ---------------------------------------------------------------------------------------------
# Aggregate
# ---------------------------------------------------------------------------------------------

def summarize(runs: dict) -> tuple[dict, dict]:
    """Metrics and met flags from ``{arm: [result dicts]}``: the ratios first, then per arm.

    Each ratio compares arms on the seeds they share (``metrics["ratio_seeds"][arm]``; the GRM/oracle
    speed-up on the seeds sparse, grm and oracle share, ``["grm_over_oracle"]``), so a partial sweep
    never sets one arm's easy seeds against another's hard ones; a shared seed that did not reach
    80 % makes it null, and ``<ratio>_bound`` then says how large (``"<= x"``) or small (``">= x"``)
    it can be (:func:`benchmarks.success_curves.ratio_bound`). No target is met before the arms it
    compares share :data:`MIN_SEEDS` seeds (``metrics["met_note"]`` names the targets not judged).
    Beside each ratio, one figure no unreached seed voids: ``<arm>_minus_sparse_online_success``, the
    arm's mean success over its evaluations after env step 0 minus the sparse arm's, paired by seed
    on the same shared seeds, with a bootstrap 95 % interval over seeds (``_ci``); above 0 means the
    arm learned sooner on average (:func:`benchmarks.success_curves.online_success`)."""
    arms = {a: summarize_arm(rs) for a, rs in runs.items() if rs}
    metrics: dict = {}

    def shared(names):
        if any(n not in arms for n in names):
            return [], {}
        seeds = sorted(set.intersection(*(set(arms[n]["seeds"]) for n in names)))
        per = {n: [arms[n]["episodes_to_80_per_seed"][arms[n]["seeds"].index(x)] for x in seeds] for n in names}
        if not seeds or any(v is None for vals in per.values() for v in vals):
            return seeds, {}
        return seeds, {n: np.asarray(v, float) for n, v in per.items()}

    def bound(num, den, seeds):  # where a shared seed did not reach 80 %: how large or small the ratio can be
        def col(n, key):
            return [arms[n][key][arms[n]["seeds"].index(x)] for x in seeds]
        return ratio_bound(col(num, "episodes_to_80_per_seed"), col(num, "train_episodes"),
                           col(den, "episodes_to_80_per_seed"), col(den, "train_episodes")) if seeds else None

    def ratio(arm):
        seeds, v = shared(("sparse", arm))
        if not v or v[arm].mean() <= 0:
            return None, None, seeds
        ci = bootstrap_ci([v["sparse"], v[arm]], _ratio) if v[arm].min() > 0 else None
        return float(v["sparse"].mean() / v[arm].mean()), ci, seeds

    def online_gain(arm, seeds):  # paired by seed: the arm's online success minus the sparse arm's
        if not seeds:
            return None, None
        a, b = ([arms[n]["online_success_per_seed"][arms[n]["seeds"].index(x)] for x in seeds] for n in (arm, "sparse"))
        if None in a or None in b:
            return None, None
        d = np.subtract(a, b)
        return float(d.mean()), bootstrap_ci([d], _mean)

    used = {}
    for arm in ("grm", "naive", "oracle"):
        r, ci, used[arm] = ratio(arm)
        metrics[f"sparse_over_{arm}_episodes_to_80"] = r
        metrics[f"sparse_over_{arm}_episodes_to_80_bound"] = None if r is not None else bound("sparse", arm, used[arm])
        metrics[f"{arm}_minus_sparse_online_success"], metrics[f"{arm}_minus_sparse_online_success_ci"] = \
            online_gain(arm, used[arm])
        metrics[f"sparse_over_{arm}_episodes_to_80_ci"] = ci
    rg = metrics["sparse_over_grm_episodes_to_80"]
    seeds, v = shared(("sparse", "grm", "oracle"))
    # (sparse/grm) / (sparse/oracle) on the seeds all three share = mean oracle / mean grm there
    metrics["grm_over_oracle_speedup"] = float(v["oracle"].mean() / v["grm"].mean()) if v and v["grm"].mean() > 0 else None
    metrics["grm_over_oracle_speedup_bound"] = None if v else bound("oracle", "grm", seeds)
    used["grm_over_oracle"] = seeds
    for arm, m in arms.items():
        metrics[f"{arm}_episodes_to_80"] = m["episodes_to_80"]
        metrics[f"{arm}_env_steps_to_80"] = m["env_steps_to_80"]
        metrics[f"{arm}_final_success"] = m["final_success"]
    metrics["ratio_seeds"] = used
    metrics["arms"] = arms
    ci = metrics["sparse_over_grm_episodes_to_80_ci"]
    met = {"sparse_over_grm_episodes_to_80": rg is not None and rg >= TARGETS["sparse_over_grm_episodes_to_80"],
           "sparse_over_grm_ci_low_above_1": ci is not None and ci[0] > 1.0,
           "grm_over_oracle_speedup": metrics["grm_over_oracle_speedup"] is not None
           and metrics["grm_over_oracle_speedup"] >= TARGETS["grm_over_oracle_speedup"]}
    # each target is judged on the seeds its own comparison shares, never on a partial sweep
    seeds_of = {"sparse_over_grm_episodes_to_80": used["grm"], "sparse_over_grm_ci_low_above_1": used["grm"],
                "grm_over_oracle_speedup": used["grm_over_oracle"]}
    unjudged = [k for k, s in seeds_of.items() if len(s) < MIN_SEEDS]
    if unjudged:
        metrics["met_note"] = "targets not judged (seeds shared by the arms compared, the benchmark needs " \
            f"{MIN_SEEDS}): " + ", ".join(f"{k} {len(seeds_of[k])} seed(s)" for k in unjudged)
        met.update(dict.fromkeys(unjudged, False))
    return metrics, met


def grm_checkpoints(runs: dict) -> dict:
    """``{arm: [GRM checkpoint folders]}``: the checkpoints the GRM arms' (grm, naive) finished runs
    actually used (repository-relative where they lie in it), read from each result file's stored
    config (the aggregate's ``bench.grm`` may differ from the runs'); one folder per arm unless runs
    of one group used different GRMs."""
    out = {}
    for arm in ("grm", "naive"):
        used = {common.repo_relative(r["settings"]["config"]["reward"]["checkpoint"]) for r in runs.get(arm, [])}
        if used:
            out[arm] = sorted(used)
    return out


def load_group(results: Path) -> dict:
    """``{arm: [result dicts sorted by seed]}`` from the result files ``<results>/*.json``."""
    return common.load_group(results, ARMS)


COLORS = {"sparse": "tab:gray", "grm": "tab:red", "naive": "tab:blue", "oracle": "tab:green"}
STYLES = {"sparse": "-", "grm": "--", "naive": ":", "oracle": "-."}
LABELS = {"sparse": "sparse", "grm": "GRM (PBRS)", "naive": "naive Phi(s')-Phi(s)", "oracle": "oracle (PBRS)"}


def plot(groups: dict, path: Path, threshold: float = 0.8) -> None:
    """One row per group: success vs env steps and vs training episodes per arm
    (:func:`benchmarks.success_curves.plot_success` with this benchmark's arm styles)."""
    plot_success(groups, path, threshold, COLORS, STYLES, LABELS)


def aggregate(cfgs: list[DictConfig], name: str, pilot: bool = False, results_dir: Path | None = None,
              log=print) -> dict:
    """Aggregate the result files of each config's group into ``<results_dir>/<name>.{json,png}``.

    One group: metrics as :func:`summarize` returns them. Several (a pilot over demo counts): the
    first group's ratios at the top level and every group's under ``metrics["groups"][<group>]``.
    Returns the JSON dict written.
    """
    groups, per_group = {}, {}
    for cfg in cfgs:
        gdir = paths(cfg)["results"]
        runs = load_group(gdir)
        if not runs:
            log(f"{gdir.name}: no finished runs, left out")
            continue
        metrics, met = summarize(runs)
        metrics["setting"] = {"group": gdir.name, "demos": int(cfg.bench.demos), "learner": str(cfg.learner._target_),
                              "total_steps": int(cfg.total_steps), "eval_every": int(cfg.eval.every),
                              "eval_episodes": int(cfg.eval.episodes), "episode_steps":
                              int(cfg.env.kwargs.max_episode_steps), "controller": str(cfg.env.kwargs.controller),
                              "threshold": float(cfg.bench.threshold), "grm": cfg.bench.grm,
                              "grm_checkpoints": grm_checkpoints(runs), "results": common.repo_relative(gdir)}
        metrics["runs"] = {a: [{k: v for k, v in r.items() if k != "settings"} for r in rs] for a, rs in runs.items()}
        per_group[gdir.name] = (metrics, met)
        s = cfg
        groups[f"Lift {s.env.kwargs.controller}, {s.learner._target_.rsplit('.', 1)[-1].removesuffix('Config')}, {s.bench.demos} demos, "
               f"{s.total_steps} env steps, eval {s.eval.episodes} episodes every {s.eval.every}"] = runs
        log(f"{gdir.name}: " + ", ".join(f"{a} {len(rs)} runs" for a, rs in runs.items()))
    if not per_group:
        raise SystemExit(f"no finished runs under {', '.join(str(paths(c)['results']) for c in cfgs)}")
    first = next(iter(per_group.values()))
    metrics, met = dict(first[0]), dict(first[1])
    if len(per_group) > 1:  # per group: the sparse/oracle ratio, then each arm's figures; the rest below
        metrics = {}
        for m, _ in per_group.values():
            d = f"demos{m['setting']['demos']}"
            metrics[f"{d}/sparse_over_oracle_episodes_to_80"] = m["sparse_over_oracle_episodes_to_80"]
            for arm, a in m["arms"].items():
                for k in ("start_success", "final_success", "episodes_to_80", "env_steps_to_80"):
                    metrics[f"{d}/{arm}_{k}"] = a[k]
        metrics["groups"] = {g: m for g, (m, _) in per_group.items()}
    metrics["pilot"] = bool(pilot)
    if cfgs[0].bench.get("note"):
        metrics["note"] = str(cfgs[0].bench.note)
    results_dir = Path(results_dir) if results_dir is not None else common.RESULTS
    path = common.write_result(name, metrics, TARGETS, met, results_dir=results_dir)
    plot(groups, results_dir / f"{name}.png", float(cfgs[0].bench.threshold))
    return json.loads(path.read_text())


def _aggregate_cli(argv: list[str]) -> int:
    """``--aggregate [overrides]``: compose the benchmark's config with the overrides (one key may be
    a comma list: one group per value) and aggregate."""
    cfgs = common.compose_groups(NAME, argv)
    out = aggregate(cfgs, str(cfgs[0].bench.name), bool(cfgs[0].bench.pilot))
    m = out["metrics"]
    for g, gm in (m.get("groups") or {"": m}).items():
        for arm, a in gm["arms"].items():
            fs = a["final_success_ci"]
            print(f"{g} {arm:7s}: episodes to 80 % {a['episodes_to_80']} ({a['episodes_to_80_reached']} seeds), "
                  f"env steps to 80 % {a['env_steps_to_80']}, final success {a['final_success']} "
                  f"[{fs[0]:.2f}, {fs[1]:.2f}], {a['env_steps_per_s']:.2f} env steps/s")
    print(f"sparse/GRM episodes to 80 %: {m.get('sparse_over_grm_episodes_to_80')}; met: {out['met']}")
    return 0


@hydra.main(config_path=".", config_name=NAME, version_base="1.3")
def main(cfg: DictConfig) -> None:
    """One (arm, seed) run (see the module docstring)."""
    run_one(cfg)


#: ``bench.grm`` value that stands for the main job's adapted Lift GRM (:func:`main_job_grm`)
MAIN_JOB_GRM = "main"


def main_job_grm(prepare_fn=prepare) -> str:
    """The checkpoint folder of the main job's adapted Lift GRM: ``dopa train``'s defaults (GRM
    pretrained on stack, pick-place-can and door, adapted to Lift from one ``joint_position``
    demonstration; ``jobs/prepare.py``), found under ``data/grm/`` when built before with the same
    settings, otherwise built (about 45 min on 2 CPU cores). ``prepare_fn``: :func:`jobs.prepare.prepare`.

    Raises:
        RuntimeError: a preparation job failed (from ``prepare_fn``).
    """
    cfg = prepare_fn(compose_job("train", [], job="shaping_vs_sparse"))
    return str(cfg.reward.checkpoint)


def resolve_sweep_grm(argv: list[str], find=None) -> list[str]:
    """Before the runs: replace ``bench.grm=main`` in ``argv`` by the main job's GRM checkpoint
    (:func:`main_job_grm`, or ``find``), once, in this process, when an arm of the command needs a
    GRM (``reward=`` lists ``grm`` or ``naive``); the jobs then all read the same folder and none of
    them builds it. ``argv`` unchanged otherwise. The arms are read as Hydra's basic sweeper expands
    them (:func:`jobs.multirun.expand_sweep`: comma lists, ``choice(...)``); a ``reward=`` sweep it
    cannot expand here (``glob(...)``, which needs the config group's options) counts as needing it."""
    key = f"bench.grm={MAIN_JOB_GRM}"
    if key not in argv:
        return list(argv)
    rewards = [a for a in argv if a.startswith("reward=")]
    try:
        arms = {o.split("=", 1)[1] for combo in expand_sweep(rewards) for o in combo}
    except ValueError:  # MalformedSweep is one too; Hydra reports a bad override when the run starts
        arms = {"grm"}
    if not {"grm", "naive"} & arms:
        return list(argv)
    path = (find or main_job_grm)()
    return [f"bench.grm={path}" if a == key else a for a in argv]


def record_sweep_demos(argv: list[str]) -> list[Path]:
    """Before a multirun: record each demo file its jobs will read, once, in this process (the
    jobs would otherwise each record the same file in parallel: safe, as the write is atomic, but
    minutes of wasted CPU per job). ``argv``: the multirun's overrides (``-m`` and ``hydra.*``
    ignored). Returns the demo files."""
    from hydra import compose, initialize_config_dir

    plain = [a for a in argv if a not in ("-m", "--multirun") and not a.startswith(("hydra.", "hydra/"))]
    files = []
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parent), version_base="1.3"):
        for combo in expand_sweep(plain):
            cfg = compose(config_name=NAME, overrides=combo)
            path = offline_file(cfg)
            if path not in files:
                files.append(path)
    return files


if __name__ == "__main__":
    if "--aggregate" in sys.argv[1:]:
        sys.exit(_aggregate_cli([a for a in sys.argv[1:] if a != "--aggregate"]))
    sys.argv[1:] = resolve_sweep_grm(sys.argv[1:])
    if any(a in ("-m", "--multirun") for a in sys.argv[1:]):
        record_sweep_demos(sys.argv[1:])
    main()
