"""Scripted-expert success rates: each robosuite task, each controller, seeded episodes, no cameras.

    .venv/bin/python benchmarks/expert_success.py                       # 50 episodes per task (OSC)
    .venv/bin/python benchmarks/expert_success.py --joint-episodes 20   # plus joint_position

Target (the demonstrations issue): at least 90% success over 50 seeded episodes per task. Episodes
are recorded exactly as ``dopa demos`` records them (``sim.demos.record_episode``), with the same
time limits (the task's for ``osc_pose``, doubled for ``joint_position``), and every successful
episode is checked to carry N strictly increasing keyframes inside the episode.
Writes benchmarks/results/expert_success.json and expert_success.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import sim  # noqa: E402
from benchmarks.common import RESULTS, save_figure, write_result  # noqa: E402
from sim.demos import record_episode  # noqa: E402
from sim.experts import ScriptedExpert  # noqa: E402


def run_task(task: str, controller: str, episodes: int, seed: int) -> dict:
    spec = sim.get_task(task)
    limit = spec.max_episode_steps * (2 if controller == "joint_position" else 1)
    env = sim.make_env(task, num_envs=1, seed=seed, controller=controller, max_episode_steps=limit + 1,
                       terminate_on_success=False)
    expert = ScriptedExpert(env, seed=seed)
    ok, lengths, kf_ok, t0 = [], [], [], time.perf_counter()
    for i in range(episodes):
        ep = record_episode(env, expert, seed=seed + i, imperfection="none", max_steps=limit)
        ok.append(ep.success)
        lengths.append(ep.num_steps)
        kf = np.asarray(ep.keyframes)
        if ep.success:
            kf_ok.append(kf.size == len(spec.subtasks) and bool(np.all(np.diff(kf) > 0))
                         and kf.min() >= 1 and kf.max() <= ep.num_steps)
    env.close()
    wall = time.perf_counter() - t0
    rate = float(np.mean(ok))
    print(f"{task:15s} {controller:14s} success {sum(ok)}/{episodes} = {rate:.2f}  mean T {np.mean(lengths):.0f} "
          f"(limit {limit})  keyframes valid {sum(kf_ok)}/{len(kf_ok)}  {wall:.0f} s", flush=True)
    return {"success_rate": rate, "episodes": episodes, "successes": int(sum(ok)),
            "mean_steps": float(np.mean(lengths)), "time_limit": limit,
            "keyframes_valid": int(sum(kf_ok)), "wall_s": round(wall, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=50, help="episodes per task with osc_pose")
    p.add_argument("--joint-episodes", type=int, default=0, help="episodes per task with joint_position")
    p.add_argument("--tasks", nargs="*", default=["lift", "stack", "pick-place-can", "door"])
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--plot-only", action="store_true", help="redraw the plot from the saved results")
    a = p.parse_args(argv)
    if a.plot_only:
        a.episodes = a.joint_episodes = 0
    metrics, targets, met = {}, {}, {}
    previous = RESULTS / "expert_success.json"
    if previous.exists():  # runs of other tasks/controllers are kept; re-run ones are replaced
        old = json.loads(previous.read_text())
        metrics, targets, met = old["metrics"], old["targets"], old["met"]
    plan = [(t, "osc_pose", a.episodes) for t in a.tasks if a.episodes > 0]
    plan += [(t, "joint_position", a.joint_episodes) for t in a.tasks if a.joint_episodes > 0]
    for task, ctrl, n in plan:
        r = run_task(task, ctrl, n, a.seed)
        key = f"{task}/{ctrl}"
        metrics[f"{key}/success_rate"] = r["success_rate"]
        for k in ("episodes", "mean_steps", "time_limit", "keyframes_valid", "wall_s"):
            metrics[f"{key}/{k}"] = r[k]
        targets[f"{key}/success_rate"] = ">= 0.9"
        met[f"{key}/success_rate"] = r["success_rate"] >= 0.9
        targets[f"{key}/keyframes_valid"] = "all successful episodes"
        met[f"{key}/keyframes_valid"] = r["keyframes_valid"] == r["successes"]
        # after every task, so partial runs keep their results; runs of other tasks/controllers are
        # merged in (the "command" field names the latest run)
        write_result("expert_success", metrics, targets, met)
    order = ["lift", "stack", "pick-place-can", "door"]
    done = sorted({tuple(k.split("/")[:2]) for k in metrics if k.endswith("/success_rate")},
                  key=lambda tc: (tc[1] != "osc_pose", order.index(tc[0]) if tc[0] in order else 99))
    _plot(metrics, [(t, c, None) for t, c in done])
    print(f"wrote {RESULTS / 'expert_success.json'}")
    return 0


def _plot(metrics: dict, plan) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{t}\n{c}\n{metrics[f'{t}/{c}/episodes']} episodes" for t, c, _ in plan]
    rates = [metrics[f"{t}/{c}/success_rate"] for t, c, _ in plan]
    fig, ax = plt.subplots(figsize=(1.6 * len(plan) + 2, 3.5))
    ax.bar(range(len(plan)), rates, color=["tab:blue" if c == "osc_pose" else "tab:orange" for _, c, _ in plan])
    ax.axhline(0.9, color="k", ls="--", lw=1, label="target 0.9")
    ax.set_xticks(range(len(plan)), labels, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate")
    ax.set_title("scripted experts: success over seeded episodes")
    ax.legend(loc="lower right")
    fig.tight_layout()
    save_figure(fig, RESULTS / "expert_success.png", dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
