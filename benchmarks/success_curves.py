"""Success-curve helpers of the benchmarks that train from demonstrations and count env steps and
training episodes to a success threshold (``shaping_vs_sparse``, ``expo_vs_rlpd``): the evaluation
recorder, one run's training and result file, the first crossing, bootstrap intervals over seeds, one
arm's summary, the curves' plot."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from basics.atomic import write_json
from benchmarks import common
from control.callbacks import Callback
from control.evaluate import wilson_interval
from jobs.train import setup


class Curve(Callback):
    """Records each evaluation as ``[env_steps, training episodes finished, success_rate, successes,
    episodes, wall s since the start]`` and the seconds spent evaluating. Counts the finished
    training episodes by wrapping ``learner.observe`` (the learner trains unchanged)."""

    def __init__(self, learner):
        self.rows: list[list] = []
        self.episodes = 0
        self.eval_s = 0.0
        self.t0 = self.t_step = time.time()
        observe = learner.observe

        def counting_observe(batch):
            self.episodes += int((batch.terminated | batch.truncated).sum())
            return observe(batch)

        learner.observe = counting_observe

    def on_start(self, run) -> None:
        self.t0 = self.t_step = time.time()

    def on_step(self, run) -> None:
        self.t_step = time.time()

    def on_eval(self, env_steps: int, result: dict) -> None:
        now = time.time()
        self.eval_s += now - self.t_step  # the evaluation ran since the last step (at step 0: with BC)
        self.t_step = now
        k = int(sum(bool(s) for s in result["successes"]))
        self.rows.append([int(env_steps), int(self.episodes), float(result["success_rate"]), k,
                          int(result["episodes"]), round(now - self.t0, 1)])


def first_reach(curve, threshold: float = 0.8) -> tuple[int | None, int | None]:
    """(env steps, training episodes) at the first evaluation with success rate >= ``threshold``;
    (None, None) when none reached it (never the budget)."""
    for row in curve:
        if row[2] >= threshold:
            return int(row[0]), int(row[1])
    return None, None


def train_and_record(tc, p: dict, arm: str, seed: int, threshold: float, settings: dict, log=print) -> dict:
    """Train one (arm, seed) from its ``dopa train`` config ``tc`` (:func:`jobs.train.setup`, then the
    project's loop with a :class:`Curve`) and write its result file ``p["result"]`` atomically.

    Args:
        tc: the run's train config.  p: :func:`benchmarks.common.run_paths` of the run (``group``,
            ``run``, ``result``); an unfinished earlier run folder is removed first.
        threshold: the success rate whose first crossing is "to 80 %".  settings: stored under
            ``settings`` beside the run folder and the resolved config.
    Returns:
        ``{"arm", "seed", "group", "curve", "env_steps_to_80", "episodes_to_80", "final_successes",
        "final_episodes", "train_episodes", "env_steps", "wall_s", "eval_s", "env_steps_per_s",
        "settings", "skipped": False}`` (``skipped`` is not stored).
    """
    if p["run"].exists():  # an unfinished earlier attempt: start over
        shutil.rmtree(p["run"])
    t0 = time.time()
    pieces = setup(tc)
    curve = Curve(pieces.learner)
    out = pieces.train([curve])
    wall = time.time() - t0
    s80, e80 = first_reach(curve.rows, threshold)
    last = curve.rows[-1] if curve.rows else [0, 0, 0.0, 0, 0, 0.0]
    res = {"arm": arm, "seed": seed, "group": p["group"].name, "curve": curve.rows,
           "env_steps_to_80": s80, "episodes_to_80": e80, "final_successes": last[3], "final_episodes": last[4],
           "train_episodes": curve.episodes, "env_steps": int(out["env_steps"]), "wall_s": round(wall, 1),
           "eval_s": round(curve.eval_s, 1),
           "env_steps_per_s": round(out["env_steps"] / max(1e-9, wall - curve.eval_s), 3),
           "settings": {**settings, "run_dir": common.repo_relative(p["run"]),
                        "config": OmegaConf.to_container(tc, resolve=True)}}
    write_json(p["result"], res)
    log(f"{arm} seed {seed}: success {last[3]}/{last[4]} at {res['env_steps']} env steps, env steps to 80 %: "
        f"{s80}, episodes to 80 %: {e80}, {res['env_steps_per_s']} env steps/s, {wall:.0f} s -> {p['result']}")
    return {**res, "skipped": False}


def bootstrap_ci(samples, statistic, seed: int = 0) -> list[float] | None:
    """95 % percentile bootstrap interval of ``statistic(*samples)`` (``scipy.stats.bootstrap``,
    each sample resampled on its own, 9999 resamples); None when a sample has fewer than 2 values."""
    from scipy.stats import bootstrap

    samples = [np.asarray(s, dtype=float) for s in samples]
    if any(len(s) < 2 for s in samples):
        return None
    if all(np.ptp(s) == 0 for s in samples):  # every resample gives the same value
        v = float(statistic(*samples, axis=-1))
        return [v, v]
    res = bootstrap(samples, lambda *a, axis=-1: statistic(*a, axis=axis), vectorized=True, paired=False,
                    confidence_level=0.95, n_resamples=9999, method="percentile", random_state=np.random.default_rng(seed))
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def _ratio(a, b, axis=-1):
    return np.mean(a, axis=axis) / np.mean(b, axis=axis)


def ratio_bound(num: list, num_floor: list, den: list, den_floor: list) -> str | None:
    """A one-sided bound on ``mean(num) / mean(den)`` (per-seed counts to a threshold, paired by
    position) where seeds of one side never reached the threshold: such a seed's count is at least
    its ``*_floor`` (the training episodes its whole run took), so unreached seeds in ``den`` give
    ``"<= x"`` and unreached seeds in ``num`` give ``">= x"``. None when every seed reached it (the
    ratio itself exists), when both sides have unreached seeds (no bound), or a needed floor is
    missing. The ratio stays null either way: this says only how large or small it can be.

    Args: per-seed ``int | None`` lists of one length (``None``: not reached).
    Raises:
        ValueError: the four lists differ in length (``zip(strict=True)``)."""
    miss_num, miss_den = any(v is None for v in num), any(v is None for v in den)
    if miss_num == miss_den or not num:
        return None
    a = [f if v is None else v for v, f in zip(num, num_floor, strict=True)]
    b = [f if v is None else v for v, f in zip(den, den_floor, strict=True)]
    if any(x is None for x in a + b) or np.mean(b) <= 0:
        return None
    return f"{'>=' if miss_num else '<='} {float(np.mean(a) / np.mean(b)):.3g}"


def online_success(curve) -> float | None:
    """Mean success rate over a run's evaluations after env step 0, i.e. the normalised area under
    its online learning curve: defined for every run, reached 80 % or not, and higher for a run that
    learns sooner.

    Args:
        curve: rows ``[env_steps, training_episodes, success_rate, successes, episodes, wall_s]`` as
            :class:`Curve` writes them (success_rate a fraction in [0, 1]).
    Returns:
        a fraction in [0, 1]; None when no evaluation came after env step 0."""
    rates = [float(row[2]) for row in curve if row[0] > 0]
    return float(np.mean(rates)) if rates else None


def summarize_arm(runs: list[dict]) -> dict:
    """One arm's figures over its seeds, from its result dicts (:func:`train_and_record`): per
    ``env_steps_to_80`` / ``episodes_to_80`` the per-seed values, ``"<reached>/<seeds>"``, the mean
    and its bootstrap 95 % interval (both None unless every seed reached the threshold: a missing
    value is never the budget); ``final_success`` pooled over seeds with its 95 % Wilson interval;
    ``start_success`` (the evaluation at env step 0); env steps and training episodes per seed, wall
    s per run, env steps/s. Two figures no unreached seed can void: ``<key>_median`` (an unreached
    seed counts as later than every reached one; None when the median itself is unreached) and
    ``online_success`` (:func:`online_success`, per seed and its mean over seeds)."""
    out: dict = {"seeds": [r["seed"] for r in runs]}
    for key in ("env_steps_to_80", "episodes_to_80"):
        vals = [r[key] for r in runs]
        reached = [v for v in vals if v is not None]
        out[f"{key}_per_seed"] = vals
        out[f"{key}_reached"] = f"{len(reached)}/{len(vals)}"
        full = bool(vals) and len(reached) == len(vals)
        out[key] = float(np.mean(vals)) if full else None
        out[f"{key}_ci"] = bootstrap_ci([vals], _mean) if full else None
        med = float(np.median([np.inf if v is None else v for v in vals])) if vals else None
        out[f"{key}_median"] = med if med is not None and np.isfinite(med) else None
    per = [online_success(r["curve"]) for r in runs]
    out["online_success_per_seed"] = per
    out["online_success"] = float(np.mean(per)) if per and None not in per else None
    k, n = sum(r["final_successes"] for r in runs), sum(r["final_episodes"] for r in runs)
    out["final_success"] = k / n if n else None
    out["final_success_ci"] = list(wilson_interval(k, n)) if n else None
    out["final_successes"], out["final_episodes"] = k, n
    out["start_success"] = (sum(r["curve"][0][3] for r in runs if r["curve"]) /
                            max(1, sum(r["curve"][0][4] for r in runs if r["curve"]))) if runs else None
    out["env_steps"] = [r["env_steps"] for r in runs]
    out["train_episodes"] = [r.get("train_episodes") for r in runs]  # a seed's floor where it did not reach
    out["wall_s_per_run"] = float(np.mean([r["wall_s"] for r in runs])) if runs else None
    out["env_steps_per_s"] = float(np.mean([r["env_steps_per_s"] for r in runs])) if runs else None
    return out


def plot_success(groups: dict, path: Path, threshold: float, colors: dict, styles: dict, labels: dict) -> None:
    """One row per group (``{title: {arm: [result dicts with "curve"]}}``): success vs env steps and vs
    training episodes; per arm the success pooled over seeds at each evaluation (band: 95 % Wilson),
    thin lines = seeds; ``colors``/``styles``/``labels`` per arm. Written atomically to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(groups), 2, figsize=(11, 3.6 * len(groups)), squeeze=False)
    for row, (title, runs) in enumerate(groups.items()):
        for col, xi in enumerate((0, 1)):
            ax = axes[row][col]
            for arm, rs in runs.items():
                n_pts = min(len(r["curve"]) for r in rs)
                if n_pts == 0:
                    continue
                for r in rs:
                    c = np.asarray(r["curve"], dtype=float)[:n_pts]
                    ax.plot(c[:, xi], c[:, 2], color=colors[arm], alpha=0.3, lw=0.8)
                x = np.array([np.mean([r["curve"][i][xi] for r in rs]) for i in range(n_pts)])
                k = np.array([sum(r["curve"][i][3] for r in rs) for i in range(n_pts)])
                n = np.array([sum(r["curve"][i][4] for r in rs) for i in range(n_pts)])
                ci = np.array([wilson_interval(int(a), int(b)) for a, b in zip(k, n, strict=True)])
                ax.plot(x, k / n, color=colors[arm], ls=styles[arm], lw=2, label=f"{labels[arm]} ({len(rs)} seeds)")
                ax.fill_between(x, ci[:, 0], ci[:, 1], color=colors[arm], alpha=0.12)
            ax.axhline(threshold, color="black", ls="--", lw=0.7)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("env steps" if xi == 0 else "training episodes (mean over seeds)")
            ax.set_ylabel("eval success (band: 95 % Wilson)")
            ax.set_title(title, fontsize=8)
            ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    common.save_figure(fig, path, dpi=110)
    plt.close(fig)
