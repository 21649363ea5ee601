"""The token dual of the constrained average-cost MDP, maximised by cutting planes.

For a token price eta >= 0 the Lagrangian problem adds eta per request and
subtracts eta phi per offer; its optimal gain L(eta) is concave and piecewise
linear, the minimum over deterministic policies pi of the lines
cost(pi) + eta * token_rate(pi). The constrained optimum equals max over
eta >= 0 of L(eta) (the constraint is one linear inequality on occupation
measures, so there is no duality gap).

The search keeps two exactly evaluated greedy policies: ``low`` with a
positive token rate and ``high`` with a token rate <= 0. Their lines cross at
eta_x. Mixing the two policies so that the token rate is zero gives a feasible
policy whose cost is the common value of the lines there, which is an
achievable upper bound. At each price, value iteration suggests a policy and
policy iteration improves it; both bound L(eta) from below through
g >= Lambda * min(T h - h), a certified lower bound on the constrained
optimum. The next price is eta_x (Kelley's cutting-plane method in one
dimension), which ends after finitely many prices because L has finitely many
pieces. Values are warm-started from price to price.

References
----------
E. Altman, *Constrained Markov Decision Processes*, Chapman & Hall/CRC, 1999,
chapters 3 and 4 (occupation measures, Lagrangian duality, mixed optima).
M. L. Puterman, *Markov Decision Processes*, Wiley, 1994, section 8.5
(relative value iteration and its span bounds).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import warnings

import numpy as np
import scipy.sparse as sparse
from scipy.sparse.linalg import MatrixRankWarning, spsolve

from . import kernels
from .chain import ChainModel
from .evaluation import PolicyEvaluation, evaluate_chain

# Token rates within this of zero count as zero: the evaluation's rounding error.
TOKEN_RATE_SLACK = 1e-12
_SMALLEST_SPAN = 1e-15
# Policy-iteration steps per price; it usually stops after two or three.
_POLICY_ITERATION_ROUNDS = 30
# Value-iteration sweeps that suggest a starting policy to policy iteration.
_SUGGESTION_SWEEPS = 200
# Token prices the cutting-plane search may try; it usually needs fewer than 40,
# and only an interval stalled by rounding would go on much longer.
_MAX_PRICES = 400


@dataclass
class Candidate:
    """A deterministic greedy policy found at some price, with its exact evaluation."""

    token_price: float
    send: np.ndarray
    capacity: np.ndarray
    evaluation: PolicyEvaluation

    @property
    def token_rate(self) -> float:
        return self.evaluation.token_rate

    def line(self, token_price: float) -> float:
        return self.evaluation.objective(token_price)

    def same_policy(self, other: "Candidate") -> bool:
        return np.array_equal(self.send, other.send) and np.array_equal(self.capacity, other.capacity)


@dataclass
class DualSolution:
    """Outcome of the dual search on one truncated chain."""

    upper_bound: float
    lower_bound: float
    token_price: float
    low: Candidate | None
    high: Candidate
    mixing_weight: float
    values: np.ndarray = field(repr=False)
    value_iterations: int = 0
    prices_tried: int = 0
    evaluations: int = 0
    converged: bool = True
    message: str = ""


class DualSearch:
    """Relative value iteration and exact evaluation on one chain, driven by the cutting-plane search.

    Parameters
    ----------
    chain : ChainModel
        The truncated chain.
    tolerance : float
        Relative width of the certified interval to reach.
    scale : float
        A positive cost of the order of the optimal cost (such as the cost of complete
        pooling), used to turn the relative tolerance into an absolute span.
    values : ndarray or None
        Relative values to start value iteration from (warm start).
    max_value_iterations : int
        Budget of Bellman sweeps over the whole search.
    """

    def __init__(self, chain: ChainModel, tolerance: float, scale: float,
                 values: np.ndarray | None = None, max_value_iterations: int = 2_000_000):
        self.chain = chain
        self.tolerance = tolerance
        self.scale = scale
        self.values = np.zeros(chain.shape) if values is None else np.array(values, dtype=np.float64)
        self.work = np.empty(chain.shape)
        self.send = np.zeros(chain.shape, dtype=np.int64)
        self.capacity = np.zeros(chain.shape, dtype=np.int64)
        self.max_value_iterations = max_value_iterations
        self.value_iterations = 0
        self.evaluations = 0
        self.prices_tried = 0
        self.lower_bound = -np.inf
        self.lower_bound_price = 0.0
        self.policy_iteration_works = True

    def run(self, price_hint: float | None = None) -> DualSolution:
        """Maximise the dual and return the bounds, the two bracketing policies and the price.

        ``price_hint`` (for example the optimal price of a smaller truncation)
        starts the bracketing near the expected optimum instead of at zero.
        """
        if price_hint is not None and price_hint > 0.0:
            bracket = self._bracket_near(price_hint)
            if bracket is not None:
                low, high = bracket
                if low is None:
                    return self._finish_slack(high)
                return self._cutting_planes(low, high)

        free = self._greedy(0.0, self._loose_span())
        if free.token_rate <= TOKEN_RATE_SLACK:
            return self._finish_slack(free)
        high = self._find_feasible_price(free)
        if high is None:
            return self._failure(free, "no token price up to 1e8 makes the greedy policy spend "
                                       "no more tokens than it earns")
        return self._cutting_planes(free, high)

    def _bracket_near(self, hint: float):
        """Find prices around ``hint`` whose greedy policies have token rates of opposite signs."""
        first = self._greedy(hint, self._loose_span())
        step = 0.02
        if first.token_rate > TOKEN_RATE_SLACK:
            while step < 64.0:
                candidate = self._greedy(hint * (1.0 + step), self._loose_span())
                if candidate.token_rate <= TOKEN_RATE_SLACK:
                    return first, candidate
                first, step = candidate, step * 4.0
            return None
        while True:
            price = max(hint * (1.0 - step), 0.0)
            candidate = self._greedy(price, self._loose_span())
            if candidate.token_rate > TOKEN_RATE_SLACK:
                return candidate, first
            if price == 0.0:
                return None, candidate
            first, step = candidate, min(step * 4.0, 1.0)

    # Phases of the search.

    def _finish_slack(self, free: Candidate) -> DualSolution:
        """Certify the unconstrained optimum, which already satisfies the token constraint (eta* = 0)."""
        span = self._span_target()
        while free.evaluation.cost - self.lower_bound > self.tolerance * free.evaluation.cost:
            span /= 4.0
            if span < _SMALLEST_SPAN * self.scale or self._budget_spent():
                return self._solution(free.evaluation.cost, 0.0, None, free, 1.0, converged=False,
                                      message=self._stall_message(free.evaluation.cost))
            candidate = self._greedy(0.0, span)
            if candidate.token_rate <= TOKEN_RATE_SLACK and candidate.evaluation.cost < free.evaluation.cost:
                free = candidate
        return self._solution(free.evaluation.cost, 0.0, None, free, 1.0,
                              message="token constraint slack: the unconstrained optimum is feasible")

    def _find_feasible_price(self, free: Candidate) -> Candidate | None:
        """Raise the price until the greedy policy's token rate is <= 0."""
        price = max(1.0, self.chain.processing_cost + 1.0)
        while price <= 1e8:
            candidate = self._greedy(price, self._loose_span())
            if candidate.token_rate <= TOKEN_RATE_SLACK:
                return candidate
            price *= 4.0
        return None

    def _cutting_planes(self, low: Candidate, high: Candidate) -> DualSolution:
        span = self._loose_span()
        while True:
            price, upper = _crossing(low, high)
            weight = _mixing_weight(low, high)
            if high.evaluation.cost <= upper:
                upper, weight = high.evaluation.cost, 1.0
            gap = upper - self.lower_bound
            if gap <= self.tolerance * abs(upper):
                return self._solution(upper, price, low, high, weight)
            if self._budget_spent() or span < _SMALLEST_SPAN * self.scale or self.prices_tried >= _MAX_PRICES:
                return self._solution(upper, price, low, high, weight, converged=False,
                                      message=self._stall_message(upper))

            # Value iteration only needs to be as tight as the current interval.
            span = max(self._span_target(), min(span, 0.25 * gap))
            candidate = self._greedy(price, span)
            no_progress = candidate.line(price) >= upper - 1e-3 * self.tolerance * abs(upper)
            if no_progress or candidate.same_policy(low) or candidate.same_policy(high):
                # The crossing is the dual's maximum up to the value-iteration error:
                # only the lower bound is left to tighten.
                span /= 4.0
                continue
            if candidate.token_rate > TOKEN_RATE_SLACK:
                low = candidate
            else:
                high = candidate

    # Building blocks.

    def _greedy(self, price: float, span: float) -> Candidate:
        """Return an optimal (up to ``span``) deterministic policy at ``price``, exactly evaluated.

        Value iteration runs to the given span; then policy iteration takes
        over: the greedy policy's exact relative values replace the iterate and
        one sweep both improves the policy and bounds L(price) from below. When
        the policy is optimal its values make T h - h constant, so the bound is
        exact without the many sweeps that the pool's slow mixing would take.
        """
        self.prices_tried += 1
        # While policy iteration works, value iteration only has to suggest a policy.
        self._value_iteration(price, span, _SUGGESTION_SWEEPS if self.policy_iteration_works else None)
        candidate = self._candidate(price)
        for _ in range(_POLICY_ITERATION_ROUNDS):
            values = self._policy_values(candidate, price)
            if values is None:
                if self.policy_iteration_works:
                    self.policy_iteration_works = False
                    self._value_iteration(price, span)
                    candidate = self._candidate(price)
                break
            self.values[:] = values
            self._value_iteration(price, 0.0, max_sweeps=1)
            if np.array_equal(self.send, candidate.send) and np.array_equal(self.capacity, candidate.capacity):
                break
            improved = self._candidate(price)
            if improved.line(price) >= candidate.line(price) - 1e-14 * self.scale:
                break
            candidate = improved
        return candidate

    def _value_iteration(self, price: float, span: float, max_sweeps: int | None = None) -> None:
        chain = self.chain
        remaining = max(self.max_value_iterations - self.value_iterations, 1)
        if max_sweeps is not None:
            remaining = min(remaining, max_sweeps)
        sweeps, lower, _upper = kernels.relative_value_iteration(
            self.values, self.work, self.send, self.capacity, *chain.kernel_arguments(), price,
            *chain.cost_arguments(), remaining, span / chain.event_rate)
        self.value_iterations += sweeps
        # min(T h - h) bounds L(price) / Lambda from below; L(price) bounds the constrained optimum.
        if chain.event_rate * lower > self.lower_bound:
            self.lower_bound = chain.event_rate * lower
            self.lower_bound_price = price

    def _candidate(self, price: float) -> Candidate:
        """Evaluate the current greedy policy exactly."""
        chain = self.chain
        send = self.send.copy()
        capacity = self.capacity.copy()
        evaluation = evaluate_chain(chain, send.astype(np.float64), kernels.capacity_one_hot(capacity))
        self.evaluations += 1
        return Candidate(price, send, capacity, evaluation)

    def _policy_values(self, candidate: Candidate, price: float):
        """Return the relative values of a deterministic policy, or None if they are not unique.

        They are unique when the policy has a single recurrent class; with
        several the equations are singular and value iteration alone goes on.
        """
        chain = self.chain
        rows, cols, entries, right = kernels.policy_value_entries(
            candidate.send, candidate.capacity, *chain.kernel_arguments(), price, *chain.cost_arguments())
        size = right.size
        system = sparse.csc_matrix((entries, (rows, cols)), shape=(size, size))
        with warnings.catch_warnings():
            warnings.simplefilter("error", MatrixRankWarning)
            try:
                solution = spsolve(system, right)
            except (MatrixRankWarning, RuntimeError):
                return None
        if not np.all(np.isfinite(solution)):
            return None
        residual = np.max(np.abs(system @ solution - right))
        scale = abs(system).sum(axis=1).max() * max(1.0, np.max(np.abs(solution)))
        if residual > 1e-10 * scale:
            return None
        return solution[:-1].reshape(chain.shape)

    def _span_target(self) -> float:
        return 0.25 * self.tolerance * self.scale

    def _loose_span(self) -> float:
        """Span used while the price is still far from optimal: enough to rank policies."""
        return max(self._span_target(), 1e-3 * self.scale)

    def _budget_spent(self) -> bool:
        return self.value_iterations >= self.max_value_iterations

    def _stall_message(self, upper: float) -> str:
        width = (upper - self.lower_bound) / abs(upper)
        return (f"dual search stopped after {self.prices_tried} token prices and {self.value_iterations} "
                f"value-iteration sweeps with a relative interval width {width:.3g}, above the tolerance "
                f"{self.tolerance:.3g}")

    def _failure(self, free: Candidate, message: str) -> DualSolution:
        return self._solution(np.inf, np.inf, None, free, 1.0, converged=False, message=message)

    def _solution(self, upper, price, low, high, weight, converged=True, message="") -> DualSolution:
        # Report the price whose dual value certifies the lower bound: an
        # optimal price up to the interval width, unlike the last crossing.
        return DualSolution(
            upper_bound=upper, lower_bound=self.lower_bound,
            token_price=self.lower_bound_price if np.isfinite(self.lower_bound) else price, low=low, high=high,
            mixing_weight=weight, values=self.values, value_iterations=self.value_iterations,
            prices_tried=self.prices_tried, evaluations=self.evaluations, converged=converged,
            message=message or "certified interval reached the tolerance")


def _crossing(low: Candidate, high: Candidate) -> tuple:
    """Return the price where the two policies' lines cross (clipped to their prices) and the value there."""
    slope_gap = low.token_rate - high.token_rate
    price = (high.evaluation.cost - low.evaluation.cost) / slope_gap
    price = min(max(price, low.token_price), high.token_price)
    return price, _mixture_cost(low, high)


def _mixing_weight(low: Candidate, high: Candidate) -> float:
    """Weight on ``high`` that makes the mixture's token rate zero."""
    return low.token_rate / (low.token_rate - high.token_rate)


def _mixture_cost(low: Candidate, high: Candidate) -> float:
    weight = _mixing_weight(low, high)
    return weight * high.evaluation.cost + (1.0 - weight) * low.evaluation.cost


def mix_policies(low: PolicyEvaluation, low_policy: tuple, high: PolicyEvaluation, high_policy: tuple,
                 weight: float) -> tuple:
    """Return the stationary randomised policy whose occupation measure is the weighted mixture.

    Parameters
    ----------
    low, high : PolicyEvaluation
        Exact evaluations (with decision and send flows) of the two deterministic policies.
    low_policy, high_policy : tuple
        ``(send, capacity)`` arrays of the two policies.
    weight : float
        Weight on ``high``.

    Returns
    -------
    tuple
        ``(transfer_probability, capacity_probabilities)``. In a state that
        neither policy visits, the decisions of ``low`` are kept.
    """
    one_hot = kernels.capacity_one_hot
    low_send, low_capacity = low_policy
    high_send, high_capacity = high_policy

    decision = weight * high.decision_flow + (1.0 - weight) * low.decision_flow
    sending = weight * high.send_flow + (1.0 - weight) * low.send_flow
    transfer = np.where(decision > 0.0, sending / np.where(decision > 0.0, decision, 1.0),
                        low_send.astype(np.float64))

    low_time = (1.0 - weight) * low.stationary_distribution
    high_time = weight * high.stationary_distribution
    time = low_time + high_time
    safe_time = np.where(time > 0.0, time, 1.0)[..., None]
    mixed_capacity = (low_time[..., None] * one_hot(low_capacity)
                      + high_time[..., None] * one_hot(high_capacity)) / safe_time
    capacity = np.where(time[..., None] > 0.0, mixed_capacity, one_hot(low_capacity))
    return np.clip(transfer, 0.0, 1.0), capacity
