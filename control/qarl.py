"""QARL: Quantal Adversarial RL (Reddi, Tölle, Peters, Chalvatzaki, D'Eramo, ICLR 2024, arXiv
2311.01642; the authors' code ``AryamanReddi99/quantal-adversarial-rl``), with RARL and a linear
alpha schedule as baselines.

A zero-sum game between a protagonist (any off-policy learner of ``control/``, the run's ``learner=``) and
an adversary that pushes named bodies: its action a in [-1, 1]^(K C) becomes the force (N) and
torque (N m) components ``a * max_force`` / ``a * max_torque`` on K bodies (C components each, e.g.
fx and fz), written to the simulation's ``xfrc_applied`` through ``env.apply_force`` for exactly
one control step (both backends: :class:`sim.vector.BatchedEnv` per env, MuJoCo Warp per world).
The adversary's reward is minus the protagonist's.

- The adversary (:class:`AdversarySAC`) is entropy-regularised SAC whose temperature is per
  sample and read from the last observation entry (the code's ``AdaptiveTempSAC``:
  ``_update_alpha(state[:, -1])``) in both the actor loss and the soft TD target; it has no
  temperature of its own.
- alpha is drawn per episode and env from the curriculum (:mod:`control.curriculum`: the self-paced
  Gamma of QARL, the fixed target of RARL, or a linear schedule) and appended to both agents'
  observations; at evaluation (``act(deterministic=True)``) it is ``eval_alpha`` (0) and no force
  is applied. The protagonist keeps its own automatically tuned temperature.
- Alternation (``rarl_experiment.py``/``qarl_experiment.py``): ``phase_episodes`` episodes in which
  only the adversary observes and learns (the protagonist acts; its data are discarded), then
  ``phase_episodes`` in which only the protagonist does; the adversary starts. Episodes are
  counted over all envs. The protagonist's episodes give the curriculum its (alpha, discounted
  return) pairs.

The training loop (:func:`control.train.train`) drives a :class:`QARL` like any learner: ``act``
returns the protagonist's action and queues the adversary's force on the env given to
:meth:`QARL.bind_env` (``jobs/train.py`` binds it), ``observe`` routes the transition. Physics
divergence under large forces is the env's business (``info["diverged"]``: truncated and reset);
the learner logs ``env.num_diverged`` as ``diverged``.

Checkpoints hold both agents, the curriculum, the per-env alpha and the phase counters, so a resume
continues bit for bit on CPU. The deployment policy is the protagonist alone with alpha fixed at
``eval_alpha``: for an MLP protagonist the alpha input is folded into the first layer's bias
(:func:`fold_alpha_input`), so it reads the env's own D-dim state.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from basics.checks import check_float, check_int, check_states
from control.curriculum import CURRICULA, FixedGamma, LinearGamma, SelfPacedGamma
from control.export import MLPPolicy
from control.learner import Learner, Transition, check_transition
from control.networks import soft_update
from control.sac import SAC, SACConfig, critic_target

#: learners whose rollouts the alternation would cut (the protagonist must learn off-policy)
ON_POLICY = ("ppo", "gorl")
#: xfrc_applied components an adversary may push, in their column order
COMPONENTS = ("fx", "fy", "fz", "tx", "ty", "tz")


@dataclasses.dataclass
class Perturbation:
    """Where and how hard the adversary pushes on one task.

    Attributes:
        bodies: K MuJoCo body names.  components: C of :data:`COMPONENTS` on each body.
        max_force: bound of each force component, N.  max_torque: bound of each torque component, N m.
        threshold: the self-paced curriculum's performance lower bound xi (discounted return).
    """

    bodies: list[str]
    components: list[str]
    max_force: float
    max_torque: float
    threshold: float

    @property
    def action_dim(self) -> int:
        return len(self.bodies) * len(self.components)

    def wrench(self, action: torch.Tensor) -> torch.Tensor:
        """Adversary actions float32 [B, K C] in [-1, 1] -> wrenches float64 [B, K, 6] (N, N m),
        each component = clamp(a, -1, 1) * its bound."""
        a = action.detach().to("cpu", torch.float64).clamp(-1.0, 1.0)
        w = torch.zeros(a.shape[0], len(self.bodies), 6, dtype=torch.float64)
        for k in range(len(self.bodies)):
            for c, comp in enumerate(self.components):
                j = COMPONENTS.index(comp)
                w[:, k, j] = a[:, k * len(self.components) + c] * (self.max_force if j < 3 else self.max_torque)
        return w


def task_perturbation(perturbations: dict, task: str, max_force: float | None = None,
                      threshold: float | None = None) -> Perturbation:
    """The :class:`Perturbation` of ``task`` from the config's ``perturbations`` table, keyed by the
    task name or its domain (the part before the first ``-``: ``cheetah`` for ``cheetah-run``).

    Raises:
        ValueError: no entry for the task (the known ones listed), an empty body list, an unknown
            component, a negative or non-finite bound.
    """
    key = task if perturbations.get(task) else str(task).split("-", 1)[0]
    entry = perturbations.get(key)
    if entry is None:
        raise ValueError(f"adversary.perturbations has no entry for task {task!r}; known: "
                         f"{', '.join(sorted(perturbations))} (add one: bodies, components, max_force, threshold)")
    bodies, comps = [str(b) for b in entry.get("bodies") or []], [str(c) for c in entry.get("components") or []]
    if not bodies or not comps:
        raise ValueError(f"adversary.perturbations.{key}: bodies and components must be non-empty, "
                         f"got {bodies} and {comps}")
    for c in comps:
        if c not in COMPONENTS:
            raise ValueError(f"adversary.perturbations.{key}.components: unknown {c!r}; known: {', '.join(COMPONENTS)}")
    force = check_float("adversary.max_force", entry.get("max_force", 1.0) if max_force is None else max_force, 0.0)
    torque = check_float("adversary.max_torque", entry.get("max_torque", 0.0), 0.0)
    xi = check_float("adversary.threshold", entry.get("threshold", 10.0) if threshold is None else threshold)
    return Perturbation(bodies, comps, force, torque, xi)


class AdversarySAC(SAC):
    """SAC whose temperature is per sample, read from the last state entry (no temperature of its
    own, no tuning): J_pi = E[alpha_s log pi(a|s) - Q(s, a)], y = r + gamma (1 - d) (min Q'(s', a')
    - alpha_s' log pi(a'|s')) with alpha_s = s[-1] (un-normalised; clamped at >= 0)."""

    name = "adversary"

    @staticmethod
    def batch_temperature(raw_obs: torch.Tensor) -> torch.Tensor:
        """alpha per sample: float32 [B, D] states -> float32 [B] (their last entry, >= 0)."""
        return raw_obs[:, -1].clamp_min(0.0)

    def actor_loss(self, obs: torch.Tensor, alpha: torch.Tensor, generator: torch.Generator | None):
        """(mean over the batch of alpha_s log pi(a|s) - Q(s, a), log pi [B]) with a ~ pi(.|s) reparameterised;
        ``obs`` float32 [B, D] as the networks see it, ``alpha`` float32 [B]."""
        a, logp = self.actor.sample(obs, False, generator)
        q_all = self.critic(obs, a)
        q_pi = q_all.mean(dim=0) if self.actor_q == "mean" else q_all.min(dim=0).values
        return (alpha * logp - q_pi).mean(), logp

    def gradient_step(self) -> dict[str, float]:
        """One critic and (every ``actor_update_every``) actor step with the per-sample alpha.

        Returns:
            {"critic_loss", "q_mean", "temperature" (batch mean alpha)} and {"actor_loss", "entropy"}.
        Raises:
            FloatingPointError: a metric became NaN/inf.
        """
        b = self._sample(self.batch_size)
        alpha, alpha_next = self.batch_temperature(b["obs"]), self.batch_temperature(b["next_obs"])
        obs, next_obs = self._norm(b["obs"]), self._norm(b["next_obs"])
        with torch.no_grad():
            next_a, next_logp = self.actor.sample(next_obs, False, self.generator)
        y = critic_target(self.critic_target, next_obs, next_a, next_logp, b["reward"], b["terminated"],
                          self.gamma, alpha_next if self.backup_entropy else 0.0, self.critic_subset, self.generator)
        q = self.critic(obs, b["action"])
        critic_loss = 0.5 * ((q - y[None]) ** 2).mean(dim=1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        soft_update(self.critic_target, self.critic, self.tau)
        self.grad_steps += 1
        metrics = {"critic_loss": float(critic_loss.detach()), "q_mean": float(q.detach().mean()),
                   "temperature": float(alpha.mean())}
        if self.grad_steps % self.actor_update_every == 0:
            loss, logp = self.actor_loss(obs, alpha, self.generator)
            self.actor_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.actor_opt.step()
            metrics.update(actor_loss=float(loss.detach()), entropy=float(-logp.detach().mean()))
        for k, v in metrics.items():
            if not math.isfinite(v):
                raise FloatingPointError(f"adversary {k} became {v} at gradient step {self.grad_steps}")
        return metrics


@dataclasses.dataclass
class QARLConfig:
    """The adversary's settings (``configs/adversary/<qarl|rarl|linear>.yaml``, ``adversary=`` of
    ``dopa train``); ``make(protagonist, task=, obs_dim=, num_envs=, seed=, device=)`` builds
    :class:`QARL` around a protagonist built for ``obs_dim + 1`` inputs.

    Raises (at construction):
        ValueError: an unknown curriculum, a value outside its range (named with what is allowed).
    """

    name: ClassVar[str] = "qarl"

    curriculum: str = "qarl"
    """``qarl`` (self-paced Gamma), ``rarl`` (alpha ~ the target from the start) or ``linear``."""
    perturbations: dict = dataclasses.field(default_factory=dict)
    """Per task or domain: ``{bodies: [..], components: [fx, fz], max_force: N, max_torque: N m, threshold: xi}``."""
    max_force: float | None = None
    """Overrides every task's force bound (N) when set (the code's ``--new_adv_max_force``)."""
    threshold: float | None = None
    """Overrides the task's performance threshold xi when set."""
    k0: float = 50.0
    """Initial Gamma shape (mean alpha = k0 / rate = 0.05)."""
    rate: float = 1000.0
    """Gamma rate, fixed."""
    target_k: float = 1.0
    """Target mu's shape (mean alpha 1e-3)."""
    target_rate: float = 1000.0
    """Target mu's rate."""
    max_kl: float = 0.5
    """Trust region epsilon on KL(p_new || p_old)."""
    update_episodes: int = 30
    """Protagonist episodes per curriculum update."""
    target_kl_stop: float = 0.01
    """No curriculum update once KL(p || mu) is at most this."""
    return_gamma: float = 0.99
    """Discount of the episode returns the curriculum reads."""
    phase_episodes: int = 5
    """Episodes (all envs together) per alternation phase."""
    total_steps: int = 1_000_000
    """Env steps of the run (``linear``: its schedule's length reference; ``${total_steps}``)."""
    linear_fraction: float = 0.667
    """``linear``: share of ``total_steps`` over which k goes from k0 to target_k."""
    eval_alpha: float = 0.0
    """alpha given to the protagonist at evaluation and in the deployment policy."""
    adversary: dict = dataclasses.field(default_factory=dict)
    """SAC settings of the adversary (:class:`control.sac.SACConfig` keys; ``autotune`` is forced off)."""

    def __post_init__(self):
        if self.curriculum not in CURRICULA:
            raise ValueError(f"adversary.curriculum must be one of {', '.join(CURRICULA)}, got {self.curriculum!r}")
        for key in ("k0", "rate", "target_k", "target_rate", "max_kl"):
            setattr(self, key, check_float(f"adversary.{key}", getattr(self, key), 0.0, low_open=True))
        self.target_kl_stop = check_float("adversary.target_kl_stop", self.target_kl_stop, 0.0)
        self.return_gamma = check_float("adversary.return_gamma", self.return_gamma, 0.0, 1.0)
        self.linear_fraction = check_float("adversary.linear_fraction", self.linear_fraction, 0.0, 1.0, low_open=True)
        self.eval_alpha = check_float("adversary.eval_alpha", self.eval_alpha, 0.0)
        self.update_episodes = check_int("adversary.update_episodes", self.update_episodes, 1)
        self.phase_episodes = check_int("adversary.phase_episodes", self.phase_episodes, 1)
        self.total_steps = check_int("adversary.total_steps", self.total_steps, 1)
        if self.max_force is not None:
            self.max_force = check_float("adversary.max_force", self.max_force, 0.0)
        if self.threshold is not None:
            self.threshold = check_float("adversary.threshold", self.threshold)
        self.perturbations = {str(k): dict(v) for k, v in dict(self.perturbations or {}).items()}
        try:
            self.adversary_config()
        except TypeError as exc:
            raise ValueError(f"adversary.adversary: {exc}") from None
        except ValueError as exc:  # SACConfig names its own key ("hidden must be ..."): give the full one
            text = str(exc)
            raise ValueError(f"adversary.adversary.{text}" if text.split(" ", 1)[0].isidentifier()
                             else f"adversary.adversary: {text}") from None

    def adversary_config(self) -> SACConfig:
        """The adversary's :class:`control.sac.SACConfig` (``autotune`` off: alpha comes from the state)."""
        return SACConfig(**{**dict(self.adversary or {}), "autotune": False})

    def curriculum_of(self, threshold: float):
        """The curriculum object (:mod:`control.curriculum`)."""
        g = (self.k0, self.rate, self.target_k, self.target_rate)
        if self.curriculum == "rarl":
            return FixedGamma(*g)
        if self.curriculum == "linear":
            return LinearGamma(*g, self.total_steps, self.linear_fraction)
        return SelfPacedGamma(*g, threshold, self.max_kl, self.update_episodes, self.target_kl_stop)

    def make(self, protagonist: Learner, *, task: str, obs_dim: int, num_envs: int = 1, seed: int = 0,
             device="cpu") -> "QARL":
        """:class:`QARL` for an env of task ``task`` with D = ``obs_dim`` state entries, around
        ``protagonist`` (built for D + 1 inputs: the state and alpha).

        Raises:
            ValueError: no perturbation entry for the task, a bad entry (named), an on-policy
            protagonist (PPO, GoRL), or sizes < 1.
        """
        obs_dim, num_envs = check_int("obs_dim", obs_dim, 1), check_int("num_envs", num_envs, 1)
        if getattr(protagonist, "name", None) in ON_POLICY:
            raise ValueError(f"adversary={self.curriculum} needs an off-policy protagonist (learner=sac, rlpd or "
                             f"expo); learner={protagonist.name} is on-policy and cannot skip the adversary's phases")
        pert = task_perturbation(self.perturbations, task, self.max_force, self.threshold)
        cls = QARLExport if _exports_mlp(protagonist) else QARL
        return cls(self, protagonist, pert, obs_dim, num_envs, int(seed), device)


def _exports_mlp(learner) -> bool:
    if not hasattr(learner, "export_policy"):
        return False
    try:
        return learner.export_policy()[1].get("kind") == "mlp"
    except (AttributeError, NotImplementedError, RuntimeError):
        return False


class QARL(Learner):
    """Protagonist + adversary + alpha curriculum as one learner (module docstring)."""

    def __init__(self, config: QARLConfig, protagonist: Learner, perturbation: Perturbation, obs_dim: int,
                 num_envs: int, seed: int, device="cpu"):
        self.config, self.perturbation = config, perturbation
        self.protagonist = protagonist
        self.name = f"{config.curriculum}-{getattr(protagonist, 'name', 'learner')}"
        self.obs_dim, self.num_envs = int(obs_dim), int(num_envs)
        self.action_dim = int(protagonist.action_dim)
        self.gamma = getattr(protagonist, "gamma", config.return_gamma)
        self.adversary = AdversarySAC(config.adversary_config(), obs_dim + 1, perturbation.action_dim, num_envs,
                                      seed + 7, device)
        self.curriculum = config.curriculum_of(perturbation.threshold)
        # the agents' generators as attributes of this learner too, so the loop's evaluation
        # (control.evaluate.evaluate_learner) restores them after evaluating
        for who, agent in (("protagonist", protagonist), ("adversary", self.adversary)):
            for k, g in vars(agent).items():
                if isinstance(g, torch.Generator):
                    setattr(self, f"{who}_{k}", g)
        self.rng = np.random.default_rng(int(seed) + 11)
        self.alpha = torch.from_numpy(self.curriculum.sample(num_envs, self.rng)).float()
        self.phase, self.phase_episodes = "adversary", 0
        self.ep_return = torch.zeros(num_envs, dtype=torch.float64)
        self.ep_steps = torch.zeros(num_envs, dtype=torch.long)
        self.env_steps, self.episodes = 0, 0
        self.env = None
        self._adv_action: torch.Tensor | None = None
        self._learned: str | None = None
        self._info: dict[str, float] = {}
        self._last: dict[str, float] = {}

    # ---------------------------------------------------------------------------------------------
    def bind_env(self, env) -> None:
        """The training env whose bodies the adversary pushes (``env.apply_force``).

        Raises:
            ValueError: a perturbed body the env does not have (the env's bodies listed), or an env
                of another batch size.
        """
        known = list(env.body_names())
        missing = [b for b in self.perturbation.bodies if b not in known]
        if missing:
            raise ValueError(f"adversary bodies {missing} are not in task {env.task!r}; its bodies: {', '.join(known)}")
        if int(env.num_envs) != self.num_envs:
            raise ValueError(f"env has {env.num_envs} envs, the learner was built for {self.num_envs}")
        self.env = env

    def with_alpha(self, obs: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
        """States float32 [B, D] -> float32 [B, D + 1] with alpha as the last entry."""
        a = torch.as_tensor(alpha, dtype=torch.float32).to(obs.device)
        a = a.expand(obs.shape[0]) if a.dim() == 0 else a
        return torch.cat([obs.to(torch.float32), a[:, None]], dim=1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """States float32 [B, D] -> protagonist actions float32 [B, A] in [-1, 1].

        Stochastic (training): both agents see alpha (this episode's per env); the adversary's
        force is queued on the bound env for the next step. Deterministic (evaluation): alpha =
        ``eval_alpha``, no force.

        Raises:
            ValueError: ``obs`` not [B, D] or not finite.  RuntimeError: training acts without :meth:`bind_env`.
        """
        obs = check_states("obs", obs, self.obs_dim)
        if deterministic:
            return self.protagonist.act(self.with_alpha(obs, self.config.eval_alpha), True)
        if self.env is None:
            raise RuntimeError("QARL.act(deterministic=False) needs the training env: call bind_env(env) first")
        oa = self.with_alpha(obs, self.alpha)
        action = self.protagonist.act(oa)
        self._adv_action = self.adversary.act(oa)
        self.env.apply_force(self.perturbation.bodies, self.perturbation.wrench(self._adv_action))
        return action

    @torch.no_grad()
    def push(self, env, obs: torch.Tensor) -> torch.Tensor:
        """Queue the trained adversary's deterministic force (alpha = ``eval_alpha``) on ``env`` for
        its next step (evaluation against the adversary); returns the wrenches float64 [B, K, 6]."""
        obs = check_states("obs", obs, self.obs_dim)
        wrench = self.perturbation.wrench(self.adversary.act(self.with_alpha(obs, self.config.eval_alpha), True))
        env.apply_force(self.perturbation.bodies, wrench)
        return wrench

    def observe(self, transition: Transition) -> None:
        """Route the batch to the learning agent of this phase (alpha appended to both states; the
        adversary's reward is minus the protagonist's), count episodes, resample alpha for the envs
        whose episode ended, switch phases and feed the curriculum.

        Raises:
            ValueError: a field with the wrong shape or NaN/inf.  RuntimeError: no :meth:`act` before.
        """
        tr = transition
        b = check_transition(tr, self.obs_dim, self.action_dim, self.num_envs)
        if self._adv_action is None:
            raise RuntimeError("QARL.observe needs the adversary's action of the same step: call act() first")
        oa, noa = self.with_alpha(tr.obs, self.alpha), self.with_alpha(tr.next_obs, self.alpha)
        if self.phase == "adversary":
            self.adversary.observe(Transition(oa, self._adv_action, -tr.reward, noa, tr.terminated, tr.truncated))
        else:
            self.protagonist.observe(Transition(oa, tr.action, tr.reward, noa, tr.terminated, tr.truncated,
                                                info=tr.info))
        self._learned, self._adv_action = self.phase, None
        r = tr.reward.detach().cpu().double()
        self.ep_return += r * self.config.return_gamma ** self.ep_steps.double()
        self.ep_steps += 1
        self.env_steps += b
        done = (tr.terminated | tr.truncated).cpu()
        ids = torch.nonzero(done).flatten()
        if len(ids):
            if self.phase == "protagonist":
                for i in ids.tolist():
                    self.curriculum.record(float(self.alpha[i]), float(self.ep_return[i]))
            self.ep_return[ids], self.ep_steps[ids] = 0.0, 0
            self.alpha[ids] = torch.from_numpy(self.curriculum.sample(len(ids), self.rng)).float()
            self.phase_episodes += len(ids)
            self.episodes += len(ids)
            if self.phase_episodes >= self.config.phase_episodes:
                self.phase = "protagonist" if self.phase == "adversary" else "adversary"
                self.phase_episodes = 0
        self._info.update(self.curriculum.step(self.env_steps))

    def update(self) -> dict[str, float]:
        """Train the agent that observed last (its own schedule); returns its metrics prefixed
        ``protagonist/`` or ``adversary/`` with the last ones of the other, the curriculum's
        (``alpha_mean``, ``curriculum_k``, ...) and ``diverged`` (the env's count); ``{}`` when
        nothing trained."""
        if self._learned is None:
            return {}
        agent = self.adversary if self._learned == "adversary" else self.protagonist
        m = agent.update()
        if self.env is not None and hasattr(self.env, "num_diverged"):
            diverged = float(self.env.num_diverged)
            if diverged != self._last.get("diverged"):
                self._info["diverged"] = diverged
        if not m and not self._info:
            return {}
        self._last.update({f"{self._learned}/{k}": v for k, v in m.items()})
        self._last.update(self._info)
        self._info = {}
        self._last["alpha_mean"] = float(self.alpha.mean())
        self._last["curriculum_k"] = float(self.curriculum.k)
        return dict(self._last)

    def extra_env_steps(self) -> int:
        return int(self.protagonist.extra_env_steps())

    # ---------------------------------------------------------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        """Both agents' networks, named ``protagonist.<name>`` and ``adversary.<name>``."""
        nets = {f"protagonist.{k}": v for k, v in (self.protagonist.networks() if hasattr(self.protagonist, "networks")
                                                  else {}).items()}
        nets.update({f"adversary.{k}": v for k, v in self.adversary.networks().items()})
        return nets

    def state_dict(self) -> dict:
        """Both agents' states, the curriculum, alpha per env, phase counters, episode returns and the alpha RNG."""
        return {"protagonist": self.protagonist.state_dict(), "adversary": self.adversary.state_dict(),
                "curriculum": self.curriculum.state_dict(), "alpha": self.alpha.clone(),
                "rng": copy.deepcopy(self.rng.bit_generator.state), "phase": self.phase,
                "phase_episodes": self.phase_episodes, "ep_return": self.ep_return.clone(),
                "ep_steps": self.ep_steps.clone(), "env_steps": self.env_steps, "episodes": self.episodes,
                "info": dict(self._info), "last": dict(self._last)}

    def load_state_dict(self, state: dict) -> None:
        """Inverse of :meth:`state_dict`."""
        self.protagonist.load_state_dict(state["protagonist"])
        self.adversary.load_state_dict(state["adversary"])
        self.curriculum.load_state_dict(state["curriculum"])
        self.alpha = state["alpha"].clone().float()
        self.rng.bit_generator.state = dict(state["rng"])
        self.phase, self.phase_episodes = str(state["phase"]), int(state["phase_episodes"])
        self.ep_return, self.ep_steps = state["ep_return"].clone().double(), state["ep_steps"].clone().long()
        self.env_steps, self.episodes = int(state["env_steps"]), int(state["episodes"])
        self._info, self._last = dict(state["info"]), dict(state["last"])


class QARLExport(QARL):
    """:class:`QARL` around a protagonist that exports an MLP policy: adds :meth:`export_policy`."""

    def export_policy(self) -> tuple[nn.Module, dict]:
        """The protagonist's deployment policy with alpha fixed at ``eval_alpha`` folded in
        (:func:`fold_alpha_input`): it reads the env's D-dim state."""
        module, meta = self.protagonist.export_policy()
        return fold_alpha_input(module, meta, self.config.eval_alpha)


def fold_alpha_input(module: nn.Module, meta: dict, alpha: float) -> tuple[nn.Module, dict]:
    """An ``mlp`` deployment policy on [s, alpha] (D + 1 inputs) -> the same policy on s alone
    (D inputs) with alpha fixed: the first Linear's alpha column times the (normalised, clipped)
    alpha is added to its bias; the observation normaliser loses its last entry.

    Args:
        module: :class:`control.export.MLPPolicy` with ``state_dim`` D + 1.  meta: its meta entries
            (``obs_normalizer`` {"mean", "std", "clip"} or None).  alpha: the fixed temperature.
    Returns:
        (MLPPolicy with state_dim D, meta with the normaliser cut to D entries).
    Raises:
        ValueError: a module that is not an MLP policy.
    """
    if not isinstance(module, MLPPolicy):
        raise ValueError(f"fold_alpha_input takes an mlp deployment policy, got {type(module).__name__}")
    cfg = dict(module.export_config())
    norm = meta.get("obs_normalizer")
    x = float(alpha)
    if norm is not None:
        x = (x - float(norm["mean"][-1])) / float(norm["std"][-1])
        if norm.get("clip") is not None:
            x = max(-float(norm["clip"]), min(float(norm["clip"]), x))
        norm = {**norm, "mean": list(norm["mean"][:-1]), "std": list(norm["std"][:-1])}
    cfg["state_dim"] = int(cfg["state_dim"]) - 1
    out = MLPPolicy(**cfg)
    state = {k: v.clone() for k, v in module.state_dict().items()}
    w, bias = state["trunk.0.weight"], state["trunk.0.bias"]
    state["trunk.0.bias"] = bias + w[:, -1] * x
    state["trunk.0.weight"] = w[:, :-1].contiguous()
    out.load_state_dict(state)
    return out, {**meta, "obs_normalizer": norm}
