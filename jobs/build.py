"""Config -> objects: the one place ``dopa train``, ``dopa eval`` and the benchmarks build their
env, learner and reward shaper from a Hydra config (``hydra.utils.instantiate`` of the
``_target_`` in the YAML, as diffusion_policy does).

Each ``_target_`` names a typed config (validated when instantiated) whose ``make(...)`` builds
the object:

- env: ``configs/env/<task>.yaml`` -> :class:`sim.EnvConfig`;
  ``.make(num_envs=, views=, seed=, device=)`` (the one env builder);
- learner: ``configs/learner/<name>.yaml`` -> ``control.<module>.<Name>Config``;
  ``.make(obs_dim=, action_dim=, num_envs=, seed=, device=, offline_data=)``;
- potential: ``reward.potential`` -> its config's ``.make(task=, num_envs=)``, or (a target that
  is the potential class itself, e.g. a test's) the class called with ``task`` / ``num_envs``
  where it takes them;
- reward shaper: :class:`reward_models.shaping.RewardShaper` from ``reward.{mode, gold,
  gold_scale, query_every, scale}`` with the learner's discount.

A stored run config written before the typed configs existed (``_target_: control.sac.SAC``, no
env ``_target_``) still builds: the class's ``<Name>Config`` is used with the same keys.
"""

from __future__ import annotations

import inspect
import random
from types import SimpleNamespace

import numpy as np
import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from reward_models.relabel import relabel_files, relabel_key
from reward_models.shaping import RewardShaper
from sim import EnvConfig


def seed_everything(seed: int, threads: int = 1) -> None:
    """torch CPU threads, then the torch, numpy and python global seeds (before anything is built)."""
    torch.set_num_threads(int(threads))
    torch.manual_seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    random.seed(int(seed))


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def env_config(env) -> EnvConfig:
    """The typed env config of a config's ``env`` node (a DictConfig with ``_target_``, or a plain
    dict such as a checkpoint's stored ``config["env"]``).

    Raises:
        ValueError: a bad name, image size, backend, vectorization or task option (named).
    """
    if isinstance(env, EnvConfig):
        return env
    if isinstance(env, DictConfig) and env.get("_target_"):
        return instantiate(env)
    return EnvConfig.from_dict(_plain(env))


def build_env(env, *, num_envs: int = 1, views=(), seed: int = 0, device: str | None = None, progress: bool = False):
    """``env_config(env).make(num_envs=, views=, seed=, device=, progress=)``: a
    :class:`sim.vector.BatchedEnv` (or the Warp env for ``backend: warp``, its worlds on ``device``);
    ``progress=True`` adds the simulator's ground-truth progress to its observations (``reward=oracle``)."""
    return env_config(env).make(num_envs=int(num_envs), views=tuple(views), seed=int(seed), device=device,
                                progress=bool(progress))


def _accepts(target, name: str) -> bool:
    """Whether the callable ``target`` (object or dotted path) takes keyword ``name``."""
    try:
        sig = inspect.signature(get_object(target) if isinstance(target, str) else target)
    except (ValueError, TypeError):
        return False
    return name in sig.parameters or any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())


def _typed_target(node) -> str | None:
    """The dotted path of the typed config (a class with ``make``) to instantiate for ``node``, or
    None when its ``_target_`` is a plain callable to call (a legacy or test target)."""
    target = node.get("_target_") if node is not None else None
    if not target:
        return None
    if hasattr(get_object(target), "make"):
        return target
    try:  # a run stored before the typed configs: control.sac.SAC -> control.sac.SACConfig
        if hasattr(get_object(target + "Config"), "make"):
            return target + "Config"
    except (ImportError, AttributeError, ValueError):
        pass
    return None


def _instantiate_as(node, target: str):
    if node.get("_target_") == target and isinstance(node, DictConfig):
        return instantiate(node)
    plain = _plain(node)
    plain["_target_"] = target
    return instantiate(OmegaConf.create(plain))


def takes_offline_data(learner) -> bool:
    """Whether the learner config ``learner`` (the ``learner`` node) takes ``offline_data``."""
    target = learner.get("_target_") if learner is not None else None
    if not target:
        return False
    typed = _typed_target(learner)
    if typed is not None:
        return bool(getattr(get_object(typed), "takes_offline_data", False))
    return _accepts(target, "offline_data")


def check_adversary(cfg) -> None:
    """``dopa train adversary=qarl|rarl|linear``: what :func:`build_learner` would refuse, checked from
    the config alone, before the main job prepares its demonstrations and GRM: an on-policy
    protagonist (``learner=ppo``, ``gorl``), offline data (given, or the demonstrations the preset
    would prepare for a learner that takes them), a task without a ``perturbations`` entry or a bad
    entry (:func:`control.qarl.task_perturbation`; the bodies are checked when the env is built).

    Raises:
        ValueError: one line naming the learner, the offline data or the task.
    """
    from control.qarl import ON_POLICY, task_perturbation  # lazy: control.qarl loads torch
    from sim.experts import EXPERT_TASKS

    adversary = cfg.get("adversary")
    if adversary is None or not adversary.get("_target_"):
        return
    curriculum = adversary.get("curriculum", "qarl")
    typed = _typed_target(cfg.learner) or str(cfg.learner.get("_target_") or "")
    name = typed.rsplit(".", 1)[-1].lower().removesuffix("config")
    if name in ON_POLICY:
        raise ValueError(f"adversary={curriculum} needs an off-policy protagonist (learner=sac, rlpd or expo); "
                         f"learner={name} is on-policy and cannot skip the adversary's phases")
    if cfg.get("offline_data"):
        raise ValueError("offline_data was given with an adversary: its states carry no alpha; "
                         "train with adversary=none or offline_data=[]")
    prepare, task = cfg.get("prepare"), str(cfg.env.name)
    if (prepare is not None and prepare.get("enabled", False) and not cfg.get("resume")
            and takes_offline_data(cfg.learner) and task in EXPERT_TASKS):
        raise ValueError(f"adversary={curriculum} cannot train on offline data (its states carry no alpha), and the "
                         f"preset would prepare {task} demonstrations as learner={name}'s offline data; use a learner "
                         "without offline data (learner=sac) or preset=none")
    plain = _plain(adversary)
    task_perturbation(plain.get("perturbations") or {}, task, plain.get("max_force"), plain.get("threshold"))


def check_offline_start(cfg) -> None:
    """``dopa train`` with a learner that behaviour-clones before its first env step
    (``learner.pretrain_steps`` > 0: EXPO) needs offline data: ``offline_data=[...]``, the resumed
    run's, or the demonstrations the preset prepares (``prepare.enabled`` and a scripted expert for
    the task). Checked from the config alone (``jobs.train.run``, after the preparation and before the
    env is built), so a run without them stops in one line instead of at the learner's ``pretrain()``.

    Raises:
        ValueError: one line naming ``learner.pretrain_steps``, the task and the two ways out.
    """
    from sim.experts import EXPERT_TASKS  # lazy: sim.experts loads the robosuite task table

    steps = OmegaConf.select(cfg, "learner.pretrain_steps", default=0)
    if (not steps or cfg.get("offline_data") or cfg.get("resume")
            or OmegaConf.select(cfg, "adversary._target_", default=None)):
        return  # (an adversary refuses offline data itself: check_adversary)
    prepare, task = cfg.get("prepare"), str(OmegaConf.select(cfg, "env.name", default=""))
    if prepare is not None and prepare.get("enabled", False) and task in EXPERT_TASKS:
        return
    raise ValueError(f"learner.pretrain_steps={steps} clones the demonstrations before the first env step, and this "
                     f"run has none: give offline_data=[<episode files>] (dopa demos), or learner.pretrain_steps=0 "
                     f"(task {task!r}" + (" has no scripted expert to prepare them from)" if task not in EXPERT_TASKS
                                          else "; with preset=none nothing is prepared)"))


def build_learner(learner, env, *, seed: int, device: str = "cpu", offline_data=(), adversary=None):
    """The learner of config node ``learner`` for ``env`` (obs/action sizes, num_envs); with an
    ``adversary`` node (``configs/adversary/<qarl|rarl|linear>.yaml``, None: none) the learner is
    the protagonist, built for the state plus the temperature alpha, inside a
    :class:`control.qarl.QARL` (bind it to the training env with ``bind_env``).

    Raises:
        ValueError: bad learner or adversary values (the config's messages); ``offline_data`` for a
            learner that takes none ("offline_data was given but learner <name> takes no
            offline_data") or with an adversary.
    """
    if adversary is not None and adversary.get("_target_"):
        if offline_data:
            raise ValueError("offline_data was given with an adversary: its states carry no alpha; "
                             "train with adversary=none or offline_data=[]")
        qarl = instantiate(adversary) if isinstance(adversary, DictConfig) else adversary
        protagonist = build_learner(learner, _WithAlpha(env), seed=seed, device=device)
        return qarl.make(protagonist, task=env.task, obs_dim=int(env.state_dim), num_envs=int(env.num_envs),
                         seed=int(seed), device=device)
    kw = dict(obs_dim=int(env.state_dim), action_dim=int(env.action_dim), num_envs=int(env.num_envs),
              seed=int(seed), device=device)
    offline = [str(p) for p in (offline_data or [])]
    typed = _typed_target(learner)
    if typed is not None:
        return _instantiate_as(learner, typed).make(**kw, offline_data=offline or None)
    if offline:
        if not _accepts(learner._target_, "offline_data"):
            raise ValueError(f"offline_data was given but learner {learner._target_} takes no offline_data")
        kw["offline_data"] = offline
    return instantiate(learner, **kw)


class _WithAlpha:
    """An env's sizes with one more state entry (QARL's alpha) for building the protagonist."""

    def __init__(self, env):
        self.state_dim, self.action_dim = int(env.state_dim) + 1, int(env.action_dim)
        self.num_envs, self.task = int(env.num_envs), env.task


def build_potential(reward, env):
    """The potential of ``reward.potential`` for ``env`` (its task and number of envs)."""
    pot = reward.potential
    typed = _typed_target(pot)
    if typed is not None:
        return _instantiate_as(pot, typed).make(task=env.task, num_envs=int(env.num_envs))
    extra = {}
    for key, val in (("task", env.task), ("num_envs", env.num_envs)):
        if key not in pot and _accepts(pot._target_, key):
            extra[key] = val
    return instantiate(pot, **extra)


def build_shaper(reward, env, learner) -> RewardShaper:
    """The reward shaper of config node ``reward``; gamma = the learner's discount (``learner.gamma``,
    else ``reward.gamma``, else 0.99); the potential only when the mode or the gold signal uses it.

    Raises:
        ValueError: an unknown mode or gold, a bad ``query_every`` (the shaper's messages).
    """
    gamma = getattr(learner, "gamma", None) or reward.get("gamma") or 0.99
    potential = None
    if reward.get("potential") is not None and (reward.mode in ("potential", "naive") or reward.gold == "potential"):
        potential = build_potential(reward, env)
    return RewardShaper(reward.mode, float(gamma), potential, gold=reward.gold,
                        gold_scale=float(reward.get("gold_scale", 1.0)), query_every=int(reward.get("query_every", 1)),
                        scale=reward.get("scale", 1.0))


def relabel_offline_data(reward, env, learner, log=print) -> int:
    """Give a learner's offline transitions the run's reward (:mod:`reward_models.relabel`): the
    episodes of ``learner.offline_data`` are run through a one-env copy of the run's shaper
    (``reward``'s mode, gold, scale and potential, querying every frame) and handed back with
    ``learner.set_offline_episodes``. Rewards are cached beside each episode file, keyed by the
    reward settings, the discount and the reward-model checkpoint.

    Args:
        reward: the run's ``reward`` config node.  env: the training env (its ``task``).
        learner: a learner with ``offline_data`` (file list) and ``set_offline_episodes``; one
            without offline data is left alone.
    Returns:
        The number of episodes relabelled (0 when the learner has no offline data).
    Raises:
        ValueError: episode files without the potential's views or of another image size (named),
            the shaper's errors.
    """
    paths = list(getattr(learner, "offline_data", None) or [])
    if not paths or not hasattr(learner, "set_offline_episodes"):
        return 0
    gamma = getattr(learner, "gamma", None) or reward.get("gamma") or 0.99
    done_is_terminal = bool(getattr(learner, "offline_done_is_terminal", False))
    uses_potential = reward.get("potential") is not None and (reward.mode in ("potential", "naive")
                                                               or reward.gold == "potential")
    settings = {"reward": _plain(reward), "gamma": float(gamma), "done_is_terminal": done_is_terminal}
    checkpoint = reward.potential.get("checkpoint") if uses_potential else None

    def make_shaper() -> RewardShaper:
        potential = build_potential(reward, SimpleNamespace(task=env.task, num_envs=1)) if uses_potential else None
        return RewardShaper(reward.mode, float(gamma), potential, gold=reward.gold,
                            gold_scale=float(reward.get("gold_scale", 1.0)), query_every=1,
                            scale=reward.get("scale", 1.0))

    # the GRM's frame size is checked by its tracker on every frame (naming the size it needs)
    episodes = relabel_files(paths, make_shaper, done_is_terminal=done_is_terminal,
                             key=relabel_key(settings, checkpoint), log=log)
    learner.set_offline_episodes(episodes)
    return len(episodes)


def check_config(node, key: str) -> None:
    """Validate the config node at ``key`` (``env``, ``learner``, ``reward.potential``) by
    instantiating its typed config, before anything is built; a value left open (``???``, or an
    interpolation to one) is passed as None. Nothing is checked for a plain (untyped) target.

    Raises:
        ValueError: the typed config's one-line message (``reward.potential.fusion must be one of
            ..., got 'max'``).
    """
    if not isinstance(node, DictConfig) or not node.get("_target_"):
        return
    try:
        typed = _typed_target(node)
    except (ImportError, AttributeError, ValueError):  # an unknown target: building it names it
        return
    if typed is None:
        return
    values = {}
    for k in node:
        if k == "_target_":
            continue
        try:
            v = node[k]
        except OmegaConfBaseException:  # ??? or an interpolation to it: filled in later (jobs.prepare)
            v = None
        values[k] = OmegaConf.to_container(v, resolve=True) if isinstance(v, (DictConfig, ListConfig)) else v
    try:
        get_object(typed)(**values)
    except TypeError as exc:  # a key the config does not have
        raise ValueError(f"{key}: {exc}") from None
    except ValueError as exc:  # name the override's full key: "utd_ratio ..." -> "learner.utd_ratio ..."
        msg = str(exc)
        field = msg.split(" ", 1)[0]
        if field in values and not msg.startswith(f"{key}."):
            raise ValueError(f"{key}.{msg}") from None
        raise
