"""The `dopa` command: job listing, unknown jobs, Hydra overrides, user errors in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.cli import JOBS, main


def test_help_lists_every_job(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, job in JOBS.items():
        assert name in out and job.summary in out


def test_unknown_job_lists_known_ones(capsys):
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown job 'trian'" in err and "tasks" in err


def test_every_job_has_a_config_and_a_target():
    import importlib

    from jobs.cli import compose

    for name, job in JOBS.items():
        module, func = job.target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name
        compose(job.config, [])  # the default config composes
        if job.composer:
            module, func = job.composer.split(":")
            assert callable(getattr(importlib.import_module(module), func)), name


def test_bad_override_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["tasks", "no_such_key=1"])
    assert exc.value.code == 2
    assert "no_such_key" in capsys.readouterr().err


def test_tasks_job_and_user_errors(capsys, tmp_path):
    assert main(["tasks"]) == 0
    assert "pick-place-can" in capsys.readouterr().out
    assert main(["tasks", "task=lfit"]) == 1
    err = capsys.readouterr().err
    assert "unknown task 'lfit'" in err and "Traceback" not in err
    out_png = tmp_path / "cartpole.png"
    assert main(["tasks", "task=cartpole-swingup", "render=true", "image_size=24", f"out={out_png}"]) == 0
    import imageio.v3 as iio

    assert iio.imread(out_png).shape == (24, 48, 3)  # two views side by side


def test_console_script_entry_point():
    exe = Path(sys.executable).with_name("dopa")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "jobs.cli"]
    out = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert out.returncode == 0 and "jobs:" in out.stdout, out


@pytest.mark.parametrize("job, override, group", [("train", "env=nope", "env"), ("train", "learner=nope", "learner"),
                                                  ("train", "reward=nope", "reward"), ("train", "preset=nope", "preset")])
def test_unknown_group_choice_is_one_line(capsys, job, override, group):
    from jobs.cli import group_choices

    with pytest.raises(SystemExit) as exc:
        main([job, override, "progress=false"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    choices = group_choices(group)
    assert choices and all(c in err for c in choices), err  # every yaml in configs/<group>/
    assert f"unknown {group} 'nope'" in err and err.startswith("dopa train:")
    assert "cartpole-swingup" in group_choices("env") and "sac" in group_choices("learner")


def test_main_job_takes_r_gold_from_the_task_and_the_grm_as_potential():
    """The main job's reward (README "Reward model"): r_gold is the task's success (``gold: env``),
    the GRM stays the potential; ``reward.gold=potential`` keeps DESIGN.md's GRM completion."""
    from jobs.cli import compose

    cfg = compose("train", ["reward.checkpoint=ckpt"])
    assert cfg.reward.name == "grm" and cfg.reward.mode == "potential" and cfg.reward.gold == "env"
    assert cfg.reward.potential.checkpoint == "ckpt"
    assert compose("train", ["reward.checkpoint=ckpt", "reward.gold=potential"]).reward.gold == "potential"
