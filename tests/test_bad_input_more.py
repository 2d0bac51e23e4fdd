"""More bad input refused in one line before work starts: the deploy loop values (checked by the
policy node's own rules before ROS starts), ``dopa eval`` out/checkpoint, non-episode HDF5 files,
and the atomic PNG of ``dopa tasks render=true``."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.cli import main


def _run(capsys, *argv) -> tuple[int, str]:
    rc = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


@pytest.fixture
def no_ros(monkeypatch):
    """ROS must not start: rclpy.init fails the test."""
    import rclpy

    def init(*a, **k):
        raise AssertionError("rclpy.init was called before the bad value was refused")

    monkeypatch.setattr(rclpy, "init", init)


@pytest.mark.parametrize("override, message", [
    ("safety.max_delta=-1", "safety.max_delta must be a finite number > 0 rad (one, or one per joint) or null "
                            "(no delta clamp), got -1"),
    ("safety.max_delta=nan", "safety.max_delta must be a finite number > 0 rad"),
    ("safety.velocity_scale=1.5", "safety.velocity_scale must be in (0, 1], got 1.5"),
    ("safety.velocity_scale=nan", "safety.velocity_scale must be in (0, 1], got nan"),
    ("safety.margin=-0.1", "safety.margin must be a finite number >= 0 rad, got -0.1"),
    ("safety.margin=5.0", "safety.margin 5.0 rad leaves no room inside the limits of"),
    ("safety.position_tolerance=inf", "safety.position_tolerance must be a finite number >= 0 rad, got inf"),
    ("watchdog.max_age=nan", "watchdog.max_age must be a finite number > 0 s, got nan"),
    ("watchdog.max_age=0", "watchdog.max_age must be a finite number > 0 s, got 0"),
    ("watchdog.max_future=-1", "watchdog.max_future must be a finite number >= 0 s, got -1"),
    ("action_period=0", "action_period must be a finite number > 0 s, got 0"),
    ("action_period=nan", "action_period must be a finite number > 0 s, got nan"),
    ("joint_step=inf", "joint_step must be a finite number > 0 rad per unit action, got inf"),
    ("rate_hz=0", "rate_hz must be a finite number > 0 Hz, got 0"),
    ("output=position", "unknown output 'position'; allowed: trajectory, forward"),
])
def test_deploy_loop_values_refused_before_ros_starts(capsys, tmp_path, no_ros, override, message):
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "policy.json").write_text("{}")  # the values are refused before the policy is read
    rc, err = _run(capsys, "deploy", f"checkpoint={policy}", "duration_s=1", override)
    assert rc == 1
    assert f"dopa deploy: error: {message}" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("overrides, message", [
    (["sampler=dpm"], "unknown sampler 'dpm'; known: ddpm, ddim"),
    (["sampler=ddim", "sample_steps=11"], "sample_steps must be in [1, diffusion_steps=10], got 11"),
    (["sample_steps=5"], "sample_steps=5 needs sampler=ddim: sampler ddpm (the one in use) runs all diffusion_steps=10 steps"),
    (["sampler=ddim", "sample_steps=2.5"], "sample_steps must be an int in [1, diffusion_steps=10] or null, got 2.5"),
    (["sampler=ddim", "sample_steps=abc"], "sample_steps must be an int in [1, diffusion_steps=10] or null, got 'abc'"),
])
def test_deploy_sampling_refused_before_ros_starts(capsys, tmp_path, no_ros, overrides, message):
    """sampler / sample_steps are tried on the real policy (an EXPO export, 10 diffusion steps)
    before ROS starts."""
    from control.expo_policy import EXPOPolicy
    from control.export import save_policy

    meta = dict(kind="expo", task="lift", controller="joint_position", state_dim=3, action_dim=8,
                action_horizon=1, state_layout=[["x", 3]], views=[], image_size=0, obs_normalizer=None)
    save_policy(tmp_path / "policy", EXPOPolicy(3, 8, base_hidden_dim=8, base_num_blocks=1, time_dim=4,
                                                edit_hidden_dims=[8], critic_hidden_dims=[8]), meta)
    rc, err = _run(capsys, "deploy", f"checkpoint={tmp_path / 'policy'}", "duration_s=1", *overrides)
    assert rc == 1 and f"dopa deploy: error: {message}" in err
    assert len(err.strip().splitlines()) == 1


def test_deploy_config_check_is_the_nodes_check():
    """The node (PolicyCore at configure) refuses what the job refuses: one function, one rule set."""
    from omegaconf import OmegaConf

    from jobs.deploy import build_robot
    from ros.policy_core import check_deploy_config, loop_config

    robot = build_robot(OmegaConf.load("configs/robot/panda.yaml"))
    cfg = OmegaConf.to_container(OmegaConf.load("configs/deploy.yaml"))
    check_deploy_config(cfg, robot)  # the shipped defaults pass
    period, step, safety, (max_age, max_future) = loop_config(cfg, robot)
    assert (period, step, max_age, max_future) == (0.05, 0.05, 0.2, 0.05)
    assert safety.max_delta.tolist() == [0.05] * len(robot.arm_joints)
    cfg["safety"]["max_delta"] = None  # null disables the delta clamp
    assert loop_config(cfg, robot)[2].max_delta is None
    cfg["safety"]["max_delta"] = [0.05] * (len(robot.arm_joints) - 1) + [-0.1]
    with pytest.raises(ValueError, match=r"safety\.max_delta must be a finite number > 0"):
        loop_config(cfg, robot)


def test_deploy_policy_that_does_not_fit_the_robot_is_one_line_naming_both_sizes(capsys, tmp_path, monkeypatch):
    """The policy/robot fit needs the loaded policy, so it stays a configure-time failure; the job's
    last line names the policy's action size and the robot's."""
    from control.export import MLPPolicy, save_policy

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    meta = {"kind": "mlp", "task": "lift", "controller": "joint_position", "state_dim": 7, "action_dim": 8,
            "action_horizon": 1, "state_layout": [["robot0_joint_pos", 7]], "views": [], "image_size": 0,
            "obs_normalizer": None}  # a Panda policy: 7 arm joints + 1 gripper
    folder = tmp_path / "panda_policy"
    save_policy(folder, MLPPolicy(7, 8, hidden=[8]), meta)
    rc = main(["deploy", f"checkpoint={folder}", "robot=ur5e", "duration_s=0", "node_name=dopa_fit_test"])
    err = capsys.readouterr().err
    assert rc == 1
    lines = [ln for ln in err.splitlines() if ln.startswith("dopa deploy:")]
    assert lines == ["dopa deploy: error: configure failed: policy action_dim 8 does not fit robot 'ur5e', "
                     "which takes 6 (6 arm joints)"]


def test_eval_out_folder_refused_before_any_episode(capsys, tmp_path, monkeypatch):
    import sim

    def make_env(*a, **k):
        raise AssertionError("the env was built before out was checked")

    monkeypatch.setattr(sim, "make_env", make_env)
    (tmp_path / "adir").mkdir()
    rc, err = _run(capsys, "eval", f"checkpoint={tmp_path / 'no_run'}", f"out={tmp_path / 'adir'}")
    assert rc == 1
    assert f"out='{tmp_path / 'adir'}' is a folder; give a file path for the JSON result" in err
    assert len(err.strip().splitlines()) == 1
    assert not list((tmp_path / "adir").iterdir())


def test_eval_names_a_grm_checkpoint_and_the_job_that_takes_it(capsys, tmp_path):
    grm = tmp_path / "grm"
    grm.mkdir()
    (grm / "config.json").write_text("{}")
    (grm / "model.safetensors").write_text("")
    rc, err = _run(capsys, "eval", f"checkpoint={grm}")
    assert rc == 1
    assert (f"dopa eval: error: checkpoint='{grm}' is a GRM (reward model) checkpoint, not a policy checkpoint or "
            "run; dopa reward-eval checkpoint=... data=[...] evaluates it") in err
    assert len(err.strip().splitlines()) == 1
    # a folder that is neither keeps the checkpoint loader's message
    (tmp_path / "empty").mkdir()
    rc, err = _run(capsys, "eval", f"checkpoint={tmp_path / 'empty'}")
    assert rc == 1 and "dopa eval: error: " in err
    assert "is neither a checkpoint (no pretrained_model/) nor a run folder" in err


def test_an_hdf5_file_that_is_no_episode_file_is_named_as_such(tmp_path):
    import h5py
    import numpy as np

    from sim.episodes import EpisodeFile, EpisodeFileError, read_episodes

    other = tmp_path / "weights.h5"
    with h5py.File(other, "w") as h:
        h.create_dataset("layer0/kernel", data=np.zeros((4, 4), np.float32))
        h.attrs["framework"] = "keras"
    with pytest.raises(EpisodeFileError) as exc:
        read_episodes(other)
    assert str(exc.value) == (f"{other} is an HDF5 file but not a dopa/robomimic episode file (no data group, "
                              "no env_name attribute); episode files come from dopa demos")
    # an episode file that lost an attribute keeps the precise message
    damaged = tmp_path / "damaged.hdf5"
    with h5py.File(damaged, "w") as h:
        h.create_group("data")
    with pytest.raises(EpisodeFileError, match=r"damaged\.hdf5/@env_name: missing attribute"):
        EpisodeFile(damaged)


def test_tasks_render_png_is_written_atomically(capsys, tmp_path, monkeypatch):
    import imageio.v3 as iio
    import numpy as np

    out = tmp_path / "lift.png"
    assert main(["tasks", "task=lift", "render=true", "image_size=16", f"out={out}"]) == 0
    grid = iio.imread(out)
    assert grid.dtype == np.uint8 and grid.shape[0] == 16 and grid.shape[1] % 16 == 0 and grid.std() > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lift.png"]  # no temp file left
    before = out.read_bytes()

    def failing_write(path, image, **kw):  # dies half-way through the write
        Path(path).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(iio, "imwrite", failing_write)
    main(["tasks", "task=lift", "render=true", "image_size=16", f"out={out}"])
    assert out.read_bytes() == before  # the old PNG stays whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lift.png"]


# ------------------------------------------------------------------------------------------------
# the newest jobs: dopa import, dopa robustness, multirun launchers, adversary=qarl
# ------------------------------------------------------------------------------------------------
def _robomimic(path: Path, demos: int = 2, t: int = 4) -> Path:
    import h5py
    import numpy as np

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for i in range(demos):
            g = f.create_group(f"data/demo_{i}")
            g["actions"] = rng.standard_normal((t, 2)).astype("f4")
            g["dones"] = np.r_[np.zeros(t - 1), 1].astype("u1")
            g["obs/agentview_image"] = rng.integers(0, 255, (t, 20, 24, 3), dtype=np.uint8)
    return path


def test_import_takes_an_episodes_list_and_refuses_bad_ones(capsys, tmp_path):
    src = _robomimic(tmp_path / "rm.hdf5")
    common = ["import", "format=robomimic", f"src={src}", "task_text=lift it"]
    rc, err = _run(capsys, *common, "episodes=[1]", f"out={tmp_path / 'one.hdf5'}")
    assert rc == 0, err
    from sim.episodes import read_episodes

    assert [e.seed for e in read_episodes(tmp_path / "one.hdf5", views=())] == [1]
    for bad in ("[-1]", "[]", "[a]"):
        rc, err = _run(capsys, *common, f"episodes={bad}", f"out={tmp_path / 'bad.hdf5'}")
        assert rc == 1 and "episodes must be null (all) or a non-empty list of ints >= 0" in err, err
    assert not (tmp_path / "bad.hdf5").exists()


@pytest.mark.parametrize("override, message", [
    ("image_size=4", "image_size must be an int in [16, 512], got 4"),
    ("image_size=10", "image_size must be an int in [16, 512], got 10"),
    ("task_text=", "task_text must say what the robot does"),
    ("src=FOLDER", "is a folder; format=robomimic reads one .hdf5 file"),
    ("views=agentview_image", "views must map view names to source keys, e.g. views={front: ...}, got 'agentview_image'"),
    ("out=", "out must name the episode file to write"),
    ("out=episodes.mp4", "out='episodes.mp4' must be an HDF5 episode file ending in .hdf5 or .h5, got suffix '.mp4'"),
])
def test_import_bad_values_name_the_range_the_importer_takes(capsys, tmp_path, monkeypatch, override, message):
    src = _robomimic(tmp_path / "rm.hdf5")
    override = override.replace("FOLDER", str(tmp_path))
    args = ["import", "format=robomimic", f"src={src}", "task_text=lift it", f"out={tmp_path / 'o.hdf5'}", override]
    monkeypatch.chdir(tmp_path)
    rc, err = _run(capsys, *args)
    assert rc == 1 and message in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o.hdf5").exists()


def test_import_refuses_to_write_over_its_own_source(capsys, tmp_path):
    src = _robomimic(tmp_path / "rm.hdf5")
    before = src.read_bytes()
    rc, err = _run(capsys, "import", "format=robomimic", f"src={src}", "task_text=lift it", f"out={src}")
    assert rc == 1 and "is the source file itself" in err, err
    assert src.read_bytes() == before


def test_robustness_grids_override_replaces_the_default_grid_and_a_mapping_key_is_named(capsys):
    from jobs.cli import compose
    from jobs.robustness import check_grids

    cfg = compose("robustness", ["grids={mass_gain: {x: mass, y: gain, x_values: null, y_values: null}}"])
    assert list(check_grids(cfg.grids, cfg.scales)) == ["mass_gain"]
    with pytest.raises(ValueError, match="grids must be a non-empty mapping"):
        cfg = compose("robustness", ["grids={}"])
        check_grids(cfg.grids, cfg.scales)
    with pytest.raises(SystemExit) as exc:
        main(["train", "env={x: 1}"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "unknown key 'env.x'" in err and "did you mean 'env'?" not in err, err
    assert len(err.strip().splitlines()) == 1


def test_robustness_adversary_checkpoint_without_adversary_refused_before_any_episode(capsys, tmp_path, monkeypatch):
    import jobs.robustness as rob

    fake = type("Ckpt", (), {"path": tmp_path, "config": {"adversary": None, "env": {}}})()
    monkeypatch.setattr(rob, "_open", lambda path, key: fake)

    def build_env(*a, **k):
        raise AssertionError("an env was built before the bad adversary checkpoint was refused")

    monkeypatch.setattr(rob, "build_env", build_env)
    rc, err = _run(capsys, "robustness", f"checkpoint={tmp_path}", f"adversary_checkpoint={tmp_path}")
    assert rc == 1 and "holds no adversary (trained with adversary=none)" in err, err


@pytest.mark.parametrize("extra, code, message", [
    (["seed=0,,1"], 2, "bad sweep: Error parsing override 'seed=0,,1'"),
    (["seed=0,1", "hydra.launcher.n_jobs=0"], 1, "hydra.launcher.n_jobs must be an int other than 0"),
    (["seed=0,1", "hydra.launcher.n_jobs=abc"], 1, "got 'abc'"),
    (["seed=0,1", "hydra/launcher=nope"], 2, "unknown hydra/launcher 'nope'; available hydra/launcher choices"),
    (["seed=0,1", "hydra.launcher.nokey=3"], 2, "unknown key 'hydra.launcher.nokey'"),
])
def test_multirun_launcher_values_refused_before_any_job(capsys, tmp_path, extra, code, message):
    rc, err = _run(capsys, "tasks", "-m", "task=lift", *extra, f"hydra.sweep.dir={tmp_path}/s")
    assert rc == code and message in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "s").exists()


@pytest.mark.parametrize("args, message", [
    (["preset=quick"], "the preset would prepare lift demonstrations as learner=expo's offline data"),
    (["learner=ppo"], "learner=ppo is on-policy"),
    (["env=stack", "learner=sac", "reward=dense"], "adversary.perturbations has no entry for task 'stack'"),
])
def test_adversary_refused_before_the_main_job_prepares(capsys, monkeypatch, tmp_path, args, message):
    import jobs.train
    from jobs.cli import compose

    def prepare(cfg):
        raise AssertionError("prepare ran before the adversary was refused")

    monkeypatch.setattr(jobs.train, "prepare", prepare)
    monkeypatch.chdir(tmp_path)
    rc, err = _run(capsys, "train", "adversary=qarl", *args)
    assert rc == 1 and message in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit) as exc:  # the job's own check, for callers that skip the common ones
        jobs.train.run(compose("train", ["adversary=qarl", *args]))
    assert message in str(exc.value.code)
    rc, err = _run(capsys, "train", "-m", "adversary=none,qarl", *args, f"hydra.sweep.dir={tmp_path}/s")
    assert rc == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_adversary_values_name_their_full_key(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    common = ["train", "env=cartpole-swingup", "learner=sac", "reward=dense", "preset=none", "adversary=qarl"]
    rc, err = _run(capsys, *common, "adversary.adversary.hidden=[0]")
    assert rc == 1 and "adversary.adversary.hidden must be a non-empty list of ints >= 1, got [0]" in err, err
    rc, err = _run(capsys, *common, "adversary.perturbations.cartpole.bodies=[]")
    assert rc == 1 and "adversary.perturbations.cartpole: bodies and components must be non-empty" in err, err
    assert list(tmp_path.iterdir()) == []


def test_compose_inside_a_multirun_job_keeps_the_launchers_hydra():
    """A job of a multirun runs with the launcher's GlobalHydra set (the main job's preparation
    composes the demos and reward-train configs inside it)."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    from jobs.cli import compose

    GlobalHydra.instance().clear()
    outer = Hydra.create_main_hydra2(task_name="train", config_search_path=create_config_search_path("pkg://configs"))
    try:
        assert compose("demos", ["n=3"]).n == 3
        assert GlobalHydra.instance().hydra is outer
        with pytest.raises(SystemExit):
            compose("demos", ["no_such_key=1"])
        assert GlobalHydra.instance().hydra is outer
    finally:
        GlobalHydra.instance().clear()


def test_a_learner_that_clones_demos_without_any_is_refused_before_the_run(capsys, monkeypatch, tmp_path):
    """EXPO (learner.pretrain_steps > 0) with no offline data and nothing to prepare them from
    failed only at pretrain(), after the env was built (a sweep: every EXPO job); now one line first."""
    import jobs.train

    def build_env(*a, **k):
        raise AssertionError("the env was built before the missing demonstrations were named")

    monkeypatch.setattr(jobs.train, "build_env", build_env)
    monkeypatch.chdir(tmp_path)
    common = ["env=cartpole-swingup", "reward=dense", "preset=none", "total_steps=50"]
    with pytest.raises(SystemExit) as exc:  # the job's one line (exit code 1 from the interpreter)
        _run(capsys, "train", *common, f"run_dir={tmp_path}/run")
    message = str(exc.value.code)
    assert "learner.pretrain_steps=3000 clones the demonstrations" in message, message
    assert "offline_data=[<episode files>]" in message and len(message.splitlines()) == 1, message
    assert list(tmp_path.iterdir()) == []
    from jobs.build import check_offline_start
    from jobs.cli import compose

    check_offline_start(compose("train", [*common, "learner.pretrain_steps=0"]))  # no cloning: nothing needed
    check_offline_start(compose("train", ["env=lift"]))  # the main job's preset prepares Lift demos
    check_offline_start(compose("train", [*common, "offline_data=[x.hdf5]"]))  # given
