"""Potential-based shaping: exact checks on finite MDPs and on the batched loop with a real env."""

import numpy as np
import pytest
import torch

from reward_models.potential import StateFeaturePotential, StatePotential
from reward_models.shaping import RewardShaper, shaping_term


def q_iteration(P, R, terminal_next, gamma, iters=3000):
    """Exact Q* of a finite MDP: P [S, A, S], R [S, A, S] reward of s -a-> s', terminal_next [S]
    (entering s' ends the episode: no bootstrap)."""
    S, A, _ = P.shape
    Q = np.zeros((S, A))
    cont = (~terminal_next).astype(float)
    for _ in range(iters):
        V = Q.max(axis=1)
        Q = (P * (R + gamma * cont[None, None, :] * V[None, None, :])).sum(axis=2)
    return Q


def shaped_R(R, phi, terminal_next, gamma, mode):
    phi_next = np.where(terminal_next, 0.0, phi) if mode == "potential" else phi
    return R + (gamma if mode == "potential" else 1.0) * phi_next[None, None, :] - phi[:, None, None]


def test_potential_shaping_shifts_q_by_minus_phi_on_random_mdp():
    rng = np.random.default_rng(0)
    S, A, gamma = 7, 3, 0.9
    P = rng.random((S, A, S)) ** 4
    P /= P.sum(axis=2, keepdims=True)
    R = rng.normal(size=(S, A, S))
    terminal = np.zeros(S, bool)
    terminal[-1] = True
    phi = rng.random(S)
    Q = q_iteration(P, R, terminal, gamma)
    Qs = q_iteration(P, shaped_R(R, phi, terminal, gamma, "potential"), terminal, gamma)
    np.testing.assert_allclose(Qs, Q - phi[:, None], atol=1e-8)
    assert (Qs.argmax(1) == Q.argmax(1)).all()


def _trap_mdp(valley=10, phi_trap=0.9):
    """Start in a high-progress dead end T (Phi 0.9). Reaching the goal G (gold reward 1) means
    walking through ``valley`` low-progress states. Actions: 0 = stay, 1 = advance."""
    S = valley + 2  # T, V1..Vn, G
    P = np.zeros((S, 2, S))
    for s in range(S):
        P[s, 0, s] = 1.0
        P[s, 1, min(s + 1, S - 1)] = 1.0
    R = np.zeros((S, 2, S))
    R[:, :, S - 1] = 1.0  # gold on entering G
    R[S - 1] = 0.0
    terminal = np.zeros(S, bool)
    terminal[S - 1] = True
    phi = np.zeros(S)
    phi[0], phi[-1] = phi_trap, 1.0
    return P, R, terminal, phi


def test_naive_shaping_falls_into_semantic_trap_potential_shaping_does_not():
    P, R, terminal, phi = _trap_mdp()
    gamma = 0.9
    Q = q_iteration(P, R, terminal, gamma)
    Qp = q_iteration(P, shaped_R(R, phi, terminal, gamma, "potential"), terminal, gamma)
    Qn = q_iteration(P, shaped_R(R, phi, terminal, gamma, "naive"), terminal, gamma)
    assert Q[0].argmax() == 1  # the true optimum walks to the goal
    assert Qp[0].argmax() == 1  # potential-based shaping keeps it
    np.testing.assert_allclose(Qp[:-1], Q[:-1] - phi[:-1, None], atol=1e-8)
    assert Qn[0].argmax() == 0  # naive shaping sits in the high-progress dead end
    # the trap is the discount's doing: naive and potential-based shaping coincide at gamma = 1
    np.testing.assert_allclose(shaped_R(R, phi, np.zeros_like(terminal), 1.0, "naive"),
                               shaped_R(R, phi, np.zeros_like(terminal), 1.0, "potential"))


def _q_learning(mode, seed, episodes=3000, horizon=60, gamma=0.9, lr=0.2, eps=0.2):
    """Tabular epsilon-greedy Q-learning on :func:`_trap_mdp` from the dead end T, each transition's
    reward r_gold + F with F from the project's :func:`shaping_term` (``mode``); returns Q [S, 2]."""
    P, R, terminal, phi = _trap_mdp()
    S = P.shape[0]
    nxt = P.argmax(axis=2)  # deterministic transitions: s' of (s, a)
    f = shaping_term(torch.tensor(phi).repeat_interleave(2), torch.tensor(phi[nxt.reshape(-1)]), gamma,
                     torch.tensor(terminal[nxt.reshape(-1)]), mode).numpy().reshape(S, 2)
    r = R[np.arange(S)[:, None], np.arange(2)[None, :], nxt] + f
    rng = np.random.default_rng(seed)
    Q = np.zeros((S, 2))
    for _ in range(episodes):
        s = 0
        for _ in range(horizon):
            a = int(rng.integers(2)) if rng.random() < eps else int(Q[s].argmax())
            s2 = int(nxt[s, a])
            target = r[s, a] + (0.0 if terminal[s2] else gamma * Q[s2].max())
            Q[s, a] += lr * (target - Q[s, a])
            s = s2
            if terminal[s2]:
                break
    return Q


def _greedy_steps_to_goal(Q, horizon=60):
    """Env steps the greedy policy of Q needs from T to the goal; None when it never gets there."""
    P, _, terminal, _ = _trap_mdp()
    s = 0
    for t in range(1, horizon + 1):
        s = int(P[s, int(Q[s].argmax())].argmax())
        if terminal[s]:
            return t
    return None


@pytest.mark.parametrize("seed", [0, 1])
def test_a_learner_with_naive_shaping_hovers_in_the_trap_with_potential_shaping_it_reaches_the_goal(seed):
    """The trap learnt, not only solved for: Q-learning with exploration from the high-progress
    dead end T. With PBRS its greedy policy walks through the valley to the goal (11 steps, the
    shortest path); with naive Phi(s') - Phi(s) it learns to stay at T for the whole horizon."""
    assert _greedy_steps_to_goal(_q_learning("potential", seed)) == 11
    assert _greedy_steps_to_goal(_q_learning("naive", seed)) is None


def test_shaping_term_terminal_vs_truncation():
    phi = torch.tensor([0.2, 0.2, 0.2])
    nxt = torch.tensor([0.7, 0.7, 0.7])
    term = torch.tensor([False, True, False])
    f = shaping_term(phi, nxt, 0.9, term, "potential")
    torch.testing.assert_close(f, torch.tensor([0.9 * 0.7 - 0.2, -0.2, 0.9 * 0.7 - 0.2]))
    torch.testing.assert_close(shaping_term(phi, nxt, 0.9, term, "naive"), nxt - phi)
    with pytest.raises(ValueError, match="unknown shaping mode 'ng'"):
        shaping_term(phi, nxt, 0.9, term, "ng")
    with pytest.raises(ValueError, match="gamma must be in"):
        shaping_term(phi, nxt, 1.5, term)


class RecordingPotential(StateFeaturePotential):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.resets, self.calls = [], 0

    def reset(self, env_ids, obs):
        self.resets.append(env_ids.tolist())

    def __call__(self, obs):
        self.calls += 1
        return super().__call__(obs)


def _run(shaper, env, steps, seed=0):
    obs, _ = env.reset(seed=seed)
    shaper.start(obs)
    g = torch.Generator().manual_seed(seed)
    log = []
    shaper.starts = [obs["state"].clone()]
    for _ in range(steps):
        a = torch.rand(env.num_envs, env.action_dim, generator=g) * 2 - 1
        nobs, r, term, trunc, info = env.step(a)
        final = info.get("final_obs", nobs)
        reward, terms = shaper.step(r, final, term, trunc, info["success"], reset_obs=nobs)
        log.append((terms, term | trunc))
        if bool((term | trunc).any()):
            shaper.starts.append(nobs["state"].clone())
    return log


def test_shaper_on_real_env_telescopes_and_resets_per_env():
    import sim

    gamma = 0.95
    env = sim.make_env("cartpole-swingup", num_envs=2, seed=3, max_episode_steps=6)
    pot = RecordingPotential(index=1, low=-1.0, high=1.0)  # pole cosine: 0 hanging, 1 upright
    shaper = RewardShaper("potential", gamma, pot, gold="env")
    log = _run(shaper, env, 12)
    env.close()
    # episodes of 6 steps end at steps 6 and 12; each reset names both envs
    assert pot.resets == [[0, 1], [0, 1], [0, 1]]
    for ep in range(2):
        steps = log[6 * ep: 6 * ep + 6]
        assert bool(steps[-1][1].all()) and not any(bool(d.any()) for _, d in steps[:-1])
        disc = sum(gamma ** t * s[0]["shaping"] for t, s in enumerate(steps))
        phi_T = steps[-1][0]["progress"]
        phi_0 = (shaper.starts[ep][:, 1] + 1) / 2  # Phi of the episode's first state, from the state
        # telescoping: sum_t gamma^t F_t = gamma^T Phi(s_T) - Phi(s_0) on truncation
        torch.testing.assert_close(disc, gamma ** 6 * phi_T - phi_0, atol=1e-5, rtol=0)
        for terms, _ in steps:
            torch.testing.assert_close(terms["reward"], terms["gold"] + terms["shaping"])


def test_query_every_holds_phi_between_queries():
    import sim

    env = sim.make_env("cartpole-swingup", num_envs=1, seed=0, max_episode_steps=50)
    pot = RecordingPotential(index=1, low=-1.0, high=1.0)
    shaper = RewardShaper("potential", 0.99, pot, gold="none", query_every=4)
    log = _run(shaper, env, 12)
    env.close()
    prog = [float(t["progress"][0]) for t, _ in log]
    assert pot.calls == 1 + 3  # the start query, then steps 4, 8, 12
    assert prog[0] == prog[1] == prog[2] and prog[4] == prog[5] == prog[6]
    assert prog[3] != prog[2]  # the pole moved, so the queried potential changed
    # between queries the shaping term is (gamma - 1) * held Phi: still potential-based
    torch.testing.assert_close(log[1][0]["shaping"], torch.tensor([(0.99 - 1) * prog[0]]))


class FirstPhiPotential(StateFeaturePotential):
    """A potential that reports Phi of the first states from ``reset`` (as one with history must)."""

    def reset(self, env_ids, obs):
        return self(obs)[0][env_ids]


def test_first_state_completion_uses_the_potentials_threshold():
    pot = FirstPhiPotential(index=0, low=0.0, high=1.0, complete_at=0.5)
    assert pot.completion_threshold == 0.5
    shaper = RewardShaper("sparse", 0.99, pot, gold="potential", query_every=3)
    f = torch.tensor([False, False])
    shaper.start({"state": torch.tensor([[0.1], [0.1]])})
    # step 1 (no query): env 0's episode ends; its new first state has Phi 0.6 >= 0.5 (not >= 0.95)
    shaper.step(torch.zeros(2), {"state": torch.tensor([[0.1], [0.1]])}, f, torch.tensor([True, False]), f,
                reset_obs={"state": torch.tensor([[0.6], [0.1]])})
    assert shaper.complete.tolist() == [True, False]
    r, _ = shaper.step(torch.zeros(2), {"state": torch.tensor([[0.6], [0.1]])}, f, f, f)  # held: gold fires
    torch.testing.assert_close(r, torch.tensor([1.0, 0.0]))

    class NoThreshold:
        views = ()

        def reset(self, env_ids, obs):
            return torch.zeros(env_ids.numel())

    with pytest.raises(ValueError, match="NoThreshold.reset returned Phi but the potential has no "
                                         "completion_threshold"):
        RewardShaper("potential", 0.99, NoThreshold()).start({"state": torch.zeros(2, 1)})


def test_shaper_bad_input():
    with pytest.raises(ValueError, match="unknown reward mode 'grmm'"):
        RewardShaper("grmm", 0.99)
    with pytest.raises(ValueError, match="needs a potential"):
        RewardShaper("potential", 0.99)
    with pytest.raises(ValueError, match="query_every must be an int >= 1"):
        RewardShaper("potential", 0.99, StatePotential(lambda s: s[:, 0]), query_every=0)
    bad = RewardShaper("potential", 0.99, StatePotential(lambda s: s[:, 0] * 3))
    with pytest.raises(ValueError, match="potential must be in \\[0, 1\\]"):
        bad.start({"state": torch.ones(2, 3)})
    nan = RewardShaper("potential", 0.99, StatePotential(lambda s: s[:, 0] * float("nan")))
    with pytest.raises(ValueError, match="NaN"):
        nan.start({"state": torch.ones(2, 3)})
    views = StatePotential(lambda s: s[:, 0])
    views.views = ("front",)
    with pytest.raises(ValueError, match="needs view 'front'"):
        RewardShaper("potential", 0.99, views).start({"state": torch.zeros(2, 3)})


def test_reward_scale_scales_gold_and_potential_together():
    """scale c: c * (r_gold + gamma Phi(s') - Phi(s)) is potential-based shaping of c * r_gold with the
    potential c * Phi, so it keeps the optimal policy (checked on the finite trap MDP) and the
    shaper's terms are exactly c times the unscaled ones (Phi itself is logged unscaled)."""
    P, R, terminal, phi = _trap_mdp()
    gamma, c = 0.9, 4.0
    Q = q_iteration(P, R, terminal, gamma)
    Qc = q_iteration(P, c * shaped_R(R, phi, terminal, gamma, "potential"), terminal, gamma)
    np.testing.assert_allclose(Qc[:-1], c * (Q[:-1] - phi[:-1, None]), atol=1e-8)
    assert (Qc.argmax(1) == Q.argmax(1)).all()
    pot = StateFeaturePotential(index=0, low=0.0, high=1.0)
    one, four = (RewardShaper("potential", gamma, pot, gold="env", scale=k) for k in (1.0, c))
    f = torch.tensor([False, False])
    for sh in (one, four):
        sh.start({"state": torch.tensor([[0.2], [0.5]])})
    out = [sh.step(torch.tensor([0.3, 0.0]), {"state": torch.tensor([[0.6], [0.4]])}, f, f,
                   torch.tensor([True, False])) for sh in (one, four)]
    (r1, t1), (r4, t4) = out
    torch.testing.assert_close(r4, c * r1)
    for k in ("gold", "shaping"):
        torch.testing.assert_close(t4[k], c * t1[k])
    for k in ("task", "progress"):
        torch.testing.assert_close(t4[k], t1[k])
    with pytest.raises(ValueError, match="reward.scale must be a finite number > 0, got 0"):
        RewardShaper("sparse", 0.99, scale=0)


def test_sparse_and_dense_modes():
    s = RewardShaper("sparse", 0.99, gold="env", gold_scale=2.0)
    r, terms = s.step(torch.tensor([0.3, 0.5]), {"state": torch.zeros(2, 1)}, torch.tensor([False, False]),
                      torch.tensor([False, False]), torch.tensor([True, False]))
    torch.testing.assert_close(r, torch.tensor([2.0, 0.0]))
    d = RewardShaper("dense", 0.99)
    r, terms = d.step(torch.tensor([0.3, 0.5]), {"state": torch.zeros(2, 1)}, torch.tensor([False, False]),
                      torch.tensor([False, False]), torch.tensor([True, False]))
    torch.testing.assert_close(r, torch.tensor([0.3, 0.5]))


def test_state_potentials_values_and_bad_input():
    from reward_models.potential import StateDistancePotential, StateFeaturePotentialConfig

    pot = StateDistancePotential([1, 2], scale=0.5)
    phi, complete = pot({"state": torch.tensor([[9.0, 0.3, 0.4], [9.0, 0.0, 0.01], [9.0, 3.0, 0.0]])})
    torch.testing.assert_close(phi, torch.tensor([0.0, 0.98, 0.0]))
    assert complete.tolist() == [False, True, False]
    cos = StateFeaturePotential(index=1, low=-1.0, high=1.0)
    phi, _ = cos({"state": torch.tensor([[0.0, -1.0], [0.0, 0.0], [0.0, 1.0]])})
    torch.testing.assert_close(phi, torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="scale must be > 0, got 0"):
        StateDistancePotential([0], scale=0)
    with pytest.raises(ValueError, match="need high > low"):
        StateFeaturePotentialConfig(0, 1.0, 1.0)
    with pytest.raises(ValueError, match="state has 2 entries; potential reads indices \\[1, 2\\]"):
        pot({"state": torch.zeros(1, 2)})


def test_oracle_potential_is_the_simulators_progress_on_lift(tmp_path):
    """reward=oracle on real robosuite Lift (2 envs, 6-step episodes, no cameras): the env reports the
    progress the demonstrations record (the expert's own ProgressFunction), including the final
    state of an ended episode, and the shaper turns it into r_gold + gamma Phi(s') - Phi(s)."""
    import sim
    from jobs.build import build_shaper
    from jobs.cli import compose
    from reward_models.potential import OraclePotential, OraclePotentialConfig
    from sim.experts import ScriptedExpert

    cfg = compose("train", ["env=lift", "reward=oracle", "reward.query_every=1", "learner=sac", f"run_dir={tmp_path}"])
    env = sim.make_env("lift", num_envs=2, seed=0, progress=True, max_episode_steps=6)
    try:
        obs, _ = env.reset(seed=0)
        shaper = build_shaper(cfg.reward, env, type("L", (), {"gamma": 0.9})())
        assert isinstance(shaper.potential, OraclePotential) and shaper.needs_progress and shaper.views == ()
        expert = ScriptedExpert(env, seed=0)
        expert.reset()
        assert obs["progress"].shape == (2,) and obs["progress"].dtype == torch.float32
        assert obs["progress"].tolist() == pytest.approx([expert.progress(i) for i in range(2)], abs=1e-6)
        shaper.start(obs)
        phi = obs["progress"].clone()
        for t in range(1, 7):
            nobs, r, term, trunc, info = env.step(expert.act())
            final = info.get("final_obs", nobs)
            if t < 6:  # the expert's progress (what the demonstrations record) of the same states
                assert final["progress"].tolist() == pytest.approx([expert.progress(i) for i in range(2)], abs=1e-6)
            reward, terms = shaper.step(r, final, term, trunc, info["success"], reset_obs=nobs)
            torch.testing.assert_close(terms["progress"], final["progress"])
            torch.testing.assert_close(terms["shaping"], 0.9 * final["progress"] - phi)
            torch.testing.assert_close(reward, terms["gold"] + terms["shaping"])
            phi = nobs["progress"].clone()  # after a reset: the new episode's first state
            expert.observe_step(term | trunc)
        assert bool(trunc.all())  # the episodes ended at step 6 and the shaper now holds the new first states
        torch.testing.assert_close(shaper.phi, nobs["progress"])
        # the expert reaches for the cube: progress rose over the episode
        assert (terms["progress"] > obs["progress"]).all()
    finally:
        env.close()
    with pytest.raises(ValueError, match="task 'cartpole-swingup' has no ground-truth progress; tasks with it: "
                                         "lift, stack, pick-place-can, door"):
        OraclePotentialConfig().make(task="cartpole-swingup")
    with pytest.raises(ValueError, match="task 'cartpole-swingup' has no ground-truth progress"):
        sim.make_env("cartpole-swingup", progress=True)
    with pytest.raises(ValueError, match="completion_threshold must be a finite number in \\(0, 1\\], got 0"):
        OraclePotentialConfig(completion_threshold=0)
    with pytest.raises(ValueError, match="needs obs\\['progress'\\].*build the env with progress=True"):
        OraclePotential()({"state": torch.zeros(2, 3)})
