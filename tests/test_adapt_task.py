"""``dopa reward-adapt task=...``: the task text (a sentence) or a registered task name standing for its text."""

from __future__ import annotations

import pytest
import torch

from jobs.cli import main
from reward_models.adapt import resolve_task_text


def test_task_value_is_text_or_a_registered_name():
    assert resolve_task_text("  raise the cube ", "lift") == "raise the cube"
    assert resolve_task_text("lift", "lift") == "lift the red cube"  # sim/tasks.py's text for lift
    with pytest.raises(ValueError, match=r"task='door' is the name of a registered task but the demonstration is "
                                         r"of 'lift'; give the task text \(a sentence, e\.g\. task='open the door'\)"):
        resolve_task_text("door", "lift")
    with pytest.raises(ValueError, match="must not be empty"):
        resolve_task_text(" ", "lift")


def test_help_says_task_is_text(capsys):
    assert main(["reward-adapt", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "task TEXT" in out and "registered task name" in out  # the job's description
    assert "task: null" in out
    from importlib.resources import files

    comment = files("configs").joinpath("reward_adapt.yaml").read_text()
    assert "task TEXT, a sentence" in comment and "registered task name" in comment


def test_adapt_job_with_a_task_name(tmp_path, capsys):
    from test_grm import tiny_config, write_lift_episodes

    from reward_models.grm import GRM, load_checkpoint, save_checkpoint

    demo = write_lift_episodes(tmp_path / "lift.hdf5", seeds=[1, 2], steps_per_phase=3)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "grm", GRM(tiny_config()), {}, None, {})
    common = [f"checkpoint={tmp_path / 'grm'}", f"demo={demo}", "steps=2", "batch_size=4", "threads=1",
              f"text_cache={tmp_path / 'tc'}"]
    assert main(["reward-adapt", *common, "task=lift", f"out={tmp_path / 'a'}"]) == 0
    _, meta = load_checkpoint(tmp_path / "a" / "checkpoint")
    assert meta["references"]["lift"]["text"] == "lift the red cube"
    assert meta["config"]["info"]["adapted_to"]["text"] == "lift the red cube"
    capsys.readouterr()
    assert main(["reward-adapt", *common, "task=door", f"out={tmp_path / 'b'}"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "task='door' is the name of a registered task" in err
    assert not (tmp_path / "b").exists()
