"""The shaping benchmark (benchmarks/shaping_vs_sparse.py) at tiny size on real Lift: the per-run Hydra
config, two arms through the real training loop with EXPO from one recorded demo, per-run result
files that a rerun skips, and the aggregate (JSON in DESIGN.md's format, PNG, nulls kept null)."""

import json
from pathlib import Path

import numpy as np
import pytest

import benchmarks.shaping_vs_sparse as svs
from benchmarks import success_curves

BENCH = Path(svs.__file__).resolve().parent


def bench_cfg(*overrides, hydra_config=False):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(BENCH), version_base="1.3"):
        return compose(config_name=svs.NAME, overrides=list(overrides), return_hydra_config=hydra_config)


TINY = ["total_steps=20", "eval.every=10", "eval.episodes=2", "env.kwargs.max_episode_steps=10",
        "learner.pretrain_steps=5", "learner.start_training=5", "learner.batch_size=8", "learner.num_qs=2",
        "learner.base_hidden_dim=16", "learner.critic_hidden_dims=[16,16]", "learner.edit_hidden_dims=[16,16]",
        "learner.buffer_size=200", "bench.demos=1"]


def test_config_is_the_train_config_with_the_benchmark_setting():
    cfg = bench_cfg("reward=oracle", "seed=3", hydra_config=True)
    assert cfg.env.name == "lift" and cfg.env.kwargs.controller == "joint_position"
    assert cfg.env.kwargs.max_episode_steps >= 2 * 129.65  # twice the scripted expert's mean length
    assert cfg.env.kwargs.terminate_on_success and cfg.learner.offline_done_is_terminal
    assert cfg.learner._target_ == "control.expo.EXPOConfig" and cfg.eval.at_start and cfg.eval.episodes >= 20
    assert svs.arm_of(cfg) == "oracle" and cfg.seed == 3 and cfg.prepare.enabled is False
    # the parallel launcher is installed and composes
    assert "joblib" in bench_cfg("hydra/launcher=joblib", hydra_config=True).hydra.launcher._target_.lower()
    # every arm of a comparison shares the group; the demo count or the budget makes another
    g = svs.group_of(cfg)
    assert g == svs.group_of(bench_cfg("reward=sparse", "seed=0")) and g.startswith("expo_demos10_")
    assert svs.group_of(bench_cfg("bench.demos=5")) != g != svs.group_of(bench_cfg("total_steps=500"))


def test_grm_arms_need_a_checkpoint_and_query_it_on_schedule(tmp_path):
    with pytest.raises(ValueError, match="needs bench.grm"):
        svs.train_config(bench_cfg("reward=grm"), tmp_path / "run", tmp_path / "d.hdf5")
    tc = svs.train_config(bench_cfg("reward=naive", "bench.grm=some/ckpt", "bench.query_every=3"),
                          tmp_path / "run", tmp_path / "d.hdf5")
    assert tc.reward.checkpoint == "some/ckpt" and tc.reward.query_every == 3 and tc.reward.gold == "env"
    assert tc.reward.potential.task_text and "bench" not in tc and list(tc.offline_data) == [str(tmp_path / "d.hdf5")]
    with pytest.raises(ValueError, match="unknown arm"):
        svs.arm_of(bench_cfg("reward=dense"))


def test_two_arms_result_files_rerun_skips_and_aggregate(tmp_path):
    common = [*TINY, f"bench.out_dir={tmp_path / 'runs'}", f"bench.record_dir={tmp_path / 'records'}",
              f"bench.data_dir={tmp_path / 'data'}"]
    logs = []
    for arm in ("sparse", "oracle"):
        res = svs.run_one(bench_cfg(f"reward={arm}", "seed=0", *common), log=logs.append)
        assert not res["skipped"] and res["arm"] == arm
        assert [row[0] for row in res["curve"]] == [0, 10, 20]  # env step 0 (cloned base), then every 10
        assert res["curve"][0][1] == 0 and res["curve"][-1][1] == res["train_episodes"] >= 2  # 10-step episodes
        assert res["env_steps"] == 20 and res["env_steps_per_s"] > 0
        if res["env_steps_to_80"] is None:
            assert res["episodes_to_80"] is None  # never reached: null, not the budget
    assert (tmp_path / "data" / "lift-joint_position-clean-1.hdf5").exists()
    results = svs.paths(bench_cfg(*common))["results"]
    assert results.parent == tmp_path / "records"  # the result files, apart from the run folders
    files = sorted(p.name for p in results.glob("*.json"))
    assert files == ["oracle_seed0.json", "sparse_seed0.json"]
    stored = json.loads((results / "sparse_seed0.json").read_text())
    again = svs.run_one(bench_cfg("reward=sparse", "seed=0", *common), log=logs.append)
    assert again["skipped"] and again["curve"] == stored["curve"] and "skipped" not in stored
    assert "done already" in logs[-1]

    out = svs.aggregate([bench_cfg(*common)], "svs_test", pilot=True, results_dir=tmp_path / "res", log=logs.append)
    on_disk = json.loads((tmp_path / "res" / "svs_test.json").read_text())
    assert set(on_disk) == {"benchmark", "date", "machine", "command", "metrics", "targets", "met"} and on_disk == out
    assert on_disk["targets"] == svs.TARGETS and set(on_disk["met"]) == set(svs.TARGETS)
    assert (tmp_path / "res" / "svs_test.png").stat().st_size > 1000
    m = on_disk["metrics"]
    assert m["pilot"] and set(m["arms"]) == {"sparse", "oracle"} and m["sparse_over_grm_episodes_to_80"] is None
    for a in m["arms"].values():
        assert a["final_episodes"] == 2 and 0 <= a["final_success_ci"][0] <= a["final_success"] <= a["final_success_ci"][1]
    assert not any(on_disk["met"].values())  # no GRM arm: nothing measured, nothing met
    assert m["setting"]["grm_checkpoints"] == {}  # no GRM arm ran


def test_grm_checkpoints_are_read_from_the_runs_configs():
    def run(arm, ckpt):
        return {"arm": arm, "settings": {"config": {"reward": {"checkpoint": ckpt}}}}

    runs = {"sparse": [run("sparse", None)], "grm": [run("grm", "checkpoints/lift_grm"), run("grm", "checkpoints/lift_grm")],
            "naive": [run("naive", "checkpoints/lift_grm"), run("naive", "checkpoints/other")]}
    assert svs.grm_checkpoints(runs) == {"grm": ["checkpoints/lift_grm"], "naive": ["checkpoints/lift_grm", "checkpoints/other"]}


def _run(arm, seed, e80, k=18, n=20, train=150):
    curve = [[0, 0, 0.0, 0, n, 1.0], [1000, 50, k / n, k, n, 9.0]]
    return {"arm": arm, "seed": seed, "curve": curve, "episodes_to_80": e80, "train_episodes": train,
            "env_steps_to_80": None if e80 is None else 20 * e80, "final_successes": k, "final_episodes": n,
            "env_steps": 1000, "wall_s": 10.0, "env_steps_per_s": 100.0}


def test_summary_nulls_stay_null_and_bootstrap_intervals():
    runs = {"sparse": [_run("sparse", s, e) for s, e in enumerate([100, 120, 110, 130, 90])],
            "grm": [_run("grm", s, e) for s, e in enumerate([60, 70, 65, 80, 75])],
            "oracle": [_run("oracle", s, e) for s, e in enumerate([50, 55, 60, 65, 70])],
            "naive": [_run("naive", 0, None, k=3), _run("naive", 1, 90)]}
    m, met = svs.summarize(runs)
    assert m["sparse_over_grm_episodes_to_80"] == pytest.approx(110 / 70)
    lo, hi = m["sparse_over_grm_episodes_to_80_ci"]
    assert 1.0 < lo < 110 / 70 < hi
    assert met["sparse_over_grm_episodes_to_80"] and met["sparse_over_grm_ci_low_above_1"]
    assert m["grm_over_oracle_speedup"] == pytest.approx((110 / 70) / (110 / 60)) and met["grm_over_oracle_speedup"]
    a = m["arms"]["sparse"]
    assert a["episodes_to_80"] == 110 and a["episodes_to_80_ci"][0] < 110 < a["episodes_to_80_ci"][1]
    assert a["env_steps_to_80"] == 2200 and a["final_success"] == pytest.approx(0.9)
    # a seed that never reached 80 %: the arm's mean and ratio are null, the seed's value stays null
    nv = m["arms"]["naive"]
    assert nv["episodes_to_80"] is None and nv["episodes_to_80_per_seed"] == [None, 90] and nv["episodes_to_80_reached"] == "1/2"
    assert m["sparse_over_naive_episodes_to_80"] is None and m["sparse_over_naive_episodes_to_80_ci"] is None
    assert m["sparse_over_grm_episodes_to_80_bound"] is None  # the ratio exists: no bound
    runs["grm"][2] = _run("grm", 2, None, k=5, train=85)
    m, met = svs.summarize(runs)
    assert m["sparse_over_grm_episodes_to_80"] is None and not any(met.values())
    # ... but it can be bounded: the unreached seed took at least its run's 85 training episodes
    assert m["sparse_over_grm_episodes_to_80_bound"] == f"<= {110 / ((60 + 70 + 85 + 80 + 75) / 5):.3g}"
    assert m["grm_over_oracle_speedup_bound"] == f"<= {60 / ((60 + 70 + 85 + 80 + 75) / 5):.3g}"
    assert m["sparse_over_naive_episodes_to_80_bound"] == f"<= {(100 + 120) / (150 + 90):.3g}"  # seeds 0-1
    runs["sparse"][1] = _run("sparse", 1, None, k=5, train=200)  # unreached on both sides: no bound
    assert svs.summarize(runs)[0]["sparse_over_naive_episodes_to_80_bound"] is None
    assert svs.summarize(runs)[0]["sparse_over_grm_episodes_to_80_bound"] is None
    runs["sparse"][1] = _run("sparse", 1, 120)
    assert svs.bootstrap_ci([[1.0]], success_curves._mean) is None  # one seed: no interval
    # a partial sweep: the ratios use the seeds both arms have (sparse seeds 0-4, grm seed 3 only)
    runs["grm"] = [_run("grm", 3, 65)]
    m, met = svs.summarize(runs)
    assert m["sparse_over_grm_episodes_to_80"] == pytest.approx(130 / 65) and m["sparse_over_grm_episodes_to_80_ci"] is None
    assert m["grm_over_oracle_speedup"] == pytest.approx(65 / 65) and m["ratio_seeds"]["grm"] == [3]
    assert m["sparse_over_oracle_episodes_to_80"] == pytest.approx(110 / 60) and m["ratio_seeds"]["oracle"] == [0, 1, 2, 3, 4]
    assert not any(met.values()) and "1 seed(s)" in m["met_note"]  # a partial sweep meets no target
    # each target on its own comparison's seeds: sparse/grm on 5 shared seeds is judged, grm/oracle on 4 is not
    runs["grm"] = [_run("grm", s, e) for s, e in enumerate([60, 70, 65, 80, 75])]
    runs["oracle"] = runs["oracle"][:4]
    m, met = svs.summarize(runs)
    assert met["sparse_over_grm_episodes_to_80"] and met["sparse_over_grm_ci_low_above_1"]
    assert not met["grm_over_oracle_speedup"] and m["met_note"].endswith("grm_over_oracle_speedup 4 seed(s)")
    # figures an unreached seed cannot void: the median while most seeds reached 80 %, and the mean
    # online success (evaluations after env step 0) minus the sparse arm's, paired by seed
    runs["grm"][2] = _run("grm", 2, None, k=5, train=85)
    m, _ = svs.summarize(runs)
    g = m["arms"]["grm"]
    assert g["episodes_to_80"] is None and g["episodes_to_80_median"] == 75 and g["env_steps_to_80_median"] == 1500
    assert g["online_success_per_seed"] == [0.9, 0.9, 0.25, 0.9, 0.9] and g["online_success"] == pytest.approx(0.77)
    assert m["grm_minus_sparse_online_success"] == pytest.approx((0.25 - 0.9) / 5)
    lo, hi = m["grm_minus_sparse_online_success_ci"]
    assert lo < (0.25 - 0.9) / 5 < hi <= 0.0
    assert m["oracle_minus_sparse_online_success"] == 0.0 and m["oracle_minus_sparse_online_success_ci"] == [0.0, 0.0]
    assert svs.summarize_arm([_run("grm", s, None) for s in range(3)] + [_run("grm", 3, 40)])["episodes_to_80_median"] is None
    assert success_curves.online_success([[0, 0, 1.0, 20, 20, 0], [1000, 9, 0.5, 10, 20, 0], [2000, 19, 0.7, 14, 20, 0]]) \
        == pytest.approx(0.6)  # step 0 (the cloned base, the same in every arm) does not count
    assert success_curves.online_success([[0, 0, 1.0, 20, 20, 0]]) is None
    assert svs.summarize({"sparse": [_run("sparse", 0, 50)], "grm": [{**_run("grm", 0, 40), "curve": [[0, 0, 0.0, 0, 20, 0]]}]}
                         )[0]["grm_minus_sparse_online_success"] is None
    assert success_curves.first_reach([[0, 0, 0.5, 10, 20, 0], [1000, 40, 0.8, 16, 20, 0]]) == (1000, 40)
    assert success_curves.first_reach([[0, 0, 0.5, 10, 20, 0]]) == (None, None)
    assert np.isfinite(svs.bootstrap_ci([[1.0, 2.0, 3.0]], success_curves._mean)).all()


def test_a_sweep_records_each_demo_file_once_before_its_jobs(tmp_path, monkeypatch):
    calls = []
    real = svs.record_demos

    def counting(task, n, path, **kw):
        calls.append((n, Path(path).name))
        return real(task, n, path, **kw)

    monkeypatch.setattr(svs, "record_demos", counting)
    argv = ["-m", "reward=sparse,oracle", "seed=0,1", "bench.demos=1", f"bench.data_dir={tmp_path}",
            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    files = svs.record_sweep_demos(argv)
    assert files == [tmp_path / "lift-joint_position-clean-1.hdf5"] and files[0].exists()
    assert calls == [(1, "lift-joint_position-clean-1.hdf5")]  # four jobs, one recording
    assert svs.record_sweep_demos(argv) == files and len(calls) == 1  # present: not recorded again


def test_the_grm_arms_read_demos_with_the_grms_frames(tmp_path):
    """The GRM arms relabel the demos with the GRM's potential, which needs its views: their demo file
    holds them at the GRM's image size, with the same episodes as the state-only file the other arms
    read (rendering leaves the simulation alone); the sparse arm's stays state only."""
    import h5py

    from reward_models.grm import GRM, GRMConfig, save_checkpoint

    ckpt = tmp_path / "grm"
    save_checkpoint(ckpt, GRM(GRMConfig(views=("front",), image_size=16, channels=(4,), width=8, depth=1, heads=2,
                                        hop_bins=5)), {}, None, {})
    common = ["bench.demos=1", f"bench.data_dir={tmp_path}", f"bench.grm={ckpt}"]
    grm_file = svs.offline_file(bench_cfg("reward=grm", *common))
    sparse_file = svs.offline_file(bench_cfg("reward=sparse", *common))
    assert grm_file == tmp_path / "lift-joint_position-clean-1-front-16px.hdf5"
    assert sparse_file == tmp_path / "lift-joint_position-clean-1.hdf5"
    with h5py.File(grm_file, "r") as g, h5py.File(sparse_file, "r") as s:
        (ep,) = list(g["data"])
        assert g["data"][ep]["obs"]["front_image"].shape[1:] == (16, 16, 3)
        np.testing.assert_array_equal(g["data"][ep]["actions"][:], s["data"][ep]["actions"][:])
        assert "front_image" not in s["data"][ep]["obs"]
    with pytest.raises(FileNotFoundError):
        svs.offline_file(bench_cfg("reward=naive", "bench.demos=1", f"bench.data_dir={tmp_path}",
                                   f"bench.grm={tmp_path / 'missing'}"))


def test_demos_follow_the_envs_controller(tmp_path):
    """A sweep on the osc_pose controller records osc_pose demonstrations (7-D actions: 6 pose deltas +
    gripper) in a file of their own; the default (joint_position) ones have 8-D actions (7 joints +
    gripper)."""
    import h5py

    argv = ["-m", "reward=sparse", "bench.demos=1", f"bench.data_dir={tmp_path}"]
    files = svs.record_sweep_demos([*argv, "env.kwargs.controller=osc_pose"]) + svs.record_sweep_demos(argv)
    assert files == [tmp_path / "lift-osc_pose-clean-1.hdf5", tmp_path / "lift-joint_position-clean-1.hdf5"]
    for path, dim in zip(files, (7, 8), strict=True):
        with h5py.File(path, "r") as f:
            shapes = [f["data"][k]["actions"].shape for k in f["data"]]
        assert shapes and all(s[1] == dim for s in shapes), (path, shapes)


def test_bench_grm_main_is_the_main_jobs_adapted_grm_found_once_before_the_runs(tmp_path, monkeypatch):
    """``bench.grm=main``: the launching process finds (or builds) the main job's adapted Lift GRM once
    and hands its folder to every run; commands without a GRM arm leave it alone."""
    from omegaconf import OmegaConf

    seen = []

    def fake_prepare(cfg):  # stands for jobs.prepare.prepare: records what it was asked to prepare
        seen.append(cfg)
        out = OmegaConf.create(OmegaConf.to_container(cfg))
        out.reward.checkpoint = str(tmp_path / "grm" / "lift-adapted-abc" / "checkpoint")
        return out

    path = svs.main_job_grm(prepare_fn=fake_prepare)
    assert path.endswith("lift-adapted-abc/checkpoint") and len(seen) == 1
    main_cfg = seen[0]  # dopa train's defaults: Lift, joint_position, GRM reward with no checkpoint yet
    assert main_cfg.env.name == "lift" and main_cfg.env.kwargs.controller == "joint_position"
    assert main_cfg.reward.name == "grm" and OmegaConf.is_missing(main_cfg.reward, "checkpoint")
    assert main_cfg.prepare.enabled

    calls = []

    def find():
        calls.append(1)
        return "/data/grm/x/checkpoint"

    argv = ["-m", "reward=sparse,grm,naive,oracle", "seed=0,1", "bench.grm=main"]
    assert svs.resolve_sweep_grm(argv, find) == [*argv[:3], "bench.grm=/data/grm/x/checkpoint"] and calls == [1]
    for same in (["-m", "reward=sparse,oracle", "bench.grm=main"], ["reward=grm", "bench.grm=/my/ckpt"], ["seed=0"],
                 ["-m", "reward=choice(sparse,oracle)", "seed=range(0,2)", "bench.grm=main"]):
        assert svs.resolve_sweep_grm(same, find) == same
    assert calls == [1]
    for needs in (["-m", "reward=choice(sparse,naive)", "bench.grm=main"], ["-m", "reward=glob(*)", "bench.grm=main"]):
        assert svs.resolve_sweep_grm(needs, find)[-1] == "bench.grm=/data/grm/x/checkpoint"
    assert calls == [1, 1, 1]
    # a run reached with bench.grm=main (run_one called directly) resolves it itself
    monkeypatch.setattr(svs, "main_job_grm", lambda: "/data/grm/y/checkpoint")
    tc = svs.train_config(bench_cfg("reward=grm", "bench.grm=main"), tmp_path / "run", tmp_path / "d.hdf5")
    assert tc.reward.checkpoint == "/data/grm/y/checkpoint"
    with pytest.raises(ValueError, match="bench.grm=main"):
        svs.train_config(bench_cfg("reward=naive"), tmp_path / "run", tmp_path / "d.hdf5")
