"""Server one's best deviation against N - 1 servers that pool completely.

Servers 2..N send every job to the shared pool on arrival and offer help at
every capacity unit. Server one sees its own queue q1 and the pool length q0
and may do anything, subject to the fluid token constraint: in the long run it
requests help no faster than phi times the rate at which it offers help. Its
best long-run average cost, compared with its cost under complete pooling
(CRP), measures what a single server gains by not pooling.

:func:`solve_best_deviation` truncates the state space to q1 <= Q1,
q0 <= Q0, maximises the token dual of the truncated constrained MDP (see
:mod:`mdp.dual`), evaluates the resulting feasible policy exactly (see
:mod:`mdp.evaluation`), and grows the truncation until the boundary is visited
less than the tolerance and a larger truncation changes the answer by less
than the tolerance. :func:`true_gap_bracket` solves both pool-wait models,
whose optimal costs bracket the true one.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from .chain import market_chain
from .closed_forms import crp_cost
from .dual import TOKEN_RATE_SLACK, DualSearch, DualSolution, mix_policies
from .evaluation import PolicyEvaluation, evaluate_chain
from .model import Market
from .policy import Policy, check_truncation
from .validation import check_integer, check_real

# Smallest relative tolerance accepted: double-precision rounding in the exact
# evaluations stalls the certified interval near 1e-11 relative, so tighter
# requests would only run until a budget is spent.
MIN_TOLERANCE = 1e-10

# Changes whenever solver results can change, so that cached results are recomputed.
SOLVER_REVISION = 4

DEFAULT_MAX_STATES = 400_000


class TruncationWarning(RuntimeWarning):
    """The automatic truncation reached its limit before the cost settled."""


class ConvergenceWarning(RuntimeWarning):
    """The certified interval did not shrink to the requested tolerance."""


@dataclass(frozen=True, eq=False)
class DeviationResult:
    """Server one's best deviation in one market, with how every number was obtained.

    Attributes
    ----------
    market : Market
        The market solved.
    best_cost : float
        Cost per unit time of the feasible (possibly mixed) policy returned: an
        achievable value, evaluated exactly on the truncated chain.
    lower_bound, upper_bound : float
        Certified interval for the optimal cost of the truncated model: the
        lower end is a value-iteration bound on the token dual, the upper end
        is ``best_cost``.
    crp_cost : float
        Closed-form cost of complete pooling in the same wait model.
    gap, gap_lower, gap_upper : float
        Sub-optimality gap (crp_cost - best_cost) / best_cost and its interval
        from the certified cost interval. For phi < lambda complete pooling is
        not feasible for server one, so the gap may be negative.
    token_price : float
        Maximiser eta* of the token dual (0 when the constraint is slack).
    policy : Policy
        The returned policy; randomised when it mixes two deterministic policies.
    deterministic_policies : tuple of Policy
        One policy when the optimum is deterministic, otherwise the two
        policies mixed: the first spends tokens too fast, the second does not.
    mixing_weight : float
        Weight of the second deterministic policy in the mixture (1 when pure).
    request_rate, offer_rate, token_rate : float
        Long-run rates of the returned policy; ``token_rate`` is
        ``request_rate - phi * offer_rate`` and is <= 0 up to rounding.
    mean_own_queue, mean_pool_length : float
        Time averages of q1 and q0 under the returned policy.
    boundary_mass : float
        Fraction of time with q1 = Q1 or q0 = Q0 under the returned policy.
    lost_rate : float
        Arrivals of all servers lost at the truncation boundary, per unit time.
    truncation : tuple of int
        (Q1, Q0) of the reported solution.
    truncation_change : float
        Relative change of ``best_cost`` from the next smaller truncation tried;
        NaN when only one truncation was solved.
    truncation_fixed : bool
        Whether the caller fixed the truncation (then it is not checked).
    stationary_distribution : ndarray
        Fraction of time in each (q1, q0) state under the returned policy.
    value_iterations, prices_tried, evaluations : int
        Bellman sweeps, token prices tried and exact policy evaluations, over
        all truncations tried.
    seconds : float
        Wall-clock time of the whole solve.
    converged : bool
        Whether the interval width, the boundary mass and the truncation change
        are all below the tolerance.
    message : str
        Why the solve stopped, with the numbers when it did not converge.
    """

    market: Market
    tolerance: float
    best_cost: float
    lower_bound: float
    upper_bound: float
    crp_cost: float
    gap: float
    gap_lower: float
    gap_upper: float
    token_price: float
    policy: Policy = field(repr=False)
    deterministic_policies: tuple = field(repr=False)
    mixing_weight: float
    request_rate: float
    offer_rate: float
    token_rate: float
    mean_own_queue: float
    mean_pool_length: float
    boundary_mass: float
    lost_rate: float
    truncation: tuple
    truncation_change: float
    truncation_fixed: bool
    stationary_distribution: np.ndarray = field(repr=False)
    value_iterations: int
    prices_tried: int
    evaluations: int
    seconds: float
    converged: bool
    message: str

    @property
    def interval_width(self) -> float:
        """Relative width (upper - lower) / upper of the certified interval."""
        return (self.upper_bound - self.lower_bound) / abs(self.upper_bound)

    @property
    def is_mixed(self) -> bool:
        """Whether the returned policy mixes two deterministic policies."""
        return len(self.deterministic_policies) == 2

    def as_dict(self) -> dict:
        """Return the market parameters and every scalar result, for one row of a table."""
        row = dict(self.market.as_dict())
        row.update(
            tolerance=self.tolerance, best_cost=self.best_cost, lower_bound=self.lower_bound,
            upper_bound=self.upper_bound, crp_cost=self.crp_cost, gap=self.gap,
            gap_lower=self.gap_lower, gap_upper=self.gap_upper, token_price=self.token_price,
            mixed=self.is_mixed, mixing_weight=self.mixing_weight, request_rate=self.request_rate,
            offer_rate=self.offer_rate, token_rate=self.token_rate, mean_own_queue=self.mean_own_queue,
            mean_pool_length=self.mean_pool_length, boundary_mass=self.boundary_mass,
            lost_rate=self.lost_rate, own_limit=self.truncation[0], pool_limit=self.truncation[1],
            truncation_change=self.truncation_change, truncation_fixed=self.truncation_fixed,
            value_iterations=self.value_iterations,
            prices_tried=self.prices_tried, evaluations=self.evaluations, seconds=self.seconds,
            converged=self.converged, message=self.message,
        )
        return row


@dataclass(frozen=True, eq=False)
class TrueGapBracket:
    """Interval for the true sub-optimality gap from the two pool-wait models.

    A job in the real pool leaves after departures that happen at a rate between
    N - 1 and N, so every policy's true cost lies between its costs under
    R = N and R = N - 1, and the true best cost between the two optima. CRP is
    exact under R = N. Hence the true gap lies in
    [(CRP_N - best_{N-1}) / best_{N-1}, (CRP_N - best_N) / best_N].

    Attributes
    ----------
    gap_lower, gap_upper : float
        Ends of the interval (point values from the two best costs).
    certified_lower, certified_upper : float
        The same ends widened by each solution's certified cost interval.
    crp_cost : float
        Exact CRP cost (R = N).
    all_servers, others_only : DeviationResult
        Solutions under R = N and under R = N - 1.
    """

    gap_lower: float
    gap_upper: float
    certified_lower: float
    certified_upper: float
    crp_cost: float
    all_servers: DeviationResult = field(repr=False)
    others_only: DeviationResult = field(repr=False)

    def as_dict(self) -> dict:
        """Return the interval and both solutions' costs as one flat row."""
        return {
            "true_gap_lower": self.gap_lower, "true_gap_upper": self.gap_upper,
            "true_gap_certified_lower": self.certified_lower,
            "true_gap_certified_upper": self.certified_upper,
            "best_cost_all": self.all_servers.best_cost, "best_cost_others": self.others_only.best_cost,
            "crp_cost_exact": self.crp_cost,
        }


def solve_best_deviation(market: Market, tolerance: float = 1e-8, truncation=None, *,
                         max_states: int = DEFAULT_MAX_STATES,
                         max_value_iterations: int = 5_000_000) -> DeviationResult:
    """Compute server one's best deviation cost with a certified interval.

    Parameters
    ----------
    market : Market
        The market.
    tolerance : float, default 1e-8
        Relative tolerance in [1e-10, 0.1]. It bounds the certified interval's width
        (upper - lower) / upper, the change of the cost under a larger
        truncation and the boundary mass.
    truncation : pair of int or None
        ``(Q1, Q0)`` to solve exactly that truncated model (no growth, no
        truncation check), or ``None`` to size it automatically.
    max_states : int, default 400000
        Largest number of grid states the automatic truncation may use.
    max_value_iterations : int
        Budget of Bellman sweeps per truncation.

    Returns
    -------
    DeviationResult
        ``converged`` is False when a limit was hit; a ``TruncationWarning`` or
        ``ConvergenceWarning`` is then emitted with the numbers.

    Raises
    ------
    ValueError
        On invalid arguments, before any computation.
    """
    if not isinstance(market, Market):
        raise ValueError(f"market must be a Market, got {type(market).__name__}")
    tolerance = check_real("tolerance", tolerance, low=MIN_TOLERANCE, high=0.1)
    if truncation is not None:
        truncation = check_truncation(truncation)
    max_states = check_integer("max_states", max_states, low=4)
    if truncation is not None and (truncation[0] + 1) * (truncation[1] + 1) > max_states:
        states = (truncation[0] + 1) * (truncation[1] + 1)
        raise ValueError(f"truncation {truncation} has {states} states, more than max_states = {max_states}; "
                         "choose a smaller truncation (or raise max_states in the Python API)")
    max_value_iterations = check_integer("max_value_iterations", max_value_iterations, low=1)

    start = time.perf_counter()
    if truncation is not None:
        attempt = _solve_truncated(market, truncation, tolerance, None, max_value_iterations)
        result = _result(market, tolerance, attempt, [attempt], math.nan, start, fixed=True)
        if attempt.evaluation.boundary_mass > tolerance:
            warnings.warn(f"{market}: at the fixed truncation (Q1, Q0) = {truncation} the boundary holds "
                          f"{attempt.evaluation.boundary_mass:.3g} of the time (tolerance {tolerance:.3g}); "
                          "the answer is exact for the truncated model only", TruncationWarning, stacklevel=2)
    else:
        result = _solve_growing(market, tolerance, max_states, max_value_iterations, start)
    if not result.converged:
        category = TruncationWarning if "truncation" in result.message else ConvergenceWarning
        warnings.warn(f"{market}: {result.message}", category, stacklevel=2)
    return result


def true_gap_bracket(market: Market, tolerance: float = 1e-8, **options) -> TrueGapBracket:
    """Solve both pool-wait models and return the interval that contains the true gap.

    ``market.wait_model`` is ignored; ``options`` go to :func:`solve_best_deviation`.
    """
    if not isinstance(market, Market):
        raise ValueError(f"market must be a Market, got {type(market).__name__}")
    all_servers = solve_best_deviation(market.replace(wait_model="all"), tolerance, **options)
    others_only = solve_best_deviation(market.replace(wait_model="others"), tolerance, **options)
    exact_crp = all_servers.crp_cost
    return TrueGapBracket(
        gap_lower=(exact_crp - others_only.best_cost) / others_only.best_cost,
        gap_upper=(exact_crp - all_servers.best_cost) / all_servers.best_cost,
        certified_lower=(exact_crp - others_only.upper_bound) / others_only.upper_bound,
        certified_upper=(exact_crp - all_servers.lower_bound) / all_servers.lower_bound,
        crp_cost=exact_crp,
        all_servers=all_servers,
        others_only=others_only,
    )


# Truncation management.

@dataclass
class _Attempt:
    truncation: tuple
    solution: DualSolution
    policy: Policy
    deterministic: tuple
    evaluation: PolicyEvaluation


def initial_truncation(market: Market, tolerance: float) -> tuple:
    """Return a first (Q1, Q0) guess: the pool geometric tail below the tolerance, a short own queue.

    Under complete pooling the pool is geometric with ratio lambda, so
    P(q0 = Q0) is about (1 - lambda) lambda^Q0. The own queue of a good
    deviation is short; the boundary check grows Q1 (or Q0) when it is not.
    """
    rate = market.arrival_rate
    tail = math.log(0.25 * tolerance / (1.0 - rate)) / math.log(rate)
    return (max(4, math.ceil(0.1 * tail)), max(8, math.ceil(tail) + 2))


def _solve_growing(market, tolerance, max_states, max_value_iterations, start):
    own_limit, pool_limit = initial_truncation(market, tolerance)
    attempts = []
    values = None
    price_hint = None
    while True:
        attempt = _solve_truncated(market, (own_limit, pool_limit), tolerance, values,
                                   max_value_iterations, price_hint)
        attempts.append(attempt)
        evaluation = attempt.evaluation
        change = math.nan
        if len(attempts) >= 2:
            previous = attempts[-2].solution.upper_bound
            change = abs(attempt.solution.upper_bound - previous) / abs(attempt.solution.upper_bound)

        grow_own = evaluation.own_boundary_mass > 0.5 * tolerance
        grow_pool = evaluation.pool_boundary_mass > 0.5 * tolerance
        settled = not (grow_own or grow_pool) and change <= tolerance
        if settled or not attempt.solution.converged:
            return _result(market, tolerance, attempt, attempts, change, start)

        if grow_own or grow_pool:
            # The boundary is visited too often: grow the side that is hit.
            own_factor, pool_factor = 2.0, 1.5
        else:
            # The boundary mass is small: confirm with one larger truncation.
            grow_own = grow_pool = True
            own_factor = pool_factor = 1.25
        next_own = math.ceil(own_limit * own_factor) + 1 if grow_own else own_limit
        next_pool = math.ceil(pool_limit * pool_factor) + 1 if grow_pool else pool_limit
        if (next_own + 1) * (next_pool + 1) > max_states:
            result = _result(market, tolerance, attempt, attempts, change, start)
            message = (f"truncation limit reached at (Q1, Q0) = {attempt.truncation} "
                       f"(max_states = {max_states}): boundary mass {evaluation.boundary_mass:.3g}, "
                       f"change from the previous truncation {change:.3g}, tolerance {tolerance:.3g}")
            return _replace(result, converged=False, message=message)
        values = _embed(attempt.solution.values, (next_own, next_pool))
        price_hint = attempt.solution.token_price
        own_limit, pool_limit = next_own, next_pool


def _solve_truncated(market, truncation, tolerance, values, max_value_iterations,
                     price_hint=None) -> _Attempt:
    chain = market_chain(market, truncation)
    search = DualSearch(chain, tolerance, crp_cost(market), values, max_value_iterations)
    solution = search.run(price_hint)
    low, high = solution.low, solution.high
    metadata = {"source": "solve_best_deviation", "market": market.as_dict(),
                "token_price": solution.token_price}
    high_policy = Policy.deterministic(market, high.send, high.capacity, metadata)
    if low is None or solution.mixing_weight >= 1.0:
        return _Attempt(truncation, solution, high_policy, (high_policy,), high.evaluation)

    low_policy = Policy.deterministic(market, low.send, low.capacity, metadata)
    transfer, capacity = mix_policies(low.evaluation, (low.send, low.capacity),
                                      high.evaluation, (high.send, high.capacity),
                                      solution.mixing_weight)
    mixed = Policy(market, truncation, transfer, capacity,
                   dict(metadata, mixing_weight=solution.mixing_weight))
    evaluation = evaluate_chain(chain, mixed.transfer_probability, mixed.capacity_probabilities)
    if evaluation.token_rate > 1e3 * TOKEN_RATE_SLACK or not math.isclose(
            evaluation.cost, solution.upper_bound, rel_tol=1e-7, abs_tol=0.0):
        # The two policies' recurrent classes do not combine into one stationary
        # policy; fall back to the feasible deterministic one.
        solution.upper_bound = high.evaluation.cost
        width = (solution.upper_bound - solution.lower_bound) / abs(solution.upper_bound)
        solution.converged = solution.converged and width <= tolerance
        solution.message = ("the mixture of the two bracketing policies does not reproduce their "
                            "mixed cost (their recurrent classes differ); reporting the feasible "
                            f"deterministic policy, relative interval width {width:.3g}")
        return _Attempt(truncation, solution, high_policy, (high_policy,), high.evaluation)
    return _Attempt(truncation, solution, mixed, (low_policy, high_policy), evaluation)


def _result(market, tolerance, attempt, attempts, change, start, fixed=False) -> DeviationResult:
    solution = attempt.solution
    evaluation = attempt.evaluation
    crp = crp_cost(market)
    best = evaluation.cost
    lower = min(solution.lower_bound, best)
    converged = solution.converged
    message = solution.message
    if not fixed:
        truncation_settled = evaluation.boundary_mass <= tolerance and change <= tolerance
        if converged and not truncation_settled:
            converged = False
            message = (f"truncation not settled at (Q1, Q0) = {attempt.truncation}: boundary mass "
                       f"{evaluation.boundary_mass:.3g}, change {change:.3g}, tolerance {tolerance:.3g}")
        else:
            message += f"; truncation change {change:.2g}"
    else:
        message += f"; fixed truncation, boundary mass {evaluation.boundary_mass:.2g}"
    if len(attempt.deterministic) == 2:
        weight = solution.mixing_weight
    else:
        weight = 1.0
    return DeviationResult(
        market=market, tolerance=tolerance, best_cost=best, lower_bound=lower, upper_bound=best,
        crp_cost=crp, gap=(crp - best) / best, gap_lower=(crp - best) / best,
        gap_upper=(crp - lower) / lower, token_price=solution.token_price,
        policy=attempt.policy, deterministic_policies=attempt.deterministic, mixing_weight=weight,
        request_rate=evaluation.request_rate, offer_rate=evaluation.offer_rate,
        token_rate=evaluation.token_rate, mean_own_queue=evaluation.mean_own_queue,
        mean_pool_length=evaluation.mean_pool_length, boundary_mass=evaluation.boundary_mass,
        lost_rate=evaluation.lost_rate, truncation=attempt.truncation, truncation_change=change,
        truncation_fixed=fixed,
        stationary_distribution=evaluation.stationary_distribution,
        value_iterations=sum(a.solution.value_iterations for a in attempts),
        prices_tried=sum(a.solution.prices_tried for a in attempts),
        evaluations=sum(a.solution.evaluations for a in attempts),
        seconds=time.perf_counter() - start, converged=converged, message=message,
    )


def _replace(result: DeviationResult, **changes) -> DeviationResult:
    values = {name: getattr(result, name) for name in result.__dataclass_fields__}
    values.update(changes)
    return DeviationResult(**values)


def _embed(values: np.ndarray, truncation: tuple) -> np.ndarray:
    """Extend relative values to a larger grid by repeating the last row and column."""
    own_limit, pool_limit = truncation
    rows = np.minimum(np.arange(own_limit + 1), values.shape[0] - 1)
    cols = np.minimum(np.arange(pool_limit + 1), values.shape[1] - 1)
    return values[np.ix_(rows, cols)].copy()
