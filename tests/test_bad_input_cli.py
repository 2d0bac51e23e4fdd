"""Bad input to the `dopa` jobs fails fast: one line naming the value and what is allowed, a
non-zero exit code, no traceback, nothing written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.cli import main

REPO = Path(__file__).resolve().parents[1]


def _run(capsys, *argv) -> tuple[int, str]:
    rc = main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


@pytest.mark.parametrize("argv, message", [
    (["demos", "n=abc"], "n must be an int (default 50), got 'abc'"),
    (["demos", "n=2.5"], "n must be an int (default 50), got 2.5"),
    (["demos", "video=maybe"], "video must be true or false (default false), got 'maybe'"),
    (["eval", "checkpoint=x", "episodes=abc"], "episodes must be an int (default 10), got 'abc'"),
    (["sim-robot", "rate_hz=abc"], "rate_hz must be a number (default 20.0), got 'abc'"),
    (["deploy", "checkpoint=x", "rate_hz=abc"], "rate_hz must be a number (default 20.0), got 'abc'"),
    (["reward-train", "pairs.hop_bins=many"], "pairs.hop_bins must be an int (default 25), got 'many'"),
    (["train", "total_steps=abc"], "total_steps must be an int"),  # the main job never starts
    (["eval", "checkpoint=x", "threads=0"], "threads must be an int >= 1, got 0"),
])
def test_wrong_type_is_one_line_before_the_job_runs(capsys, argv, message):
    rc, err = _run(capsys, *argv)
    assert rc == 1
    assert f"dopa {argv[0]}: error: {message}" in err
    assert len(err.strip().splitlines()) == 1


def test_a_group_choice_sets_the_default_types(capsys):
    # learner=sac's keys are checked against learner=sac's defaults, not the default learner's
    rc, err = _run(capsys, "train", "env=lift", "learner=sac", "total_steps=abc")
    assert rc == 1 and "total_steps must be an int" in err


def test_unknown_group_choice_names_the_job_not_the_config(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sim-robot", "robot=nope"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "dopa sim-robot: error: unknown robot 'nope'; available robot choices: panda, ur5e" in err


@pytest.mark.parametrize("job, extra", [
    ("demos", ["n=1"]),
    ("eval", ["checkpoint=x"]),
    ("reward-eval", ["data=[x.hdf5]"]),
    ("reward-train", ["data=[x.hdf5]"]),
    ("tasks", ["task=lift", "render=true"]),
])
def test_output_under_a_file_fails_before_the_job_runs(capsys, tmp_path, job, extra):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    rc, err = _run(capsys, job, *extra, f"out={blocker}/sub/result.hdf5")
    assert rc == 1
    assert f"out='{blocker}/sub/result.hdf5': '{blocker}' is a file, not a folder" in err
    assert sorted(os.listdir(tmp_path)) == ["a_file"]


def test_output_where_no_file_can_be_created(capsys):
    rc, err = _run(capsys, "demos", "n=1", "out=/proc/dopa_bad_input/x.hdf5")
    assert rc == 1
    assert "out='/proc/dopa_bad_input/x.hdf5': cannot create files in '/proc'" in err


def test_sigterm_removes_the_temporary_file(tmp_path):
    """`timeout` / kill during recording: the job unwinds like Ctrl-C, no half-written file stays."""
    out = tmp_path / "d" / "lift.hdf5"
    env = {**os.environ, "MUJOCO_GL": "egl", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "demos", "n=50", "views=[]", f"out={out}"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = out.parent
    try:
        for _ in range(600):  # until the temporary file exists (recording has started)
            if folder.is_dir() and any(p.name.startswith(".lift.hdf5.") for p in folder.iterdir()):
                break
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "dopa demos: interrupted" in err and "Traceback" not in err, err
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("override, message", [
    ("n=-3", "n must be an int >= 1, got -3"),
    ("noise_std=nan", "noise_std must be a finite number >= 0, got nan"),
    ("max_episode_steps=0", "max_episode_steps must be an int >= 1, got 0"),
    ("stop_steps=-1", "stop_steps must be an int >= 0, got -1"),
])
def test_demos_values_checked_before_recording(capsys, tmp_path, override, message):
    rc, err = _run(capsys, "demos", "views=[]", f"out={tmp_path}/d.hdf5", override)
    assert rc == 1 and f"dopa demos: error: {message}" in err
    assert list(tmp_path.iterdir()) == []


def test_demos_out_that_is_a_folder(capsys, tmp_path):
    rc, err = _run(capsys, "demos", "n=1", "views=[]", f"out={tmp_path}")
    assert rc == 1 and f"out='{tmp_path}' is a folder; out is the .hdf5 file to write" in err
    assert list(tmp_path.iterdir()) == []


def _policy_checkpoint(tmp_path) -> Path:
    ckpt = tmp_path / "run" / "checkpoints" / "step_000000800"
    (ckpt / "pretrained_model").mkdir(parents=True)
    (ckpt / "deploy").mkdir()
    (ckpt / "deploy" / "policy.json").write_text("{}")
    return ckpt


@pytest.mark.parametrize("job", ["reward-eval", "reward-adapt"])
def test_grm_jobs_refuse_a_policy_checkpoint(capsys, tmp_path, job):
    ckpt = _policy_checkpoint(tmp_path)
    rc, err = _run(capsys, job, f"checkpoint={ckpt}", "data=[x.hdf5]" if job == "reward-eval" else "demo=x.hdf5",
                   f"out={tmp_path}/out")
    assert rc == 1 and f"checkpoint='{ckpt}' is a policy checkpoint or run, not a GRM checkpoint" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("job", ["reward-eval", "reward-adapt"])
def test_grm_jobs_name_a_missing_or_wrong_checkpoint(capsys, tmp_path, job):
    data = "data=[x.hdf5]" if job == "reward-eval" else "demo=x.hdf5"
    rc, err = _run(capsys, job, f"checkpoint={tmp_path}/nope", data, f"out={tmp_path}/out")
    assert rc == 1 and f"checkpoint='{tmp_path}/nope' does not exist" in err
    (tmp_path / "notes").mkdir()
    rc, err = _run(capsys, job, f"checkpoint={tmp_path}/notes", data, f"out={tmp_path}/out")
    assert rc == 1 and "is not a GRM checkpoint: it needs config.json and model.safetensors" in err


def test_reward_eval_without_data(capsys, tmp_path):
    rc, err = _run(capsys, "reward-eval", f"checkpoint={tmp_path}", f"out={tmp_path}/out")
    assert rc == 1 and "data=[...] must name at least one episode file" in err


@pytest.mark.parametrize("overrides, message", [
    (["pairs.goal_pair_prob=1.5"], "pairs.goal_pair_prob must be a finite number in [0, 1], got 1.5"),
    (["pairs.goal_pair_prob=0.7", "pairs.start_pair_prob=0.5"],
     "pairs.goal_pair_prob + pairs.start_pair_prob must be <= 1 (shares of the batch), got 0.7 + 0.5 = 1.2"),
])
def test_reward_train_pair_shares_checked_before_loading(capsys, tmp_path, overrides, message):
    rc, err = _run(capsys, "reward-train", f"data=[{tmp_path}/none.hdf5]", f"out={tmp_path}/out", *overrides)
    assert rc == 1 and f"dopa reward-train: error: {message}" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("override, message", [
    ("lr=-1", "lr must be a finite number > 0, got -1"),
    ("steps=-1", "steps must be an int >= 0, got -1"),
    ("demo_index=-1", "demo_index must be an int >= 0, got -1"),
    ("batch_size=0", "batch_size must be an int >= 1, got 0"),
    ("task=' '", "task text must not be empty"),
    ("loss=ce", "loss must be one of ce+mse, mse, got 'ce'"),
])
def test_reward_adapt_values_checked_before_loading(capsys, tmp_path, override, message):
    rc, err = _run(capsys, "reward-adapt", f"checkpoint={tmp_path}/nope", "demo=x.hdf5", f"out={tmp_path}/out",
                   override)
    assert rc == 1 and f"dopa reward-adapt: error: {message}" in err


@pytest.mark.parametrize("job", ["reward-eval", "reward-adapt"])
def test_grm_jobs_refuse_an_out_that_is_a_file(capsys, tmp_path, job):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_text("")
    out = tmp_path / "a_file"
    out.write_text("x")
    data = "data=[x.hdf5]" if job == "reward-eval" else "demo=x.hdf5"
    rc, err = _run(capsys, job, f"checkpoint={tmp_path}", data, f"out={out}")
    assert rc == 1 and f"out='{out}' is a file; out is the folder to write into" in err


def _grm_folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_text("")
    return path


def test_deploy_refuses_a_grm_checkpoint_before_ros_starts(capsys, tmp_path):
    grm = _grm_folder(tmp_path / "grm")
    rc, err = _run(capsys, "deploy", f"checkpoint={grm}", "duration_s=1")
    assert rc == 1
    assert f"checkpoint='{grm}' is a GRM (reward model) checkpoint, not a policy" in err
    assert "reward.checkpoint=" in err


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "does not exist"),
    (lambda p: (p.mkdir(), p)[1], "is not a deployment policy: no policy.json, deploy/policy.json"),
])
def test_deploy_names_a_missing_or_wrong_checkpoint(capsys, tmp_path, make, message):
    folder = make(tmp_path / "x")
    rc, err = _run(capsys, "deploy", f"checkpoint={folder}", "duration_s=1")
    assert rc == 1 and f"dopa deploy: error: checkpoint='{folder}' {message}" in err


def test_deploy_checkpoint_may_be_a_run_folder(tmp_path):
    """README: `dopa deploy checkpoint=runs/<run>` takes the run's newest checkpoint with deploy/."""
    from jobs.deploy import policy_path

    run = tmp_path / "run"
    for step in ("step_000000100", "step_000000200"):
        (run / "checkpoints" / step / "deploy").mkdir(parents=True)
        (run / "checkpoints" / step / "deploy" / "policy.json").write_text("{}")
    (run / "checkpoints" / "step_000000300").mkdir()  # no deploy/: not a candidate
    assert policy_path(run) == str(run / "checkpoints" / "step_000000200")
    assert policy_path(run / "checkpoints" / "step_000000100") == str(run / "checkpoints" / "step_000000100")


@pytest.mark.parametrize("overrides, message", [
    (["warmup=-1"], "warmup must be an int >= 0, got -1"),
    (["threads=0"], "threads must be an int >= 1, got 0"),  # the CLI's rule for every job's threads key
    (["threads=1.5"], "threads must be an int (default 1), got 1.5"),
    (["threads=4096"], "threads must be an int in [1, {cores}] (this machine's CPU cores), got 4096"),
    (["reward.checkpoint={policy}"], "reward.checkpoint='{policy}' is a policy checkpoint or run, not a GRM"),
    (["reward.checkpoint={grm}", "reward.rate_hz=0"], "reward.rate_hz must be a finite number > 0, got 0"),
    (["reward.checkpoint={grm}", "reward.max_age=nan"], "reward.max_age must be a finite number > 0, got nan"),
])
def test_deploy_values_checked_before_ros_starts(capsys, tmp_path, overrides, message):
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "policy.json").write_text("{}")
    grm = _grm_folder(tmp_path / "grm")
    fmt = {"policy": policy, "grm": grm, "cores": os.cpu_count()}
    rc, err = _run(capsys, "deploy", f"checkpoint={policy}", "duration_s=1", *[o.format(**fmt) for o in overrides])
    assert rc == 1 and f"dopa deploy: error: {message.format(**fmt)}" in err


@pytest.mark.parametrize("override, message", [
    ("num_envs=0", "num_envs must be an int >= 1, got 0"),
    ("total_steps=-3", "total_steps must be an int >= 1, got -3"),
    ("seed=-1", "seed must be an int >= 0, got -1"),
    ("eval.episodes=0", "eval.episodes must be an int >= 1, got 0"),
    ("eval.every=-1", "eval.every must be an int >= 0, got -1"),
    ("eval.at_start=maybe", "eval.at_start must be true or false (default true), got 'maybe'"),
    ("reward.scale=0", "reward.scale must be a finite number > 0, got 0"),
    ("device=nope", "device='nope' is not available here; available: cpu"),
    ("reward.potential.fusion=max",
     "reward.potential.fusion must be one of auto, mean, damped, incremental, forward, backward, precision, got 'max'"),
    ("reward.potential.fusion=null", "reward.potential.fusion must be one of auto, mean, damped, incremental, "
     "forward, backward, precision, got None"),
])
def test_train_values_checked_before_the_main_job_builds_its_data(capsys, tmp_path, override, message):
    # with the default preset these would otherwise start recording demonstrations first
    rc, err = _run(capsys, "train", f"run_dir={tmp_path}/run", override)
    assert rc == 1 and f"dopa train: error: {message}" in err
    assert list(tmp_path.iterdir()) == []


def test_train_oracle_reward_needs_a_task_with_ground_truth_progress(capsys, tmp_path):
    rc, err = _run(capsys, "train", f"run_dir={tmp_path}/run", "reward=oracle", "env=cartpole-swingup")
    assert rc == 1 and ("dopa train: error: task 'cartpole-swingup' has no ground-truth progress; tasks with it: "
                        "lift, stack, pick-place-can, door") in err
    assert list(tmp_path.iterdir()) == []


def test_train_device_that_this_machine_lacks(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc, err = _run(capsys, "train", f"run_dir={tmp_path}/run", "device=cuda")
    assert rc == 1 and "device='cuda' is not available here; available: cpu" in err


@pytest.mark.parametrize("argv", [["eval", "checkpoint=x", "episodes=0"], ["demos", "seed=-1"],
                                  ["sim-robot", "seed=-2"]])
def test_shared_keys_are_checked_in_every_job(capsys, argv):
    rc, err = _run(capsys, *argv)
    key = argv[-1].split("=")[0]
    assert rc == 1 and f"dopa {argv[0]}: error: {key} must be an int >= " in err


def test_train_grm_reward_needs_a_grm_checkpoint(capsys, tmp_path):
    policy = _policy_checkpoint(tmp_path)
    rc, err = _run(capsys, "train", "preset=none", f"reward.checkpoint={policy}", f"run_dir={tmp_path}/train_run")
    assert rc == 1 and f"reward.checkpoint='{policy}' is a policy checkpoint or run, not a GRM checkpoint" in err
    rc, err = _run(capsys, "train", "preset=none", "reward=naive", f"reward.checkpoint={tmp_path}/nope",
                   f"run_dir={tmp_path}/train_run")
    assert rc == 1 and f"reward.checkpoint='{tmp_path}/nope' does not exist" in err
    assert not (tmp_path / "train_run").exists()


@pytest.mark.parametrize("argv, message", [
    (["deploy", "namespace='bad ns'"], "namespace='bad ns' is not a valid ROS 2 namespace: namespace must not "
                                       "contain characters other than alphanumerics"),
    (["deploy", "node_name='1 bad'"], "node_name='1 bad' is not a valid ROS 2 node name"),
    (["sim-robot", "node_name='1 bad'"], "node_name='1 bad' is not a valid ROS 2 node name"),
    (["sim-robot", "camera_rate_hz=100"], "camera_rate_hz must be <= rate_hz (20.0), got 100"),
])
def test_ros_jobs_names_and_rates_checked_before_nodes_start(capsys, tmp_path, argv, message):
    if argv[0] == "deploy":
        (tmp_path / "policy.json").write_text("{}")
        argv = [*argv, f"checkpoint={tmp_path}"]
    rc, err = _run(capsys, *argv, "duration_s=1")
    assert rc == 1 and f"dopa {argv[0]}: error: {message}" in err


@pytest.mark.parametrize("argv, key", [
    (["reward-train", "data=[x.hdf5]", "text_cache={blocker}/cache"], "text_cache"),
    (["train", "prepare.data_dir={blocker}/data"], "prepare.data_dir"),
])
def test_caches_and_data_folders_are_outputs_too(capsys, tmp_path, argv, key):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    rc, err = _run(capsys, *[a.format(blocker=blocker) for a in argv])
    assert rc == 1 and f"{key}='{blocker}/" in err and f"'{blocker}' is a file, not a folder" in err


def test_a_single_value_for_a_list_key_is_a_one_item_list():
    """views=front is [front], not the letters f, r, o, n, t."""
    from jobs.cli import check_common, compose

    cfg = compose("demos", ["views=front", "out=/tmp/x.hdf5"])
    check_common(cfg, compose("demos", []))
    assert list(cfg.views) == ["front"]


@pytest.mark.parametrize("override, message", [
    ("model.depth=0", "model.depth must be an int >= 1, got 0"),
    ("model.channels=[]", "model.channels must list at least one CNN width"),
    ("model.width=130", "model.width must be a multiple of model.heads (4), got 130"),
])
def test_reward_train_model_checked_before_anything_is_written(capsys, tmp_path, override, message):
    rc, err = _run(capsys, "reward-train", "data=[x.hdf5]", f"out={tmp_path}/grm", override)
    assert rc == 1 and f"dopa reward-train: error: {message}" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("job", ["tasks", "demos", "sim-robot"])
def test_image_size_follows_the_simulator_rule_in_every_job(capsys, tmp_path, job):
    rc, err = _run(capsys, job, "render=true" if job == "tasks" else "views=[front]", "image_size=7",
                   f"out={tmp_path}/x.png" if job != "sim-robot" else "duration_s=1")
    assert rc == 1 and f"dopa {job}: error: image_size must be an int in [8, 1024], got 7" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, line", [
    (["demos", "foo=1"], "dopa demos: error: unknown key 'foo' ('dopa demos --help' lists the keys; +foo=... adds a new one)"),
    (["demos", "fsp=10"], "dopa demos: error: unknown key 'fsp'; did you mean 'fps'? ('dopa demos --help' lists the keys)"),
    (["deploy", "checkpoint=x", "safety.max_dleta=1"], "unknown key 'safety.max_dleta'; did you mean 'safety.max_delta'"),
    (["eval", "sampler_steps=5"], "unknown key 'sampler_steps'; did you mean 'sample_steps' or 'sampler'?"),
])
def test_unknown_key_is_one_line_with_close_matches(capsys, argv, line):
    """A likely typo (a close match exists) gets no "+key" hint: a job ignores keys it does not read."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert line in err and len(err.strip().splitlines()) == 1
    assert ("adds a new one" in err) == ("did you mean" not in err)


def test_tasks_listing_does_not_check_the_render_output(capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["tasks", f"out={blocker}/x.png"]) == 0  # render=false: nothing is written
    rc, err = _run(capsys, "tasks", "task=lift", "render=true", f"out={blocker}/x.png")
    assert rc == 1 and "is a file, not a folder" in err


@pytest.mark.parametrize("argv, line", [
    (["train", "learner=sac", "learner.hidden=[0]"],
     "dopa train: error: learner.hidden must be a non-empty list of ints >= 1, got [0]"),
    (["train", "learner.utd_ratio=-1"], "dopa train: error: learner.utd_ratio must be"),
    (["train", "env.image_size=3"], "dopa train: error: env.image_size must be an int in [8, 1024], got 3"),
    (["train", "reward.query_every=0"], "dopa train: error: reward.query_every must be an int >= 1, got 0"),
    (["tasks", "render=true"], "dopa tasks: error: render=true needs task=<name>"),
])
def test_bad_values_name_the_full_key_before_any_preparation(capsys, tmp_path, monkeypatch, argv, line):
    monkeypatch.chdir(tmp_path)  # the main job's preparation would write under ./data: it must not start
    rc, err = _run(capsys, *argv)
    assert rc == 1 and line in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
