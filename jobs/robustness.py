"""``dopa robustness checkpoint=<dir>``: a policy's return over grids of physics scales, QARL's
robustness heatmaps (Reddi et al., ICLR 2024: 11 x 11 mass x friction grids, the adversary off).

For every cell of every grid (``configs/robustness.yaml``: ``grids``, each two of ``mass``,
``friction``, ``gain`` and their values, ``scales`` by default: 0.5 ... 1.5) the env's scales are
set (:meth:`sim.vector.BatchedEnv.set_scales`: every body's mass and inertia, every geom's
friction, every actuator's gain, relative to nominal) and ``episodes`` episodes run on the same
fixed seeds (:func:`control.evaluate.evaluate`, deterministic policy). Also the nominal return
(every scale 1) and, with ``adversary_checkpoint=<QARL checkpoint>``, the return at nominal scales against
that run's trained adversary (its deterministic force, alpha = 0).

Writes ``<out>/robustness.json`` (per grid: the axes, the mean return per cell [ny, nx] with its
95 % t interval, the grid mean, the worst cell; the nominal and adversary returns) and one heatmap
``<out>/<grid>.png`` per grid (matplotlib ``imshow``, coolwarm, the grid mean in the title, as the
authors' ``plot_results.py``). Prints the grid mean, the worst cell and the nominal return.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from basics.atomic import atomic_file, write_json
from control.checkpoint import CheckpointError, check_env_compatible, load_checkpoint, load_networks
from control.evaluate import deploy_policy, evaluate, learner_policy, mean_interval
from control.export import load_policy
from jobs.build import build_env, build_learner
from sim.limits import SCALE_RANGE

PARAMS = ("mass", "friction", "gain")


def check_grids(grids, scales) -> dict[str, dict]:
    """The grids of the config as ``{name: {"x", "y", "x_values", "y_values"}}`` (values as float lists).

    Raises:
        ValueError: no grid, an unknown or repeated parameter, an empty value list, a value that is
            not a finite number in the allowed scale range (one line naming the key).
    """
    grids = OmegaConf.to_container(grids, resolve=True) if OmegaConf.is_config(grids) else grids
    if not isinstance(grids, dict) or not grids:
        raise ValueError(f"grids must be a non-empty mapping name: {{x: mass, y: friction}}, got {grids!r}")
    out = {}
    lo, hi = SCALE_RANGE
    for name, g in grids.items():
        if not isinstance(g, dict):
            raise ValueError(f"grids.{name} must be {{x: <param>, y: <param>}}, got {g!r}")
        axes = {}
        for ax in ("x", "y"):
            p = g.get(ax)
            if p not in PARAMS:
                raise ValueError(f"grids.{name}.{ax} must be one of {', '.join(PARAMS)}, got {p!r}")
            vals = g.get(f"{ax}_values")
            key = f"grids.{name}.{ax}_values" if vals is not None else "scales"
            vals = scales if vals is None else vals
            vals = OmegaConf.to_container(vals, resolve=True) if OmegaConf.is_config(vals) else vals
            if not isinstance(vals, (list, tuple)) or not vals:
                raise ValueError(f"{key} must be a non-empty list of scales in [{lo:g}, {hi:g}], got {vals!r}")
            for v in vals:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
                    raise ValueError(f"{key} holds {v!r}: each scale must be a finite number in [{lo:g}, {hi:g}] "
                                     "(relative to nominal, > 0)")
            axes[ax], axes[f"{ax}_values"] = p, [float(v) for v in vals]
        if axes["x"] == axes["y"]:
            raise ValueError(f"grids.{name}: x and y must be different parameters, got {axes['x']!r} twice")
        out[str(name)] = axes
    return out


def _learner(ckpt, env):
    """The checkpoint's learner rebuilt from its stored config (QARL with its adversary), weights loaded."""
    stored = OmegaConf.create(ckpt.config)
    learner = build_learner(stored.learner, env, seed=int(stored.seed), device="cpu", adversary=stored.get("adversary"))
    load_networks(learner, ckpt.networks(), str(ckpt.path))
    return learner


def _cell(env, fn, seed: int, scales: dict) -> dict:
    env.set_scales(**{p: scales.get(p, 1.0) for p in PARAMS})
    r = evaluate(env, fn, int(seed))
    return {"return_mean": r["return_mean"], "return_ci": r["return_ci"], "returns": r["returns"]}


def evaluate_grid(env, fn, seed: int, grid: dict, log=print) -> dict:
    """Return per cell of one grid; rows follow ``y_values``, columns ``x_values``.

    Returns:
        ``{"x", "y", "x_values", "y_values", "return_mean": [ny][nx], "return_ci": [ny][nx][2],
        "grid_mean", "worst": {"return", x, y}}``.
    """
    xs, ys = grid["x_values"], grid["y_values"]
    mean = np.zeros((len(ys), len(xs)))
    ci = [[None] * len(xs) for _ in ys]
    for i, yv in enumerate(ys):
        for j, xv in enumerate(xs):
            c = _cell(env, fn, seed, {grid["x"]: xv, grid["y"]: yv})
            mean[i, j], ci[i][j] = c["return_mean"], c["return_ci"]
        log(f"  {grid['y']} {yv:g}: " + " ".join(f"{v:.1f}" for v in mean[i]))
    env.restore_nominal()
    wi, wj = np.unravel_index(int(np.argmin(mean)), mean.shape)
    return {**grid, "return_mean": mean.tolist(), "return_ci": ci, "grid_mean": float(mean.mean()),
            "worst": {"return": float(mean[wi, wj]), grid["x"]: xs[wj], grid["y"]: ys[wi]}}


def plot_grid(grid: dict, path: Path, title: str, vmin: float | None = None, vmax: float | None = None) -> None:
    """Heatmap of one grid's mean returns (coolwarm, cell values written in), saved atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(grid["return_mean"])
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * m.shape[1], 0.8 + 0.5 * m.shape[0]))
    im = ax.imshow(m, cmap="coolwarm", origin="lower", vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(m.shape[1]), [f"{v:g}" for v in grid["x_values"]], fontsize=7)
    ax.set_yticks(range(m.shape[0]), [f"{v:g}" for v in grid["y_values"]], fontsize=7)
    ax.set_xlabel(f"{grid['x']} scale")
    ax.set_ylabel(f"{grid['y']} scale")
    if m.size <= 169:
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, label="return")
    ax.set_title(f"{title}\ngrid mean {grid['grid_mean']:.1f}, worst {grid['worst']['return']:.1f}", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def adversary_return(env, protagonist_fn, adversary_ckpt, seed: int) -> dict:
    """Return at nominal scales with a trained QARL adversary pushing (deterministic, alpha = its eval_alpha).

    Raises:
        ValueError: the checkpoint's learner has no adversary.
    """
    qarl = _learner(adversary_ckpt, env)
    if not hasattr(qarl, "push"):
        raise ValueError(f"adversary_checkpoint={str(adversary_ckpt.path)!r} holds no adversary (trained with adversary=none)")

    def fn(obs):
        qarl.push(env, obs["state"])
        return protagonist_fn(obs)

    env.restore_nominal()
    r = evaluate(env, fn, int(seed))
    return {"return_mean": r["return_mean"], "return_ci": r["return_ci"], "returns": r["returns"],
            "checkpoint": str(adversary_ckpt.path)}


def _open(path, key: str):
    try:
        return load_checkpoint(path)
    except CheckpointError as exc:
        raise FileNotFoundError(f"{key}={str(path)!r}: {exc}") from None


def run(cfg: DictConfig) -> int:
    """A checkpoint's return over grids of mass / friction / gain scales (no adversary), the nominal
    return, and with ``adversary_checkpoint=`` the return against a trained QARL adversary.

    Config (``configs/robustness.yaml``): ``checkpoint``, ``policy`` (learner | deploy), ``episodes``
    per cell, ``seed``, ``scales``, ``grids``, ``adversary_checkpoint``, ``out`` (folder; default
    ``<checkpoint>/robustness``), ``env`` (overrides of the checkpoint's env config).

    Raises:
        ValueError: bad grids, episodes or policy (one line, before any episode runs).
        FileNotFoundError: not a checkpoint or run folder.
    """
    if cfg.checkpoint is None:
        raise ValueError("checkpoint=<checkpoint or run folder> is required")
    grids = check_grids(cfg.grids, cfg.scales)
    if isinstance(cfg.episodes, bool) or not isinstance(cfg.episodes, int) or cfg.episodes < 1:
        raise ValueError(f"episodes must be an int >= 1, got {cfg.episodes!r}")
    if cfg.policy not in ("learner", "deploy"):
        raise ValueError(f"policy must be learner or deploy, got {cfg.policy!r}")
    ckpt = _open(cfg.checkpoint, "checkpoint")
    adv_ckpt = _open(cfg.adversary_checkpoint, "adversary_checkpoint") if cfg.get("adversary_checkpoint") else None
    if adv_ckpt is not None and not ((adv_ckpt.config or {}).get("adversary") or {}).get("_target_"):
        raise ValueError(f"adversary_checkpoint={str(adv_ckpt.path)!r} holds no adversary (trained with adversary=none)")
    out = Path(cfg.out) if cfg.get("out") else ckpt.path / "robustness"
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"out={str(out)!r} is a file; give a folder for robustness.json and the heatmaps")
    env_cfg = ckpt.config["env"]
    if cfg.get("env") is not None:
        env_cfg = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(env_cfg), cfg.env), resolve=True)
    torch.set_num_threads(int(cfg.get("threads", 1)))
    env = build_env(env_cfg, num_envs=int(cfg.episodes), seed=int(cfg.seed))
    try:
        check_env_compatible(ckpt, env)
        fn = deploy_policy(load_policy(ckpt.path / "deploy")) if cfg.policy == "deploy" \
            else learner_policy(_learner(ckpt, env))
        nominal = _cell(env, fn, int(cfg.seed), {})
        print(f"dopa robustness {ckpt.path}: nominal return {nominal['return_mean']:.1f}")
        results = {}
        for name, g in grids.items():
            print(f"grid {name}: {g['x']} (columns) x {g['y']} (rows), {cfg.episodes} episodes per cell")
            results[name] = evaluate_grid(env, fn, int(cfg.seed), g)
        versus = adversary_return(env, fn, adv_ckpt, int(cfg.seed)) if adv_ckpt is not None else None
    finally:
        env.close()
    task = ckpt.env.get("task")
    for name, r in results.items():
        plot_grid(r, out / f"{name}.png", f"{task}: {Path(ckpt.path).parent.parent.name or ckpt.path.name}")
        w = r["worst"]
        print(f"{name}: grid mean {r['grid_mean']:.1f}, worst cell {w['return']:.1f} at {r['x']} {w[r['x']]:g}, "
              f"{r['y']} {w[r['y']]:g}; nominal {nominal['return_mean']:.1f} -> {out / (name + '.png')}")
    if versus is not None:
        print(f"against the trained adversary: return {versus['return_mean']:.1f}")
    m, lo, hi = mean_interval(nominal["returns"])
    write_json(out / "robustness.json", {
        "checkpoint": str(ckpt.path), "task": task, "step": ckpt.info.get("env_steps"), "policy": cfg.policy,
        "episodes": int(cfg.episodes), "seed": int(cfg.seed), "nominal": {**nominal, "return_ci": [lo, hi]},
        "grids": results, "adversary": versus})
    print(f"-> {out / 'robustness.json'}")
    return 0
