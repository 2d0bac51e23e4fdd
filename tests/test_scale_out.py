"""Scale-out: Hydra multirun of any job (Submitit's local executor for real, the Slurm dry run),
data-parallel GRM pretraining with torchrun on loopback (equal to one process with the summed
batch; a killed rank ends the job with one line), and the bad input refused before anything starts."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
DOPA = [sys.executable, "-m", "jobs.cli"]
TINY = ["batch_size=4", "threads=1", "shift=0", "model.channels=[8,16,16,16]", "model.width=32", "model.depth=1",
        "model.heads=2", "model.hop_bins=21"]


def _env():
    env = dict(os.environ, MUJOCO_GL="egl", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    env.pop("DOPA_DEBUG", None)
    return env


def _dopa(*args, timeout=120):
    return subprocess.run([*DOPA, *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    from test_grm import write_lift_episodes

    folder = tmp_path_factory.mktemp("scale_out")
    return write_lift_episodes(folder / "lift.hdf5", seeds=[1, 2], steps_per_phase=3), folder


def test_multirun_on_submitit_local_reports_each_job_and_the_failed_one(tmp_path):
    sweep = tmp_path / "sweep"
    r = _dopa("tasks", "-m", "task=lift,nope", "hydra/launcher=slurm_local", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 1, r.stderr[-2000:]  # one job failed
    summary = json.loads((sweep / "multirun.json").read_text())
    assert summary["jobs"] == 2 and summary["failed"] == 1
    ok, bad = summary["results"]
    assert ok["status"] == "ok" and ok["overrides"] == ["task=lift"] and ok["run_dir"] == str(sweep / "0")
    assert bad["status"] == "failed" and "unknown task 'nope'" in bad["error"] and "\n" not in bad["error"]
    # each job ran as its own Submitit subprocess, with its own run folder, result and logs
    assert (sweep / "0" / "result.json").is_file() and (sweep / "1" / ".hydra" / "overrides.yaml").is_file()
    assert list(sweep.glob(".submitit/*/*_log.out"))
    assert "lift: 'lift the red cube'" in "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.out"))
    # the printed table: a row per job, the failure with its one-line error
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith(("0 ", "1 "))]
    assert rows[0].split()[:3] == ["0", "ok", "task=lift"] and rows[1].split()[:3] == ["1", "failed", "task=nope"]
    assert "unknown task 'nope'" in rows[1]


def test_slurm_dry_run_prints_the_sbatch_script_and_submits_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    r = _dopa("tasks", "-m", "task=lift,stack", "hydra/launcher=slurm", "hydra.launcher.dry_run=true",
              "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=1", "hydra.launcher.timeout_min=30",
              f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr[-2000:]
    script = r.stdout.split("# sbatch script (dry run, nothing submitted):", 1)[1]
    for line in ("#!/bin/bash", "#SBATCH --array=0-1%2", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --time=30", "#SBATCH --cpus-per-task=4", "#SBATCH --mem=16GB", "-m submitit.core._submit"):
        assert line in script, line
    assert not (sweep / "multirun.json").exists() and not (sweep / "0").exists()  # no job ran


@pytest.mark.parametrize("args, message", [
    (["tasks", "-m", "task=lift", "hydra/launcher=slurm"],
     "'sbatch' is not on this machine's PATH; add hydra/launcher=slurm hydra.launcher.dry_run=true"),
    (["tasks", "-m", "task=lift", "seed=0,-1"], "job task=lift seed=-1: seed must be an int >= 0, got -1"),
    (["tasks", "-m", "task=lift", "hydra.launcher.dry_run=maybe", "hydra/launcher=slurm"],
     "hydra.launcher.dry_run=maybe: a dry run is true or false"),
    (["reward-train", "data=[x.hdf5]", "distributed.nproc=0"], "distributed.nproc must be an int >= 1, got 0"),
    (["reward-train", "data=[x.hdf5]", "distributed.nproc=512"],
     "distributed.nproc=512 is more than this machine's"),
    (["reward-train", "data=[x.hdf5]", "distributed.nproc=2", "distributed.master_addr=no-such-host.invalid"],
     "distributed.master_addr='no-such-host.invalid' does not resolve"),
    (["reward-train", "data=[x.hdf5]", "distributed.nproc=2", "distributed.master_addr=192.0.2.1"],
     "distributed.master_addr='192.0.2.1' is not an address of this machine"),
])
def test_bad_scale_out_input_is_one_line_before_anything_starts(args, message, episodes, tmp_path, capsys):
    from jobs.cli import main

    if "sbatch" in message and any(Path(p, "sbatch").exists() for p in os.environ.get("PATH", "").split(":")):
        pytest.skip("this machine has sbatch")
    args = [f"data=[{episodes[0]}]" if a == "data=[x.hdf5]" else a for a in args]
    rc = main([*args, f"hydra.sweep.dir={tmp_path}/s" if "-m" in args else f"out={tmp_path}/grm"])
    err = capsys.readouterr().err
    assert rc == 1 and message in err, err[-1500:]
    assert len([ln for ln in err.splitlines() if "error" in ln]) == 1
    assert not (tmp_path / "s").exists() and not (tmp_path / "grm").exists()


def test_two_gloo_ranks_equal_one_process_with_the_summed_batch(episodes, tmp_path, capsys):
    from jobs.cli import compose
    from jobs.reward import _train_arch, _train_pairs
    from reward_models.distributed import Ranks
    from reward_models.grm import load_checkpoint
    from reward_models.task_data import labelled
    from reward_models.train import pretrain

    data, folder = episodes
    common = [f"data=[{data}]", f"text_cache={folder / 'tc'}", "save_every=2", *TINY]
    r = _dopa("reward-train", *common, f"out={tmp_path / 'ddp'}", "steps=4", "distributed.nproc=2",
              "distributed.timeout_s=30")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 ranks" in r.stdout and r.stdout.count("saved") == 1  # rank 0 alone reports and saves
    _, meta = load_checkpoint(tmp_path / "ddp")
    assert meta["config"]["info"]["world_size"] == 2
    # the same run in one process: both ranks' pair streams in one batch of 2 x 4 pairs
    cfg = compose("reward_train", common)
    torch.manual_seed(0)
    pretrain([str(data)], tmp_path / "one", arch=_train_arch(cfg), stride=1, steps=4, batch_size=8, lr=float(cfg.lr),
             weight_decay=float(cfg.weight_decay), warmup=float(cfg.warmup), shift=0, save_every=2, seed=0,
             text_cache=str(folder / "tc"), pairs=_train_pairs(cfg), log_dir=str(tmp_path / "tb"),
             prepare=lambda eps: labelled(eps, "training"), ranks=Ranks(streams=(0, 1)))
    ddp, one = load_file(tmp_path / "ddp" / "model.safetensors"), load_file(tmp_path / "one" / "model.safetensors")
    init = {k: v.clone() for k, v in ddp.items()}
    assert ddp.keys() == one.keys()
    for k in ddp:
        a, b = ddp[k], one[k]
        if k.endswith("self_attn.in_proj_bias"):  # the key bias gets no gradient (softmax ignores it):
            w = a.numel() // 3  # AdamW turns its float noise into +-lr steps, so it is left out
            a, b = torch.cat([a[:w], a[2 * w:]]), torch.cat([b[:w], b[2 * w:]])
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=k)
    # resume the 2-rank run on 1 rank: it continues from step 4 with rank 0's model and optimizer
    from jobs.cli import main

    assert main(["reward-train", *common, f"out={tmp_path / 'ddp'}", "steps=6"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "ddp")[1]["config"]["info"]["world_size"] == 1
    after = load_file(tmp_path / "ddp" / "model.safetensors")
    assert any(not torch.equal(after[k], init[k]) for k in after)


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def _rank_pid(root: int, rank: int) -> int | None:
    for pid in _descendants(root):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and b"jobs.torchrun" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    return None


def test_a_killed_rank_ends_the_job_with_one_clear_line(episodes, tmp_path):
    data, folder = episodes
    out = tmp_path / "grm"
    proc = subprocess.Popen([*DOPA, "reward-train", f"data=[{data}]", f"text_cache={folder / 'tc'}", f"out={out}",
                             "steps=100000", "save_every=2", "distributed.nproc=2", "distributed.timeout_s=20", *TINY],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        while not (out / "config.json").exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)  # training has started once rank 0 wrote its first checkpoint
        victim = _rank_pid(proc.pid, 1)
        assert victim is not None, "rank 1 not found"
        os.kill(victim, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)  # no hang: the job ends by itself
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    lines = [ln for ln in err.splitlines() if ln.startswith("dopa reward-train: error:")]
    assert len(lines) == 1 and "rank 1 of 2 was killed by SIGKILL" in lines[0], err[-3000:]
    assert not _descendants(proc.pid)


def test_summary_takes_the_final_evaluation_and_keeps_jobs_without_a_result(tmp_path, capsys):
    from jobs.multirun import final_eval, summarize

    (tmp_path / "0" / "run").mkdir(parents=True)
    rows = [{"env_steps": 100, "success_rate": 0.2, "success_ci": [0.05, 0.5]},
            {"env_steps": 200, "success_rate": 0.6, "success_ci": [0.31, 0.83]}]
    (tmp_path / "0" / "run" / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rec = {"num": 0, "overrides": ["seed=0", "env=lift"], "status": "ok", "exit_code": 0, "error": None,
           "run_dir": str(tmp_path / "0"), "final_eval": final_eval(tmp_path / "0"), "wall_s": 1.0}
    (tmp_path / "0" / "result.json").write_text(json.dumps(rec))
    out = summarize(tmp_path, [["seed=0", "env=lift"], ["seed=1", "env=lift"]], "local", crash=None)
    assert out[0]["final_eval"]["success_rate"] == 0.6 and out[0]["final_eval"]["env_steps"] == 200
    assert out[1]["status"] == "failed" and "no result.json" in out[1]["error"]  # its process died
    saved = json.loads((tmp_path / "multirun.json").read_text())
    assert saved["jobs"] == 2 and saved["failed"] == 1 and saved["results"][0]["final_eval"]["success_ci"] == [0.31, 0.83]
    table = capsys.readouterr().out
    assert "0.60 [0.31, 0.83]" in table and "env=lift" not in table  # the shared override is left out
    assert "1 of 2 job(s) ok, 1 failed" in table
