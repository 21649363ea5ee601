"""Closed forms of the symmetric market: no pooling, complete pooling and the fluid mean-field equilibrium.

Every one of N servers receives jobs at rate lambda < 1 and capacity units at
rate 1. A waiting job costs its owner 1 per unit of time, processing an own job
costs c and processing a pool job costs c_help.

*No pooling.* Each server is an M/M/1 queue: lambda / (1 - lambda) jobs per
server and a cost of ``c lambda + lambda / (1 - lambda)`` per server.

*Complete resource pooling (CRP).* Every job is sent to the pool at once and
every capacity unit is offered as help, so the pool is an M/M/1 queue with
arrival rate N lambda and service rate N. It holds lambda / (1 - lambda) jobs
in total, a job waits ``w = 1 / (N (1 - lambda))`` in it, and each server
pays ``c_help lambda + lambda w`` per unit time. A server prefers sending a job (wait w,
then one token, which one processed pool job earns back at cost c_help) to
keeping it (about one time unit of waiting, then cost c) exactly when
``w <= 1 + c - c_help``.

*Fluid mean-field equilibrium.* Each server assumes that a request waits w and
that the pool is busy with probability phi, the token probability. For
``w < 1`` and ``c_help = c`` its best response is a threshold policy. With
``phi <= lambda`` it keeps at most ``k = floor(log_lambda(phi))`` jobs: an
arrival to fewer than k - 1 jobs is kept, an arrival to k - 1 jobs is kept with
probability ``p = (lambda^k - phi) / (lambda^k - lambda^(k+1))``, an arrival to
k jobs is sent, and a capacity unit processes an own job when there is one and
is offered as help otherwise. With ``phi > lambda`` every job is sent (k = 0)
and a fraction lambda / phi of the capacity units is offered. The own queue is
a birth-death chain with law ``pi_j ~ lambda^j`` (j < k), ``pi_k ~ p lambda^k``;
the request rate r and the offer rate o satisfy ``r = phi o``, and the own-queue
work ``1 - pi_0`` equals ``lambda - r``, so ``o (1 - phi) = 1 - lambda`` for
every ``phi <= lambda``. All of this is exact.

The pool is then modelled as an M/M/1 queue with utilisation phi:
``E[pool] = phi / (1 - phi)`` and ``w = 1 / (N o (1 - phi))``. For
``phi >= lambda`` nobody keeps jobs and this is exact. For ``phi < lambda`` it
is the mean-field approximation: servers send when their queue is full and
help when it is empty, so at finite N requests and offers arrive in correlated
bursts and the true pool is longer (:mod:`mdp.exact_pool` computes it). Every
result below says which of its pool numbers are mean-field.

Jobs in system ``Q = N q + E[pool]``; cost per server
``c (lambda - r) + c_help r + q + r w``; the equilibrium needs
``w <= 1 + c - c_help``, so the smallest sustainable market is
``N_min = ceil(1 / (o (1 - phi)))`` with c_help = c, which is
``ceil(1 / (1 - lambda))`` for every ``phi <= lambda``.

Floors and ceilings of computed ratios use a relative tolerance of 1e-9, so
that exact powers ``phi = lambda^j`` give ``k = j`` and ``1 / (1 - 0.8)``,
which is 5.000000000000001 in floating point, gives 5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .model import Market
from .validation import check_real

RELATIVE_TOLERANCE = 1e-9


def robust_floor(value: float) -> int:
    """Return floor(value), treating a value within a relative 1e-9 of an integer as that integer."""
    nearest = round(value)
    if abs(value - nearest) <= RELATIVE_TOLERANCE * max(1.0, abs(value)):
        return int(nearest)
    return math.floor(value)


def robust_ceil(value: float) -> int:
    """Return ceil(value), treating a value within a relative 1e-9 of an integer as that integer."""
    nearest = round(value)
    if abs(value - nearest) <= RELATIVE_TOLERANCE * max(1.0, abs(value)):
        return int(nearest)
    return math.ceil(value)


def _is_close(a: float, b: float) -> bool:
    return abs(a - b) <= RELATIVE_TOLERANCE * max(1.0, abs(a), abs(b))


def _market(arrival_rate, servers, token_probability=None, processing_cost=1.0, help_cost=None) -> Market:
    """Validate the symmetric-market parameters through :class:`~mdp.model.Market`."""
    return Market(arrival_rate=arrival_rate, servers=servers, processing_cost=processing_cost,
                  help_cost=help_cost, token_probability=token_probability)


def _minimum_servers_for(rate_product: float, wait_limit: float) -> int | None:
    """Return the smallest N >= 2 with ``1 / (N rate_product) <= wait_limit``, or None if no N works."""
    if wait_limit <= 0.0:
        return None
    return max(2, robust_ceil(1.0 / (rate_product * wait_limit)))


# ---------------------------------------------------------------------------
# Benchmarks: no pooling and complete pooling.
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class NoPoolingResult:
    """A symmetric market in which every server works alone (N independent M/M/1 queues).

    Attributes
    ----------
    arrival_rate, servers, processing_cost
        The market parameters lambda, N and c.
    jobs_per_server : float
        Mean jobs at one server, lambda / (1 - lambda).
    jobs_in_system : float
        Mean jobs over all servers, N lambda / (1 - lambda).
    time_in_system : float
        Mean time from a job's arrival to its processing, 1 / (1 - lambda).
    cost_per_server : float
        Long-run cost per server and unit time, c lambda + lambda / (1 - lambda).
    """

    arrival_rate: float
    servers: int
    processing_cost: float
    jobs_per_server: float
    jobs_in_system: float
    time_in_system: float
    cost_per_server: float


def no_pooling(arrival_rate: float, servers: int, processing_cost: float = 1.0) -> NoPoolingResult:
    """Compute the exact benchmark in which no server pools its queue.

    Parameters
    ----------
    arrival_rate : float
        Job arrival rate per server, lambda, in (0, 1).
    servers : int
        Number of servers N, at least 2.
    processing_cost : float, default 1.0
        Cost c of processing a job, at least 0.

    Returns
    -------
    NoPoolingResult

    Raises
    ------
    ValueError
        If a parameter is outside its range.
    """
    market = _market(arrival_rate, servers, processing_cost=processing_cost)
    rate = market.arrival_rate
    per_server = rate / (1.0 - rate)
    return NoPoolingResult(
        arrival_rate=rate,
        servers=market.servers,
        processing_cost=market.processing_cost,
        jobs_per_server=per_server,
        jobs_in_system=market.servers * per_server,
        time_in_system=1.0 / (1.0 - rate),
        cost_per_server=market.processing_cost * rate + per_server,
    )


@dataclass(frozen=True)
class CompletePoolingResult:
    """A symmetric market in which every job goes to the pool and every capacity unit helps.

    The pool is exactly an M/M/1 queue with arrival rate N lambda and service rate N.

    Attributes
    ----------
    arrival_rate, servers, processing_cost, help_cost
        The market parameters lambda, N, c and c_help.
    jobs_in_system : float
        Mean jobs in the pool, lambda / (1 - lambda), whatever N.
    pool_busy_probability : float
        Probability that the pool contains a job, lambda.
    pool_wait : float
        Mean time a job spends in the pool, w = 1 / (N (1 - lambda)).
    cost_per_server : float
        c_help lambda + lambda w: every server processes lambda pool jobs and
        holds its lambda jobs per unit time for w each.
    wait_limit : float
        1 + c - c_help, the largest pool wait at which sending a job beats keeping it.
    is_best_response : bool
        Whether complete pooling is a best response at phi = lambda, that is ``w <= wait_limit``.
    minimum_servers : int or None
        Smallest N >= 2 at which complete pooling is a best response; None if
        ``wait_limit <= 0`` so that no market size makes it one.
    """

    arrival_rate: float
    servers: int
    processing_cost: float
    help_cost: float
    jobs_in_system: float
    pool_busy_probability: float
    pool_wait: float
    cost_per_server: float
    wait_limit: float
    is_best_response: bool
    minimum_servers: int | None


def complete_pooling(arrival_rate: float, servers: int, processing_cost: float = 1.0,
                     help_cost: float | None = None) -> CompletePoolingResult:
    """Compute the exact complete-pooling benchmark and whether it is a best response at phi = lambda.

    Parameters
    ----------
    arrival_rate : float
        Job arrival rate per server, lambda, in (0, 1).
    servers : int
        Number of servers N, at least 2.
    processing_cost : float, default 1.0
        Cost c of processing an own job, at least 0.
    help_cost : float or None
        Cost c_help of processing a pool job; None means c.

    Returns
    -------
    CompletePoolingResult

    Raises
    ------
    ValueError
        If a parameter is outside its range.
    """
    market = _market(arrival_rate, servers, processing_cost=processing_cost, help_cost=help_cost)
    rate = market.arrival_rate
    wait = 1.0 / (market.servers * (1.0 - rate))
    wait_limit = 1.0 + market.processing_cost - market.help_cost
    return CompletePoolingResult(
        arrival_rate=rate,
        servers=market.servers,
        processing_cost=market.processing_cost,
        help_cost=market.help_cost,
        jobs_in_system=rate / (1.0 - rate),
        pool_busy_probability=rate,
        pool_wait=wait,
        cost_per_server=market.help_cost * rate + rate * wait,
        wait_limit=wait_limit,
        is_best_response=_at_most(wait, wait_limit),
        minimum_servers=_minimum_servers_for(1.0 - rate, wait_limit),
    )


def _at_most(value: float, limit: float) -> bool:
    """Return whether value <= limit up to the relative tolerance."""
    return value <= limit or _is_close(value, limit)


# ---------------------------------------------------------------------------
# The fluid best response to a token probability.
# ---------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class BestResponse:
    """The closed-form best response of one server to a token probability (valid for w < 1, c_help = c).

    Attributes
    ----------
    arrival_rate, token_probability
        lambda and phi.
    threshold : int
        k, the largest number of own jobs the server ever keeps; 0 when phi > lambda.
    keep_probability : float
        p, the probability of keeping a job that arrives to k - 1 waiting jobs
        (0 when k = 0 and at every exact power phi = lambda^k).
    offer_probability : float
        Probability that a capacity unit arriving to an empty own queue is
        offered as help: 1 for phi <= lambda, lambda / phi above.
    own_queue_distribution : ndarray, shape (k + 1,)
        Stationary law pi of the own queue, pi_j for j = 0..k.
    mean_own_queue : float
        q = sum_j j pi_j; zero for phi >= lambda.
    request_rate : float
        r, jobs sent to the pool per unit time.
    offer_rate : float
        o, capacity units offered as help per unit time.
    own_processing_rate : float
        Own jobs processed per unit time, lambda - r.
    """

    arrival_rate: float
    token_probability: float
    threshold: int
    keep_probability: float
    offer_probability: float
    own_queue_distribution: np.ndarray
    mean_own_queue: float
    request_rate: float
    offer_rate: float
    own_processing_rate: float

    @property
    def token_balance(self) -> float:
        """Tokens earned minus tokens spent per unit time, phi o - r (zero up to rounding)."""
        return self.token_probability * self.offer_rate - self.request_rate

    @property
    def keep_probabilities(self) -> np.ndarray:
        """Probability of keeping a job that arrives to j waiting jobs, for j = 0..k."""
        keep = np.ones(self.threshold + 1)
        keep[-1] = 0.0
        if self.threshold >= 1:
            keep[self.threshold - 1] = self.keep_probability
        return keep


def threshold_and_keep_probability(arrival_rate: float, token_probability: float) -> tuple[int, float]:
    """Return (k, p) of the best response; see :func:`best_response`.

    ``k = floor(log_lambda(phi))`` is computed with a relative tolerance of
    1e-9, so ``phi = lambda^j`` gives ``k = j`` and ``p = 0``.
    """
    exponent = math.log(token_probability) / math.log(arrival_rate)
    threshold = robust_floor(exponent)
    if threshold < 1:
        return 0, 0.0
    if _is_close(exponent, threshold):
        return threshold, 0.0
    top = arrival_rate ** threshold
    keep = (top - token_probability) / (top - top * arrival_rate)
    return threshold, min(1.0, max(0.0, keep))


def best_response(arrival_rate: float, token_probability: float) -> BestResponse:
    """Compute one server's fluid best response to a token probability phi.

    The policy is the best response whenever the pool wait is below 1 and
    c_help = c; it does not depend on w or N there. For other costs or waits
    solve the one-server fluid problem numerically.

    Parameters
    ----------
    arrival_rate : float
        lambda, in (0, 1).
    token_probability : float
        phi, in (0, 1).

    Returns
    -------
    BestResponse
        The threshold policy and its exact own-queue law and token rates.

    Raises
    ------
    ValueError
        If a rate is outside (0, 1).
    """
    rate = check_real("arrival_rate", arrival_rate, low=0.0, high=1.0, low_open=True, high_open=True)
    phi = check_real("token_probability", token_probability, low=0.0, high=1.0, low_open=True, high_open=True)
    threshold, keep = threshold_and_keep_probability(rate, phi)

    if threshold == 0:
        # Every job is sent; offering a fraction lambda / phi of capacity earns exactly the lambda tokens spent.
        offer_probability = min(1.0, rate / phi)
        return BestResponse(rate, phi, 0, 0.0, offer_probability, np.ones(1), 0.0,
                            rate, offer_probability, 0.0)

    weights = rate ** np.arange(threshold + 1, dtype=np.float64)
    weights[threshold] *= keep
    distribution = weights / weights.sum()
    mean_queue = float(np.arange(threshold + 1) @ distribution)
    # A job arriving to k - 1 jobs is sent with probability 1 - p, to k jobs always.
    request_rate = rate * ((1.0 - keep) * distribution[threshold - 1] + distribution[threshold])
    offer_rate = float(distribution[0])
    distribution.setflags(write=False)
    return BestResponse(rate, phi, threshold, keep, 1.0, distribution, mean_queue,
                        float(request_rate), offer_rate, 1.0 - offer_rate)


# ---------------------------------------------------------------------------
# The market in the fluid mean-field equilibrium.
# ---------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class FluidEquilibrium:
    """A symmetric market in which every server plays the closed-form best response to phi.

    Attributes
    ----------
    arrival_rate, servers, token_probability, processing_cost, help_cost
        The market parameters lambda, N, phi, c and c_help.
    best_response : BestResponse
        The policy every server plays and its exact own-queue figures.
    pool_is_mean_field : bool
        True when phi < lambda: then ``pool_length``, ``pool_busy_probability``,
        ``pool_wait``, ``jobs_in_system``, ``cost_per_server`` and
        ``is_sustainable`` use the M/M/1(phi) approximation of the pool, which
        underestimates the pool at finite N. False when they are exact.
    pool_length : float
        Mean pool length, phi / (1 - phi).
    pool_busy_probability : float
        Probability that the pool contains a job, phi.
    pool_wait : float
        Mean time in the pool, w = 1 / (N o (1 - phi)).
    jobs_in_system : float
        Q = N q + pool_length.
    cost_per_server : float
        c (lambda - r) + c_help r + q + r w.
    wait_limit : float
        1 + c - c_help, the largest wait at which the equilibrium holds.
    is_sustainable : bool
        Whether ``pool_wait <= wait_limit``.
    minimum_servers : int or None
        Smallest N at which ``pool_wait <= wait_limit``, in the same pool model
        as ``pool_wait``; None when ``wait_limit <= 0``.
    closed_form_is_best_response : bool
        Whether the policy is known to be a best response: the market is
        sustainable and either c_help = c or phi = lambda (complete pooling).
        Otherwise solve the one-server fluid problem numerically.
    """

    arrival_rate: float
    servers: int
    token_probability: float
    processing_cost: float
    help_cost: float
    best_response: BestResponse
    pool_is_mean_field: bool
    pool_length: float
    pool_busy_probability: float
    pool_wait: float
    jobs_in_system: float
    cost_per_server: float
    wait_limit: float
    is_sustainable: bool
    minimum_servers: int | None
    closed_form_is_best_response: bool


def fluid_equilibrium(arrival_rate: float, servers: int, token_probability: float | None = None,
                      processing_cost: float = 1.0, help_cost: float | None = None) -> FluidEquilibrium:
    """Compute the fluid mean-field equilibrium of a symmetric market.

    Parameters
    ----------
    arrival_rate : float
        Job arrival rate per server, lambda, in (0, 1).
    servers : int
        Number of servers N, at least 2.
    token_probability : float or None
        phi in (0, 1); None means phi = lambda.
    processing_cost : float, default 1.0
        Cost c of processing an own job, at least 0.
    help_cost : float or None
        Cost c_help of processing a pool job; None means c.

    Returns
    -------
    FluidEquilibrium
        Pool figures are exact for phi >= lambda and mean-field for phi < lambda
        (see ``pool_is_mean_field``).

    Raises
    ------
    ValueError
        If a parameter is outside its range.

    Examples
    --------
    >>> round(fluid_equilibrium(0.8, 10).jobs_in_system, 12)   # complete pooling: 0.8 / 0.2
    4.0
    """
    market = _market(arrival_rate, servers, token_probability, processing_cost, help_cost)
    rate, phi, count = market.arrival_rate, market.token_probability, market.servers
    response = best_response(rate, phi)

    rate_product = response.offer_rate * (1.0 - phi)
    pool_length = phi / (1.0 - phi)
    wait = 1.0 / (count * rate_product)
    wait_limit = 1.0 + market.processing_cost - market.help_cost
    request = response.request_rate
    cost = (market.processing_cost * (rate - request) + market.help_cost * request
            + response.mean_own_queue + request * wait)
    sustainable = _at_most(wait, wait_limit)
    same_costs = _is_close(market.processing_cost, market.help_cost)

    return FluidEquilibrium(
        arrival_rate=rate,
        servers=count,
        token_probability=phi,
        processing_cost=market.processing_cost,
        help_cost=market.help_cost,
        best_response=response,
        pool_is_mean_field=phi < rate and not _is_close(phi, rate),
        pool_length=pool_length,
        pool_busy_probability=phi,
        pool_wait=wait,
        jobs_in_system=count * response.mean_own_queue + pool_length,
        cost_per_server=cost,
        wait_limit=wait_limit,
        is_sustainable=sustainable,
        minimum_servers=_minimum_servers_for(rate_product, wait_limit),
        closed_form_is_best_response=sustainable and (same_costs or _is_close(phi, rate)),
    )


def minimum_servers(arrival_rate: float, token_probability: float | None = None,
                    wait_limit: float = 1.0) -> int | None:
    """Return N_min(phi), the smallest market whose mean-field pool wait is at most ``wait_limit``.

    ``N_min = ceil(1 / (o (1 - phi) wait_limit))``, at least 2, with the
    ceiling taken at a relative tolerance of 1e-9. For every phi <= lambda this
    is ``ceil(1 / (1 - lambda))`` with the default limit, which is exact at
    phi = lambda and mean-field below.

    Parameters
    ----------
    arrival_rate : float
        lambda, in (0, 1).
    token_probability : float or None
        phi, in (0, 1); None means lambda.
    wait_limit : float, default 1.0
        Largest sustainable pool wait, 1 + c - c_help in general.

    Returns
    -------
    int or None
        None when ``wait_limit <= 0``.
    """
    rate = check_real("arrival_rate", arrival_rate, low=0.0, high=1.0, low_open=True, high_open=True)
    phi = rate if token_probability is None else token_probability
    limit = check_real("wait_limit", wait_limit)
    response = best_response(rate, phi)
    return _minimum_servers_for(response.offer_rate * (1.0 - response.token_probability), limit)
