"""EXPO vs SAC (RLPD-style) on robosuite Lift from state, with the same scripted demonstrations.

    python benchmarks/expo_vs_sac.py --preset small     # CPU setting, documented below (~13 min)
    python benchmarks/expo_vs_sac.py --preset full --launcher slurm \
        --hydra hydra.launcher.partition=gpu hydra.launcher.gpus_per_node=1   # the issue's setting, on Slurm

The (method, seed) runs are the jobs of one Hydra multirun (``benchmarks/expo_vs_sac.yaml``,
:func:`benchmarks.sweep.multirun`): ``--launcher local`` (parallel processes, ``--jobs`` at a time,
default one per core), ``slurm`` or ``slurm_local``. The settings and the demonstrations are
written once into ``<run-dir>/<preset>_<settings hash>/`` (``settings.json``, ``demos.npz``); each
job writes ``results/<method>_seed<seed>.json`` there, a run whose file exists is skipped (rerun to
resume an interrupted sweep), and the script aggregates the result files.

Both learners normalise states with running statistics seeded by the demonstrations, and get the same offline data (``--demos`` scripted-expert episodes of Lift, sparse
reward 1 on success, the episode terminates on success), the same critic (ensemble of
``num_qs`` LayerNorm MLPs, target = min over a random subset of 2), the same update-to-data
ratio, the same batch size and the same 50/50 offline/online batch mix (RLPD's symmetric
sampling). SAC gets the mix through :class:`MixedReplay` (``control.sac.SAC`` itself takes no
offline data). EXPO additionally behaviour-clones its base policy on the demonstrations before
the first environment step (its "offline start"; no environment steps are spent there).

Both run through the one training loop (:func:`control.train.train`), built from the ``dopa train``
configs (``learner=expo`` / ``learner=sac``, ``env=lift``, ``reward=dense``: Lift's own sparse
reward) by :mod:`jobs.build`; a :class:`SuccessCurve` callback records the evaluations and stops a
run at 80 %. Run folders (``eval.jsonl``) go to ``<run-dir>/<preset>_<hash>/runs/``.

Metric: environment steps until the evaluation success rate (``--eval-episodes`` fixed seeds,
``control.evaluate.evaluate``) first reaches 80 %, per seed; runs that never reach it count as
``--max-steps`` (a lower bound, reported as such). Target (issue 6): EXPO needs at most half the
steps of SAC (ratio SAC/EXPO >= 2).

Writes ``benchmarks/results/expo_vs_sac.json`` and ``expo_vs_sac.png`` (success-rate curves, mean
and per seed).

Presets (all values can be overridden by the flags):
  small: 10 demos, 3 seeds, 300 env steps, 60-step episodes, UTD 1, batch 64, critics
         10 x (64, 64), base MLP-ResNet 128 x 2 blocks, N = 4 candidates + 4 edits, 2000 BC steps,
         EMA rate 0.01 (the short BC phase leaves a 1e-3 EMA near its initialisation), evaluation
         every 100 steps on 5 episodes. Runs in ~13 minutes on 2 busy CPU cores (764 s measured).
         It checks the pipeline end to end and shows where each method starts (EXPO's behaviour-
         cloned start reached 20 % success on one seed of three, SAC 0 %); it is far too short for
         either to learn Lift online, so the steps-to-80 % ratio is not measured in this setting.
  full:  20 demos, 5 seeds, 100k env steps, the published EXPO defaults (UTD 20, batch 256,
         critics 10 x (256, 256, 256), base 256 x 3 blocks, N = 8 + 8 edits, beta = 0.05) and
         20k BC steps. Measured on this CPU (one thread): one EXPO critic update at these sizes
         costs 1.1 s of CPU (the TD target samples 256 x 8 candidates through the 10-step DDPM), so
         one environment step at UTD 20 costs ~22 s and 100k steps ~25 CPU-days per seed: the full
         run is a GPU job (not run here; a few hours per seed expected on one GPU).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import sim  # noqa: E402
from basics.atomic import atomic_file, write_json  # noqa: E402
from benchmarks.common import save_figure  # noqa: E402
from benchmarks.sweep import multirun  # noqa: E402
from control.buffers import ReplayBuffer  # noqa: E402
from control.callbacks import Callback  # noqa: E402
from control.evaluate import evaluate_learner  # noqa: E402
from control.expo import episodes_to_transitions  # noqa: E402
from control.train import train  # noqa: E402
from jobs.build import build_env, build_learner, build_shaper, seed_everything  # noqa: E402
from jobs.cli import compose  # noqa: E402
from jobs.train import schedule_of  # noqa: E402
from sim.experts import ScriptedExpert  # noqa: E402

PRESETS = {
    "small": dict(demos=10, seeds=3, max_steps=300, eval_every=100, eval_episodes=5, episode_steps=60,
                  utd=1, batch=64, num_qs=10, critic_hidden=[64, 64], base_hidden=128, base_blocks=2,
                  num_samples=4, num_edit=4, edit_scale=0.05, pretrain_steps=2000, start_training=50,
                  actor_tau=0.01),
    "full": dict(demos=20, seeds=5, max_steps=100_000, eval_every=5000, eval_episodes=50, episode_steps=200,
                 utd=20, batch=256, num_qs=10, critic_hidden=[256, 256, 256], base_hidden=256, base_blocks=3,
                 num_samples=8, num_edit=8, edit_scale=0.05, pretrain_steps=20_000, start_training=5000,
                 actor_tau=0.001),
}


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------

def collect_demos(n: int, episode_steps: int, seed: int) -> list[SimpleNamespace]:
    """``n`` successful scripted-expert episodes of Lift (states [T+1, D], actions [T, A], ...)."""
    env = sim.make_env("lift", num_envs=1, seed=seed, terminate_on_success=True, max_episode_steps=episode_steps)
    expert = ScriptedExpert(env, "none", seed=seed)
    episodes, k = [], 0
    while len(episodes) < n:
        obs, _ = env.reset(seed=seed + 10_000 + k)
        expert.reset()
        k += 1
        states, actions, rewards, dones = [obs["state"][0].numpy()], [], [], []
        while True:
            a = expert.act()
            obs, r, term, trunc, info = env.step(a)
            expert.observe_step()
            done = bool(term[0] or trunc[0])
            final = info["final_obs"]["state"][0] if done else obs["state"][0]
            states.append(final.numpy())
            actions.append(a[0].numpy())
            rewards.append(float(r[0]))
            dones.append(done)
            if done:
                break
        if bool(info["success"][0]):
            episodes.append(SimpleNamespace(states=np.stack(states), actions=np.stack(actions),
                                            rewards=np.asarray(rewards, np.float32), dones=np.asarray(dones),
                                            success=True))
        if k > 3 * n + 10:
            raise RuntimeError(f"the scripted expert succeeded in only {len(episodes)} of {k} episodes")
    env.close()
    return episodes


class MixedReplay:
    """RLPD's symmetric sampling for SAC: half of every batch from a fixed offline buffer, half from
    the online one (``control.buffers.ReplayBuffer``); everything else is delegated to the online buffer."""

    def __init__(self, online, offline, offline_ratio: float = 0.5):
        self.online, self.offline, self.offline_ratio = online, offline, float(offline_ratio)

    def __len__(self) -> int:
        return len(self.online) + len(self.offline)

    def add(self, *args, **kwargs):
        return self.online.add(*args, **kwargs)

    def sample(self, n: int, generator=None) -> dict:
        if len(self.online) == 0:
            return self.offline.sample(n, generator)
        n_off = int(round(n * self.offline_ratio))
        off, on = self.offline.sample(n_off, generator), self.online.sample(n - n_off, generator)
        return {k: torch.cat([off[k], on[k]]) for k in off}

    def state_dict(self):
        return self.online.state_dict()

    def load_state_dict(self, state):
        self.online.load_state_dict(state)


# ------------------------------------------------------------------------------------------------
# learners (built from the `dopa train` learner configs) and one run through the one training loop
# ------------------------------------------------------------------------------------------------

def train_config(method: str, p: dict, seed: int, run_dir: Path):
    """The ``dopa train`` config of one run: Lift from state, the task's own (sparse) reward,
    episodes ending at success, the learner's sizes from preset ``p``."""
    common = ["env=lift", "preset=none", "reward=dense", f"seed={seed}", "env.kwargs.terminate_on_success=true",
              f"+env.kwargs.max_episode_steps={p['episode_steps']}", f"total_steps={p['max_steps']}",
              f"checkpoint_every={p['max_steps']}", f"eval.every={p['eval_every']}",
              f"eval.episodes={p['eval_episodes']}", f"eval.seed={1_000_000 + seed}", "progress=false",
              "eval.at_start=false",  # run() evaluates before the first env step itself
              f"log_every={p['eval_every']}", f"run_dir={run_dir}"]
    hidden = "[" + ",".join(str(h) for h in p["critic_hidden"]) + "]"
    if method == "expo":
        learner = ["learner=expo", "learner.gamma=0.99", f"learner.base_hidden_dim={p['base_hidden']}",
                   f"learner.base_num_blocks={p['base_blocks']}", f"learner.num_samples={p['num_samples']}",
                   f"learner.num_edit_samples={p['num_edit']}", f"learner.edit_scale={p['edit_scale']}",
                   f"learner.edit_hidden_dims={hidden}", f"learner.num_qs={p['num_qs']}", "learner.num_min_qs=2",
                   f"learner.critic_hidden_dims={hidden}", f"learner.batch_size={p['batch']}",
                   f"learner.utd_ratio={p['utd']}", f"learner.start_training={p['start_training']}",
                   f"learner.buffer_size={p['max_steps'] + 10}", "learner.offline_ratio=0.5",
                   "learner.offline_done_is_terminal=true", f"learner.pretrain_steps={p['pretrain_steps']}",
                   f"learner.actor_tau={p['actor_tau']}", "learner.obs_normalization=true"]
    else:
        learner = ["learner=sac", "learner.gamma=0.99", f"learner.batch_size={p['batch']}",
                   f"learner.buffer_size={p['max_steps'] + 10}", f"learner.learning_starts={p['start_training']}",
                   f"learner.utd_ratio={p['utd']}", f"learner.num_critics={p['num_qs']}", "learner.critic_subset=2",
                   f"learner.hidden={hidden}", "learner.layer_norm=true", "learner.obs_normalization=true"]
    return compose("train", common + learner)


def add_demos(method: str, learner, demos) -> None:
    """Give a built learner the demonstrations: EXPO takes them as offline episodes and behaviour-
    clones its base policy (no env steps); SAC gets a fixed offline buffer mixed 50/50 into every
    batch (:class:`MixedReplay`) and its state normaliser seeded with their states."""
    if method == "expo":
        learner.set_offline_episodes(demos)
        learner.pretrain()
        return
    tr = episodes_to_transitions(demos, 1, 0.99, done_is_terminal=True)
    off = ReplayBuffer(tr["obs"].shape[0], learner.obs_dim, learner.action_dim)
    off.add(tr["obs"], tr["action"], tr["reward"], tr["next_obs"], tr["discount"] == 0)
    learner.buffer = MixedReplay(learner.buffer, off, 0.5)
    learner.normalizer.update(torch.cat([tr["obs"], tr["next_obs"]]))


class SuccessCurve(Callback):
    """The evaluation curve ``[[env steps, success rate]]`` of one run, logged; asks the loop to
    stop at 80 % success when ``stop_at_target``."""

    def __init__(self, name: str, t0: float, log, stop_at_target: bool = True):
        self.name, self.t0, self.log, self.stop_at_target = name, t0, log, stop_at_target
        self.curve: list[list] = []

    def on_eval(self, env_steps: int, result: dict) -> bool:
        self.curve.append([int(env_steps), float(result["success_rate"])])
        self.log(f"  {self.name} step {env_steps:6d}: success {result['success_rate']:.2f} "
                 f"({time.time() - self.t0:.0f} s)")
        return self.stop_at_target and result["success_rate"] >= 0.8


def run(method: str, p: dict, seed: int, demos, log, run_root: Path) -> dict:
    """One (method, seed): build the pieces from the config, add the demonstrations, evaluate once
    before any env step, then train with :func:`control.train.train` (stopping at 80 %)."""
    cfg = train_config(method, p, seed, run_root / f"{method}_seed{seed}")
    seed_everything(seed)
    env = build_env(cfg.env, num_envs=1, seed=seed)
    eval_env = build_env(cfg.env, num_envs=p["eval_episodes"], seed=seed)
    t0 = time.time()
    learner = build_learner(cfg.learner, env, seed=seed)
    add_demos(method, learner, demos)
    pretrain_s = time.time() - t0
    shaper = build_shaper(cfg.reward, env, learner)
    curve = SuccessCurve(f"{method} seed {seed}", t0, log, p.get("stop_at_target", True))
    curve.on_eval(0, evaluate_learner(eval_env, learner, 1_000_000 + seed))
    train(env, learner, shaper, cfg.run_dir, schedule_of(cfg), eval_env=eval_env, callbacks=[curve])
    reached = next((s for s, r in curve.curve if r >= 0.8), None)
    return {"curve": curve.curve, "steps_to_80": reached, "wall_s": time.time() - t0, "pretrain_s": pretrain_s}


def prepare_group(p: dict, preset: str, run_dir: Path, log=print) -> Path:
    """``<run_dir>/<preset>_<sha256 of the settings, 10 hex>/`` with ``settings.json`` and the
    demonstrations (``demos.npz``: concatenated arrays + episode lengths), written once, atomically."""
    digest = hashlib.sha256(json.dumps(p, sort_keys=True).encode()).hexdigest()[:10]
    group = Path(run_dir) / f"{preset}_{digest}"
    if not (group / "demos.npz").exists():
        log(f"collecting {p['demos']} scripted Lift demonstrations")
        demos = collect_demos(p["demos"], p["episode_steps"], seed=12345)
        log(f"  mean length {np.mean([len(d.actions) for d in demos]):.1f} steps")
        group.mkdir(parents=True, exist_ok=True)
        with atomic_file(group / "demos.npz", suffix=".npz") as tmp:
            np.savez(tmp, lengths=np.asarray([len(d.actions) for d in demos]),
                     states=np.concatenate([d.states for d in demos]), actions=np.concatenate([d.actions for d in demos]),
                     rewards=np.concatenate([d.rewards for d in demos]), dones=np.concatenate([d.dones for d in demos]))
    write_json(group / "settings.json", p)
    return group


def load_demos(path: Path) -> list[SimpleNamespace]:
    """The demonstrations :func:`prepare_group` wrote (states [T+1, D], actions [T, A], ...)."""
    z = np.load(path)
    out, i, j = [], 0, 0
    for n in z["lengths"].tolist():
        out.append(SimpleNamespace(states=z["states"][j:j + n + 1], actions=z["actions"][i:i + n],
                                   rewards=z["rewards"][i:i + n], dones=z["dones"][i:i + n], success=True))
        i, j = i + n, j + n + 1
    return out


def run_task(cfg) -> None:
    """One job of the sweep: the (``cfg.method``, ``cfg.seed``) run of ``cfg.group_dir`` into
    ``results/<method>_seed<seed>.json``; nothing when that file exists."""
    group, method, seed = Path(str(cfg.group_dir)), str(cfg.method), int(cfg.seed)
    if method not in ("expo", "sac"):
        raise ValueError(f"method must be expo or sac, got {method!r}")
    result = group / "results" / f"{method}_seed{seed}.json"
    if result.exists():
        print(f"{method} seed {seed}: done already ({result}), skipped")
        return
    torch.set_num_threads(int(cfg.threads))
    p = json.loads((group / "settings.json").read_text())
    r = run(method, p, seed, load_demos(group / "demos.npz"), lambda s: print(s, flush=True), group / "runs")
    write_json(result, {"method": method, "seed": seed, **r})


def load_results(group: Path, seeds: int) -> dict:
    """``{"expo": [...], "sac": [...]}``: the result files of seeds 0..seeds-1 that exist, by seed."""
    out = {"expo": [], "sac": []}
    for m in out:
        for s in range(seeds):
            f = group / "results" / f"{m}_seed{s}.json"
            if f.exists():
                out[m].append(json.loads(f.read_text()))
    return out


def plot(results: dict, path: Path, p: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for method, color in (("expo", "tab:red"), ("sac", "tab:blue")):
        runs = results[method]
        for r in runs:
            c = np.asarray(r["curve"])
            ax.plot(c[:, 0], c[:, 1], color=color, alpha=0.3, lw=1)
        grid = np.arange(0, p["max_steps"] + 1, p["eval_every"])
        # a run stopped at the target keeps its last success rate afterwards
        vals = np.stack([np.interp(grid, np.asarray(r["curve"])[:, 0], np.asarray(r["curve"])[:, 1]) for r in runs])
        label = "EXPO" if method == "expo" else "SAC (RLPD-style)"
        ax.plot(grid, vals.mean(0), color=color, lw=2.5, label=f"{label}, mean of {len(runs)} seeds")
    ax.axhline(0.8, color="gray", ls="--", lw=1)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Lift from state, {p['demos']} demos, UTD {p['utd']}")
    ax.legend(loc="upper right")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    for k, v in PRESETS["small"].items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=(lambda s: [int(x) for x in s.split(",")]) if isinstance(v, list)
                        else type(v), default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "expo_vs_sac.json"))
    ap.add_argument("--run-dir", default="runs/expo_vs_sac", help="settings, demos, result files and run folders")
    ap.add_argument("--launcher", default="local", help="configs/hydra/launcher: local | slurm | slurm_local")
    ap.add_argument("--jobs", type=int, default=None, help="local launcher: runs at a time (default: one per core)")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("DOPA_THREADS", "1")), help="torch threads per run")
    ap.add_argument("--hydra", nargs="*", default=[], help="more Hydra overrides, e.g. hydra.launcher.partition=gpu")
    args = ap.parse_args(argv)
    p = dict(PRESETS[args.preset])
    for k in PRESETS["small"]:
        if getattr(args, k) is not None:
            p[k] = getattr(args, k)
    log = lambda s: print(s, flush=True)  # noqa: E731
    t0 = time.time()
    group = prepare_group(p, args.preset, Path(args.run_dir), log)
    todo = [f"{m}_seed{s}" for s in range(p["seeds"]) for m in ("expo", "sac")
            if not (group / "results" / f"{m}_seed{s}.json").exists()]
    log(f"{len(todo)} of {2 * p['seeds']} (method, seed) runs to do in {group}"
        + (f" through hydra/launcher={args.launcher}" if todo else ""))
    if todo:
        failures = multirun("expo_vs_sac", run_task, ["method=expo,sac", f"seed={','.join(map(str, range(p['seeds'])))}",
                                                      f"group_dir={group}", f"threads={args.threads}"],
                            launcher=args.launcher, n_jobs=args.jobs, extra=args.hydra)
        for f in failures:
            log(f"  failed: {f}")
    results = load_results(group, p["seeds"])
    if not all(results[m] for m in ("expo", "sac")):
        raise SystemExit(f"no finished runs of both methods in {group / 'results'}")

    def steps(method):  # a run that never reached 80 % has no figure: None, never the budget
        return [r["steps_to_80"] for r in results[method]]

    def mean_reached(method):  # the mean only when every seed reached 80 %; else not measured (None)
        v = steps(method)
        return float(np.mean(v)) if v and all(x is not None for x in v) else None

    expo_mean, sac_mean = mean_reached("expo"), mean_reached("sac")
    # the ratio needs both means: with a seed of either method short of 80 % it is not measured
    ratio = float(sac_mean / max(expo_mean, 1)) if expo_mean is not None and sac_mean is not None else None
    metrics = {
        "steps_ratio_sac_over_expo": ratio,
        "expo_steps_to_80_mean": expo_mean, "sac_steps_to_80_mean": sac_mean,
        "expo_steps_to_80": [r["steps_to_80"] for r in results["expo"]],
        "sac_steps_to_80": [r["steps_to_80"] for r in results["sac"]],
        "expo_reached_80": sum(r["steps_to_80"] is not None for r in results["expo"]),
        "sac_reached_80": sum(r["steps_to_80"] is not None for r in results["sac"]),
        "expo_final_success_mean": float(np.mean([r["curve"][-1][1] for r in results["expo"]])),
        "sac_final_success_mean": float(np.mean([r["curve"][-1][1] for r in results["sac"]])),
        "expo_wall_s": [round(r["wall_s"], 1) for r in results["expo"]],
        "sac_wall_s": [round(r["wall_s"], 1) for r in results["sac"]],
        "expo_curves": [r["curve"] for r in results["expo"]], "sac_curves": [r["curve"] for r in results["sac"]],
        "total_wall_s": round(time.time() - t0, 1),
    }
    note = ("steps to 80% = first evaluation at or above 80%; a seed that never got there is null (not reached), "
            "and a method's mean is null unless every seed reached 80%; the ratio needs both means (else null)")
    n_seeds = min(len(results["expo"]), len(results["sac"]))
    both_reached = metrics["expo_reached_80"] == p["seeds"] and metrics["sac_reached_80"] == p["seeds"]
    targets = {"steps_ratio_sac_over_expo": ">= 2.0 (EXPO needs at most half the steps of SAC)",
               "seeds": ">= 3"}
    met = {"steps_ratio_sac_over_expo": bool(ratio is not None and ratio >= 2.0),
           "seeds": n_seeds >= 3}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "expo_vs_sac", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}, "
                      f"{torch.get_num_threads()} threads",
           "command": " ".join(["python", "benchmarks/expo_vs_sac.py", *(sys.argv[1:] if argv is None else argv)]),
           "preset": args.preset, "settings": p, "both_reached_80_all_seeds": both_reached, "note": note,
           "metrics": metrics, "targets": targets, "met": met}
    write_json(out, doc)
    plot(results, out.with_suffix(".png"), p)
    log(f"EXPO steps to 80%: {metrics['expo_steps_to_80']}  SAC: {metrics['sac_steps_to_80']}  "
        f"ratio SAC/EXPO = {'not measured' if ratio is None else f'{ratio:.2f}'} (target >= 2)  [{metrics['total_wall_s']:.0f} s] -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
