"""Curricula over the adversary's temperature alpha for QARL (Reddi et al., ICLR 2024, arXiv 2311.01642).

alpha is drawn per episode from a Gamma distribution p_k = Gamma(shape k, rate b) (the rate fixed,
only k moves; mean alpha = k / b). Three curricula, all with the same interface
(``sample(n, rng) -> float64 [n]``, ``record(alpha, ret)``, ``step(env_steps) -> dict``,
``state_dict`` / ``load_state_dict``):

- :class:`SelfPacedGamma` (``qarl``): the self-paced scheme of SPDL (Klink et al.) on alpha, as the
  authors' ``self_paced_gamma_teacher_fixed_beta.py``: once ``update_episodes`` (alpha, discounted
  return) pairs of protagonist episodes are buffered, k is moved by
  ``scipy.optimize.minimize(method="trust-constr")`` to

      min_k KL(p_k || mu)   s.t.   (1/N) sum_i p_k(alpha_i) / p_old(alpha_i) G_i >= threshold,
                                   KL(p_k || p_old) <= max_kl,   k >= 1e-8

  (paper Eq. 5 with the importance-weighted performance estimate of Eq. 12), mu the target
  Gamma(target_k, target_rate) near alpha ~ 0. When the performance constraint fails (the buffered
  returns' mean is below the threshold, or the optimiser returns an infeasible k) the distribution
  stays ("frozen"); within ``target_kl_stop`` of the target it stays too.
- :class:`FixedGamma` (``rarl``): alpha ~ the target mu from the start (RARL's rational adversary
  with the code's alpha ~ 1e-3).
- :class:`LinearGamma` (``linear``, the paper's ablation): k goes linearly from k0 to the target's k
  over the first ``fraction`` of ``total_steps`` env steps.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import digamma, gammaln


def gamma_logpdf(x: np.ndarray, k: float, rate: float) -> np.ndarray:
    """log Gamma(x; shape k, rate) for x > 0 (float64, same shape as x)."""
    x = np.asarray(x, dtype=np.float64)
    return k * math.log(rate) - gammaln(k) + (k - 1.0) * np.log(x) - rate * x


def gamma_kl(k_p: float, rate_p: float, k_q: float, rate_q: float) -> float:
    """KL(Gamma(k_p, rate_p) || Gamma(k_q, rate_q)) in nats (shape / rate parameterisation)."""
    return float((k_p - k_q) * digamma(k_p) - gammaln(k_p) + gammaln(k_q)
                 + k_q * (math.log(rate_p) - math.log(rate_q)) + k_p * (rate_q - rate_p) / rate_p)


class _GammaCurriculum:
    """Shared part: the current shape k (rate fixed) and alpha sampling."""

    name = "gamma"

    def __init__(self, k0: float, rate: float, target_k: float, target_rate: float):
        self.k, self.rate = float(k0), float(rate)
        self.k0, self.target_k, self.target_rate = float(k0), float(target_k), float(target_rate)
        self.updates = 0

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n temperatures alpha ~ Gamma(k, rate): float64 [n], > 0."""
        return rng.gamma(self.k, 1.0 / self.rate, size=int(n))

    @property
    def mean(self) -> float:
        """E[alpha] = k / rate."""
        return self.k / self.rate

    def kl_to_target(self) -> float:
        return gamma_kl(self.k, self.rate, self.target_k, self.target_rate)

    def record(self, alpha: float, ret: float) -> None:
        """Buffer one protagonist episode's (alpha, discounted return) (only the self-paced one uses it)."""

    def step(self, env_steps: int) -> dict:
        """Move the distribution if due; returns scalars to log (empty when nothing happened)."""
        return {}

    def state_dict(self) -> dict:
        return {"k": self.k, "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.k, self.updates = float(state["k"]), int(state["updates"])


class FixedGamma(_GammaCurriculum):
    """RARL: alpha ~ the target Gamma(target_k, target_rate) throughout."""

    name = "rarl"

    def __init__(self, k0: float, rate: float, target_k: float, target_rate: float):
        super().__init__(target_k, target_rate, target_k, target_rate)


class LinearGamma(_GammaCurriculum):
    """Linear schedule: k(t) = k0 + (target_k - k0) min(1, t / (fraction total_steps)), t in env steps."""

    name = "linear"

    def __init__(self, k0: float, rate: float, target_k: float, target_rate: float, total_steps: int,
                 fraction: float):
        super().__init__(k0, rate, target_k, target_rate)
        self.horizon = max(1.0, float(fraction) * float(total_steps))

    def step(self, env_steps: int) -> dict:
        k = self.k0 + (self.target_k - self.k0) * min(1.0, float(env_steps) / self.horizon)
        if k == self.k:
            return {}
        self.k = k
        return {"curriculum_k": self.k}


class SelfPacedGamma(_GammaCurriculum):
    """QARL's self-paced curriculum over alpha (module docstring).

    Args:
        k0, rate: the initial Gamma(k0, rate) [50, 1000].  target_k, target_rate: mu [1, 1000].
        threshold: performance lower bound xi on the importance-weighted discounted return.
        max_kl: trust region epsilon [0.5].  update_episodes: buffered episodes per update [30].
        target_kl_stop: no update once KL(p || mu) <= this [0.01].
    """

    name = "qarl"

    def __init__(self, k0: float, rate: float, target_k: float, target_rate: float, threshold: float,
                 max_kl: float = 0.5, update_episodes: int = 30, target_kl_stop: float = 0.01):
        super().__init__(k0, rate, target_k, target_rate)
        self.threshold, self.max_kl = float(threshold), float(max_kl)
        self.update_episodes, self.target_kl_stop = int(update_episodes), float(target_kl_stop)
        self.alphas: list[float] = []
        self.returns: list[float] = []
        self.frozen = 0

    def record(self, alpha: float, ret: float) -> None:
        self.alphas.append(float(alpha))
        self.returns.append(float(ret))

    def performance(self, k: float, alphas: np.ndarray, returns: np.ndarray) -> float:
        """Importance-weighted mean return under Gamma(k, rate) of returns collected under the current k."""
        w = np.exp(gamma_logpdf(alphas, k, self.rate) - gamma_logpdf(alphas, self.k, self.rate))
        return float(np.mean(w * returns))

    def propose(self, alphas: np.ndarray, returns: np.ndarray) -> float | None:
        """The new k from one buffer of samples (scipy trust-constr), or None when the performance
        constraint fails (the distribution stays)."""
        from scipy.optimize import Bounds, NonlinearConstraint, minimize

        if float(np.mean(returns)) < self.threshold:
            return None
        k_old = self.k
        res = minimize(lambda x: gamma_kl(float(x[0]), self.rate, self.target_k, self.target_rate),
                       np.array([k_old]), method="trust-constr",
                       constraints=[NonlinearConstraint(lambda x: self.performance(float(x[0]), alphas, returns),
                                                        self.threshold, np.inf),
                                    NonlinearConstraint(lambda x: gamma_kl(float(x[0]), self.rate, k_old, self.rate),
                                                        -np.inf, self.max_kl)],
                       bounds=Bounds([1e-8], [np.inf]))
        k = float(res.x[0])
        feasible = (self.performance(k, alphas, returns) >= self.threshold - 1e-6 * max(1.0, abs(self.threshold))
                    and gamma_kl(k, self.rate, k_old, self.rate) <= self.max_kl * (1 + 1e-3) and k > 0)
        return k if feasible and math.isfinite(k) else None

    def step(self, env_steps: int) -> dict:
        if len(self.alphas) < self.update_episodes:
            return {}
        alphas, returns = np.asarray(self.alphas), np.asarray(self.returns)
        self.alphas, self.returns = [], []
        out = {"curriculum_mean_return": float(returns.mean())}
        if self.kl_to_target() <= self.target_kl_stop:
            return {**out, "curriculum_k": self.k}
        k = self.propose(alphas, returns)
        if k is None:
            self.frozen += 1
        else:
            self.k = k
            self.updates += 1
        return {**out, "curriculum_k": self.k, "curriculum_frozen": float(k is None)}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "alphas": list(self.alphas), "returns": list(self.returns),
                "frozen": self.frozen}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.alphas = [float(a) for a in state["alphas"]]
        self.returns = [float(r) for r in state["returns"]]
        self.frozen = int(state["frozen"])


CURRICULA = ("qarl", "rarl", "linear")
