"""The GoRL comparison (benchmarks/gorl_vs_ppo.py) at tiny size on real cartpole-swingup: each arm
trains through the project's loop and writes its result file, the gorl arm records every refit's
before/after evaluation with the learner's fidelity metrics, a rerun skips finished runs, the
aggregate writes JSON + PNG, and groups measured before `decoder_coupling` existed stay findable."""

import json
from pathlib import Path

import pytest
from omegaconf import open_dict

import benchmarks.gorl_vs_ppo as gvp
from benchmarks import common

TINY = ["num_envs=2", "learner.num_steps=8", "learner.num_minibatches=2", "learner.update_epochs=1",
        "learner.critic_hidden=[16]", "env.kwargs.max_episode_steps=20", "total_steps=240", "bench.refits=1",
        "eval.every=120", "eval.episodes=2", "learner.decoder_epochs=2", "learner.decoder_targets_per_state=2"]


def _cfg(tmp_path, *extra):
    return common.compose_groups(gvp.NAME, [*TINY, f"bench.out_dir={tmp_path / 'runs'}",
                                                 f"bench.record_dir={tmp_path / 'records'}", *extra])[0]


def test_three_arms_train_record_refits_and_aggregate(tmp_path):
    logs = []
    results = {arm: gvp.run_one(_cfg(tmp_path, f"bench.arm={arm}"), log=logs.append) for arm in gvp.ARMS}
    gorl = results["gorl"]
    assert len(gorl["refits"]) == 1, gorl["refits"]
    refit = gorl["refits"][0]
    assert refit["env_steps_after"] > refit["env_steps_before"] >= 2 * 8  # evaluated around the collection
    for k in ("refit_action_mean_err", "refit_action_std_ratio", "refit_det_action_err", "decoder_epochs"):
        assert k in refit and refit[k] == refit[k], (k, refit)  # recorded, not NaN
    assert refit["decoder_epochs"] <= 2
    for arm, res in results.items():
        assert res["env_steps"] >= 240 and not res["skipped"], arm
        assert [c[0] for c in res["curve"]][:1] == [0] and len(res["curve"]) >= 2, (arm, res["curve"])
        assert res["final_return"] is not None and res["final_return"] >= 0
    assert results["gorl_1stage"]["refits"] == [] and results["ppo"]["refits"] == []
    # the ppo arm is control/ppo.py with GoRL's rollout settings
    ppo_cfg = results["ppo"]["settings"]["config"]["learner"]
    assert ppo_cfg["_target_"].endswith("PPOConfig") and ppo_cfg["num_steps"] == 8
    p = gvp.paths(_cfg(tmp_path), "gorl", 0)
    assert p["result"] == tmp_path / "records" / p["group"].name / "gorl_seed0.json" and p["result"].exists()
    assert p["run"] == tmp_path / "runs" / p["group"].name / "gorl_seed0" and not p["result"].is_relative_to(p["run"].parent)
    again = gvp.run_one(_cfg(tmp_path, "bench.arm=gorl"), log=logs.append)
    assert again["skipped"] and "skipped" in logs[-1]
    out = gvp.aggregate([_cfg(tmp_path)], "tiny", results_dir=tmp_path / "results", log=logs.append)
    task = out["metrics"]["tasks"]["cartpole-swingup"]
    assert set(task["arms"]) == set(gvp.ARMS)
    assert set(out["met"]) == {"cartpole-swingup/gorl_over_gorl_1stage_final", "cartpole-swingup/max_refit_drop_pct"}
    assert "cartpole-swingup/gorl_over_gorl_1stage_final" in out["metrics"]
    assert (tmp_path / "results" / "tiny.png").stat().st_size > 0


def test_groups_from_before_decoder_coupling_stay_findable(tmp_path):
    """A run at the paper's coupling hashes as the groups measured before the key existed; the new
    default (policy coupling) makes a group of its own."""
    old = _cfg(tmp_path, "learner.decoder_coupling=independent")
    new = _cfg(tmp_path)
    legacy = _cfg(tmp_path)
    with open_dict(legacy):
        legacy.learner.pop("decoder_coupling")
    assert gvp.group_of(old) == gvp.group_of(legacy) != gvp.group_of(new)


def test_a_budget_with_no_encoder_steps_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"total_steps=100 leaves 20 encoder steps after 1 collections of 80"):
        gvp.gorl_schedule(_cfg(tmp_path, "total_steps=100"))
    with pytest.raises(ValueError, match="bench.refits must be an int >= 1"):
        gvp.gorl_schedule(_cfg(tmp_path, "bench.refits=0"))


def test_result_files_are_json_with_the_run_settings(tmp_path):
    cfg = _cfg(tmp_path, "bench.arm=gorl_1stage", "total_steps=64", "eval.every=64")
    res = gvp.run_one(cfg, log=lambda *_: None)
    stored = json.loads(gvp.paths(cfg, "gorl_1stage", 0)["result"].read_text())
    assert stored["settings"]["config"]["learner"]["stage_steps"] == [gvp.ONE_STAGE]
    assert stored["final_return"] == res["final_return"]


def test_result_files_default_to_a_tracked_folder_named_after_the_out_dir(tmp_path):
    """Without bench.record_dir the result files go to benchmarks/results/runs/<last part of out_dir>/:
    the default out_dir's records are the benchmark's, a pilot's own out_dir keeps its own records."""
    cfg = common.compose_groups(gvp.NAME, [])[0]
    p = gvp.paths(cfg, "gorl", 3)
    assert p["result"] == common.RESULTS / "runs" / "gorl_vs_ppo" / p["group"].name / "gorl_seed3.json"
    assert p["run"] == Path("runs/gorl_vs_ppo") / p["group"].name / "gorl_seed3"
    pilot = common.compose_groups(gvp.NAME, ["bench.out_dir=runs/gorl_pilot"])[0]
    assert gvp.paths(pilot)["results"] == common.RESULTS / "runs" / "gorl_pilot" / p["group"].name
