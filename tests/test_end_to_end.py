"""The main job end to end at tiny size, through the job functions: scripted demonstrations -> GRM
pretraining on another task -> one-shot adaptation to Lift -> EXPO trained on the GRM-shaped
reward -> checkpoint -> ``dopa eval`` -> the checkpoint's deployment policy driving the MuJoCo
stand-in robot over real DDS (localhost). The policy need not succeed at this size; the loop must
run and every command must stay within the robot's limits."""

import json
import time

import numpy as np
import pytest
from std_srvs.srv import SetBool
from test_ros_nodes import PANDA, Recorder, call, deploy_cfg, ros_session, wait_for

from control.checkpoint import load_checkpoint
from jobs.cli import compose, main
from jobs.prepare import prepare, settings_hash
from ros.policy_node import PolicyNode
from ros.sim_robot import SimRobotNode

TINY = ["preset=quick", "prepare.demos.n=2", "prepare.grm.tasks=[door]", "prepare.grm.episodes=1",
        "prepare.grm.steps=12", "prepare.grm.batch_size=8", "prepare.adapt.steps=6", "prepare.adapt.batch_size=8",
        "total_steps=160", "checkpoint_every=160", "eval.every=160", "eval.episodes=2", "progress=false",
        "log_every=40", "learner.pretrain_steps=50", "learner.start_training=40", "learner.batch_size=32",
        "learner.num_qs=2", "learner.critic_hidden_dims=[32,32]", "learner.edit_hidden_dims=[32,32]",
        "learner.base_hidden_dim=32", "learner.base_num_blocks=1", "reward.query_every=4"]


@pytest.fixture(scope="module")
def main_job(tmp_path_factory):
    """Runs ``dopa train`` (the job function) once on the quick preset, shrunk further."""
    from jobs.train import run

    tmp = tmp_path_factory.mktemp("e2e")
    overrides = [*TINY, f"prepare.data_dir={tmp / 'data'}", f"run_dir={tmp / 'run'}"]
    assert run(compose("train", overrides)) == 0
    return tmp, overrides


def test_prepared_artefacts_and_shaped_training(main_job, capsys):
    tmp, overrides = main_job
    data = tmp / "data"
    demos = sorted((data / "demos").glob("*.hdf5"))
    assert [p.name.split("-")[0] for p in demos] == ["door", "lift"]
    for p in demos:  # each artefact records its settings; the name carries their hash
        rec = json.loads((p.parent / (p.name + ".settings.json")).read_text())
        assert p.stem.endswith(settings_hash(rec))
    adapted = next(p for p in (data / "grm").glob("lift-adapted-*") if p.is_dir())  # not its .settings.json
    assert (adapted / "checkpoint" / "model.safetensors").is_file()
    assert json.loads((adapted / "adapt.json").read_text())["task"] == "lift"
    pretrained = next(p for p in (data / "grm").glob("pretrain-*") if p.is_dir() and not p.name.endswith("_tb"))
    assert json.loads((pretrained / "config.json").read_text())["tasks"] == {"door": "open the door"}

    # the run used them: offline data = the lift demos, potential = the adapted GRM on lift's text
    cfg = json.loads((tmp / "run" / "config.json").read_text())
    assert cfg["env"]["kwargs"]["controller"] == "joint_position"
    assert cfg["offline_data"] == [str(next(p for p in demos if p.name.startswith("lift")))]
    assert cfg["reward"]["checkpoint"] == str(adapted / "checkpoint")
    assert cfg["reward"]["potential"]["task_text"] == "lift the red cube"
    assert cfg["learner"]["_target_"] == "control.expo.EXPOConfig"
    ckpt = load_checkpoint(tmp / "run")
    assert ckpt.step == 160 and ckpt.path.name == "step_000000160" and (ckpt.path / "deploy").is_dir()

    # the GRM potential ran: TensorBoard holds its progress (in [0, 1]) and the shaping term each
    # log period (at this size the policy barely moves, so progress may stay near 0)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp / "run" / "tb"))
    acc.Reload()
    progress = [e.value for e in acc.Scalars("reward/progress")]
    shaping = [e.value for e in acc.Scalars("reward/shaping")]
    assert len(progress) == len(shaping) == 4 and all(0.0 <= p <= 1.0 for p in progress)
    assert all(np.isfinite(shaping))
    assert list((tmp / "run" / "videos").glob("*.mp4")), "the main job records evaluation videos"

    # a second preparation reuses every artefact (nothing rebuilt)
    mtimes = {p: p.stat().st_mtime_ns for p in data.rglob("*") if p.is_file()}
    capsys.readouterr()
    again = prepare(compose("train", overrides))
    out = capsys.readouterr().out
    assert "building" not in out and out.count("found") == 4, out
    assert {p: p.stat().st_mtime_ns for p in data.rglob("*") if p.is_file()} == mtimes
    assert again.reward.checkpoint == cfg["reward"]["checkpoint"]


def test_eval_then_deploy_to_stand_in_robot(main_job):
    tmp, _ = main_job
    run_dir = tmp / "run"
    assert main(["eval", f"checkpoint={run_dir}", "episodes=2"]) == 0
    ckpt = load_checkpoint(run_dir)
    res = json.loads((ckpt.path / "eval.json").read_text())
    assert res["episodes"] == 2 and 0.0 <= res["success_rate"] <= 1.0

    with ros_session() as (add, ctx):
        rec = Recorder(ctx)
        add(rec.node)
        sim_node = add(SimRobotNode(PANDA, {"views": [], "rate_hz": 20.0, "seed": 3}, context=ctx))
        q0 = sim_node.arm.joint_positions().copy()
        node = add(PolicyNode(deploy_cfg(ckpt.path, rate_hz=20.0), PANDA, context=ctx))
        assert node.trigger_configure().to_label() == "transition_success"
        assert node.trigger_activate().to_label() == "transition_success"
        assert wait_for(lambda: node.core.joint_stamp is not None, 10.0)
        time.sleep(0.3)
        assert not rec.commands(), "the node must start disarmed"
        assert call(rec.node, SetBool, "/dopa_policy/arm", SetBool.Request(data=True)).success
        assert wait_for(lambda: len(rec.commands()) >= 10, 30.0), (rec.status[-3:], dict(node.core.rejected))
        time.sleep(0.5)
        cmds = rec.commands()
        lim = PANDA.limits
        for m in cmds:
            assert m.joint_names == list(PANDA.arm_joints)
            q = np.array([p.positions for p in m.points])
            assert np.isfinite(q).all() and (q >= lim.lower).all() and (q <= lim.upper).all()
        assert sum(node.core.rejected.values()) == 0 and sim_node.rejected == 0
        moved = np.abs(sim_node.arm.joint_positions() - q0).max()
        assert moved > 1e-4, "the stand-in robot did not execute the commands"


def test_preset_none_prepares_nothing_and_names_what_is_missing(tmp_path):
    with pytest.raises(SystemExit, match=r"reward=grm needs reward.checkpoint=.*preset=none"):
        main(["train", "preset=none", "progress=false", f"run_dir={tmp_path / 'run'}"])
    assert not (tmp_path / "run").exists()


def test_grm_for_a_task_without_expert_is_refused_before_any_work(tmp_path):
    cfg = compose("train", ["env=cartpole-swingup", "reward=grm", f"prepare.data_dir={tmp_path}"])
    with pytest.raises(ValueError, match=r"'cartpole-swingup' has no scripted expert.*lift"):
        prepare(cfg)
    assert not list(tmp_path.iterdir())


def test_find_or_build_reuses_only_identical_recorded_settings(tmp_path, capsys):
    from jobs.prepare import find_or_build

    built = []

    def build(path):
        built.append(path)
        path.write_text(str(len(built)))

    target = tmp_path / "a" / "thing.txt"
    find_or_build("thing", target, {"n": 2}, build)
    find_or_build("thing", target, {"n": 2}, build)
    assert len(built) == 1 and "found thing" in capsys.readouterr().out
    find_or_build("thing", target, {"n": 3}, build)  # other settings recorded: built again
    assert len(built) == 2 and json.loads((tmp_path / "a" / "thing.txt.settings.json").read_text()) == {"n": 3}
    (tmp_path / "a" / "thing.txt.settings.json").unlink()  # no record (interrupted): built again
    find_or_build("thing", target, {"n": 3}, build)
    assert len(built) == 3
    with pytest.raises(RuntimeError, match="did not write"):
        find_or_build("nothing", tmp_path / "never", {}, lambda p: None)
