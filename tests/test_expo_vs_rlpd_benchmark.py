"""benchmarks/expo_vs_rlpd.py at a tiny size on real Lift: the three arms (EXPO, RLPD, RLPD + BC
start) through the project's training loop from recorded imperfect demos, per-run result files that
a rerun skips, the aggregate (JSON in DESIGN.md's format, PNG, nulls kept null), and bad arms refused."""

import json

import pytest

import benchmarks.expo_vs_rlpd as evr
from benchmarks import common

SHARED = ["total_steps=20", "eval.every=10", "eval.episodes=2", "env.kwargs.max_episode_steps=10", "bench.demos=2",
          "learner.batch_size=8", "learner.buffer_size=200"]
ARM_SIZES = {
    "expo": ["learner=expo_cpu", "learner.pretrain_steps=5", "learner.start_training=5", "learner.num_qs=2",
             "learner.base_hidden_dim=16", "learner.critic_hidden_dims=[16,16]", "learner.edit_hidden_dims=[16,16]"],
    "rlpd": ["learner=rlpd", "learner.hidden=[16,16]", "learner.num_critics=2", "learner.utd_ratio=1",
             "learner.learning_starts=5"],
    "rlpd_bc": ["learner=rlpd_bc", "learner.hidden=[16,16]", "learner.num_critics=2", "learner.utd_ratio=1",
                "learner.learning_starts=5", "learner.bc_steps=5"],
}


def _cfg(tmp_path, *extra):
    return common.compose_groups(evr.NAME, [*SHARED, f"bench.out_dir={tmp_path / 'runs'}",
                                            f"bench.record_dir={tmp_path / 'records'}",
                                            f"bench.data_dir={tmp_path / 'data'}", *extra])[0]


def test_defaults_are_the_published_learners_on_joint_position_lift_with_imperfect_demos():
    cfg = common.compose_groups(evr.NAME, [])[0]
    assert cfg.env.name == "lift" and cfg.env.kwargs.controller == "joint_position"
    assert cfg.env.kwargs.max_episode_steps >= 2 * 129.65 and cfg.env.kwargs.terminate_on_success
    assert cfg.reward.mode == "sparse" and cfg.eval.episodes >= 20 and cfg.eval.at_start and cfg.total_steps >= 20000
    assert 3 <= cfg.bench.demos <= 5 and sum(v for k, v in cfg.bench.imperfections.items() if k != "none") > 0
    assert evr.arm_of(cfg) == "expo"
    rlpd = common.compose_groups(evr.NAME, ["learner=rlpd"])[0]
    assert evr.arm_of(rlpd) == "rlpd" and rlpd.learner.utd_ratio == 20 and rlpd.learner.num_critics == 10
    assert evr.arm_of(common.compose_groups(evr.NAME, ["learner=rlpd_bc"])[0]) == "rlpd_bc"
    assert evr.group_of(cfg) == evr.group_of(rlpd)  # the learner is the arm, not the group
    assert evr.group_of(cfg) != evr.group_of(common.compose_groups(evr.NAME, ["bench.demos=3"])[0])
    with pytest.raises(ValueError, match=r"unknown arm learner 'control.ppo.PPOConfig'; the benchmark's arms"):
        evr.arm_of(common.compose_groups(evr.NAME, ["learner=ppo"])[0])


def test_three_arms_result_files_rerun_skips_and_aggregate(tmp_path):
    logs = []
    for arm, sizes in ARM_SIZES.items():
        res = evr.run_one(_cfg(tmp_path, *sizes), log=logs.append)
        assert not res["skipped"] and res["arm"] == arm and res["env_steps"] == 20
        assert [row[0] for row in res["curve"]] == [0, 10, 20]  # env step 0 (the offline start), then every 10
        if res["env_steps_to_80"] is None:
            assert res["episodes_to_80"] is None  # never reached: null, not the budget
    assert res["settings"]["config"]["learner"]["bc_steps"] == 5
    files = sorted(p.name for p in evr.paths(_cfg(tmp_path))["results"].glob("*.json"))
    assert files == ["expo_seed0.json", "rlpd_bc_seed0.json", "rlpd_seed0.json"]
    assert len(list((tmp_path / "data").glob("lift-joint_position-2-*.hdf5"))) == 1  # recorded once for all arms
    again = evr.run_one(_cfg(tmp_path, *ARM_SIZES["rlpd"]), log=logs.append)
    assert again["skipped"] and "done already" in logs[-1]
    out = evr.aggregate(_cfg(tmp_path), "tiny", pilot=True, results_dir=tmp_path / "res", log=logs.append)
    on_disk = json.loads((tmp_path / "res" / "tiny.json").read_text())
    assert on_disk == out and set(on_disk["met"]) == set(evr.TARGETS)
    m = on_disk["metrics"]
    assert set(m["arms"]) == set(evr.ARMS) and m["pilot"]
    assert set(m["setting"]["learners"]) == set(evr.ARMS)
    for a in m["arms"].values():
        assert a["final_episodes"] == 2 and 0 <= a["final_success_ci"][0] <= a["final_success"] <= a["final_success_ci"][1]
    if m["arms"]["expo"]["env_steps_to_80"] is None:
        assert m["rlpd_over_expo_env_steps_to_80"] is None and not on_disk["met"]["rlpd_over_expo_env_steps_to_80"]
    assert (tmp_path / "res" / "tiny.png").stat().st_size > 1000


def test_summary_ratio_and_intervals():
    def run(arm, seed, s80):
        return {"arm": arm, "seed": seed, "curve": [[0, 0, 0.0, 0, 20, 1.0], [s80 or 2000, 9, 0.9, 18, 20, 9.0]],
                "env_steps_to_80": s80, "episodes_to_80": None if s80 is None else s80 // 100, "final_successes": 18,
                "final_episodes": 20, "env_steps": 2000, "wall_s": 10.0, "env_steps_per_s": 100.0}

    runs = {"expo": [run("expo", s, v) for s, v in enumerate([2000, 4000, 2000])],
            "rlpd": [run("rlpd", s, v) for s, v in enumerate([8000, 10000, 6000])],
            "rlpd_bc": [run("rlpd_bc", 0, None), run("rlpd_bc", 1, 4000)]}
    metrics, met = evr.summarize(runs)
    assert metrics["rlpd_over_expo_env_steps_to_80"] == pytest.approx(8000 / (8000 / 3))
    lo, hi = metrics["rlpd_over_expo_env_steps_to_80_ci"]
    assert lo <= metrics["rlpd_over_expo_env_steps_to_80"] <= hi and lo > 1.0
    assert met == {"rlpd_over_expo_env_steps_to_80": True, "rlpd_over_expo_ci_low_above_1": True}
    assert metrics["rlpd_bc_over_expo_env_steps_to_80"] is None  # a seed never reached 80 %: no ratio
