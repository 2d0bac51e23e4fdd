"""EXPO's update rate at the ``expo_cpu`` sizes: critic updates per second and full update rounds
per second, for the base policy's samplers side by side in one run.

A critic update's cost is mostly its TD target: y = r + gamma min_subset Qbar(s', OTF(s')), where the
on-the-fly policy draws N base actions per next state through the diffusion sampler (every denoising
step is a pass of the MLP-ResNet denoiser over batch x N rows), edits n_edit of them and scores all
candidates with the target critics. The variants differ only in the sampler (``learner.sampler`` /
``learner.sample_steps``): ``ddpm10`` is the authors' ancestral DDPM over all 10 steps (the default,
and the TD-target path the EXPO issue measured: unchanged since), ``ddim<k>`` diffusers' DDIM over k
of the same model's 10 steps (``tests/test_expo.py`` holds DDIM-5 to the reference distribution).

Every variant is an EXPO learner at the ``learner=expo_cpu`` sizes (``configs/learner/expo_cpu.yaml``)
on the main job's task dimensions (Lift ``joint_position``: the state size of ``sim.make_env`` and
8-D actions), its online buffer holding random transitions (the cost does not depend on their
values). Rounds alternate the variants (the order rotated each round) so load on a shared machine
hits all alike; per round and variant: ``--updates`` critic-only rounds (``utd_ratio`` critic
updates on fresh batches each) and ``--rounds-per-variant`` full update rounds (``update_round``: ``utd_ratio`` critic
updates, one base and one edit + temperature step: the learner's cost per env step). Reported per
variant: the mean over rounds with a 95 % t interval; against ``ddpm10``: the mean of the per-round
ratios (paired, same round) with its t interval. Target (issue 17): critic updates per second at
least 2x the ``ddpm10`` rate.

    .venv/bin/python benchmarks/expo_update_rate.py                     # ddpm10, ddim5, ddim3; 5 rounds
    .venv/bin/python benchmarks/expo_update_rate.py --rounds 8 --threads 2

Writes ``benchmarks/results/expo_update_rate.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra.errors import InstantiationException  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from benchmarks import common  # noqa: E402
from control.evaluate import mean_interval  # noqa: E402
from control.learner import Transition  # noqa: E402
from jobs.cli import compose  # noqa: E402

NAME = "expo_update_rate"
TARGET_RATIO = 2.0


def parse_variant(name: str) -> dict:
    """``ddpm10`` -> {"sampler": "ddpm", "sample_steps": None}; ``ddim<k>`` -> DDIM over k steps.

    Raises:
        ValueError: another name (the allowed forms named).
    """
    if name == "ddpm10":
        return {"sampler": "ddpm", "sample_steps": None}
    if name.startswith("ddim") and name[4:].isdigit() and int(name[4:]) >= 1:
        return {"sampler": "ddim", "sample_steps": int(name[4:])}
    raise ValueError(f"unknown variant {name!r}; allowed: ddpm10, ddim<k> with k in [1, diffusion_steps]")


def task_dims() -> tuple[int, int]:
    """(state size, action size) of the main job's task, Lift with ``joint_position``."""
    from sim import make_env  # lazy: builds a robosuite env

    env = make_env("lift", num_envs=1, controller="joint_position")
    try:
        return int(env.single_observation_space["state"].shape[0]), int(env.single_action_space.shape[0])
    finally:
        env.close()


def build(variant: str, obs_dim: int, action_dim: int, overrides: list[str], seed: int = 0):
    """(learner, its :class:`control.expo.EXPOConfig`): EXPO at ``learner=expo_cpu`` (+ ``overrides``)
    with the variant's sampler, its online buffer filled with 1,000 random transitions.

    Raises:
        ValueError: a value the config refuses (e.g. ``ddim<k>`` with k > ``diffusion_steps``), named.
    """
    cfg = compose("train", ["learner=expo_cpu", *overrides], job=NAME).learner
    with open_dict(cfg):
        cfg.update(parse_variant(variant))
        cfg.pretrain_steps = 0
    try:
        config = instantiate(cfg)
    except InstantiationException as exc:  # the config's own check, e.g. sample_steps > diffusion_steps
        cause = exc.__cause__ if isinstance(exc.__cause__, ValueError) else exc
        raise ValueError(f"variant {variant}: {cause}") from None
    learner = config.build(obs_dim, action_dim, 1, seed, torch.device("cpu"), [])
    g = torch.Generator().manual_seed(seed)
    for _ in range(1000):
        learner.observe(Transition(obs=torch.randn(1, obs_dim, generator=g),
                                   action=torch.rand(1, action_dim, generator=g) * 2 - 1,
                                   reward=torch.zeros(1), next_obs=torch.randn(1, obs_dim, generator=g),
                                   terminated=torch.zeros(1, dtype=torch.bool), truncated=torch.zeros(1, dtype=torch.bool)))
    return learner, config


def time_variant(learner, updates: int, rounds: int) -> tuple[float, float]:
    """(critic updates per second, update rounds per second): ``updates`` critic-only rounds
    (``update_round(base=False, edit=False)``: ``utd_ratio`` critic updates on fresh batches each),
    then ``rounds`` full update rounds."""
    t0 = time.perf_counter()
    for _ in range(updates):
        learner.update_round(critic=True, base=False, edit=False)
    critic = updates * learner.utd_ratio / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(rounds):
        learner.update_round()
    return critic, rounds / (time.perf_counter() - t0)


def run(args) -> dict:
    """Measure every variant (see the module docstring); returns the JSON dict written."""
    torch.set_num_threads(args.threads)
    variants = list(dict.fromkeys(args.variants))
    if "ddpm10" not in variants:
        variants.insert(0, "ddpm10")  # the reference of every ratio
    for v in variants:
        parse_variant(v)
    obs_dim, action_dim = (args.obs_dim, args.action_dim) if args.obs_dim else task_dims()
    built = {v: build(v, obs_dim, action_dim, args.overrides) for v in variants}
    learners = {v: b[0] for v, b in built.items()}
    for L in learners.values():  # warm-up: first calls allocate
        time_variant(L, 2, 1)
    critic = {v: [] for v in variants}
    rounds = {v: [] for v in variants}
    for r in range(args.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for v in order:
            c, u = time_variant(learners[v], args.updates, args.rounds_per_variant)
            critic[v].append(c)
            rounds[v].append(u)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{v} {critic[v][-1]:.1f} critic/s" for v in variants),
              flush=True)
    c0 = built["ddpm10"][1]
    metrics: dict = {}
    for v in variants:
        ratio_c = np.asarray(critic[v]) / np.asarray(critic["ddpm10"])
        ratio_u = np.asarray(rounds[v]) / np.asarray(rounds["ddpm10"])
        if v != "ddpm10":
            m, lo, hi = mean_interval(ratio_c)
            metrics[f"{v}_over_ddpm10_critic_updates"] = m
            metrics[f"{v}_over_ddpm10_critic_updates_ci"] = [lo, hi]
            m, lo, hi = mean_interval(ratio_u)
            metrics[f"{v}_over_ddpm10_update_rounds"] = m
            metrics[f"{v}_over_ddpm10_update_rounds_ci"] = [lo, hi]
    for v in variants:
        m, lo, hi = mean_interval(critic[v])
        metrics[f"{v}_critic_updates_per_s"], metrics[f"{v}_critic_updates_per_s_ci"] = m, [lo, hi]
        m, lo, hi = mean_interval(rounds[v])
        metrics[f"{v}_update_rounds_per_s"], metrics[f"{v}_update_rounds_per_s_ci"] = m, [lo, hi]
    metrics["per_round"] = {"critic_updates_per_s": critic, "update_rounds_per_s": rounds}
    metrics["setting"] = {"obs_dim": obs_dim, "action_dim": action_dim, "batch_size": c0.batch_size,
                          "utd_ratio": c0.utd_ratio, "num_samples": c0.num_samples,
                          "num_edit_samples": c0.num_edit_samples, "num_qs": c0.num_qs,
                          "diffusion_steps": c0.diffusion_steps, "base_hidden_dim": c0.base_hidden_dim,
                          "threads": args.threads, "rounds": args.rounds, "updates_per_round": args.updates,
                          "update_rounds_per_round": args.rounds_per_variant, "overrides": list(args.overrides)}
    targets = {f"{v}_over_ddpm10_critic_updates": TARGET_RATIO for v in variants if v != "ddpm10"}
    met = {k: bool(metrics[k] >= TARGET_RATIO) for k in targets}
    results_dir = Path(args.results_dir) if args.results_dir else common.RESULTS
    path = common.write_result(args.name, metrics, targets, met, results_dir=results_dir)
    plot(metrics, variants, results_dir / f"{args.name}.png")
    return {"path": str(path), "metrics": metrics, "met": met}


def plot(metrics: dict, variants: list[str], path: Path) -> None:
    """Bars: critic updates/s and update rounds/s per variant with their 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, title in ((axes[0], "critic_updates_per_s", "critic updates / s"),
                           (axes[1], "update_rounds_per_s", "update rounds / s (one per env step)")):
        means = [metrics[f"{v}_{key}"] for v in variants]
        ci = np.array([metrics[f"{v}_{key}_ci"] for v in variants]).T
        ax.bar(variants, means, yerr=[np.subtract(means, ci[0]), np.subtract(ci[1], means)], capsize=4,
               color=["tab:gray"] + ["tab:blue"] * (len(variants) - 1))
        ax.set_title(title)
        ax.set_ylabel("per second (95 % t interval over rounds)")
    fig.suptitle("EXPO at the expo_cpu sizes: base-policy sampler in the TD target and acting", fontsize=10)
    fig.tight_layout()
    common.save_figure(fig, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=["ddpm10", "ddim5", "ddim3"],
                   help="ddpm10 (the reference, always measured) and ddim<k>")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--updates", type=int, default=20, help="critic-only rounds (utd_ratio updates each) per variant and round")
    p.add_argument("--rounds-per-variant", type=int, default=10, help="update rounds per variant and round")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--obs-dim", type=int, default=0, help="state size (0: Lift's, from sim.make_env)")
    p.add_argument("--action-dim", type=int, default=8)
    p.add_argument("--name", default=NAME)
    p.add_argument("--results-dir", default=None)
    p.add_argument("overrides", nargs="*", help="learner overrides, e.g. learner.batch_size=64")
    args = p.parse_args(argv)
    for flag in ("rounds", "updates", "rounds_per_variant", "threads"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    try:
        out = run(args)
    except ValueError as exc:
        p.error(str(exc))
    m = out["metrics"]
    for k in m:
        if k.endswith("_over_ddpm10_critic_updates"):
            print(f"{k}: {m[k]:.2f} {[round(x, 2) for x in m[k + '_ci']]}")
    print(f"met: {out['met']} -> {out['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
