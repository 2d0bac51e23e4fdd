"""The GRM trainer's resumable training state: safetensors + JSON (no pickle), old torch-saved states."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reward_models.training_state import load_training_state, save_training_state


def _trained_optimizer(steps=3, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.05)
    x = torch.randn(16, 4)
    for _ in range(steps):
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()
    return net, opt, x


def test_training_state_roundtrip_is_exact_and_pickle_free(tmp_path):
    net, opt, x = _trained_optimizer()
    sampler = np.random.default_rng(7)
    sampler.random(5)
    torch.manual_seed(123)
    torch.rand(3)
    folder = tmp_path / "grm"
    save_training_state(folder, 3, opt, sampler.bit_generator.state)
    assert sorted(p.name for p in (folder / "training_state").iterdir()) == ["state.json", "state.safetensors"]
    head = json.loads((folder / "training_state" / "state.json").read_text())
    assert head["__dict__"][0] == ["format", "dopa-grm-training-state"]

    state = load_training_state(folder)
    assert state["step"] == 3 and torch.equal(state["torch_rng"], torch.get_rng_state())
    assert state["sampler_rng"] == sampler.bit_generator.state  # 128-bit PCG64 integers survive JSON
    # the optimizer continues bit for bit: one more step from the loaded state equals one more step of the original
    import copy

    net2 = copy.deepcopy(net)
    opt2 = torch.optim.AdamW(net2.parameters(), lr=3e-3, weight_decay=0.05)
    opt2.load_state_dict(state["optimizer"])
    for n, o in ((net, opt), (net2, opt2)):
        o.zero_grad()
        n(x).pow(2).mean().backward()
        o.step()
    for a, b in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(a, b)

    # bad files: one clear message each
    (folder / "training_state" / "state.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"cannot resume from .*training_state: corrupt checkpoint file .*state\.safetensors"):
        load_training_state(folder)
    save_training_state(folder, 3, opt, sampler.bit_generator.state)  # replaces the bad one
    head["__dict__"][1] = ["version", 9]
    (folder / "training_state" / "state.json").write_text(json.dumps(head))
    with pytest.raises(ValueError, match=r"state\.json has version 9; this code reads version 1"):
        load_training_state(folder)
    with pytest.raises(FileNotFoundError, match="holds no training_state"):
        load_training_state(tmp_path / "nothing")


class _NotPlain:
    """An object an old pickle may hold; weights_only loading refuses it."""


def test_old_torch_saved_state_is_read_without_code_or_refused(tmp_path):
    _, opt, _ = _trained_optimizer()
    ts = tmp_path / "old" / "training_state"
    ts.mkdir(parents=True)
    old = {"step": 5, "optimizer": opt.state_dict(), "torch_rng": torch.get_rng_state(),
           "sampler_rng": np.random.default_rng(1).bit_generator.state}
    torch.save(old, ts / "state.pt")
    state = load_training_state(tmp_path / "old")
    assert state["step"] == 5 and torch.equal(state["torch_rng"], old["torch_rng"])
    assert torch.equal(state["optimizer"]["state"][0]["exp_avg"], old["optimizer"]["state"][0]["exp_avg"])
    torch.save({**old, "extra": _NotPlain()}, ts / "state.pt")
    with pytest.raises(ValueError, match=r"state\.pt: an old torch-saved training state that does not load as plain "
                                         r"tensors .*delete .*training_state to train from scratch"):
        load_training_state(tmp_path / "old")


def test_reward_train_resumes_from_new_and_old_states(tmp_path, capsys):
    from test_grm import write_lift_episodes

    from jobs.cli import compose
    from jobs.reward import run_train

    data = write_lift_episodes(tmp_path / "lift.hdf5", seeds=[1, 2], steps_per_phase=3)
    out = tmp_path / "grm"
    over = [f"data=[{data}]", f"out={out}", "batch_size=4", "save_every=2", "threads=1", f"text_cache={tmp_path / 'tc'}",
            "model.channels=[8,16,16,16]", "model.width=32", "model.depth=1", "model.heads=2", "model.hop_bins=21"]
    assert run_train(compose("reward_train", [*over, "steps=2"])) == 0
    assert not (out / "training_state" / "state.pt").exists() and load_training_state(out)["step"] == 2
    assert run_train(compose("reward_train", [*over, "steps=4"])) == 0
    assert "resuming" in capsys.readouterr().out and load_training_state(out)["step"] == 4
    # an older checkpoint with a torch-saved state resumes and is rewritten in the new format
    state = load_training_state(out)
    for p in (out / "training_state").iterdir():
        p.unlink()
    torch.save(state, out / "training_state" / "state.pt")
    assert run_train(compose("reward_train", [*over, "steps=6"])) == 0
    assert "at step 4" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "training_state").iterdir()) == ["state.json", "state.safetensors"]
    assert load_training_state(out)["step"] == 6


def test_reward_train_resume_after_an_interruption_is_bit_exact(tmp_path, monkeypatch):
    """A run stopped right after its step-2 checkpoint and resumed ends with the very weights of an
    uninterrupted 4-step run (same pairs, reference frames, image shifts, optimizer and RNG states)."""
    from safetensors.torch import load_file
    from test_grm import write_lift_episodes

    from jobs.cli import compose
    from jobs.reward import run_train
    from reward_models import train

    data = write_lift_episodes(tmp_path / "lift.hdf5", seeds=[1, 2], steps_per_phase=3)

    def over(out):
        return [f"data=[{data}]", f"out={out}", "batch_size=4", "save_every=2", "threads=1", "steps=4",
                f"text_cache={tmp_path / 'tc'}", "model.channels=[8,16,16,16]", "model.width=32", "model.depth=1",
                "model.heads=2", "model.hop_bins=21", "shift=2"]

    assert run_train(compose("reward_train", over(tmp_path / "straight"))) == 0
    real_save = train.save_checkpoint

    def save_then_stop(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt  # the machine went down right after the checkpoint

    monkeypatch.setattr(train, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_train(compose("reward_train", over(tmp_path / "resumed")))
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    assert load_training_state(tmp_path / "resumed")["step"] == 2
    assert run_train(compose("reward_train", over(tmp_path / "resumed"))) == 0
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
