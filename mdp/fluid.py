"""The one-server fluid problem: a best response to the mean-field pool.

One server sees only its own queue q. The pool is replaced by its long-run
summary: a job sent to the pool costs its expected wait ``pool_wait`` (w) plus
one token, and an offer of help processes a pool job with probability phi
(expected cost c_help phi) and earns phi tokens in expectation. The server
minimises holding plus processing cost per unit time subject to requesting no
faster than phi times its offer rate. The problem is the best-deviation MDP
with a one-state pool, solved by the same kernels and the same token dual,
uniformised at lambda + 1.

For w < 1 and c_help = c its solution is the threshold policy of the fluid
mean-field equilibrium; beyond w = 1 + c - c_help the server keeps jobs even
at phi = lambda.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .chain import fluid_chain
from .dual import DualSearch, mix_policies
from .evaluation import evaluate_chain
from .kernels import capacity_one_hot
from .validation import check_integer, check_real


@dataclass(frozen=True, eq=False)
class FluidResponse:
    """Best response of one server to the mean-field pool.

    Attributes
    ----------
    best_cost, lower_bound, upper_bound : float
        Cost per unit time of the returned feasible policy (= upper bound) and
        the certified lower bound of the truncated problem.
    token_price : float
        Optimal token price of the dual.
    transfer_probability : ndarray, shape (Q + 1,)
        Probability of sending one more job when the own queue contains q jobs.
    capacity_probabilities : ndarray, shape (Q + 1, 3)
        Own, help and idle probabilities at a capacity unit.
    request_rate, offer_rate, token_rate : float
        Long-run rates of the returned policy.
    mean_own_queue : float
        Time-average own queue.
    own_queue_distribution : ndarray, shape (Q + 1,)
        Fraction of time with q jobs.
    own_limit : int
        Truncation Q of the own queue.
    boundary_mass : float
        Fraction of time at q = Q.
    converged : bool
        Whether the interval and the boundary mass are within the tolerance.
    message : str
        Why the solve stopped.
    seconds : float
        Wall-clock time.
    """

    best_cost: float
    lower_bound: float
    upper_bound: float
    token_price: float
    transfer_probability: np.ndarray = field(repr=False)
    capacity_probabilities: np.ndarray = field(repr=False)
    request_rate: float
    offer_rate: float
    token_rate: float
    mean_own_queue: float
    own_queue_distribution: np.ndarray = field(repr=False)
    own_limit: int
    boundary_mass: float
    converged: bool
    message: str
    seconds: float


def solve_fluid_best_response(arrival_rate, token_probability, pool_wait, processing_cost=1.0,
                              help_cost=None, tolerance=1e-8, own_limit=None) -> FluidResponse:
    """Solve the one-server fluid problem with certified bounds.

    Parameters
    ----------
    arrival_rate : float
        lambda in (0, 1).
    token_probability : float
        phi in (0, 1).
    pool_wait : float
        Expected wait w >= 0 of a job sent to the pool.
    processing_cost : float, default 1.0
        c >= 0.
    help_cost : float or None
        c_help >= 0; ``None`` means c.
    tolerance : float, default 1e-8
        Relative width of the certified interval and largest boundary mass, in [1e-10, 0.1].
    own_limit : int or None
        Fixed truncation Q of the own queue, or ``None`` to grow it until the
        boundary mass is below the tolerance.

    Returns
    -------
    FluidResponse

    Raises
    ------
    ValueError
        On invalid arguments, before any computation.
    """
    arrival_rate = check_real("arrival_rate", arrival_rate, low=0.0, high=1.0, low_open=True, high_open=True)
    token_probability = check_real("token_probability", token_probability, low=0.0, high=1.0,
                                   low_open=True, high_open=True)
    pool_wait = check_real("pool_wait", pool_wait, low=0.0)
    processing_cost = check_real("processing_cost", processing_cost, low=0.0)
    help_cost = processing_cost if help_cost is None else check_real("help_cost", help_cost, low=0.0)
    tolerance = check_real("tolerance", tolerance, low=1e-10, high=0.1)
    if own_limit is not None:
        own_limit = check_integer("own_limit", own_limit, low=1)

    start = time.perf_counter()
    limit = own_limit or max(8, math.ceil(math.log(tolerance / 4.0) / math.log(arrival_rate)) // 2)
    scale = arrival_rate * (1.0 + processing_cost + help_cost + pool_wait)
    price_hint = None
    while True:
        chain = fluid_chain(arrival_rate, token_probability, pool_wait, processing_cost, help_cost, limit)
        solution = DualSearch(chain, tolerance, scale).run(price_hint)
        transfer, capacity, evaluation = _returned_policy(chain, solution)
        boundary = evaluation.own_boundary_mass
        if own_limit is not None or boundary <= tolerance or limit >= 5000 or not solution.converged:
            break
        limit, price_hint = 2 * limit, solution.token_price

    converged = solution.converged and boundary <= tolerance
    message = solution.message if boundary <= tolerance else (
        f"{solution.message}; boundary mass {boundary:.3g} at own_limit {limit} exceeds the tolerance")
    return FluidResponse(
        best_cost=evaluation.cost, lower_bound=min(solution.lower_bound, evaluation.cost),
        upper_bound=evaluation.cost, token_price=solution.token_price,
        transfer_probability=transfer[:, 0], capacity_probabilities=capacity[:, 0, :],
        request_rate=evaluation.request_rate, offer_rate=evaluation.offer_rate,
        token_rate=evaluation.token_rate, mean_own_queue=evaluation.mean_own_queue,
        own_queue_distribution=evaluation.stationary_distribution[:, 0], own_limit=limit,
        boundary_mass=boundary, converged=converged, message=message,
        seconds=time.perf_counter() - start,
    )


def _returned_policy(chain, solution):
    """Return the arrays and evaluation of the feasible policy the dual search found."""
    one_hot = capacity_one_hot
    high = solution.high
    if solution.low is None or solution.mixing_weight >= 1.0:
        return high.send.astype(np.float64), one_hot(high.capacity), high.evaluation
    low = solution.low
    transfer, capacity = mix_policies(low.evaluation, (low.send, low.capacity),
                                      high.evaluation, (high.send, high.capacity), solution.mixing_weight)
    return transfer, capacity, evaluate_chain(chain, transfer, capacity)
