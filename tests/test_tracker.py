"""The progress tracker's fusion arithmetic (against an oracle hop backend that reads progress from
the images) and GRMPotential on real rendered frames with a real GRM checkpoint."""

import numpy as np
import pytest
import torch

from reward_models.labels import hop_label
from reward_models.tracker import GRMPotential, ProgressTracker

VIEWS = ("front", "wrist")


class OracleBackend:
    """Hops computed exactly from progress written into the images (pixel value = 200 * progress);
    ``backward_noise`` corrupts the backward-anchored queries to test the consistency damping."""

    views = VIEWS
    image_size = 8
    reference_view = "front"

    def __init__(self):
        self.calls = 0

    def encode_text(self, text):
        return torch.zeros(1, 1)

    def encode_views(self, images):
        return torch.stack([images[v].float().mean((1, 2, 3)) / 200.0 for v in self.views], 1)[..., None]

    def encode_reference(self, image):
        return image.float().mean((1, 2, 3))[:, None] / 200.0

    def hop_encoded(self, text, start, goal, before, after):
        self.calls += 1
        p, q = before[:, 0, 0].clamp(0, 1).numpy(), after[:, 0, 0].clamp(0, 1).numpy()
        return torch.from_numpy(hop_label(p, q))

    def hop_dist_encoded(self, text, start, goal, before, after):
        h = self.hop_encoded(text, start, goal, before, after)
        return h, torch.full_like(h, 0.05)


def frame(p):
    return np.full((8, 8, 3), int(round(200 * p)), np.uint8)


def obs_of(ps):
    return {"images": {v: torch.from_numpy(np.stack([frame(p) for p in ps])) for v in VIEWS}}


def tracker(fusion="mean", goal=1.0, n=2, **kw):
    return ProgressTracker(OracleBackend(), "lift the red cube", {"front": frame(0.0)},
                           {v: frame(goal) for v in VIEWS}, n, fusion=fusion, **kw)


@pytest.mark.parametrize("fusion", ["mean", "damped", "incremental", "forward", "backward", "precision"])
def test_exact_hops_track_true_progress(fusion):
    tr = tracker(fusion)
    truth = np.array([[0.0, 0.0], [0.2, 0.1], [0.5, 0.1], [0.4, 0.3], [0.8, 0.2], [1.0, 0.6]])
    tr.reset(torch.tensor([0, 1]), obs_of(truth[0]))
    assert tr.anchors_ok.all()
    for t in range(1, len(truth)):
        phi, done = tr(obs_of(truth[t]))
        assert phi.dtype == torch.float32 and phi.shape == (2,)
        np.testing.assert_allclose(phi.numpy(), truth[t], atol=0.01)
    assert done.tolist() == [True, False]


def test_incremental_update_rule_and_reset_per_env():
    tr = tracker("incremental")
    tr.reset(torch.tensor([0, 1]), obs_of([0.0, 0.0]))
    tr(obs_of([0.5, 0.5]))
    # hop +0.5 from 0.5: 0.5 + 0.5 * 0.5; hop -0.4 from 0.5 (0.5 -> 0.3): 0.5 - 0.5 * 0.4
    phi, _ = tr(obs_of([0.75, 0.3]))
    np.testing.assert_allclose(phi.numpy(), [0.75, 0.3], atol=0.01)
    assert tr.last["hop"].numpy() == pytest.approx([0.5, -0.4], abs=0.02)
    # a new episode in env 1 only: its progress restarts at 0, env 0 keeps its state
    tr.reset(torch.tensor([1]), obs_of([0.9, 0.0]))
    assert tr.progress.tolist() == pytest.approx([0.75, 0.0], abs=0.01)
    phi, _ = tr(obs_of([0.75, 0.2]))
    np.testing.assert_allclose(phi.numpy(), [0.75, 0.2], atol=0.01)


def test_goal_like_start_falls_back_to_incremental():
    # pixel check: the goal frame is the start frame
    with pytest.warns(UserWarning, match="looks like the reference start"):
        tr = tracker("mean", goal=0.0)
    assert tr.goal_like_start
    tr.reset(torch.tensor([0, 1]), obs_of([0.0, 0.0]))
    assert not tr.anchors_ok.any()
    for p in (0.3, 0.6, 0.97):
        phi, done = tr(obs_of([p, p]))
    # incremental alone reaches completion; the collapsed mean would have stayed near 2/3
    np.testing.assert_allclose(phi.numpy(), [0.97, 0.97], atol=0.01)
    assert done.all()
    # the model check alone (pixel check off): H(first frame -> goal) ~ 0 disables the anchors per env
    for fusion in ("mean", "damped", "precision"):
        tr = tracker(fusion, goal=0.0, collapse_pixel=0.0)
        assert not tr.goal_like_start
        tr.reset(torch.tensor([0, 1]), obs_of([0.0, 0.0]))
        assert not tr.anchors_ok.any(), fusion
        for p in (0.3, 0.6, 0.97):
            phi, done = tr(obs_of([p, p]))
        np.testing.assert_allclose(phi.numpy(), [0.97, 0.97], atol=0.01)


def test_damping_down_weights_inconsistent_anchors():
    class Noisy(OracleBackend):
        def hop_encoded(self, text, start, goal, before, after):
            h = super().hop_encoded(text, start, goal, before, after)
            b = h.shape[0]
            if b == 6:  # [incremental, forward, backward] x 2 envs: backward says "at the start"
                h[4:] = -1.0
            return h

    tr = ProgressTracker(Noisy(), "t", {"front": frame(0.0)}, {v: frame(1.0) for v in VIEWS}, 2,
                         fusion="damped", damping_alpha=20.0)
    tr.reset(torch.tensor([0, 1]), obs_of([0.0, 0.0]))
    phi, _ = tr(obs_of([0.6, 0.6]))
    # F = 0.6, B = 0: d = 0.6 / 0.3 = 2, w = exp(-80) ~ 0: the estimate barely moves
    assert (phi < 0.01).all()
    mean = ProgressTracker(Noisy(), "t", {"front": frame(0.0)}, {v: frame(1.0) for v in VIEWS}, 2, fusion="mean")
    mean.reset(torch.tensor([0, 1]), obs_of([0.0, 0.0]))
    np.testing.assert_allclose(mean(obs_of([0.6, 0.6]))[0].numpy(), [0.4, 0.4], atol=0.01)  # (0.6 + 0.6 + 0) / 3


def test_precision_fusion_weighs_modes_by_the_models_uncertainty():
    class UnsureAnchors(OracleBackend):
        """Both anchors answer "back at 0.2" (hop -0.8 from the goal, 0.2 from the start); with
        ``unsure`` their std is 0.4, the incremental hop's 0.02."""

        unsure = True

        def hop_dist_encoded(self, text, start, goal, before, after):
            h = self.hop_encoded(text, start, goal, before, after)
            sd = torch.full_like(h, 0.02)
            if h.shape[0] == 6 and self.late:
                h[2:4], h[4:6] = 0.2, -0.8
                sd[2:6] = 0.4 if self.unsure else 0.02
            return h, sd

    be = UnsureAnchors()
    be.late = False
    tr = ProgressTracker(be, "t", {"front": frame(0.0)}, {v: frame(1.0) for v in VIEWS}, 2, fusion="precision")
    tr.reset(torch.tensor([0, 1]), obs_of([0.0, 0.0]))
    for p in (0.5, 1.0):
        phi, _ = tr(obs_of([p, p]))
    np.testing.assert_allclose(phi.numpy(), [1.0, 1.0], atol=0.01)
    be.late = True  # the same frame again; the anchors now disagree with the incremental hop (0)
    prior = tr.variance.clone()
    phi, done = tr(obs_of([1.0, 1.0]))
    assert (phi > 0.98).all() and done.all()  # unsure anchors barely move a confident estimate
    # the fused variance stays below the incremental one's (the floor plus the hop's): the anchors added information
    assert (tr.variance > 0).all() and (tr.variance < prior + ProgressTracker.variance_floor).all()
    be.unsure = False  # confident anchors: two against one, progress moves towards them
    phi, _ = tr(obs_of([1.0, 1.0]))
    assert (phi < 0.6).all()
    tr.reset(torch.tensor([1]), obs_of([0.0, 0.0]))
    assert tr.variance[1] == 0 and tr.progress[1] == 0
    # a backend with a single score (the Qwen GRM's answer) cannot be weighed
    class ScoreOnly:
        views, image_size, reference_view = VIEWS, 8, "front"
        encode_text, encode_views, encode_reference = (OracleBackend.encode_text, OracleBackend.encode_views,
                                                       OracleBackend.encode_reference)
        hop_encoded = OracleBackend.hop_encoded

    with pytest.raises(ValueError, match="fusion='precision' needs a backend that reports its hop uncertainty"):
        ProgressTracker(ScoreOnly(), "t", {"front": frame(0.0)}, {v: frame(1.0) for v in VIEWS}, 2, fusion="precision")
    # the default, auto: precision where the backend has the distribution, the paper's mean where not
    assert ProgressTracker(ScoreOnly(), "t", {"front": frame(0.0)}, {v: frame(1.0) for v in VIEWS}, 2).fusion == "mean"
    assert ProgressTracker(OracleBackend(), "t", {"front": frame(0.0)}, {v: frame(1.0) for v in VIEWS},
                           2).fusion == "precision"


def test_tracker_bad_input():
    with pytest.raises(ValueError, match="unknown fusion 'max'"):
        tracker("max")
    with pytest.raises(ValueError, match="must not be empty"):
        ProgressTracker(OracleBackend(), " ", {"front": frame(0)}, {v: frame(1) for v in VIEWS}, 1)
    with pytest.raises(ValueError, match=r"missing view\(s\) \['wrist'\]"):
        ProgressTracker(OracleBackend(), "t", {"front": frame(0)}, {"front": frame(1)}, 1)
    tr = tracker()
    with pytest.raises(RuntimeError, match="reset"):
        tr(obs_of([0.1, 0.1]))
    with pytest.raises(ValueError, match="env_ids"):
        tr.reset(torch.tensor([2]), obs_of([0.0, 0.0]))
    with pytest.raises(ValueError, match=r"missing view\(s\) \['wrist'\]"):
        tr.reset(torch.tensor([0]), {"images": {"front": obs_of([0, 0])["images"]["front"]}})
    with pytest.raises(ValueError, match="expected 2"):
        tr.reset(torch.tensor([0]), obs_of([0.0]))


class BiasedBackend(OracleBackend):
    """Exact hops plus 0.05: every hop moves progress, so an extra or an off-schedule hop shows."""

    def hop_encoded(self, text, start, goal, before, after):
        return (super().hop_encoded(text, start, goal, before, after) + 0.05).clamp(-1.0, 1.0)


@pytest.mark.parametrize("fusion", ["incremental", "precision"])
def test_shaper_reset_moves_no_other_envs_tracker(fusion):
    """3 envs whose episodes end at different steps (on and off the query steps, k = 3): each env's
    Phi must equal that of its own tracker fed only its own frames on the query steps and reset at
    its own episode ends (no second hop on a frame, no update between queries)."""
    from reward_models.shaping import RewardShaper

    B, k, T, gamma = 3, 3, 16, 0.9
    lengths = [4, 6, 5]  # env 0 ends at steps 4, 8, ... (off schedule), env 1 at 6, 12 (on schedule)
    rng = np.random.default_rng(0)
    final = rng.uniform(0.0, 0.8, (T + 1, B))  # progress in the frame of s' after step t (row 0: s_0)
    first = rng.uniform(0.0, 0.3, (T + 1, B))  # first frame of an episode starting after step t

    def make(n):
        return ProgressTracker(BiasedBackend(), "lift the red cube", {"front": frame(0.0)},
                               {v: frame(1.0) for v in VIEWS}, n, fusion=fusion)

    def obs(ps):
        return {"state": torch.zeros(len(ps), 2), **obs_of(ps)}

    shaper = RewardShaper("potential", gamma, make(B), gold="potential", query_every=k)
    refs = [make(1) for _ in range(B)]
    shaper.start(obs(final[0]))
    for i in range(B):
        refs[i].reset(torch.tensor([0]), obs([final[0, i]]))
    held = torch.zeros(B)
    for t in range(1, T + 1):
        ended = torch.tensor([t % n == 0 for n in lengths])
        after = np.where(ended.numpy(), first[t], final[t])  # what the env returns: new first frames
        _, terms = shaper.step(torch.zeros(B), obs(final[t]), torch.zeros(B, dtype=torch.bool), ended,
                               torch.zeros(B, dtype=torch.bool), reset_obs=obs(after))
        expect = torch.tensor([float(refs[i](obs([final[t, i]]))[0][0]) if t % k == 0 else float(held[i])
                               for i in range(B)])
        torch.testing.assert_close(terms["progress"], expect, atol=1e-5, rtol=0)
        torch.testing.assert_close(terms["shaping"], gamma * expect - held, atol=1e-5, rtol=0)
        held = expect.clone()
        for i in torch.nonzero(ended).flatten().tolist():
            held[i] = float(refs[i].reset(torch.tensor([0]), obs([after[i]]))[0])  # 0: the start of progress
    assert held.tolist() == pytest.approx(shaper.phi.tolist(), abs=1e-6)


@pytest.fixture(scope="module")
def grm_checkpoint(tmp_path_factory):
    """A real (briefly trained) GRM checkpoint and episode files of rendered Lift frames."""
    from test_grm import lift_episode_files, tiny_config

    from reward_models.fit import fit
    from reward_models.grm import GRM, save_checkpoint
    from reward_models.pairs import HopData, build_references
    from reward_models.text import text_embeddings
    from sim.episodes import read_episodes as load_episodes

    train_file, test_file = lift_episode_files(tmp_path_factory)
    eps = load_episodes([train_file])
    te = text_embeddings([e.task_text for e in eps], tmp_path_factory.getbasetemp() / "tc")
    torch.manual_seed(0)
    model = GRM(tiny_config())
    data = HopData(eps, VIEWS, "front", te, seed=0)
    fit(model, data, 30, 16, 3e-3, progress_bar=False)
    ck = tmp_path_factory.getbasetemp() / "tracker_ck"
    save_checkpoint(ck, model, build_references(data, te))
    return ck, train_file, test_file


def test_grm_potential_on_rendered_frames(grm_checkpoint):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from reward_models.potential import Potential
    from sim.episodes import read_episodes as load_episodes

    ck, train_file, test_file = grm_checkpoint
    pot = instantiate(OmegaConf.create({"_target_": "reward_models.tracker.GRMPotential", "checkpoint": str(ck),
                                        "fusion": "mean", "damping_alpha": 20.0}))
    assert isinstance(pot, Potential) and pot.views == VIEWS
    assert pot.task_text == "lift the red cube"  # the checkpoint's only task
    eps = load_episodes([test_file])
    n = min(e.num_frames for e in eps)
    frames = lambda t: {"state": torch.zeros(len(eps), 3),  # noqa: E731
                        "images": {v: torch.from_numpy(np.stack([e.frames[v][t] for e in eps])) for v in VIEWS}}
    pot.reset(torch.arange(len(eps)), frames(0))
    for t in range(1, n):
        phi, done = pot(frames(t))
        assert phi.shape == (3,) and phi.dtype == torch.float32 and done.dtype == torch.bool
        assert torch.isfinite(phi).all() and (phi >= 0).all() and (phi <= 1).all()
    before = pot.tracker.progress.clone()
    first = pot.tracker._first.clone()
    pot.reset(torch.tensor([2]), frames(n - 1))
    assert pot.tracker.progress[2] == 0.0 and torch.equal(pot.tracker.progress[:2], before[:2])
    # env 2's forward anchor is now its new first frame; the others keep theirs
    assert torch.equal(pot.tracker._first[:2], first[:2]) and not torch.equal(pot.tracker._first[2], first[2])
    # the reference episode file gives the task text and reference frames
    pot2 = GRMPotential(str(ck), reference=str(train_file), fusion="incremental")
    assert pot2.task_text == "lift the red cube"
    assert GRMPotential(str(ck)).kwargs["fusion"] == "precision"  # auto: the GRM reports its distribution
    np.testing.assert_array_equal(pot2.ref_start["front"], load_episodes([train_file])[0].frames["front"][0])
    # observations without one of the checkpoint's views
    with pytest.raises(ValueError, match=r"missing view\(s\) \['wrist'\]"):
        pot2.reset(torch.tensor([0]), {"images": {"front": frames(0)["images"]["front"]}})
    with pytest.raises(ValueError, match="no reference frames for task 'open the door'"):
        GRMPotential(str(ck), task_text="open the door")
