"""benchmarks/qarl_vs_sac.py at a tiny size: real cartpole runs of two arms (SAC alone and QARL),
the per-(arm, seed) result file, the rerun skip and the aggregate's JSON and heatmaps."""

import json

import pytest

from benchmarks import common
from benchmarks import qarl_vs_sac as qvs

TINY = ["env.kwargs.max_episode_steps=20", "total_steps=120", "log_every=40", "learner.learning_starts=20",
        "learner.hidden=[16,16]", "learner.batch_size=8", "learner.buffer_size=1000", "bench.episodes=2",
        "bench.grid_episodes=1", "bench.mass=[0.5,1.0]", "bench.friction=[1.0,1.5]",
        "bench.adversary={phase_episodes: 1, update_episodes: 2, threshold: 0.0}"]


def _cfg(tmp_path, *extra):
    return common.compose_groups(qvs.NAME, [*TINY, f"bench.out_dir={tmp_path / 'runs'}",
                                            f"bench.record_dir={tmp_path / 'records'}", *extra])[0]


def test_two_arms_train_evaluate_the_grid_skip_on_rerun_and_aggregate(tmp_path):
    logs = []
    sac = qvs.run_one(_cfg(tmp_path, "adversary=none"), log=logs.append)
    qarl = qvs.run_one(_cfg(tmp_path, "adversary=qarl", "adversary.adversary.learning_starts=20",
                            "adversary.adversary.hidden=[16,16]", "adversary.adversary.batch_size=8"), log=logs.append)
    for res in (sac, qarl):
        assert not res["skipped"] and res["env_steps"] >= 120
        assert len(res["nominal"]["returns"]) == 2 and res["nominal"]["return_mean"] >= 0
        grid = res["grid"]["return_mean"]
        assert len(grid) == 2 and all(len(row) == 2 for row in grid)  # friction x mass cells
        assert min(min(row) for row in grid) == pytest.approx(res["worst"])
    assert sac["arm"] == "sac" and qarl["arm"] == "qarl"
    assert qarl["settings"]["config"]["adversary"]["phase_episodes"] == 1  # bench.adversary merged in
    assert sac["group"] == qarl["group"]  # the arm is not part of the group
    p = qvs.paths(_cfg(tmp_path, "adversary=none"), "sac", 0)
    assert p["result"] == tmp_path / "records" / sac["group"] / "sac_seed0.json"
    assert json.loads(p["result"].read_text())["grid_mean"] == sac["grid_mean"]
    again = qvs.run_one(_cfg(tmp_path, "adversary=none"), log=logs.append)
    assert again["skipped"] and "done already" in logs[-1]
    out = qvs.aggregate([_cfg(tmp_path)], "tiny", results_dir=tmp_path / "results", log=logs.append)
    task = out["metrics"]["tasks"]["cartpole-swingup"]
    assert set(task["arms"]) == {"sac", "qarl"} and set(out["met"]) == set(qvs.TARGETS)
    assert (tmp_path / "results" / "tiny.png").stat().st_size > 1000


def test_an_unknown_arm_is_refused():
    cfg = common.compose_groups(qvs.NAME, ["adversary=linear"])[0]  # a curriculum the benchmark has no arm for
    with pytest.raises(ValueError, match="unknown arm adversary='linear'; the benchmark's arms: none, qarl, rarl"):
        qvs.arm_of(cfg)


def test_ratio_interval_over_tasks_and_seeds():
    def task(sac, qarl):
        return {"arms": {"sac": {"grid_mean": {"per_seed": sac}}, "qarl": {"grid_mean": {"per_seed": qarl}}}}

    both = {"a": task([100.0, 110.0, 90.0], [130.0, 140.0, 120.0]), "b": task([200.0, 220.0, 180.0], [200.0, 220.0, 180.0])}
    lo, hi = qvs.ratio_ci(both, "qarl_over_sac_grid_mean")
    assert lo < (1.3 + 1.0) / 2 < hi and hi - lo < 0.5  # the mean over tasks of each task's ratio of means
    lo_a, hi_a = qvs.ratio_ci({"a": both["a"]}, "qarl_over_sac_grid_mean")
    assert lo_a < 1.3 < hi_a and lo_a > lo  # task a alone: 1.3x, all of its interval above the mean's
    assert qvs.ratio_ci({"a": task([100.0], [130.0])}, "qarl_over_sac_grid_mean") is None  # one seed
    assert qvs.ratio_ci({"a": task([0.0, 5.0], [1.0, 2.0])}, "qarl_over_sac_grid_mean") is None  # SAC at 0
    with pytest.raises(ValueError, match="ratio key 'qarl_grid_mean': expected '<arm>_over_sac_<figure>'"):
        qvs.ratio_ci(both, "qarl_grid_mean")
