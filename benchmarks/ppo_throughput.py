"""Training throughput and final return: the project's PPO (``control/ppo.py`` through the one
training loop) against Stable-Baselines3's PPO, side by side in one run at equal settings.

Both train on the same task through the same simulator code (SB3 through
:class:`benchmarks.gym_wrapper.StateEnv` in its ``DummyVecEnv``; the project's PPO through
``sim.make_env`` and :func:`control.train.train`, built by :func:`jobs.train.setup` as
``dopa train``), with equal settings: ``--num-envs`` envs, rollouts of ``--n-steps`` per env,
``--epochs`` passes, ``--minibatches`` minibatches, 64x64 tanh actor and critic, Gaussian policy
with a state-independent log sigma starting at 0, lr 3e-4, gamma 0.99, GAE lambda 0.95, clip 0.2,
value coefficient 0.5, no entropy bonus, grad-norm clip 0.5, observation normalisation and reward
scaling by the running return std (SB3: ``VecNormalize(norm_obs=True, norm_reward=True)``; the
project: ``obs_normalization`` and ``normalize_returns``), one torch thread each. The two
implementations alternate run by run (seed by seed, order swapped every seed) so load on a shared
machine hits both alike.

Measured per run: env steps per second of training (the ``learn``/``train`` call alone, so
imports and env construction are excluded) and the final return: the deterministic policy on
``--eval-episodes`` fixed-seed episodes (``control.evaluate.evaluate`` on the same evaluation env
for both). Reported: per implementation the mean and 95 % t interval over seeds of both, and the
ratio dopa / SB3 of steps per second with a bootstrap interval over seeds. Also the raw simulator
rate (random actions through ``sim.make_env``) as the ceiling.

    .venv/bin/python benchmarks/ppo_throughput.py                       # cartpole-swingup, 3 seeds
    .venv/bin/python benchmarks/ppo_throughput.py --steps 200000 --seeds 0 1 2 3 4

Writes ``benchmarks/results/ppo_throughput.json`` and ``.png``. Needs the ``bench`` extra
(``pip install -e .[bench] -c constraints.txt``: stable-baselines3).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from control.evaluate import evaluate, evaluate_learner, mean_interval  # noqa: E402

TARGETS = {"dopa_over_sb3_steps_per_s": 1.0, "final_return_within_sb3_ci": True}


def sb3_run(args, seed: int) -> dict:
    """Train SB3 PPO for ``args.steps`` env steps; returns steps/s of ``learn`` and the final return."""
    from stable_baselines3 import PPO  # lazy: benchmark-only dependency (the bench extra)
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from benchmarks.gym_wrapper import StateEnv  # lazy: imports sim (MuJoCo)

    torch.manual_seed(seed)
    venv = DummyVecEnv([lambda i=i: StateEnv(args.task, seed=seed * 1000 + i) for i in range(args.num_envs)])
    venv.seed(seed * 1000)
    venv = VecNormalize(venv, norm_obs=True, norm_reward=True, clip_obs=10.0, clip_reward=10.0, gamma=0.99)
    batch = args.n_steps * args.num_envs
    model = PPO("MlpPolicy", venv, learning_rate=3e-4, n_steps=args.n_steps, batch_size=batch // args.minibatches,
                n_epochs=args.epochs, gamma=0.99, gae_lambda=0.95, clip_range=0.2, ent_coef=0.0, vf_coef=0.5,
                max_grad_norm=0.5, policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]},
                                                  "activation_fn": torch.nn.Tanh, "log_std_init": 0.0},
                seed=seed, device="cpu", verbose=0)
    t0 = time.perf_counter()
    model.learn(total_timesteps=args.steps)
    seconds = time.perf_counter() - t0
    venv.training = False

    def policy(obs):
        a, _ = model.predict(venv.normalize_obs(obs["state"].numpy()), deterministic=True)
        return torch.as_tensor(a, dtype=torch.float32)

    res = evaluate(eval_env(args), policy, args.eval_seed)
    venv.close()
    return {"steps_per_s": model.num_timesteps / seconds, "seconds": seconds, "env_steps": int(model.num_timesteps),
            "final_return": res["return_mean"], "returns": res["returns"]}


def dopa_run(args, seed: int, run_dir: Path) -> dict:
    """Train the project's PPO through ``jobs.train.setup`` / ``control.train.train`` (as ``dopa train``)."""
    from jobs.cli import compose  # lazy: the benchmark composes the dopa train config
    from jobs.train import setup

    cfg = compose("train", [
        f"env={args.task}", "learner=ppo", "reward=dense", f"seed={seed}", f"num_envs={args.num_envs}",
        f"total_steps={args.steps}", f"checkpoint_every={args.steps}", "eval.every=0", "progress=false",
        f"log_every={args.steps}", f"run_dir={run_dir}", "threads=1", f"learner.num_steps={args.n_steps}",
        f"learner.update_epochs={args.epochs}", f"learner.num_minibatches={args.minibatches}",
        "learner.hidden=[64,64]", "learner.activation=tanh", "learner.learning_rate=3e-4", "learner.gamma=0.99",
        "learner.gae_lambda=0.95", "learner.clip_coef=0.2", "learner.ent_coef=0.0", "learner.vf_coef=0.5",
        "learner.max_grad_norm=0.5", "learner.obs_normalization=true", "learner.normalize_returns=true",
        "learner.init_log_std=0.0", "learner.anneal_lr=false"])
    pieces = setup(cfg)
    t0 = time.perf_counter()
    out = pieces.train()
    seconds = time.perf_counter() - t0
    res = evaluate_learner(eval_env(args), out["learner"], args.eval_seed)
    return {"steps_per_s": out["env_steps"] / seconds, "seconds": seconds, "env_steps": int(out["env_steps"]),
            "final_return": res["return_mean"], "returns": res["returns"]}


def eval_env(args):
    """The evaluation env (``--eval-episodes`` sub-envs, seeds ``--eval-seed + i``)."""
    import sim  # lazy: MuJoCo

    return sim.make_env(args.task, num_envs=args.eval_episodes, seed=args.eval_seed)


def sim_rate(args, steps: int = 4000) -> float:
    """Env steps per second of ``sim.make_env(task, num_envs)`` alone with random actions in [-1, 1]."""
    import sim  # lazy: MuJoCo

    env = sim.make_env(args.task, num_envs=args.num_envs, seed=0)
    env.reset()
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(steps // args.num_envs):
        env.step(torch.rand(args.num_envs, env.action_dim, generator=g) * 2 - 1)
    rate = steps // args.num_envs * args.num_envs / (time.perf_counter() - t0)
    env.close()
    return rate


def _ratio_ci(a, b) -> list[float] | None:
    """95 % percentile bootstrap interval of mean(a) / mean(b), each resampled on its own."""
    from scipy.stats import bootstrap  # lazy: scipy

    if len(a) < 2 or len(b) < 2:
        return None
    res = bootstrap([np.asarray(a, float), np.asarray(b, float)],
                    lambda x, y, axis=-1: np.mean(x, axis=axis) / np.mean(y, axis=axis), vectorized=True,
                    paired=False, n_resamples=9999, method="percentile", random_state=np.random.default_rng(0))
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="cartpole-swingup")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=32768, help="env steps per run (all envs)")
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--n-steps", type=int, default=256, help="rollout length per env")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--minibatches", type=int, default=8)
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--eval-seed", type=int, default=1_000_000)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    runs: dict[str, list[dict]] = {"dopa": [], "sb3": []}
    with tempfile.TemporaryDirectory(prefix="ppo_throughput_") as tmp:
        for k, seed in enumerate(args.seeds):
            order = ("dopa", "sb3") if k % 2 == 0 else ("sb3", "dopa")
            for impl in order:
                r = dopa_run(args, seed, Path(tmp) / f"dopa_{seed}") if impl == "dopa" else sb3_run(args, seed)
                runs[impl].append({"seed": seed, **r})
                print(f"{impl:4s} seed {seed}: {r['steps_per_s']:7.0f} env steps/s, final return "
                      f"{r['final_return']:7.1f} ({r['seconds']:.0f} s)", flush=True)
    raw = sim_rate(args)
    metrics: dict = {}
    for impl, rs in runs.items():
        sps, fin = [r["steps_per_s"] for r in rs], [r["final_return"] for r in rs]
        metrics[f"{impl}_steps_per_s"] = float(np.mean(sps))
        metrics[f"{impl}_steps_per_s_ci"] = list(mean_interval(sps)[1:]) if len(sps) > 1 else None
        metrics[f"{impl}_final_return"] = float(np.mean(fin))
        metrics[f"{impl}_final_return_ci"] = list(mean_interval(fin)[1:]) if len(fin) > 1 else None
    ratio = metrics["dopa_steps_per_s"] / metrics["sb3_steps_per_s"]
    ci = metrics["sb3_final_return_ci"]
    within = ci is not None and ci[0] <= metrics["dopa_final_return"] <= ci[1]
    metrics = {"dopa_over_sb3_steps_per_s": ratio,
               "dopa_over_sb3_steps_per_s_ci": _ratio_ci([r["steps_per_s"] for r in runs["dopa"]],
                                                         [r["steps_per_s"] for r in runs["sb3"]]),
               "final_return_within_sb3_ci": within, **metrics, "sim_only_steps_per_s": raw,
               "setting": {"task": args.task, "env_steps_per_run": args.steps, "num_envs": args.num_envs,
                           "n_steps": args.n_steps, "epochs": args.epochs, "minibatches": args.minibatches,
                           "hidden": [64, 64], "activation": "tanh", "eval_episodes": args.eval_episodes,
                           "torch_threads": 1, "seeds": args.seeds},
               "runs": runs}
    met = {"dopa_over_sb3_steps_per_s": ratio >= TARGETS["dopa_over_sb3_steps_per_s"],
           "final_return_within_sb3_ci": within}
    path = common.write_result("ppo_throughput", metrics, TARGETS, met)
    plot(runs, raw, common.RESULTS / "ppo_throughput.png")
    print(f"dopa / SB3 env steps/s: {ratio:.2f} {metrics['dopa_over_sb3_steps_per_s_ci']}; final return dopa "
          f"{metrics['dopa_final_return']:.1f} {metrics['dopa_final_return_ci']}, SB3 {metrics['sb3_final_return']:.1f} "
          f"{ci}; simulator alone {raw:.0f} env steps/s; met {met}")
    print(f"wrote {path}")
    return 0


def plot(runs: dict, raw: float, path: Path) -> None:
    """Two panels: env steps/s per run (bars, with the simulator-only rate) and final return per run."""
    import matplotlib  # lazy: plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key, label in ((axes[0], "steps_per_s", "training env steps / s"), (axes[1], "final_return", "final return")):
        for i, (impl, rs) in enumerate(runs.items()):
            vals = [r[key] for r in rs]
            ax.bar(i, np.mean(vals), color=f"C{i}", alpha=0.6, label=impl)
            ax.scatter([i] * len(vals), vals, color="black", s=12, zorder=3)
        ax.set_xticks(range(len(runs)), ["dopa PPO", "SB3 PPO"])
        ax.set_ylabel(label)
    axes[0].axhline(raw, color="gray", ls="--", lw=1, label="simulator alone")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    common.save_figure(fig, path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
