"""The learners and the training loop (floor 2: imports ``basics`` and ``sim``, never ``reward_models``).

Index of the papers: where each algorithm's pieces live, with the paper's names and equations.

**EXPO** -- Dong, Li, Sadigh, Finn, "EXPO: Stable Reinforcement Learning with Expressive Policies"
(arXiv 2507.07986; authors' code ``pd-perry/EXPO``, ``EXPOLearner``). Learner: :class:`control.expo.EXPO`,
config :class:`control.expo.EXPOConfig` (``configs/learner/expo.yaml``).

- base policy pi_b(a|s), a DDPM with an MLP-ResNet denoiser: :class:`control.diffusion.DiffusionBasePolicy`
  (:class:`control.diffusion.Denoiser`); imitation loss L_b (Ho et al. 2020, eq. 14):
  :meth:`DiffusionBasePolicy.loss`, trained by :meth:`control.expo.EXPO.update_base`; EMA copy
  (tau_actor) for acting: ``EXPO.ema_denoiser``.
- edit policy pi_e(a_hat|s, a), a' = a + beta * a_hat: :class:`control.expo_policy.EditPolicy`;
  L_e = E[alpha (log pi_e - |A| log beta) - mean_i Q_i(s, a')] and the temperature:
  :meth:`control.expo.EXPO.update_edit`.
- on-the-fly (OTF) policy, argmax over N base + n_edit edited candidates of the min over a random
  critic subset: :func:`control.expo_policy.on_the_fly`; deployed as
  :class:`control.expo_policy.EXPOPolicy` (export kind ``"expo"``).
- critic ensemble (REDQ-style subset min, no entropy backup) y = r + gamma^k (1 - d) min_j Qbar_j(s', a*'):
  :meth:`control.expo.EXPO.update_critic` on :class:`control.networks.CriticEnsemble`
  (:meth:`CriticEnsemble.min_q`).
- RLPD update schedule (UTD critic steps, then one base and one edit step; 50/50 offline/online
  batches): :meth:`control.expo.EXPO.update_round`, :meth:`control.expo.EXPO._batch`.
- replay with per-transition discount gamma^k (action chunks): :class:`control.buffers.ReplayBuffer`
  (``discount=True``); offline episodes -> chunk transitions: :func:`control.expo_data.episodes_to_transitions`.

**GoRL** -- Zhang et al., "GoRL: An Algorithm-Agnostic Framework for Online RL with Generative Policies"
(arXiv 2512.02581; authors' code ``bennidict23/GoRL``). Learner: :class:`control.gorl.GoRL`, config
:class:`control.gorl.GoRLConfig` (``configs/learner/gorl.yaml``).

- factorisation pi(a|s) = int pi_phi(a|s, eps) pi_theta(eps|s) d eps: encoder pi_theta
  :class:`control.gorl.Encoder`, decoder g_phi :class:`control.decoders.GenerativeDecoder`
  (flow matching / DDIM diffusion; stage 0 :class:`control.decoders.IdentityDecoder`).
- phase 1, latent optimisation (PPO in latent space + pull toward N(0, I)): :meth:`control.gorl.GoRL._ppo_update`,
  :func:`control.gorl.prior_penalty` (KL, or the authors' L2 penalty).
- phase 2, decoder refinement with fresh eps ~ N(0, I): :func:`control.decoders.fit_decoder`,
  :meth:`control.gorl.GoRL.refit_decoder`; the two-timescale stage schedule: :meth:`control.gorl.GoRL.update`.

**SAC** -- Haarnoja et al., "Soft Actor-Critic Algorithms and Applications" (arXiv 1812.05905).
Learner: :class:`control.sac.SAC`, config :class:`control.sac.SACConfig` (``configs/learner/sac.yaml``).

- soft TD target, eqs. 5-6 (min over target critics: clipped double Q / REDQ): :func:`control.sac.critic_target`
  with :class:`control.networks.CriticEnsemble` (:meth:`CriticEnsemble.min_over_subset`).
- policy loss eq. 7 and temperature loss eq. 18: :meth:`control.sac.SAC.gradient_step`.
- tanh-Gaussian policy, change of variables eq. 26 (appendix C): :class:`control.networks.TanhGaussianActor`.
- replay: :class:`control.buffers.ReplayBuffer` (``terminated``).

**RLPD** -- Ball, Smith, Kostrikov, Levine, "Efficient Online Reinforcement Learning with Offline Data"
(arXiv 2302.02948; authors' code ``ikostrikov/rlpd``). Learner: :class:`control.sac.SAC` with config
:class:`control.sac.RLPDConfig` (``configs/learner/rlpd.yaml``; ``tests/test_rlpd.py`` pins each choice).

- symmetric sampling, half of every batch from the offline episodes: ``offline_ratio`` 0.5,
  :meth:`control.sac.SAC.set_offline_episodes` (rewards relabelled with the run's reward by the job).
- LayerNorm critic ensemble of 10, TD target min over a random subset of 2 (REDQ):
  :class:`control.networks.CriticEnsemble`, :func:`control.sac.critic_target`; actor on the mean Q
  over the ensemble (``actor_q: mean``); high UTD (``utd_ratio`` 20).
- target entropy -|A|/2, initial temperature 1.0; optional entropy backup (``backup_entropy``).

**QARL** -- Reddi, Tölle, Peters, Chalvatzaki, D'Eramo, "Robust Adversarial Reinforcement Learning via
Bounded Rationality Curricula" (ICLR 2024, arXiv 2311.01642; authors' code
``AryamanReddi99/quantal-adversarial-rl``). Learner: :class:`control.qarl.QARL` around any off-policy
protagonist, config :class:`control.qarl.QARLConfig` (``configs/adversary/{qarl,rarl,linear}.yaml``).

- adversary with the per-sample temperature alpha = s[-1] (``AdaptiveTempSAC``): :class:`control.qarl.AdversarySAC`;
  its forces on named bodies via ``xfrc_applied``: :class:`control.qarl.Perturbation`.
- self-paced Gamma curriculum over alpha (Eq. 5, importance-weighted performance Eq. 12, ``trust-constr``):
  :class:`control.curriculum.SelfPacedGamma`; RARL and the linear ablation: ``FixedGamma``, ``LinearGamma``.
- alternation of adversary and protagonist phases: :meth:`control.qarl.QARL.observe`.

**PPO** -- Schulman et al., "Proximal Policy Optimization Algorithms" (arXiv 1707.06347), in the form of
CleanRL's ``ppo_continuous_action.py``; GAE: Schulman et al. 2016 (arXiv 1506.02438).
Learner: :class:`control.ppo.PPO`, config :class:`control.ppo.PPOConfig` (``configs/learner/ppo.yaml``).

- clipped surrogate, eq. 7: :func:`control.ppo.ppo_loss` (also GoRL's encoder update).
- GAE(lambda), eq. 16 of the GAE paper: :meth:`control.buffers.RolloutBuffer.compute_gae`.
- Gaussian policy with state-independent log sigma: :class:`control.networks.GaussianActor`.

Shared: the learner contract and the typed-config base (:mod:`control.learner`), networks and the
running observation normaliser (:mod:`control.networks`), buffers (:mod:`control.buffers`).
"""
