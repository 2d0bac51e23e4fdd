"""How faithfully does a GoRL decoder refit reproduce the frozen policy? Refit variants side by side.

The GoRL comparison (``benchmarks/gorl_vs_ppo.py``) measures the return just before and after each
refit; this probe isolates the refit itself. Per seed it trains GoRL's stage 0 (Gaussian PPO, the
learner's own loop, the settings of ``gorl_vs_ppo.yaml``) for ``fidelity.stage_steps`` env steps
plus the learner's collection phase, stops just before the refit, and then runs the learner's own
refit (:meth:`control.gorl.GoRL._refit_and_next_stage`) once per variant on copies of that same
snapshot (same data, same frozen policy). Each variant sets learner attributes
(``decoder_coupling``, ``decoder_targets_per_state``, ``decoder_epochs``, ...).

Reported per variant (mean over seeds with 95 % Student-t intervals): the learner's refit metrics
(``refit_action_mean_err``, ``refit_action_std_ratio``, ``refit_det_action_err``; actions in
[-1, 1]), the fit's seconds, and the evaluation return of the new stage's first policy against the
frozen one, deterministic (what ``gorl_vs_ppo`` reports) and stochastic (the policy PPO continues
from), on ``fidelity.eval_episodes`` fixed seeds, with the drop in %. Target: the default variant's
largest deterministic drop over seeds <= 10 % (the comparison's refit target, here on one refit per
seed; the comparison's ``max_refit_drop_pct`` over all its refits is the one that counts).

Each seed trains in ``<fidelity.out_dir>/<group>/refit_seed<seed>/`` (not tracked) and writes
``<fidelity.record_dir>/<group>/refit_seed<seed>.json`` (default
``benchmarks/results/runs/<last part of out_dir>/``; with the default out_dir
``benchmarks/results/runs/gorl_refit_fidelity/``, tracked) atomically (skipped on a rerun); seeds run in parallel through Hydra multirun::

    python benchmarks/gorl_refit_fidelity.py -m seed=0,1,2,3,4 hydra/launcher=joblib hydra.launcher.n_jobs=2
    python benchmarks/gorl_refit_fidelity.py --aggregate     # -> benchmarks/results/gorl_refit_fidelity.{json,png}
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
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf, open_dict  # noqa: E402

from basics.atomic import write_json  # noqa: E402
from benchmarks import common  # noqa: E402
from control.evaluate import evaluate, evaluate_learner, mean_interval  # noqa: E402
from control.gorl import GoRLConfig  # noqa: E402
from jobs.build import build_env  # noqa: E402
from jobs.train import setup  # noqa: E402

NAME = "gorl_refit_fidelity"
ONE_STAGE = 1e15
#: learner attributes a variant may set, and the GoRL attribute each maps to
VARIANT_KEYS = {"decoder_coupling": "decoder_coupling", "decoder_targets_per_state": "targets_per_state",
                "decoder_epochs": "epochs", "decoder_batch_size": "batch_size", "decoder_lr": "lr",
                "decoder_patience": "patience", "decoder_noise_samples": "noise_samples"}
FIT_KEYS = {"decoder_epochs", "decoder_batch_size", "decoder_lr", "decoder_patience", "decoder_noise_samples"}
METRICS = ("refit_action_mean_err", "refit_action_std_ratio", "refit_det_action_err", "fit_s", "det_return",
           "det_drop_pct", "stoch_return", "stoch_drop_pct")
TARGETS = {"default_max_det_drop_pct": 10.0}
GROUP_KEYS = ("env", "learner", "num_envs", "device")


class _Snapshot(Exception):
    """Raised inside the training loop once the learner is copied just before its refit."""


def group_of(cfg: DictConfig) -> str:
    """``<task>_<10 hex of the learner/env settings, fidelity.stage_steps and the variants>``: a
    seed's file holds every variant, so other variants make another group."""
    extra = {"stage_steps": int(cfg.fidelity.stage_steps), "variants": common.plain(cfg.fidelity.variants),
             "eval_episodes": int(cfg.fidelity.eval_episodes)}
    return f"{cfg.env.name}_{common.settings_digest(cfg, GROUP_KEYS, extra=extra)}"


def check_variants(variants) -> dict:
    """``fidelity.variants`` as ``{name: {key: value}}``; ``fidelity.default`` must be one of them.

    Raises:
        ValueError: an empty mapping, a key a variant may not set (the allowed ones listed), or a
            value :class:`control.gorl.GoRLConfig` refuses (named there).
    """
    v = OmegaConf.to_container(variants, resolve=True) if OmegaConf.is_config(variants) else dict(variants or {})
    if not v:
        raise ValueError("fidelity.variants must name at least one variant")
    for name, kv in v.items():
        bad = sorted(set(kv or {}) - set(VARIANT_KEYS))
        if bad:
            raise ValueError(f"fidelity.variants.{name}: unknown keys {bad}; allowed: {', '.join(VARIANT_KEYS)}")
        try:  # the learner's own checks on the values (set on a built learner, they would skip them)
            GoRLConfig(**(kv or {}))
        except ValueError as e:
            raise ValueError(f"fidelity.variants.{name}: {e}") from None
    return v


def stochastic_return(env, learner, seed: int, noise_seed: int = 123) -> float:
    """Mean return of the learner's stochastic policy a = tanh(g(s, mu + sigma n)) on the env's
    fixed seeds, n from its own generator (the learner's RNG streams untouched)."""
    g = torch.Generator().manual_seed(noise_seed)

    @torch.no_grad()
    def fn(obs):
        s = learner._check_obs(obs["state"])
        mu, sigma = learner.encoder(learner._norm(s))
        return torch.tanh(learner.decoder(s, mu + sigma * torch.randn(mu.shape, generator=g)))

    with torch.random.fork_rng(devices=[]):
        return float(evaluate(env, fn, int(seed))["return_mean"])


def snapshot(cfg: DictConfig, run_dir: Path):
    """Train stage 0 and its collection; return (a copy of the learner just before the refit, the
    train config)."""
    tc = copy.deepcopy(cfg)
    with open_dict(tc):
        for k in ("fidelity", "bench", "hydra"):
            tc.pop(k, None)
        tc.run_dir = str(run_dir)
        tc.learner.stage_steps = [float(cfg.fidelity.stage_steps), ONE_STAGE]
        tc.eval.every = 10 ** 15
        tc.eval.at_start = False
        tc.checkpoint_every = 10 ** 15
    OmegaConf.resolve(tc)
    pieces = setup(tc)
    learner, taken = pieces.learner, {}

    def take():
        c = copy.deepcopy(learner)
        c.__dict__.pop("_refit_and_next_stage", None)  # the copy keeps the class's real refit
        taken["learner"] = c
        raise _Snapshot()

    learner._refit_and_next_stage = take
    try:
        pieces.train([])
    except _Snapshot:  # the loop closed its envs on the way out
        pass
    if "learner" not in taken:
        raise RuntimeError(f"the run ended before its refit: fidelity.stage_steps={cfg.fidelity.stage_steps} "
                           f"leaves no collection within total_steps={cfg.total_steps}")
    return taken["learner"], tc


def run_one(cfg: DictConfig, log=print) -> dict:
    """One seed: snapshot, then every variant's refit and evaluation; writes the seed's result file
    (returns it untouched when it exists)."""
    variants = check_variants(cfg.fidelity.variants)
    if str(cfg.fidelity.default) not in variants:
        raise ValueError(f"fidelity.default={cfg.fidelity.default!r} is not a variant; variants: {', '.join(variants)}")
    seed = int(cfg.seed)
    p = common.run_paths(cfg.fidelity.out_dir, cfg.fidelity.get("record_dir"), group_of(cfg), "refit", seed)
    if p["result"].exists():
        log(f"seed {seed}: done already ({p['result']}), skipped")
        return json.loads(p["result"].read_text())
    if p["run"].exists():
        shutil.rmtree(p["run"])
    t0 = time.time()
    frozen, tc = snapshot(cfg, p["run"])
    env = build_env(tc.env, num_envs=int(cfg.fidelity.eval_episodes), seed=int(cfg.eval.seed), device=cfg.get("device", "cpu"))
    try:
        eseed = int(cfg.eval.seed)
        before = {"det_return": float(evaluate_learner(env, frozen, eseed)["return_mean"]),
                  "stoch_return": stochastic_return(env, frozen, eseed)}
        log(f"seed {seed}: frozen policy at {frozen.env_steps} env steps: det {before['det_return']:.1f}, "
            f"stoch {before['stoch_return']:.1f}")
        out = {}
        for name, kv in variants.items():
            L = copy.deepcopy(frozen)
            for k, v in (kv or {}).items():
                if k in FIT_KEYS:
                    L.decoder_fit[VARIANT_KEYS[k]] = v
                else:
                    setattr(L, VARIANT_KEYS[k], v)
            t1 = time.time()
            m = L._refit_and_next_stage()
            r = {k.removeprefix("gorl/"): float(v) for k, v in m.items()}
            r["fit_s"] = round(time.time() - t1, 1)
            r["det_return"] = float(evaluate_learner(env, L, eseed)["return_mean"])
            r["stoch_return"] = stochastic_return(env, L, eseed)
            for k in ("det", "stoch"):
                b = before[f"{k}_return"]
                r[f"{k}_drop_pct"] = 100.0 * (b - r[f"{k}_return"]) / b if b > 0 else None
            out[name] = {"settings": kv, **r}
            log(f"seed {seed} {name}: action err {r['refit_action_mean_err']:.3f}, std ratio "
                f"{r['refit_action_std_ratio']:.3f}, det err {r['refit_det_action_err']:.3f}; det "
                f"{before['det_return']:.0f} -> {r['det_return']:.0f}, stoch {before['stoch_return']:.0f} -> "
                f"{r['stoch_return']:.0f} ({r['fit_s']:.0f} s)")
    finally:
        env.close()
    res = {"seed": seed, "group": p["group"].name, "env_steps": int(frozen.env_steps), "before": before,
           "variants": out, "wall_s": round(time.time() - t0, 1),
           "settings": {"config": OmegaConf.to_container(tc, resolve=True),
                        "variants": variants, "default": str(cfg.fidelity.default)}}
    write_json(p["result"], res)
    return res


def summarize(runs: list[dict], default: str) -> tuple[dict, dict]:
    """Per variant, each metric's mean and 95 % interval over seeds; the target's ``met``."""
    names = list(runs[0]["variants"])
    per = {}
    for n in names:
        per[n] = {"settings": runs[0]["variants"][n]["settings"], "seeds": len(runs)}
        for k in METRICS:
            vals = [r["variants"][n][k] for r in runs if r["variants"][n].get(k) is not None]
            if vals:
                m, lo, hi = mean_interval(vals)
                per[n][k], per[n][f"{k}_ci"], per[n][f"{k}_per_seed"] = m, [lo, hi], vals
    before = {k: [r["before"][k] for r in runs] for k in ("det_return", "stoch_return")}
    for n in names:
        drops = per[n].get("det_drop_pct_per_seed")
        per[n]["max_det_drop_pct"] = max(drops) if drops else None
    metrics = {"default_max_det_drop_pct": per[default]["max_det_drop_pct"],
               "default_action_mean_err": per[default].get("refit_action_mean_err"),
               "default_action_std_ratio": per[default].get("refit_action_std_ratio"),
               "variants": per, "before": before, "seeds": [r["seed"] for r in runs], "default_variant": default}
    d = metrics["default_max_det_drop_pct"]
    return metrics, {"default_max_det_drop_pct": d is not None and d <= TARGETS["default_max_det_drop_pct"]}


def plot(metrics: dict, path: Path) -> None:
    """Two panels per variant: action error (mean, deterministic) and the return drop (det, stoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = metrics["variants"]
    names = list(per)
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, keys, label in ((axes[0], ("refit_action_mean_err", "refit_det_action_err"), "action error ([-1, 1] units)"),
                            (axes[1], ("det_drop_pct", "stoch_drop_pct"), "return drop at the refit (%)")):
        for j, k in enumerate(keys):
            m = [per[n].get(k, np.nan) for n in names]
            ci = [per[n].get(f"{k}_ci", [np.nan, np.nan]) for n in names]
            err = np.abs(np.array(ci).T - np.array(m))
            ax.bar(x + (j - 0.5) * 0.38, m, 0.38, yerr=err, capsize=3, label=k)
            for i, n in enumerate(names):
                ax.scatter(np.full(len(per[n].get(f"{k}_per_seed", [])), x[i] + (j - 0.5) * 0.38),
                           per[n].get(f"{k}_per_seed", []), color="k", s=8, zorder=3)
        ax.set_xticks(x, names, rotation=20, fontsize=8)
        ax.set_ylabel(label)
        ax.axhline(0, color="grey", lw=0.5)
        ax.legend(fontsize=7)
    axes[1].axhline(TARGETS["default_max_det_drop_pct"], color="r", ls="--", lw=0.8)
    fig.suptitle(f"GoRL refit fidelity, {len(metrics['seeds'])} seeds (95 % t intervals; dots: seeds)", fontsize=9)
    fig.tight_layout()
    common.save_figure(fig, path, dpi=110)
    plt.close(fig)


def aggregate(cfg: DictConfig, results_dir: Path | None = None, log=print) -> dict:
    """``<results_dir>/<fidelity.name>.{json,png}`` from the group's finished seeds."""
    g = common.run_paths(cfg.fidelity.out_dir, cfg.fidelity.get("record_dir"), group_of(cfg))
    runs = [json.loads(f.read_text()) for f in sorted(g["results"].glob("refit_seed*.json"))] if g["results"].exists() else []
    if not runs:
        raise SystemExit(f"no finished seeds under {g['results']}")
    runs.sort(key=lambda r: r["seed"])
    default = runs[0]["settings"]["default"]
    metrics, met = summarize(runs, default)
    metrics["setting"] = {"group": g["group"].name, "task": str(cfg.env.name), "stage_steps": int(cfg.fidelity.stage_steps),
                          "env_steps_at_refit": [r["env_steps"] for r in runs],
                          "eval_episodes": int(cfg.fidelity.eval_episodes), "results": common.repo_relative(g["results"])}
    results_dir = Path(results_dir) if results_dir is not None else common.RESULTS
    path = common.write_result(str(cfg.fidelity.name), metrics, TARGETS, met, results_dir=results_dir)
    plot(metrics, results_dir / f"{cfg.fidelity.name}.png")
    for n, v in metrics["variants"].items():
        log(f"{n:18s}: action err {v['refit_action_mean_err']:.3f}, std ratio {v['refit_action_std_ratio']:.3f}, "
            f"det err {v['refit_det_action_err']:.3f}, det drop {v.get('det_drop_pct', float('nan')):.1f} % "
            f"(max {v['max_det_drop_pct']:.1f}), stoch drop {v.get('stoch_drop_pct', float('nan')):.1f} %, fit {v['fit_s']:.0f} s")
    log(f"met: {met}")
    return json.loads(path.read_text())


@hydra.main(config_path=".", config_name=NAME, version_base="1.3")
def main(cfg: DictConfig) -> None:
    """One seed (see the module docstring)."""
    run_one(cfg)


if __name__ == "__main__":
    if "--aggregate" in sys.argv[1:]:
        cfgs = common.compose_groups(NAME, [a for a in sys.argv[1:] if a != "--aggregate"])
        aggregate(cfgs[0])
        sys.exit(0)
    main()
