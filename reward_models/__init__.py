"""Reward models: the multi-view general process reward model (GRM), progress tracking, shaping.

Where Robo-Dopamine (arXiv 2512.23703) is implemented, section by section:

==========================================================  ==================================================
Paper                                                       File: function / class
==========================================================  ==================================================
§3.1 the GRM: task text, reference start/goal, BEFORE /     ``grm.py``: :class:`~reward_models.grm.GRM`,
AFTER images of every view -> hop H in [-1, 1]              ``GRMConfig``, ``save_checkpoint``,
                                                            ``load_checkpoint``, ``check_grm_checkpoint``;
                                                            ``text.py``: ``embed_texts``, ``text_embeddings``
§3.1.1 hop label, Eq. 2 (gain as a share of what was left, ``labels.py``: ``hop_label``
loss as a share of what was done)
§3.1.1 step-wise reward discretization, Eq. 1 (every       ``labels.py``: ``stepwise_sample``,
sub-task worth 1/N)                                         ``stepwise_progress``; ``pairs.py``:
                                                            ``sample_episode``, ``num_subtasks``
App. B.3 balanced pairs (25 hop bins x 4 gap bins, 5%       ``labels.py``: ``BalancedPairSampler``
zero-hop pairs)
Reference replacement (p = 0.75) and anchored pairs asking  ``pairs.py``: ``HopData``, ``build_references``,
what Eqs. 6-7 ask at inference                              ``random_shift`` (augmentation)
GRM pretraining (two-hot cross-entropy + MSE of the hop)    ``train.py``: ``pretrain``; ``fit.py``: ``fit``;
                                                            ``training_state.py`` (resumable state)
§3.1.2 multi-perspective fusion: incremental Eqs. 4-5,      ``tracker.py``: ``ProgressTracker.__call__``
forward-anchored Eq. 6, backward-anchored Eq. 7, their      (``fusion="mean"``; one mode alone:
mean Eq. 8; Proof A.1 (incremental stays in [0, 1])         ``"incremental"``, ``"forward"``, ``"backward"``)
§3.1.3 consistency damping, Eqs. 9-11 (alpha = 20)          ``tracker.py``: ``ProgressTracker.__call__``
                                                            (``fusion="damped"``)
Inverse-variance fusion (ours, not the paper's)             ``tracker.py``: ``fusion="precision"``,
                                                            ``resolve_fusion`` (``auto``)
Issue #11, goal looks like the start                        ``tracker.py``: ``ProgressTracker.reset``
                                                            (``anchors_ok``, ``goal_like_start``)
§3.2 policy-invariant shaping, Eqs. 13-14: r = r_gold +     ``shaping.py``: ``shaping_term``,
gamma Phi*(s') - Phi*(s), r_gold = 1[Phi* >= 1 - delta]     ``RewardShaper`` (``mode="potential"``,
                                                            ``gold="potential"``); the potential:
                                                            ``tracker.py``: ``GRMPotential``,
                                                            ``GRMPotentialConfig``; ``potential.py``:
                                                            ``Potential``, ``StateFeaturePotentialConfig``
Proof A.2, the "semantic trap" (naive progress difference)  ``shaping.py``: ``mode="naive"``
Ground-truth step-wise progress as the potential (ours:     ``potential.py``: ``OraclePotential``,
the upper bound of a learned Phi*; Eq. 1's sub-tasks)       ``OraclePotentialConfig``
§3.2.1 one-shot adaptation, Eq. 12 (MSE on hops of one     ``adapt.py``: ``adapt``; ``fit.py``:
demonstration)                                              ``fit(loss="mse")``
Rehearsal of the pretraining tasks while adapting (ours)    ``pairs.py``: ``MixedData``; ``adapt(replay=)``
Episodes without ground truth: keyframes or time-uniform    ``task_data.py``: ``apply_keyframes``,
i/M labels, task text from the command line                 ``labelled``; ``pairs.py``: ``sample_episode``
Table 1 VOC (GVL's value-order correlation), Table 2        ``evaluate.py``: ``voc``, ``evaluate_episodes``,
completion judgement                                        ``evaluate_checkpoint``
The published GRM (Qwen2.5-VL, ``<score>+NN%</score>``;     ``qwen.py``: ``QwenGRMBackend``, ``parse_score``
issue #3: no silent 0)
==========================================================  ==================================================

Episode files are read with :func:`sim.episodes.read_episodes`, the one episode reader. The jobs that run these (``dopa reward-train``, ``reward-eval``,
``reward-adapt``) live in :mod:`jobs.reward`.
"""
