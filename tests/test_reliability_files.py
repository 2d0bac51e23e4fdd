"""Files after a kill, checkpoints that cannot be read exactly, seeds, and what `dopa eval` /
`dopa train resume=` load and write: no lost training state, one clear line naming the file or value."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from jobs.cli import compose, main

TRAIN = ["env=cartpole-swingup", "env.kwargs.max_episode_steps=25", "reward=state", "progress=false", "log_every=25",
         "preset=none", "eval.every=0", "seed=3"]
SAC = ["learner=sac", "learner.learning_starts=20", "learner.hidden=[16,16]", "learner.batch_size=8",
       "learner.buffer_size=1000"]


def _cartpole_episodes(path, n=3, t=8):
    """An episode file of random cartpole transitions (state width 5, one action): offline data."""
    from sim.episodes import Episode, EpisodeWriter

    rng = np.random.default_rng(0)
    with EpisodeWriter(path, "cartpole-swingup", {}, views=(), image_size=0) as w:
        for _ in range(n):
            dones = np.zeros(t, np.uint8)
            dones[-1] = 1
            w.add(Episode(frames={}, states=rng.standard_normal((t + 1, 5)).astype(np.float32),
                          actions=rng.uniform(-1, 1, (t, 1)).astype(np.float32), rewards=np.zeros(t, np.float32),
                          dones=dones, progress=np.zeros(t + 1, np.float32), keyframes=np.zeros(0, np.int64),
                          keyframe_names=[], success=False, imperfection="none", seed=0))
    return str(path)


def _one_line_error(capsys, job: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and err.startswith(f"dopa {job}:"), err
    return err


def _train_refused(args) -> str:
    """`dopa train` refusing: its one line (``SystemExit(message)``: printed, exit code 1)."""
    with pytest.raises(SystemExit) as exc:
        main(["train", *args])
    msg = str(exc.value.code)
    assert "\n" not in msg and msg.startswith("dopa train: "), msg
    return msg


# ------------------------------------------------------------------------------------------------
# item 1: reward-train writes its training state in the same folder swap as the model
# ------------------------------------------------------------------------------------------------
def test_reward_train_state_is_saved_with_the_model_and_an_unresumable_out_is_refused(tmp_path, monkeypatch, capsys):
    from test_grm import write_lift_episodes

    from jobs.reward import run_train
    from reward_models import train
    from reward_models.training_state import load_training_state

    data = write_lift_episodes(tmp_path / "data" / "lift.hdf5", seeds=[1, 2], steps_per_phase=3)
    out = tmp_path / "grm"
    over = [f"data=[{data}]", f"out={out}", "batch_size=4", "save_every=2", "threads=1", "steps=4",
            f"text_cache={tmp_path / 'tc'}", "model.channels=[8,16,16,16]", "model.width=32", "model.depth=1",
            "model.heads=2", "model.hop_bins=21"]
    real = train.save_checkpoint

    def save_then_killed(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # kill -9 right after the periodic checkpoint folder was swapped in

    monkeypatch.setattr(train, "save_checkpoint", save_then_killed)
    with pytest.raises(KeyboardInterrupt):
        run_train(compose("reward_train", over))
    monkeypatch.setattr(train, "save_checkpoint", real)
    assert load_training_state(out)["step"] == 2  # the swap that brought the model brought its state
    assert json.loads((out / "config.json").read_text())["info"]["trained_steps"] == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporaries

    shutil.rmtree(out / "training_state")  # a folder that cannot be resumed is named, not retrained from 0
    weights = (out / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["reward-train", *over]) == 1
    err = _one_line_error(capsys, "reward-train")
    assert str(out) in err and "cannot be resumed" in err and "resume=false" in err
    assert (out / "model.safetensors").read_bytes() == weights  # nothing overwritten
    assert main(["reward-train", *over, "resume=false"]) == 0  # the user says start over
    capsys.readouterr()
    assert load_training_state(out)["step"] == 4


# ------------------------------------------------------------------------------------------------
# item 2: temporaries of dead writers are removed by the next write in the same folder
# ------------------------------------------------------------------------------------------------
def test_stale_temporaries_of_dead_processes_are_removed_and_live_ones_kept(tmp_path, caplog):
    from basics.atomic import atomic_folder, pid_alive

    done = subprocess.run([sys.executable, "-c", "pass"], check=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # finished and reaped: its pid names no process
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert done.returncode == 0 and not pid_alive(dead.pid) and pid_alive(live.pid)
    try:
        data = tmp_path / "data"
        data.mkdir()
        (data / f".k.hdf5.tmp-{dead.pid}-abcd1234.hdf5").write_bytes(b"\0" * 1000)
        (data / f".k.hdf5.tmp-{live.pid}-abcd1234.hdf5").write_bytes(b"\0")
        ck = tmp_path / "run" / "checkpoints"
        (ck / f".step_000000050.tmp-{dead.pid}-x1y2z3w4" / "pretrained_model").mkdir(parents=True)
        (ck / f".step_000000050.tmp-{live.pid}-x1y2z3w4").mkdir()
        # killed between moving the previous step_000000040 aside and renaming the new one in
        (ck / f".step_000000040.old-{dead.pid}-q1w2e3r4" / "pretrained_model").mkdir(parents=True)

        with caplog.at_level(logging.WARNING, logger="basics.atomic"):
            _cartpole_episodes(data / "k.hdf5", n=1, t=3)  # the episode writer's next run
            with atomic_folder(ck / "step_000000060", marker="pretrained_model") as tmp:
                (tmp / "pretrained_model").mkdir()
        assert sorted(p.name for p in data.iterdir()) == [f".k.hdf5.tmp-{live.pid}-abcd1234.hdf5", "k.hdf5"]
        assert sorted(p.name for p in ck.iterdir()) == [f".step_000000050.tmp-{live.pid}-x1y2z3w4",
                                                       "step_000000040", "step_000000060"]
        assert (ck / "step_000000040" / "pretrained_model").is_dir()  # the last complete version is back
        lines = [r.getMessage() for r in caplog.records if r.name == "basics.atomic"]
        assert len(lines) == 2 and all("no longer run" in m and "\n" not in m for m in lines), lines
        assert str(data) in lines[0] and f"tmp-{dead.pid}" in lines[0]
    finally:
        live.kill()
        live.wait()
    # our own temporaries carry our pid, so a later process can judge them
    with atomic_folder(tmp_path / "mine", marker="m") as tmp:
        assert tmp.name.startswith(f".mine.tmp-{os.getpid()}-")


# ------------------------------------------------------------------------------------------------
# item 7: seeds outside 32 bits: one line naming the key, before anything runs
# ------------------------------------------------------------------------------------------------
def test_seeds_outside_32_bits_are_refused_before_anything_runs(tmp_path, capsys):
    from basics.checks import check_seed
    from control.train import episode_seed

    assert check_seed(np.int64(7)) == 7 and check_seed(2**32 - 4, count=4) == 2**32 - 4
    for bad in (2**32, -1, True, 1.5, "3"):
        with pytest.raises(ValueError, match=rf"^seed={bad!r}: must be an integer in \[0, 4294967295\]"):
            check_seed(bad)
    assert 0 <= episode_seed(2**32 - 1, 10**9) < 2**31  # the loop's reset seeds stay valid for any run seed

    run = tmp_path / "run"
    msg = _train_refused([*TRAIN, *SAC, "seed=4294967296", f"run_dir={run}"])
    assert "seed=4294967296: must be an integer in [0, 4294967295]" in msg
    msg = _train_refused([*TRAIN, *SAC, "seed=4294967294", "num_envs=4", f"run_dir={run}"])
    assert "seed=4294967294: must be an integer in [0, 4294967292]" in msg
    assert "eval.seed=4294967295" in _train_refused([*TRAIN, *SAC, "eval.seed=4294967295", "eval.episodes=3",
                                                     f"run_dir={run}"])
    assert not run.exists()
    out = tmp_path / "demos.hdf5"
    assert main(["demos", "task=lift", "n=2", "views=[]", "seed=18446744073709551616", f"out={out}"]) == 1
    assert "seed=18446744073709551616: must be an integer in [0, 4294967294]" in _one_line_error(capsys, "demos")
    assert list(tmp_path.iterdir()) == []  # no episode recorded, no file


# ------------------------------------------------------------------------------------------------
# items 10, 11: GRM checkpoint files
# ------------------------------------------------------------------------------------------------
def _grm_checkpoint(folder):
    from reward_models.grm import GRM, GRMConfig, save_checkpoint

    torch.manual_seed(0)
    model = GRM(GRMConfig(views=("front",), image_size=16, channels=(4,), width=8, depth=1, heads=2, hop_bins=5))
    ref = {"text": "lift the cube", "start": np.zeros((1, 16, 16, 3), np.uint8),
           "goal": np.zeros((1, 16, 16, 3), np.uint8), "text_emb": np.zeros(384, np.float32)}
    return save_checkpoint(folder, model, {"lift": ref})


def test_grm_checkpoint_errors_name_the_file_key_and_tensor(tmp_path):
    from safetensors.torch import load_file, save_file

    from reward_models.grm import load_checkpoint

    good = _grm_checkpoint(tmp_path / "good")
    load_checkpoint(good)

    def broken(name):
        d = tmp_path / name
        shutil.copytree(good, d)
        return d

    for f in ("model.safetensors", "references.safetensors"):
        d = broken(f"trunc_{f}")
        raw = (d / f).read_bytes()
        (d / f).write_bytes(raw[: len(raw) // 2])
        with pytest.raises(ValueError, match=rf"^corrupt GRM checkpoint file {d / f}: "):
            load_checkpoint(d)
    d = broken("empty_config")
    (d / "config.json").write_text("")
    with pytest.raises(ValueError, match=rf"^corrupt GRM checkpoint file {d / 'config.json'}: Expecting value"):
        load_checkpoint(d)
    cfg = json.loads((good / "config.json").read_text())
    for where, edit in (("grm", lambda c: c["grm"].update(widht=c["grm"].pop("width"))),
                        ("grm", lambda c: c["grm"].update(bogus_key=1)),
                        ("", lambda c: c.update(bogus_key=1))):
        d = broken(f"key_{where}_{len(list(tmp_path.iterdir()))}")
        c = json.loads(json.dumps(cfg))
        edit(c)
        (d / "config.json").write_text(json.dumps(c))
        key = "widht" if "widht" in c["grm"] else "bogus_key"
        with pytest.raises(ValueError, match=rf"config\.json{': grm' if where else ''}: unknown key '{key}'; known"):
            load_checkpoint(d)
    d = broken("nan")
    w = load_file(str(d / "model.safetensors"))
    name = sorted(k for k in w if w[k].is_floating_point())[3]
    w[name][0] = float("nan")
    save_file(w, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match=rf"{d / 'model.safetensors'}: tensor '{name}' contains NaN or inf"):
        load_checkpoint(d)


# ------------------------------------------------------------------------------------------------
# items 11, 12, 15, 16: policy checkpoints, `dopa eval policy=learner`, resume into the right run
# ------------------------------------------------------------------------------------------------
KINDS = {
    "sac": [*SAC, "total_steps=50", "checkpoint_every=50"],
    "rlpd": ["learner=rlpd", "learner.learning_starts=20", "learner.hidden=[16,16]", "learner.batch_size=8",
             "learner.buffer_size=1000", "learner.utd_ratio=2", "learner.num_critics=2",
             "learner.obs_normalization=true", "total_steps=50", "checkpoint_every=50"],
    "ppo": ["learner=ppo", "learner.num_steps=10", "learner.num_minibatches=2", "learner.update_epochs=2",
            "learner.hidden=[16,16]", "total_steps=40", "checkpoint_every=40"],
    "gorl": ["learner=gorl", "learner.num_steps=10", "learner.num_minibatches=2", "learner.update_epochs=2",
             "learner.stage_steps=[20,1000]", "learner.collect_steps=20", "learner.decoder_dataset_size=20",
             "learner.decoder_epochs=2", "learner.decoder_batch_size=64", "learner.critic_hidden=[16]",
             "learner.encoder_hidden=[16]", "learner.decoder_hidden=[16,16]", "num_envs=2", "total_steps=60",
             "checkpoint_every=60"],
    "expo_cpu": ["learner=expo_cpu", "learner.pretrain_steps=5", "learner.start_training=8", "learner.batch_size=8",
                 "learner.num_qs=2", "learner.critic_hidden_dims=[16,16]", "learner.edit_hidden_dims=[16,16]",
                 "learner.base_hidden_dim=16", "learner.base_num_blocks=1", "learner.time_dim=8",
                 "total_steps=16", "checkpoint_every=16"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny run per learner kind on cartpole (RLPD and EXPO with random offline episodes)."""
    from jobs.train import train_from_config

    root = tmp_path_factory.mktemp("runs")
    data = _cartpole_episodes(root / "offline.hdf5")
    out = {}
    for kind, over in KINDS.items():
        offline = [f"offline_data=[{data}]"] if kind in ("rlpd", "expo_cpu") else []
        res = train_from_config(compose("train", [*TRAIN, *over, *offline, f"run_dir={root / kind}"]))
        out[kind] = root / kind
        assert len(res["checkpoints"]) == 1
    return out


@pytest.mark.parametrize("kind", list(KINDS))
def test_eval_policy_learner_loads_the_whole_learner(runs, kind):
    """`dopa eval policy=learner` acts as the deployment policy exported with the same checkpoint
    (GoRL: with its fitted decoder, which lives in the training state)."""
    from control.checkpoint import load_checkpoint
    from control.evaluate import deploy_policy, learner_policy
    from control.export import load_policy
    from jobs.build import build_env
    from jobs.evaluate import load_learner

    ckpt = load_checkpoint(runs[kind])
    env = build_env(ckpt.config["env"], num_envs=3, seed=11)
    try:
        obs, _ = env.reset(seed=11)
        learner = load_learner(ckpt, env)
        pol = load_policy(ckpt.path / "deploy")
        if kind == "gorl":
            assert learner.stage == 1  # the decoder fitted at the end of stage 0, not a fresh one
        if kind == "expo_cpu":  # sampled candidates: the same noise stream, one row at a time, all critics
            assert learner.num_min_qs == learner.num_qs
            rows_l, rows_d = [], []
            for i in range(3):
                row = {"state": obs["state"][i:i + 1]}
                learner.generator.set_state(pol.module.generator.get_state())
                rows_l.append(learner_policy(learner)(row))
                rows_d.append(deploy_policy(pol)(row)[:, 0])
            a_learner, a_deploy = torch.cat(rows_l), torch.cat(rows_d)
        else:
            a_learner, a_deploy = learner_policy(learner)(obs), deploy_policy(pol)(obs)[:, 0]
    finally:
        env.close()
    assert a_learner.shape == a_deploy.shape == (3, 1)
    torch.testing.assert_close(a_learner.float(), a_deploy.float(), atol=1e-5, rtol=1e-4)


def test_eval_of_gorl_learner_and_deploy_give_the_same_returns(runs, tmp_path, capsys):
    res = {}
    for policy in ("learner", "deploy"):
        out = tmp_path / f"{policy}.json"
        assert main(["eval", f"checkpoint={runs['gorl']}", f"policy={policy}", "episodes=2", f"out={out}"]) == 0
        res[policy] = json.loads(out.read_text())["returns"]
    capsys.readouterr()
    np.testing.assert_allclose(res["learner"], res["deploy"], rtol=1e-4, atol=1e-4)


def test_policy_checkpoint_errors_are_one_line_naming_the_file(runs, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from control.checkpoint import CheckpointError, load_checkpoint
    from control.export import PolicyFileError, load_policy

    src = load_checkpoint(runs["sac"]).path

    def copy(name):
        d = tmp_path / name
        shutil.copytree(src, d)
        return d

    # unknown keys in config.json / policy.json / its arch: refused by name
    d = copy("keys")
    info_file = d / "pretrained_model" / "config.json"
    info = json.loads(info_file.read_text())
    info_file.write_text(json.dumps({**info, "stpe": 3}))
    with pytest.raises(CheckpointError, match=r"config\.json: unknown key 'stpe'; known keys: "):
        load_checkpoint(d)
    pol_file = d / "deploy" / "policy.json"
    pol = json.loads(pol_file.read_text())
    pol_file.write_text(json.dumps({**pol, "bogus_key": 1}))
    with pytest.raises(PolicyFileError, match=r"policy\.json: unknown key 'bogus_key'"):
        load_policy(d / "deploy")
    pol_file.write_text(json.dumps({**pol, "arch": {**pol["arch"], "hiden": [8]}}))
    with pytest.raises(PolicyFileError, match=r"policy\.json: arch of kind 'mlp': unknown key 'hiden'"):
        load_policy(d / "deploy")

    # NaN weights: refused when loading, naming the tensor and the file; dopa eval says it in one line
    d = copy("nan")
    w_file = d / "deploy" / "policy.safetensors"
    w = load_file(str(w_file))
    w["mean.weight"][0, 0] = float("inf")
    save_file(w, str(w_file))
    with pytest.raises(PolicyFileError, match=rf"{w_file}: tensor 'mean\.weight' contains NaN or inf"):
        load_policy(d / "deploy")
    assert main(["eval", f"checkpoint={d}", "policy=deploy", "episodes=1", f"out={tmp_path / 'e.json'}"]) == 1
    assert "mean.weight" in _one_line_error(capsys, "eval")
    m_file = d / "pretrained_model" / "model.safetensors"
    w = load_file(str(m_file))
    w[sorted(w)[0]].view(-1)[0] = float("nan")
    save_file(w, str(m_file))
    assert main(["eval", f"checkpoint={d}", "policy=learner", "episodes=1", f"out={tmp_path / 'e.json'}"]) == 1
    assert f"tensor {sorted(w)[0]!r} contains NaN or inf" in _one_line_error(capsys, "eval")

    # a truncated learner checkpoint: one line naming the file, for the learner and the deploy policy
    d = copy("trunc")
    for f in (d / "pretrained_model" / "model.safetensors", d / "deploy" / "policy.safetensors"):
        f.write_bytes(f.read_bytes()[:100])
    for policy, f in (("learner", "model.safetensors"), ("deploy", "policy.safetensors")):
        assert main(["eval", f"checkpoint={d}", f"policy={policy}", "episodes=1", f"out={tmp_path / 'e.json'}"]) == 1
        err = _one_line_error(capsys, "eval")
        assert "corrupt" in err and f in err, err
    assert not (tmp_path / "e.json").exists()


def test_resume_from_a_copied_run_writes_into_the_copy(runs, tmp_path, capsys):
    """The stored config names the original run folder; a resume from the copy continues the copy
    and never touches the original; a run_dir naming another run is refused naming both."""
    original = runs["sac"]
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    before = {p.relative_to(original): p.stat().st_mtime_ns for p in original.rglob("*")}
    ck = copy / "checkpoints" / "step_000000050"
    assert main(["train", f"resume={ck}", "total_steps=100"]) == 0
    capsys.readouterr()
    assert (copy / "checkpoints" / "step_000000100" / "deploy").is_dir()
    assert json.loads((copy / "config.json").read_text())["run_dir"] == str(copy)
    assert {p.relative_to(original): p.stat().st_mtime_ns for p in original.rglob("*")} == before
    assert main(["train", f"resume={ck}", "total_steps=150", f"run_dir={original}"]) == 2
    err = _one_line_error(capsys, "train")
    assert str(copy) in err and str(original) in err and "never into another run" in err
    assert {p.relative_to(original): p.stat().st_mtime_ns for p in original.rglob("*")} == before
    assert not (copy / "checkpoints" / "step_000000150").exists()
