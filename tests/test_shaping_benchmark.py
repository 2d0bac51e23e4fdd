"""The shaping benchmark's core (benchmarks/shaping_vs_sparse.py) at tiny size on real Lift: three
reward modes through the real training loop, a real (untrained, tiny) GRM on rendered frames."""

import json

import numpy as np
import pytest
import torch

from benchmarks.shaping_vs_sparse import MODES, TARGETS, run_benchmark, train_config


@pytest.fixture(scope="module")
def tiny_grm(tmp_path_factory):
    """A tiny GRM checkpoint (random weights, one 16 px view) with Lift references rendered here."""
    import sim
    from reward_models.grm import GRM, GRMConfig, save_checkpoint
    from sim.tasks import get_task

    env = sim.make_env("lift", num_envs=1, views=("front",), image_size=16, seed=0)
    obs, _ = env.reset(seed=0)
    start = obs["images"]["front"].numpy().copy()
    for _ in range(15):
        obs, *_ = env.step(torch.ones(1, env.action_dim) * 0.8)
    goal = obs["images"]["front"].numpy().copy()
    env.close()
    torch.manual_seed(0)
    model = GRM(GRMConfig(views=("front",), image_size=16, channels=(8, 8), width=16, depth=1, heads=2))
    with torch.no_grad():  # lean the hop distribution toward +1 so progress moves (an untrained head sits near 0)
        model.head[-1].bias.copy_(torch.linspace(-3.0, 3.0, model.config.hop_bins))
    emb = np.random.default_rng(0).standard_normal(384).astype(np.float32)
    folder = tmp_path_factory.mktemp("grm") / "ckpt"
    save_checkpoint(folder, model, {"lift": {"text": get_task("lift").text, "start": start, "goal": goal,
                                             "text_emb": emb / np.linalg.norm(emb)}})
    return str(folder)


def test_three_modes_json_plot_and_rewards(tmp_path, tiny_grm):
    steps = 20
    p = dict(task="lift", learner="sac", seeds=[0, 1], total_steps=steps, episode_steps=10, query_every=3,
             eval_every=10, eval_episodes=2,
             # random actions throughout (learning_starts > steps): the same seed gives the same states in
             # every mode, so the rewards differ only by the shaping term
             learner_overrides=["learner.hidden=[8,8]", "learner.batch_size=8", f"learner.learning_starts={steps + 1}",
                                "learner.buffer_size=100"])
    out = run_benchmark(p, tiny_grm, tmp_path / "runs", results_dir=tmp_path / "results", log=lambda *a: None)

    on_disk = json.loads((tmp_path / "results" / "shaping_vs_sparse.json").read_text())
    assert set(on_disk) == {"benchmark", "date", "machine", "command", "metrics", "targets", "met"}
    assert on_disk["benchmark"] == "shaping_vs_sparse" and on_disk["targets"] == TARGETS
    assert set(on_disk["met"]) == set(TARGETS) and all(isinstance(v, bool) for v in on_disk["met"].values())
    assert (tmp_path / "results" / "shaping_vs_sparse.png").stat().st_size > 1000
    m = on_disk["metrics"]
    for mode in MODES:
        pm = m["modes"][mode]
        assert pm["final_episodes"] == 2 * 2  # 2 seeds x 2 evaluation episodes
        lo, hi = pm["final_success_ci"]
        assert 0.0 <= lo <= pm["final_success"] <= hi <= 1.0
        assert len(pm["episodes_to_80_per_seed"]) == 2
        for r in m["runs"][mode]:
            assert [c[0] for c in r["curve"]] == [10, 20]  # evaluations at these env steps
            # 10-step episodes (none can end sooner without a success): 1 finished by step 10, 2 by 20
            assert r["curve"][-1][1] == r["train_episodes"] >= 2
    # nothing was learned in 30 random steps: no invented episodes-to-80 %, targets not met
    if m["sparse_episodes_to_80"] is None:
        assert m["sparse_over_grm_episodes_to_80"] is None and not on_disk["met"]["sparse_over_grm_episodes_to_80"]
        assert not on_disk["met"]["naive_no_better_than_sparse"]

    runs = out["_runs"]
    for i in range(2):
        sparse = np.array(runs["sparse"][i]["rewards_head"])
        grm = np.array(runs["grm"][i]["rewards_head"])
        naive = np.array(runs["naive"][i]["rewards_head"])
        assert sparse.shape == grm.shape == naive.shape == (steps,)
        assert set(np.unique(sparse)) <= {0.0, 1.0}
        assert not np.allclose(grm, sparse)  # the GRM potential really shaped the reward
        # same states, same Phi: naive - potential-based = Phi(s') - gamma Phi(s') = (1 - gamma) Phi(s') >= 0
        diff = naive - grm
        assert (diff >= -1e-6).all() and diff.max() > 0
        assert diff.max() <= (1 - 0.99) + 1e-6


def test_bad_mode_and_missing_grm(tmp_path):
    p = dict(task="lift", learner="sac", seeds=[0], total_steps=10, episode_steps=5, query_every=1, eval_every=5,
             eval_episodes=1, learner_overrides=[])
    with pytest.raises(ValueError, match="unknown mode 'shaped'"):
        train_config("shaped", 0, p, None, tmp_path, 16)
    with pytest.raises(ValueError, match="needs a GRM checkpoint"):
        train_config("grm", 0, p, None, tmp_path, 16)
    with pytest.raises(ValueError, match="unknown modes"):
        run_benchmark(p, None, tmp_path, modes=("sparse", "dense"))


def _run(e80, successes, n=10):
    return {"episodes_to_80": e80, "final_successes": successes, "final_episodes": n, "train_episodes": 50,
            "reward_sum": 1.0, "wall_s": 1.0, "curve": [[100, 50, successes / n, successes, n]]}


def test_summary_ratio_and_targets_only_when_measured():
    from benchmarks.shaping_vs_sparse import summarize

    runs = {"sparse": [_run(100, 8), _run(120, 9)], "grm": [_run(40, 10), _run(70, 9)],
            "naive": [_run(None, 2), _run(150, 8)]}
    m, met = summarize(runs)
    assert m["sparse_over_grm_episodes_to_80"] == pytest.approx(110 / 55)
    assert met["sparse_over_grm_episodes_to_80"]  # 2.0 >= 2
    assert m["naive_episodes_to_80"] is None  # one seed never reached 80 %: no mean is invented
    assert met["naive_no_better_than_sparse"]
    assert m["modes"]["grm"]["final_success"] == pytest.approx(19 / 20)
    lo, hi = m["modes"]["grm"]["final_success_ci"]
    assert 0.7 < lo < 0.95 < hi <= 1.0
    # naive faster than sparse: the target fails; a GRM seed that never reaches 80 %: no ratio
    runs["naive"] = [_run(50, 9), _run(60, 9)]
    runs["grm"][1] = _run(None, 3)
    m, met = summarize(runs)
    assert not met["naive_no_better_than_sparse"]
    assert m["sparse_over_grm_episodes_to_80"] is None and not met["sparse_over_grm_episodes_to_80"]
