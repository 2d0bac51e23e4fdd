"""The GoRL refit-fidelity probe (benchmarks/gorl_refit_fidelity.py) at tiny size on real
cartpole-swingup: its config keeps gorl_vs_ppo's settings, one seed runs the learner's own stage 0
and refit per variant, writes its result file, a rerun skips it, and the aggregate writes JSON + PNG."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import benchmarks.gorl_refit_fidelity as grf
from benchmarks import common

TINY = ["num_envs=2", "learner.num_steps=8", "learner.num_minibatches=2", "learner.update_epochs=1",
        "learner.critic_hidden=[16]", "env.kwargs.max_episode_steps=20", "fidelity.stage_steps=32",
        "fidelity.eval_episodes=2", "total_steps=2000", "fidelity.default=policy",
        "~fidelity.variants", "+fidelity.variants={independent:{decoder_coupling:independent,decoder_epochs:3},"
        "policy:{decoder_coupling:policy,decoder_epochs:3}}"]


def test_probe_keeps_the_comparisons_settings():
    probe = common.compose_groups(grf.NAME, [])[0]
    comparison = common.compose_groups("gorl_vs_ppo", ["total_steps=300000"])[0]  # the probe stage's schedule
    for key in ("env", "learner", "num_envs", "seed", "threads"):
        assert common.plain(probe[key]) == common.plain(comparison[key]), key
    assert probe.eval.seed == comparison.eval.seed and probe.fidelity.default in probe.fidelity.variants
    # the defaults the probe's target is on are the learner's own
    learner = OmegaConf.load(Path(grf.ROOT) / "configs" / "learner" / "gorl.yaml")
    default = probe.fidelity.variants[probe.fidelity.default]
    assert default.decoder_coupling == learner.decoder_coupling
    assert default.decoder_targets_per_state == learner.decoder_targets_per_state


def test_one_seed_refits_each_variant_on_the_same_snapshot_and_aggregates(tmp_path):
    cfg = common.compose_groups(grf.NAME, [*TINY, f"fidelity.out_dir={tmp_path / 'runs'}",
                                          f"fidelity.record_dir={tmp_path / 'records'}"])[0]
    logs = []
    res = grf.run_one(cfg, log=logs.append)
    assert set(res["variants"]) == {"independent", "policy"}
    for name, r in res["variants"].items():
        for k in ("refit_action_mean_err", "refit_det_action_err", "det_return", "stoch_return"):
            assert r[k] == r[k] and r[k] >= 0, (name, k, r[k])  # finite, not NaN
        assert 0.2 < r["refit_action_std_ratio"] < 5.0 and r["decoder_epochs"] <= 3
        assert r["decoder_targets_per_state"] == 16 and r["decoder_data_states"] >= 2 * 2 * 20
    # the same snapshot: both variants saw the same stored states and the same frozen policy
    assert res["variants"]["independent"]["decoder_data_states"] == res["variants"]["policy"]["decoder_data_states"]
    assert res["env_steps"] >= 32 + 2 * 2 * 20
    files = list((tmp_path / "records").glob("*/refit_seed0.json"))  # result files apart from the run folders
    assert len(files) == 1
    again = grf.run_one(cfg, log=logs.append)
    assert again == json.loads(files[0].read_text()) and "skipped" in logs[-1]
    out = grf.aggregate(cfg, results_dir=tmp_path / "results", log=logs.append)
    assert out["benchmark"] == grf.NAME and set(out["metrics"]["variants"]) == {"independent", "policy"}
    assert "default_max_det_drop_pct" in out["met"] and (tmp_path / "results" / f"{grf.NAME}.png").stat().st_size > 0


def test_bad_variants_are_refused_with_the_allowed_keys(tmp_path):
    cfg = common.compose_groups(grf.NAME, [*TINY, f"fidelity.out_dir={tmp_path}", f"fidelity.record_dir={tmp_path}",
                                          "fidelity.default=nope"])[0]
    with pytest.raises(ValueError, match="fidelity.default='nope' is not a variant; variants: independent, policy"):
        grf.run_one(cfg)
    with pytest.raises(ValueError, match=r"unknown keys \['decoder_hiden'\]; allowed: decoder_coupling"):
        grf.check_variants({"a": {"decoder_hiden": [8]}})
    with pytest.raises(ValueError, match="fidelity.variants.a: unknown decoder_coupling 'ot'; known: policy, independent"):
        grf.check_variants({"a": {"decoder_coupling": "ot"}})
    with pytest.raises(ValueError, match="fidelity.variants.b: decoder_targets_per_state must be an int >= 1, got 0"):
        grf.check_variants({"b": {"decoder_targets_per_state": 0}})
    with pytest.raises(ValueError, match="at least one variant"):
        grf.check_variants({})


def test_comparison_groups_hash_a_later_key_at_its_earlier_behaviour_as_absent():
    """benchmarks/gorl_vs_ppo.py: results recorded before ``decoder_coupling`` existed stay findable
    with ``learner.decoder_coupling=independent``; the default (policy) makes another group."""
    from omegaconf import open_dict

    import benchmarks.gorl_vs_ppo as gvp

    old = common.compose_groups("gorl_vs_ppo", ["learner.decoder_coupling=independent"])[0]
    without = common.compose_groups("gorl_vs_ppo", [])[0]
    with open_dict(without):
        without.learner.pop("decoder_coupling")
    assert gvp.group_of(old) == gvp.group_of(without)
    assert gvp.group_of(common.compose_groups("gorl_vs_ppo", [])[0]) != gvp.group_of(old)
