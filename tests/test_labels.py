"""Hop labels, step-wise discretization and the balanced pair sampler against hand-computed cases."""

import numpy as np
import pytest

from reward_models.labels import (
    BalancedPairSampler,
    SampledEpisode,
    hop_label,
    stepwise_progress,
    stepwise_sample,
)


def test_hop_forward_backward_zero_goal_start():
    # forward: from 0.25 to 0.5 gains 0.25 of the 0.75 left
    assert hop_label(0.25, 0.5) == pytest.approx(1 / 3)
    # backward: from 0.75 to 0.5 loses 0.25 of the 0.75 done
    assert hop_label(0.75, 0.5) == pytest.approx(-1 / 3)
    assert hop_label(0.4, 0.4) == 0.0
    # start -> goal is +1, goal -> start is -1
    assert hop_label(0.0, 1.0) == pytest.approx(1.0)
    assert hop_label(1.0, 0.0) == pytest.approx(-1.0)
    # at the goal nothing is left to gain; at the start nothing to lose: 0, not NaN
    assert hop_label(1.0, 1.0) == 0.0
    assert hop_label(0.0, 0.0) == 0.0
    # from the goal backwards, from the start forwards
    assert hop_label(1.0, 0.6) == pytest.approx(-0.4)
    assert hop_label(0.0, 0.6) == pytest.approx(0.6)
    # vectorised, float32, in [-1, 1]
    h = hop_label(np.array([0.5, 0.5, 0.9]), np.array([1.0, 0.0, 0.95]))
    assert h.dtype == np.float32
    np.testing.assert_allclose(h, [1.0, -1.0, 0.5], atol=1e-6)


def test_hop_rejects_bad_progress():
    with pytest.raises(ValueError, match="NaN"):
        hop_label(np.nan, 0.5)
    with pytest.raises(ValueError, match=r"\[0.0, 1.0\]"):
        hop_label(0.5, 1.5)


def test_stepwise_sample_equalises_subtasks():
    # a short first sub-task (10 frames) and a long second one (30 frames) are worth 1/2 each
    idx, phi = stepwise_sample(41, [10, 40], samples_per_subtask=2)
    np.testing.assert_array_equal(idx, [0, 5, 10, 25, 40])
    np.testing.assert_allclose(phi, [0, 0.25, 0.5, 0.75, 1.0])


def test_stepwise_one_subtask_and_goal_hold():
    idx, phi = stepwise_sample(11, [10], samples_per_subtask=5)
    np.testing.assert_array_equal(idx, [0, 2, 4, 6, 8, 10])
    np.testing.assert_allclose(phi, np.linspace(0, 1, 6))
    # all sub-tasks done at frame 6, episode runs to 12: the tail holds the goal (progress 1)
    idx, phi = stepwise_sample(13, [6], samples_per_subtask=3)
    assert idx[-1] == 12 and phi[-1] == 1.0 and (phi[idx >= 6] == 1.0).all()


def test_stepwise_incomplete_episode():
    # 2 of 3 sub-tasks done; the frames after the last keyframe have unknown progress: left out
    idx, phi = stepwise_sample(31, [5, 20], samples_per_subtask=1, num_subtasks=3)
    np.testing.assert_array_equal(idx, [0, 5, 20])
    np.testing.assert_allclose(phi, [0, 1 / 3, 2 / 3], atol=1e-6)
    # with ground-truth progress (e.g. a regressing episode) the tail is sampled and its values used
    gt = np.concatenate([np.linspace(0, 2 / 3, 21), np.linspace(2 / 3, 0.2, 10)]).astype(np.float32)
    idx, phi = stepwise_sample(31, [5, 20], samples_per_subtask=1, num_subtasks=3, progress=gt)
    np.testing.assert_array_equal(idx, [0, 5, 20, 30])
    assert phi[-1] == pytest.approx(0.2)
    dense = stepwise_progress(31, [5, 20], 3)
    assert dense[5] == pytest.approx(1 / 3) and dense[30] == pytest.approx(2 / 3)


def test_stepwise_bad_input():
    with pytest.raises(ValueError, match="at least 2 frames"):
        stepwise_sample(1, [], 2)
    with pytest.raises(ValueError, match="strictly increasing"):
        stepwise_sample(20, [5, 5], 2)
    with pytest.raises(ValueError, match=r"\[1, 19\]"):
        stepwise_sample(20, [0, 19], 2)
    with pytest.raises(ValueError, match="samples_per_subtask"):
        stepwise_sample(20, [19], 0)


def test_sampler_balance_and_zero_hops():
    eps = [SampledEpisode(*stepwise_sample(61, [20, 40, 60], 8)) for _ in range(3)]
    s = BalancedPairSampler(eps, hop_bins=25, gap_bins=4, zero_ratio=0.05, seed=0)
    ep, b, a, h = s.sample(20000)
    assert ep.shape == b.shape == a.shape == h.shape == (20000,)
    # labels agree with the formula for the drawn frames
    phi = stepwise_progress(61, [20, 40, 60])
    np.testing.assert_allclose(h, hop_label(phi[b], phi[a]), atol=1e-6)
    zero = b == a
    assert 0.04 < zero.mean() < 0.06 and (h[zero] == 0).all()
    # balanced over hop bins: every non-empty hop bin is drawn, none dominates
    hb = np.minimum(((h[~zero] + 1) / 2 * 25).astype(int), 24)
    counts = np.bincount(hb, minlength=25)
    nonempty = counts[counts > 0]
    assert len(nonempty) >= 20
    assert nonempty.max() / nonempty.min() < 6
    # both directions present in similar amounts
    assert 0.35 < (h[~zero] > 0).mean() < 0.65


def test_sampler_needs_pairs():
    with pytest.raises(ValueError, match="two or more"):
        BalancedPairSampler([SampledEpisode(np.array([0]), np.array([0.0], np.float32))])


def _coded_episodes():
    """Three 9-frame episodes whose pixels encode (episode, frame): red = episode, green = frame,
    and blue = 0 in the front view, 1 in the wrist view. Episode 1 fails (its progress falls)."""
    from sim.episodes import Episode

    eps = []
    for k, success in enumerate((True, False, True)):
        t = np.arange(9)
        frames = {}
        for j, v in enumerate(("front", "wrist")):
            x = np.zeros((9, 16, 16, 3), np.uint8)
            x[..., 0], x[..., 1], x[..., 2] = k, t[:, None, None], j
            frames[v] = x
        prog = np.linspace(0, 1, 9) if success else np.concatenate([np.linspace(0, 0.5, 5), np.linspace(0.5, 0.2, 5)[1:]])
        kf = [4, 8] if success else [4]
        eps.append(Episode(frames=frames, states=np.zeros((9, 1), np.float32), actions=np.zeros((8, 1), np.float32),
                           rewards=np.zeros(8, np.float32), dones=np.eye(1, 8, 7, dtype=np.uint8)[0],
                           progress=prog.astype(np.float32), keyframes=np.asarray(kf), keyframe_names=["a", "b"][:len(kf)],
                           success=success, imperfection="none", seed=-1, task="t", task_text="do it"))
    return eps


def test_anchored_pairs_take_a_successful_goal_frame_or_the_start_and_eq2_labels():
    import torch

    from reward_models.pairs import HopData

    eps = _coded_episodes()
    data = HopData(eps, ("front", "wrist"), "front", {"do it": np.zeros(384, np.float32)}, seed=3,
                   goal_pair_prob=0.7, start_pair_prob=0.3, zero_ratio=0.0)
    b = data.batch(400)
    bf, af = b["before"]["front"][:, 0, 0], b["after"]["front"][:, 0, 0]
    bw = b["before"]["wrist"][:, 0, 0]
    assert (bw[:, :2] == bf[:, :2]).all() and (bw[:, 2] == 1).all()  # both views of one frame
    cross = (af[:, 0] != bf[:, 0]) & ~((af[:, 1] == 8) & (bf[:, 1] == 8))  # (two goals: either way round)
    from_goal = cross & (bf[:, 1] == 8) & (bf[:, 0] != 1)
    to_goal = cross & (af[:, 1] == 8) & (af[:, 0] != 1)
    nf, nt = int(from_goal.sum()), int(to_goal.sum())
    assert nf > 90 and nt > 10 and nf > 2 * nt, (nf, nt)  # 3 in 4 from the goal
    phi = {k: e.progress for k, e in enumerate(eps)}
    from_start = (bf[:, 0] == af[:, 0]) & (bf[:, 1] == 0) & (af[:, 1] != 0)
    assert int(from_start.sum()) > 80  # 30% start-anchored, beside the sampler's own few
    for i in torch.nonzero(from_start).view(-1).tolist():  # the forward-anchored query: hop = progress
        assert b["hop"][i].item() == pytest.approx(phi[int(af[i, 0])][int(af[i, 1])], abs=1e-6)
    for i in torch.nonzero(from_goal).view(-1).tolist():  # BEFORE = a goal, AFTER = own frame: Eq. 2 backward
        ea, ta = int(af[i, 0]), int(af[i, 1])
        assert b["hop"][i].item() == pytest.approx(phi[ea][ta] - 1.0, abs=1e-6)
        # the conditioning goal is the goal frame shown as BEFORE
        assert (b["ref_goal"][i] == b["before"]["front"][i]).all()
    for i in torch.nonzero(to_goal).view(-1).tolist():  # the reset's goal check: forward to the goal
        eb, tb = int(bf[i, 0]), int(bf[i, 1])
        assert b["hop"][i].item() == pytest.approx(1.0 if phi[eb][tb] < 1 else 0.0, abs=1e-6)
    # every pair across episodes has a successful episode's last frame on one side (never the failed one's)
    goal_b, goal_a = (bf[:, 1] == 8) & (bf[:, 0] != 1), (af[:, 1] == 8) & (af[:, 0] != 1)
    assert (goal_b | goal_a)[af[:, 0] != bf[:, 0]].all()
    for bad, match in (({"goal_pair_prob": 1.5}, "goal_pair_prob must be in"),
                       ({"goal_pair_prob": 0.9, "start_pair_prob": 0.2}, r"goal_pair_prob \+ start_pair_prob")):
        with pytest.raises(ValueError, match=match):
            HopData(eps, ("front", "wrist"), "front", {"do it": np.zeros(384, np.float32)}, **bad)
