"""GoRL against its own one-stage baseline and Gaussian PPO, on the project's one training loop.

Does alternating latent PPO with decoder refits beat Gaussian PPO with the same networks? Three
arms on the same task, seeds and schedule (``benchmarks/gorl_vs_ppo.yaml``, which is
``configs/train.yaml`` plus ``bench``), all through :func:`jobs.train.setup` /
:func:`control.train.train` as ``dopa train``, with the task's own reward (``reward=dense``):

- ``gorl``: GoRL (``learner=gorl``) with ``bench.refits`` decoder refits; each collection phase
  lasts 2 x num_envs x episode length env steps (the learner's data-size rule, all counted on the
  x-axis) and the encoder budget is split evenly over the ``refits + 1`` stages;
- ``gorl_1stage``: the controlled baseline, the same learner and settings with one stage (identity
  decoder, never refit): Gaussian PPO with tanh squashing and exactly GoRL's networks;
- ``ppo``: the project's ``control/ppo.py`` (its own 64x64 tanh networks and defaults) with GoRL's
  rollout length, epochs, minibatches, learning rate and return normalisation, for reference.

Evaluation: the deterministic policy on ``eval.episodes`` fixed-seed episodes every ``eval.every``
env steps and at step 0; for the ``gorl`` arm also just before each refit (at the start of the
collection phase: encoder and decoder are frozen from there until the refit, so this is the policy
the decoder imitates) and just after it (fresh encoder behind the new decoder), on the same seeds.

One run = one (arm, seed) = one process, a Hydra app:

    .venv/bin/python benchmarks/gorl_vs_ppo.py bench.arm=gorl seed=0                      # one run
    .venv/bin/python benchmarks/gorl_vs_ppo.py -m bench.arm=gorl,gorl_1stage,ppo seed=0,1,2,3,4 \\
        env=cartpole-swingup hydra/launcher=joblib hydra.launcher.n_jobs=2                # a task, all runs
    .venv/bin/python benchmarks/gorl_vs_ppo.py --aggregate env=cartpole-swingup,cheetah-run  # JSON + PNG
    .venv/bin/python benchmarks/gorl_vs_ppo.py -m ... env=hopper-stand env.backend=warp device=cuda num_envs=2048

Each run trains in ``<bench.out_dir>/<group>/<arm>_seed<seed>/`` (not tracked) and writes its result
file ``<bench.record_dir>/<group>/<arm>_seed<seed>.json`` (default
``benchmarks/results/runs/<last part of out_dir>/``; with the default out_dir
``benchmarks/results/runs/gorl_vs_ppo/``, tracked) atomically when it ends; a run whose file exists is
skipped, so a sweep is resumed by rerunning it, in this checkout or a later one. ``<group>`` names what
the arms share (task, a hash of env, learner, schedule, evaluation and ``bench.refits``).

``--aggregate`` (same overrides as the runs; ``bench.arm`` and ``seed`` ignored; one key may be a
comma list, one group per value, e.g. the tasks) writes ``benchmarks/results/<bench.name>.json``
and ``.png``. Per task and arm: final return (last evaluation) and best return (max over the
periodic evaluations), mean over seeds with a 95 % t interval; the ratios gorl / gorl_1stage and
gorl / ppo of the final and best returns with 95 % bootstrap intervals (seeds resampled per arm);
per refit the return just before and after and the drop in % ((before - after) / before, > 0 = a
drop; null when before <= 0); the env steps per second. Targets (issue 18): final-return ratio
gorl / gorl_1stage >= 1.0 on every task, and no post-refit drop above 10 %.
"""

from __future__ import annotations

import copy
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
from benchmarks.ppo_throughput import _ratio_ci  # noqa: E402
from control.callbacks import Callback  # noqa: E402
from control.evaluate import evaluate_learner, mean_interval  # noqa: E402
from jobs.build import build_env  # noqa: E402
from jobs.train import setup  # noqa: E402

NAME = "gorl_vs_ppo"
ARMS = ("gorl", "gorl_1stage", "ppo")
TARGETS = {"gorl_over_gorl_1stage_final": 1.0, "max_refit_drop_pct": 10.0}
#: train-config keys that define a group (every arm shares them); seed and bench.arm do not
GROUP_KEYS = ("env", "learner", "total_steps", "num_envs", "eval", "checkpoint_every", "device")
ONE_STAGE = 1e15  # stage_steps of a single stage: longer than any run
PPO_SHARED = {"num_steps": "num_steps", "update_epochs": "update_epochs", "num_minibatches": "num_minibatches",
              "lr": "learning_rate", "gamma": "gamma", "gae_lambda": "gae_lambda",
              "normalize_returns": "normalize_returns"}


# ---------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------

def arm_of(cfg: DictConfig) -> str:
    """``bench.arm``, checked. Raises ValueError naming the allowed arms."""
    arm = str(cfg.bench.arm)
    if arm not in ARMS:
        raise ValueError(f"unknown bench.arm={arm!r}; the benchmark's arms: {', '.join(ARMS)}")
    return arm


#: learner keys added after results were recorded, with the behaviour the learner had before each
#: existed: at that value the key is left out of the group hash, so earlier groups stay findable
LEARNER_KEYS_ADDED = {"decoder_coupling": "independent"}


def group_of(cfg: DictConfig) -> str:
    """``<task>_<sha256 of GROUP_KEYS and bench.refits, 10 hex>``: the folder every arm shares
    (a :data:`LEARNER_KEYS_ADDED` key at its earlier behaviour is hashed as absent)."""
    legacy = [k for k, v in LEARNER_KEYS_ADDED.items() if cfg.learner.get(k) == v]
    if legacy:
        cfg = copy.deepcopy(cfg)
        with open_dict(cfg):
            for k in legacy:
                cfg.learner.pop(k)
    return f"{cfg.env.name}_{common.settings_digest(cfg, GROUP_KEYS, extra={'refits': int(cfg.bench.refits)})}"


def paths(cfg: DictConfig, arm: str | None = None, seed: int | None = None) -> dict:
    """``group`` and ``results`` folders, and for an (arm, seed) its ``run`` folder and ``result`` file."""
    return common.run_paths(cfg.bench.out_dir, cfg.bench.get("record_dir"), group_of(cfg), arm, seed)


def gorl_schedule(cfg: DictConfig) -> tuple[list[float], int]:
    """(stage_steps, env steps per collection) of the ``gorl`` arm: collections of
    ``max(learner.collect_steps, 2 * num_envs * episode length)`` and the rest of ``total_steps``
    split evenly over ``bench.refits + 1`` encoder stages (the last runs to the end).

    Raises:
        ValueError: ``bench.refits`` < 1, or collections that leave no encoder steps.
    """
    refits = int(cfg.bench.refits)
    if refits < 1:
        raise ValueError(f"bench.refits must be an int >= 1 for bench.arm=gorl, got {cfg.bench.refits!r}")
    episode = int(cfg.env.kwargs.max_episode_steps)
    collect = max(int(cfg.learner.collect_steps), 2 * int(cfg.num_envs) * episode)
    encoder = int(cfg.total_steps) - refits * collect
    if encoder < (refits + 1) * int(cfg.num_envs) * int(cfg.learner.num_steps):
        raise ValueError(f"total_steps={cfg.total_steps} leaves {encoder} encoder steps after {refits} collections of "
                         f"{collect} (2 x num_envs x {episode}-step episodes): fewer than one rollout per stage")
    return [float(encoder // (refits + 1))] * refits + [ONE_STAGE], collect


def train_config(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """The ``dopa train`` config of one run: ``cfg`` without ``bench`` and ``hydra``, the learner set
    for the arm (see the module docstring)."""
    arm = arm_of(cfg)
    tc = common.run_config(cfg, run_dir)
    with open_dict(tc):
        if arm == "gorl":
            tc.learner.stage_steps = gorl_schedule(cfg)[0]
        elif arm == "gorl_1stage":
            tc.learner.stage_steps = [ONE_STAGE]
        else:
            ppo = OmegaConf.load(ROOT / "configs" / "learner" / "ppo.yaml")
            for g, p in PPO_SHARED.items():
                ppo[p] = cfg.learner[g]
            tc.learner = ppo
    OmegaConf.resolve(tc)
    return tc


class RefitEvals(Callback):
    """Evaluates GoRL just before each refit (when the collection phase starts: the policy is frozen
    from there to the refit) and just after it (the first step of the next stage), on the periodic
    evaluation's seeds; records ``{"stage", "env_steps_before", "before", "env_steps_after", "after",
    "drop_pct"}`` per refit, with the learner's refit metrics when it logs them (``refit_action_mean_err``,
    ``refit_action_std_ratio``, ``refit_det_action_err``, ``decoder_val_loss``, ``decoder_epochs``,
    ``decoder_fit_seconds``), and the periodic curve ``[env_steps, return_mean, lo, hi]``."""

    def __init__(self, cfg: DictConfig):
        self.cfg, self.env = cfg, None
        self.refits: list[dict] = []
        self.curve: list[list[float]] = []
        self.eval_s = 0.0
        self._phase, self._stage = "encoder", 0

    def _eval(self, run) -> float:
        t0 = time.time()
        if self.env is None:
            self.env = build_env(self.cfg.env, num_envs=int(self.cfg.eval.episodes), seed=int(self.cfg.eval.seed),
                                 device=self.cfg.get("device", "cpu"))
        res = evaluate_learner(self.env, run.learner, int(self.cfg.eval.seed))
        self.eval_s += time.time() - t0
        return float(res["return_mean"])

    def on_step(self, run) -> None:
        L = run.learner
        phase, stage = getattr(L, "phase", None), getattr(L, "stage", 0)
        if phase is None:
            return
        if phase == "collect" and self._phase == "encoder":
            self.refits.append({"stage": stage, "env_steps_before": run.env_steps, "before": self._eval(run)})
        if stage != self._stage and self.refits:
            r = self.refits[-1]
            r.update({"env_steps_after": run.env_steps, "after": self._eval(run)})
            hist = getattr(L, "history", None) or [{}]  # the refit's fit and fidelity metrics
            r.update({k.removeprefix("gorl/"): float(v) for k, v in hist[-1].items()
                      if k in ("gorl/refit_action_mean_err", "gorl/refit_action_std_ratio", "gorl/refit_det_action_err",
                               "gorl/decoder_val_loss", "gorl/decoder_epochs", "gorl/decoder_fit_seconds")})
            r["drop_pct"] = 100.0 * (r["before"] - r["after"]) / r["before"] if r["before"] > 0 else None
        self._phase, self._stage = phase, stage

    def on_eval(self, env_steps: int, result: dict) -> None:
        self.curve.append([int(env_steps), float(result["return_mean"]), *map(float, result["return_ci"])])

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None


def run_one(cfg: DictConfig, log=print) -> dict:
    """Train one (arm, seed) and write its result file; when the file exists, return it untouched.

    Returns:
        ``{"arm", "seed", "group", "curve", "refits", "final_return", "best_return", "env_steps",
        "wall_s", "eval_s", "env_steps_per_s", "settings", "skipped"}`` (``skipped`` not stored).
    """
    arm, seed = arm_of(cfg), int(cfg.seed)
    p = paths(cfg, arm, seed)
    if p["result"].exists():
        log(f"{arm} seed {seed}: done already ({p['result']}), skipped")
        return {**json.loads(p["result"].read_text()), "skipped": True}
    tc = train_config(cfg, p["run"])
    if p["run"].exists():  # an unfinished earlier attempt: start over
        shutil.rmtree(p["run"])
    t0 = time.time()
    pieces = setup(tc)
    rec = RefitEvals(tc)
    out = pieces.train([rec])
    wall = time.time() - t0
    periodic = [c[1] for c in rec.curve]
    res = {"arm": arm, "seed": seed, "group": p["group"].name, "curve": rec.curve, "refits": rec.refits,
           "final_return": periodic[-1] if periodic else None, "best_return": max(periodic) if periodic else None,
           "env_steps": int(out["env_steps"]), "wall_s": round(wall, 1), "eval_s": round(rec.eval_s, 1),
           "env_steps_per_s": round(out["env_steps"] / max(1e-9, wall - rec.eval_s), 1),
           "settings": {"run_dir": common.repo_relative(p["run"]), "config": OmegaConf.to_container(tc, resolve=True)}}
    write_json(p["result"], res)
    drops = ", ".join(f"{r['before']:.0f}->{r.get('after', float('nan')):.0f}" for r in rec.refits)
    log(f"{arm} seed {seed}: final {res['final_return']:.1f}, best {res['best_return']:.1f}, refits [{drops}], "
        f"{res['env_steps_per_s']} env steps/s, {wall:.0f} s -> {p['result']}")
    return {**res, "skipped": False}


# ---------------------------------------------------------------------------------------------
# Aggregate
# ---------------------------------------------------------------------------------------------

def summarize(runs: dict) -> tuple[dict, dict]:
    """One task's figures from ``{arm: [result dicts]}`` (see the module docstring)."""
    arms: dict = {}
    for arm, rs in runs.items():
        fin, best = [r["final_return"] for r in rs], [r["best_return"] for r in rs]
        a = {"seeds": [r["seed"] for r in rs], "final_per_seed": fin, "best_per_seed": best}
        for key, vals in (("final", fin), ("best", best)):
            m, lo, hi = mean_interval(vals)
            a[key], a[f"{key}_ci"] = float(m), ([float(lo), float(hi)] if len(vals) > 1 else None)
        a["env_steps_per_s"] = float(np.mean([r["env_steps_per_s"] for r in rs]))
        refits = [r["refits"] for r in rs if r["refits"]]
        if refits:
            a["refits_per_seed"] = refits
            drops = [f["drop_pct"] for rf in refits for f in rf if f.get("drop_pct") is not None]
            a["max_refit_drop_pct"] = float(max(drops)) if drops else None
            a["mean_refit_drop_pct"] = float(np.mean(drops)) if drops else None
            for k in ("refit_action_mean_err", "refit_action_std_ratio", "refit_det_action_err"):
                vals = [f[k] for rf in refits for f in rf if f.get(k) is not None]
                if vals:  # runs of a learner that logs its refit fidelity
                    a[f"mean_{k}"] = float(np.mean(vals))
        arms[arm] = a
    metrics: dict = {}
    g = arms.get("gorl")
    for other in ("gorl_1stage", "ppo"):
        o = arms.get(other)
        for key in ("final", "best"):
            ok = g is not None and o is not None and o[key] > 0
            metrics[f"gorl_over_{other}_{key}"] = g[key] / o[key] if ok else None
            metrics[f"gorl_over_{other}_{key}_ci"] = (_ratio_ci(g[f"{key}_per_seed"], o[f"{key}_per_seed"])
                                                      if ok and min(o[f"{key}_per_seed"]) > 0 else None)
    metrics["max_refit_drop_pct"] = g.get("max_refit_drop_pct") if g else None
    for arm, a in arms.items():
        metrics[f"{arm}_final"], metrics[f"{arm}_best"] = a["final"], a["best"]
    metrics["arms"] = arms
    r = metrics["gorl_over_gorl_1stage_final"]
    drop = metrics["max_refit_drop_pct"]
    met = {"gorl_over_gorl_1stage_final": r is not None and r >= TARGETS["gorl_over_gorl_1stage_final"],
           "max_refit_drop_pct": drop is not None and drop <= TARGETS["max_refit_drop_pct"]}
    return metrics, met


def load_group(results: Path) -> dict:
    """``{arm: [result dicts sorted by seed]}`` from the result files ``<results>/*.json``."""
    return common.load_group(results, ARMS)


COLORS = {"gorl": "tab:blue", "gorl_1stage": "tab:orange", "ppo": "tab:gray"}
LABELS = {"gorl": "GoRL", "gorl_1stage": "GoRL, one stage (Gaussian PPO, same networks)", "ppo": "control/ppo.py"}


def plot(groups: dict, path: Path) -> None:
    """One panel per task: eval return vs env steps (collection included), mean over seeds with its
    95 % t band, thin lines = seeds; GoRL's returns just before (o) and after (x) each refit."""
    import matplotlib  # lazy: plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4), squeeze=False)
    for ax, (title, runs) in zip(axes[0], groups.items(), strict=True):
        for arm, rs in runs.items():
            n = min(len(r["curve"]) for r in rs)
            x = np.array([rs[0]["curve"][i][0] for i in range(n)])
            y = np.array([[r["curve"][i][1] for i in range(n)] for r in rs])
            for row in y:
                ax.plot(x, row, color=COLORS[arm], alpha=0.25, lw=0.8)
            band = np.array([mean_interval(y[:, i]) for i in range(n)])
            ax.plot(x, band[:, 0], color=COLORS[arm], lw=2, label=f"{LABELS[arm]} ({len(rs)} seeds)")
            if len(rs) > 1:
                ax.fill_between(x, band[:, 1], band[:, 2], color=COLORS[arm], alpha=0.15)
            for r in rs:
                for f in r["refits"]:
                    ax.scatter([f["env_steps_before"]], [f["before"]], marker="o", s=18, color=COLORS[arm])
                    if "after" in f:
                        ax.scatter([f["env_steps_after"]], [f["after"]], marker="x", s=24, color=COLORS[arm])
                        ax.axvline(f["env_steps_after"], color=COLORS[arm], ls=":", lw=0.6)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("env steps (decoder-data collection included)")
        ax.set_ylabel("eval return (deterministic)")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    common.save_figure(fig, path, dpi=110)
    plt.close(fig)


def aggregate(cfgs: list[DictConfig], name: str, pilot: bool = False, results_dir: Path | None = None,
              log=print) -> dict:
    """Aggregate each config's group (one per task) into ``<results_dir>/<name>.{json,png}``: per
    task ``<task>/<metric>`` at the top (targets and ``met`` per task too) and every figure under
    ``metrics["tasks"][<task>]``. Returns the JSON dict written."""
    groups, per_task, targets, met_all = {}, {}, {}, {}
    for cfg in cfgs:
        gdir = paths(cfg)["results"]
        runs = load_group(gdir)
        if not runs:
            log(f"{gdir.name}: no finished runs, left out")
            continue
        m, met = summarize(runs)
        task = str(cfg.env.name)
        sched = gorl_schedule(cfg)
        m["setting"] = {"group": gdir.name, "task": task, "total_steps": int(cfg.total_steps),
                        "num_envs": int(cfg.num_envs), "episode_steps": int(cfg.env.kwargs.max_episode_steps),
                        "refits": int(cfg.bench.refits), "gorl_stage_steps": sched[0][:-1],
                        "collect_steps_per_refit": sched[1], "eval_every": int(cfg.eval.every),
                        "eval_episodes": int(cfg.eval.episodes), "decoder": str(cfg.learner.decoder),
                        "results": common.repo_relative(gdir)}
        m["runs"] = {a: [{k: v for k, v in r.items() if k != "settings"} for r in rs] for a, rs in runs.items()}
        per_task[task] = m
        for k, v in met.items():
            targets[f"{task}/{k}"], met_all[f"{task}/{k}"] = TARGETS[k], v
        groups[f"{task}: {cfg.total_steps} env steps, {cfg.num_envs} envs, {cfg.bench.refits} refits, eval "
               f"{cfg.eval.episodes} episodes every {cfg.eval.every}"] = runs
        log(f"{gdir.name}: " + ", ".join(f"{a} {len(rs)} runs" for a, rs in runs.items()))
    if not per_task:
        raise SystemExit(f"no finished runs under {', '.join(str(paths(c)['results']) for c in cfgs)}")
    metrics: dict = {}
    for task, m in per_task.items():
        for k in ("gorl_over_gorl_1stage_final", "gorl_over_gorl_1stage_final_ci", "max_refit_drop_pct",
                  "gorl_final", "gorl_1stage_final", "ppo_final", "gorl_over_ppo_final"):
            if k in m:
                metrics[f"{task}/{k}"] = m[k]
    metrics["tasks"] = per_task
    metrics["pilot"] = bool(pilot)
    if cfgs[0].bench.get("note"):
        metrics["note"] = str(cfgs[0].bench.note)
    results_dir = Path(results_dir) if results_dir is not None else common.RESULTS
    path = common.write_result(name, metrics, targets, met_all, results_dir=results_dir)
    plot(groups, results_dir / f"{name}.png")
    return json.loads(path.read_text())


def _aggregate_cli(argv: list[str]) -> int:
    """``--aggregate [overrides]``: compose the benchmark's config with the overrides (one key may be
    a comma list: one group per value, e.g. ``env=cartpole-swingup,cheetah-run``) and aggregate."""
    cfgs = common.compose_groups(NAME, argv)
    out = aggregate(cfgs, str(cfgs[0].bench.name), bool(cfgs[0].bench.pilot))
    for task, m in out["metrics"]["tasks"].items():
        for arm, a in m["arms"].items():
            print(f"{task} {arm:12s}: final {a['final']:.1f} {a['final_ci']}, best {a['best']:.1f} {a['best_ci']}, "
                  f"max refit drop {a.get('max_refit_drop_pct')} %, {a['env_steps_per_s']:.0f} env steps/s")
        print(f"{task} gorl / gorl_1stage final: {m['gorl_over_gorl_1stage_final']} "
              f"{m['gorl_over_gorl_1stage_final_ci']}")
    print(f"met: {out['met']}")
    return 0


@hydra.main(config_path=".", config_name=NAME, version_base="1.3")
def main(cfg: DictConfig) -> None:
    """One (arm, seed) run (see the module docstring)."""
    run_one(cfg)


if __name__ == "__main__":
    if "--aggregate" in sys.argv[1:]:
        sys.exit(_aggregate_cli([a for a in sys.argv[1:] if a != "--aggregate"]))
    main()
