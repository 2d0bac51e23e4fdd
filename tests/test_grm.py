"""The GRM network, its checkpoint folder, and the reward-train / reward-eval / reward-adapt jobs,
on small episode files rendered from robosuite Lift (32 px, two views)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from reward_models.grm import GRM, GRMConfig, load_checkpoint, save_checkpoint

VIEWS = ("front", "wrist")
SIZE = 32


def write_lift_episodes(path, seeds, steps_per_phase=6, views=VIEWS, size=SIZE, regress_seeds=()):
    """Render Lift episodes of a two-phase scripted reach (above the cube, then down to it) into an
    episode file (``sim.episodes.EpisodeWriter``). Progress is step-wise (1/2 per phase, linear inside); in
    ``regress_seeds`` the arm goes back up in the second phase (progress falls, not a success)."""
    import sim

    env = sim.make_env("lift", num_envs=1, views=views, image_size=size, seed=0)
    layout, off = {}, 0
    for k, n in env.state_layout:
        layout[k] = slice(off, off + n)
        off += n
    from sim.episodes import Episode, EpisodeWriter

    with EpisodeWriter(path, "lift", {"controller": "osc_pose"}, views, size) as writer:
        for seed in seeds:
            obs, _ = env.reset(seed=int(seed))
            imgs = {v: [obs["images"][v][0].numpy()] for v in views}
            states, actions = [obs["state"][0].numpy()], []
            regress = seed in regress_seeds
            t_total = 2 * steps_per_phase
            for t in range(t_total):
                s = obs["state"][0].numpy()
                eef, cube = s[layout["robot0_eef_pos"]], s[layout["cube_pos"]]
                if t < steps_per_phase:
                    target = cube + np.array([0, 0, 0.12])
                elif regress:
                    target = cube + np.array([0, 0, 0.30])
                else:
                    target = cube + np.array([0, 0, 0.01])
                a = np.zeros(env.action_dim, np.float32)
                a[:3] = np.clip((target - eef) / 0.05, -1, 1)
                a[-1] = -1.0
                obs, _, _, _, info = env.step(torch.from_numpy(a)[None])
                actions.append(a)
                states.append(obs["state"][0].numpy())
                for v in views:
                    imgs[v].append(obs["images"][v][0].numpy())
            prog = np.concatenate([np.linspace(0, 0.5, steps_per_phase + 1),
                                   np.linspace(0.5, 0.1 if regress else 1.0, steps_per_phase + 1)[1:]])
            kf = [steps_per_phase] if regress else [steps_per_phase, t_total]
            writer.add(Episode(frames={v: np.stack(imgs[v]) for v in views}, states=np.stack(states),
                               actions=np.stack(actions), rewards=np.zeros(t_total, np.float32),
                               dones=np.eye(1, t_total, t_total - 1, dtype=np.uint8)[0],
                               progress=prog.astype(np.float32), keyframes=np.asarray(kf, np.int64),
                               keyframe_names=["reach", "descend"][:len(kf)], success=not regress,
                               imperfection="regress" if regress else "none", seed=int(seed)))
    env.close()
    return Path(path)


@pytest.fixture(scope="session")
def lift_files(tmp_path_factory):
    """(train file: 4 episodes, test file: 3 episodes incl. one regressing) of Lift, 32 px, 2 views."""
    return lift_episode_files(tmp_path_factory)


def lift_episode_files(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    train, test = base / "grm_lift_train.hdf5", base / "grm_lift_test.hdf5"
    if not train.exists():
        write_lift_episodes(train, seeds=[1, 2, 3, 4], regress_seeds=(4,))
    if not test.exists():
        write_lift_episodes(test, seeds=[11, 12, 13], regress_seeds=(13,))
    return train, test


def tiny_config(**kw):
    base = dict(views=VIEWS, image_size=SIZE, channels=(8, 16, 16, 16), width=32, depth=1, heads=2, hop_bins=21)
    base.update(kw)
    return GRMConfig(**base)


def _images(b, views=VIEWS, size=SIZE, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {v: torch.randint(0, 256, (b, size, size, 3), dtype=torch.uint8, generator=g) for v in views}


def test_grm_outputs_distribution_and_mean():
    torch.manual_seed(0)
    m = GRM(tiny_config()).eval()
    out = m(torch.randn(3, 384), _images(3)["front"], _images(3, seed=1)["front"], _images(3, seed=2), _images(3, seed=3))
    assert out.hop.shape == (3,) and out.hop.dtype == torch.float32
    assert out.probs.shape == (3, 21)
    torch.testing.assert_close(out.probs.sum(-1), torch.ones(3))
    torch.testing.assert_close(out.hop, out.probs @ torch.linspace(-1, 1, 21))
    assert ((out.hop >= -1) & (out.hop <= 1)).all() and (out.std >= 0).all()
    # the loss is minimised by the right bins: a few steps on one target move the mean towards it
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    args = (torch.randn(3, 384), _images(3)["front"], _images(3)["front"], _images(3, seed=2), _images(3, seed=3))
    target = torch.tensor([0.8, -0.5, 0.0])
    for _ in range(40):
        loss, _ = m.loss(m(*args), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (m(*args).hop - target).abs().max() < 0.15


def test_grm_bad_input():
    m = GRM(tiny_config()).eval()
    t, s, g = torch.randn(2, 384), _images(2)["front"], _images(2)["front"]
    with pytest.raises(ValueError, match=r"missing view\(s\) \['wrist'\]"):
        m(t, s, g, {"front": _images(2)["front"]}, _images(2))
    with pytest.raises(ValueError, match=r"unknown view\(s\) \['side'\]"):
        m(t, s, g, {**_images(2), "side": _images(2)["front"]}, _images(2))
    with pytest.raises(ValueError, match="64x64 px but the model takes 32x32"):
        m(t, s, g, _images(2, size=64), _images(2))
    with pytest.raises(ValueError, match="uint8"):
        m(t, s, g, {v: x.float() for v, x in _images(2).items()}, _images(2))
    nan = {v: torch.full((2, SIZE, SIZE, 3), float("nan")) for v in VIEWS}
    with pytest.raises(ValueError, match="NaN"):
        m(t, s, g, nan, _images(2))
    with pytest.raises(ValueError, match="expected 2"):
        m(t, s, g, {"front": _images(2)["front"], "wrist": _images(3)["wrist"]}, _images(2))
    with pytest.raises(ValueError, match=r"\[B, 384\]"):
        m(torch.randn(2, 10), s, g, _images(2), _images(2))
    with pytest.raises(ValueError, match="reference_view"):
        tiny_config(reference_view="side")


def test_checkpoint_roundtrip_and_views(tmp_path):
    torch.manual_seed(0)
    m = GRM(tiny_config()).eval()
    refs = {"lift": {"text": "lift the red cube", "start": torch.zeros(2, SIZE, SIZE, 3, dtype=torch.uint8),
                     "goal": torch.ones(2, SIZE, SIZE, 3, dtype=torch.uint8), "text_emb": np.ones(384, np.float32)}}
    ck = tmp_path / "ck"
    save_checkpoint(ck, m, refs, {"step": 3})
    save_checkpoint(ck, m, refs, {"step": 4})  # replaces the complete folder
    assert sorted(p.name for p in ck.iterdir()) == ["config.json", "model.safetensors", "references.safetensors",
                                                    "training_state"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    m2, meta = load_checkpoint(ck)
    assert meta["training_state"]["step"] == 4
    assert meta["references"]["lift"]["text"] == "lift the red cube"
    args = (torch.randn(2, 384), _images(2)["front"], _images(2)["front"], _images(2, seed=1), _images(2, seed=2))
    torch.testing.assert_close(m(*args).hop, m2(*args).hop)
    with pytest.raises(ValueError, match=r"trained with views \['front', 'wrist'\], not \['front', 'side'\]"):
        load_checkpoint(ck, views=("front", "side"))
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_checkpoint(tmp_path)


def _cfg(name, **over):
    from jobs.cli import compose

    return compose(name, [f"{k}={v}" for k, v in over.items()])


def test_load_episodes_and_bad_input(lift_files, tmp_path):
    from reward_models.text import embed_texts
    from sim.episodes import read_episodes as load_episodes

    eps = load_episodes([lift_files[0]], views=VIEWS, image_size=SIZE)
    assert len(eps) == 4 and eps[0].frames["front"].shape == (13, SIZE, SIZE, 3)
    assert eps[0].frames["front"].dtype == np.uint8 and eps[0].progress.shape == (13,)
    assert [e.success for e in eps] == [True, True, True, False]
    # the views and the wrist camera really differ, and the arm moves
    assert np.abs(eps[0].frames["front"][0].astype(int) - eps[0].frames["front"][-1]).mean() > 1.0
    with pytest.raises(ValueError, match="unknown view 'side'"):
        load_episodes([lift_files[0]], views=("front", "side"))
    with pytest.raises(ValueError, match="expected 64x64"):
        load_episodes([lift_files[0]], image_size=64)
    with pytest.raises(FileNotFoundError):
        load_episodes([tmp_path / "nope.hdf5"])
    with pytest.raises(ValueError, match="must not be empty"):
        embed_texts(["  "])
    # an episode of one frame: the pair builder and one-shot adaptation refuse it
    from reward_models.adapt import adapt
    from reward_models.labels import stepwise_sample

    one = eps[0]
    one.frames = {v: x[:1] for v, x in one.frames.items()}
    with pytest.raises(ValueError, match="at least 2"):
        adapt(GRM(tiny_config()), {"references": {}}, one, steps=1)
    with pytest.raises(ValueError, match="at least 2 frames"):
        stepwise_sample(1, [], 2)


def test_train_eval_adapt_jobs(lift_files, tmp_path):
    """reward-train (with resume), reward-eval and reward-adapt end to end on rendered episodes."""
    from jobs.reward import run_adapt, run_eval, run_train
    from reward_models.training_state import load_training_state

    train_file, test_file = lift_files
    out = tmp_path / "grm"
    model_over = {"model.channels": "[8,16,16,16]", "model.width": 32, "model.depth": 1, "model.heads": 2,
                  "model.hop_bins": 21}
    cfg = _cfg("reward_train", data=f"[{train_file}]", out=out, steps=40, batch_size=16, save_every=20, lr=3e-3,
               threads=1, text_cache=tmp_path / "tc", **model_over)
    assert run_train(cfg) == 0
    model, meta = load_checkpoint(out)
    assert load_training_state(out)["step"] == 40 and model.views == VIEWS
    assert list((tmp_path / "grm_tb").glob("events.out.tfevents.*"))
    # resume continues at step 40 up to 60
    cfg2 = _cfg("reward_train", data=f"[{train_file}]", out=out, steps=60, batch_size=16, save_every=100, lr=3e-3,
                threads=1, text_cache=tmp_path / "tc", **model_over)
    assert run_train(cfg2) == 0
    assert load_training_state(out)["step"] == 60

    # training lowered the loss (two-hot cross-entropy + hop MSE) on the training pairs
    from reward_models.pairs import HopData
    from sim.episodes import read_episodes as load_episodes

    eps = load_episodes([train_file])
    data = HopData(eps, VIEWS, "front", {eps[0].task_text: meta["references"]["lift"]["text_emb"].numpy()}, seed=5)
    b = data.batch(256)
    trained = load_checkpoint(out)[0]
    torch.manual_seed(0)
    fresh = GRM(trained.config).eval()
    with torch.no_grad():
        args = (b["text_emb"], b["ref_start"], b["ref_goal"], b["before"], b["after"])
        loss_trained = trained.loss(trained(*args), b["hop"])[0].item()
        loss_fresh = fresh.loss(fresh(*args), b["hop"])[0].item()
    assert loss_trained < 0.92 * loss_fresh, (loss_trained, loss_fresh)

    ev = tmp_path / "eval"
    assert run_eval(_cfg("reward_eval", checkpoint=out, data=f"[{test_file}]", out=ev, threads=1)) == 0
    metrics = json.loads((ev / "metrics.json").read_text())["lift"]
    assert metrics["episodes"] == 3 and metrics["successful"] == 2 and metrics["fusion"] == "precision"  # auto
    assert -1 <= metrics["voc"] <= 1 and 0 <= metrics["completion_accuracy"] <= 1 and 0 <= metrics["mae"] <= 1
    assert (ev / "progress_lift.png").stat().st_size > 1000

    ad = tmp_path / "adapt"
    cfg3 = _cfg("reward_adapt", checkpoint=out, demo=train_file, eval_data=f"[{test_file}]", out=ad, steps=10,
                batch_size=8, threads=1, text_cache=tmp_path / "tc", task="'raise the cube'", fusion="mean")
    assert run_adapt(cfg3) == 0
    summary = json.loads((ad / "adapt.json").read_text())
    assert summary["eval_episodes"] == 3 and summary["fusion"] == "mean" and summary["steps"] == 10
    assert -1 <= summary["voc_before"] <= 1 and -1 <= summary["voc_after"] <= 1
    m3, meta3 = load_checkpoint(ad / "checkpoint")
    assert meta3["references"]["lift"]["text"] == "raise the cube"
    assert (ad / "progress_lift_before.png").exists() and (ad / "progress_lift_after.png").exists()
