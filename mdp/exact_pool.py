"""Exact stationary pool of a finite symmetric market on the threshold policy.

Every one of N servers plays the fluid best response to phi (see
:mod:`mdp.equilibrium`): it keeps at most k own jobs, sends the others to the
pool and offers help whenever its own queue is empty. Let ``n = (n_0, ..., n_top)``
count the servers at each own-queue level and let L be the pool length. Then
``(L, n)`` is a continuous-time quasi-birth-death (QBD) process with level L
and phase n:

- a phase changes when a server keeps an arriving job (``j -> j + 1``) or
  processes an own job (``j -> j - 1``); these moves do not depend on L;
- L rises by one at rate ``a(n) = lambda sum_j n_j (1 - keep_j)``, the sends;
- L falls by one at rate ``d(n) = n_0 x offer rate``, the offers, if L > 0.

So the level-independent blocks are ``A0 = diag(a)``, ``A2 = diag(d)`` and
``A1 = Q - diag(a + d)`` with Q the phase generator, and level 0 has
``B1 = Q - diag(a)``. The stationary law is matrix-geometric,
``pi_L = pi_0 R^L``, where R is the minimal solution of
``A0 + R A1 + R^2 A2 = 0`` (Neuts, *Matrix-Geometric Solutions in Stochastic
Models*, 1981). R is computed from the first-passage matrix G by logarithmic
reduction (Latouche and Ramaswami, J. Appl. Prob. 30, 1993), with
``R = A0 (-A1 - A0 G)^(-1)``; ``pi_0`` solves ``pi_0 (B1 + R A2) = 0`` and
``pi_0 (I - R)^(-1) 1 = 1``. There is no truncation of L, so the only error is
the convergence of the reduction, reported as the residual of the R equation.

The mean pool is ``pi_0 R (I - R)^(-2) 1``, the pool wait follows from
Little's law as ``E[L] / (N r)`` with r the per-server request rate, and
``Q = N q + E[L]``. Phases number ``C(N + top, top)``; the dense linear
algebra limits them to :data:`MAX_PHASES`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np

try:
    from threadpoolctl import threadpool_limits
except ImportError:
    threadpool_limits = None

from .equilibrium import FluidEquilibrium, _at_most, fluid_equilibrium

MAX_PHASES = 1000
"""Largest number of phases the exact evaluation accepts.

Logarithmic reduction takes about ten dense m x m inversions and thirty
products; m = 990 (N = 43, k = 2) took 2 to 5 seconds on a shared, busy 2-core
x86 machine, and memory grows like m^2. The limit admits N <= 998 servers at
k = 1, N <= 43 at k = 2, N <= 16 at k = 3 and N <= 9 at k = 4; any N works
when no server keeps jobs (phi >= lambda), because there is one phase.
"""

_REDUCTION_STEPS = 64
_NEGLIGIBLE = 1e-250


@dataclass(frozen=True, eq=False)
class ExactPoolResult:
    """Exact stationary figures of a finite symmetric market on the threshold policy.

    Attributes
    ----------
    arrival_rate, servers, token_probability, processing_cost, help_cost
        The market parameters lambda, N, phi, c and c_help.
    threshold, keep_probability
        k and p of the policy every server plays.
    phases : int
        Number of phases (own-queue count vectors) of the QBD.
    mean_pool_length : float
        Exact mean pool length E[L].
    pool_busy_probability : float
        Exact P(L > 0).
    pool_wait : float
        Exact mean time in the pool, E[L] / (N r) by Little's law.
    mean_own_queue : float
        q per server (the own queues do not depend on the pool, so this equals the closed form).
    request_rate : float
        r per server.
    jobs_in_system : float
        Exact Q = N q + E[L].
    cost_per_server : float
        c (lambda - r) + c_help r + q + r w with the exact w.
    wait_limit : float
        1 + c - c_help.
    is_sustainable : bool
        Whether the exact ``pool_wait <= wait_limit``.
    residual : float
        Largest entry of ``|A0 + R A1 + R^2 A2|``, the numerical error of R.
    mean_field : FluidEquilibrium
        The mean-field figures of the same market, for comparison.
    """

    arrival_rate: float
    servers: int
    token_probability: float
    processing_cost: float
    help_cost: float
    threshold: int
    keep_probability: float
    phases: int
    mean_pool_length: float
    pool_busy_probability: float
    pool_wait: float
    mean_own_queue: float
    request_rate: float
    jobs_in_system: float
    cost_per_server: float
    wait_limit: float
    is_sustainable: bool
    residual: float
    mean_field: FluidEquilibrium


def phase_count(servers: int, levels: int) -> int:
    """Return the number of ways to place ``servers`` servers on ``levels`` own-queue levels."""
    return math.comb(servers + levels - 1, levels - 1)


def policy_levels(threshold: int, keep_probability: float) -> int:
    """Return how many own-queue levels the threshold policy reaches: k + 1, or k when p = 0 (at least 1)."""
    if threshold >= 1 and keep_probability == 0.0:
        return threshold
    return threshold + 1


def exact_pool(arrival_rate: float, servers: int, token_probability: float | None = None,
               processing_cost: float = 1.0, help_cost: float | None = None) -> ExactPoolResult:
    """Compute the exact stationary pool of N servers that all play the threshold best response to phi.

    Parameters
    ----------
    arrival_rate : float
        Job arrival rate per server, lambda, in (0, 1).
    servers : int
        Number of servers N, at least 2.
    token_probability : float or None
        phi in (0, 1); None means phi = lambda.
    processing_cost : float, default 1.0
        Cost c of processing an own job.
    help_cost : float or None
        Cost c_help of processing a pool job; None means c.

    Returns
    -------
    ExactPoolResult

    Raises
    ------
    ValueError
        If a parameter is outside its range, or if the chain has more than
        :data:`MAX_PHASES` phases (the error message gives the count and
        points to the simulator).

    Notes
    -----
    For phi >= lambda no server keeps a job, there is one phase and the pool
    is exactly M/M/1 with utilisation phi; this function then agrees with
    :func:`mdp.equilibrium.fluid_equilibrium` to rounding.
    """
    mean_field = fluid_equilibrium(arrival_rate, servers, token_probability, processing_cost, help_cost)
    response = mean_field.best_response
    # Level k is unreachable when p = 0, so the policy keeps at most k - 1 jobs.
    levels = policy_levels(response.threshold, response.keep_probability)
    keep = response.keep_probabilities[:levels].copy()
    keep[-1] = 0.0
    count = phase_count(mean_field.servers, levels)
    if count > MAX_PHASES:
        raise ValueError(
            f"the exact pool for servers={mean_field.servers} and threshold k={response.threshold} "
            f"has {count} phases, more than the {MAX_PHASES} this evaluation handles; "
            f"use fewer servers, a token_probability closer to arrival_rate, "
            f"or estimate the pool with `pooling-mdp simulate`")

    phases = _enumerate_phases(mean_field.servers, levels)
    generator, sends, offers = _phase_blocks(phases, mean_field.arrival_rate, keep,
                                             response.offer_probability)
    with _single_threaded_blas():
        rate_matrix, residual = _rate_matrix(generator, sends, offers)
        mean_pool, busy = _pool_moments(generator, sends, offers, rate_matrix)

    servers_count = mean_field.servers
    request = response.request_rate
    wait = mean_pool / (servers_count * request)
    queue = response.mean_own_queue
    cost = (mean_field.processing_cost * (mean_field.arrival_rate - request)
            + mean_field.help_cost * request + queue + request * wait)
    return ExactPoolResult(
        arrival_rate=mean_field.arrival_rate,
        servers=servers_count,
        token_probability=mean_field.token_probability,
        processing_cost=mean_field.processing_cost,
        help_cost=mean_field.help_cost,
        threshold=response.threshold,
        keep_probability=response.keep_probability,
        phases=count,
        mean_pool_length=mean_pool,
        pool_busy_probability=busy,
        pool_wait=wait,
        mean_own_queue=queue,
        request_rate=request,
        jobs_in_system=servers_count * queue + mean_pool,
        cost_per_server=cost,
        wait_limit=mean_field.wait_limit,
        is_sustainable=_at_most(wait, mean_field.wait_limit),
        residual=residual,
        mean_field=mean_field,
    )


@dataclass(frozen=True)
class ExactMinimumServers:
    """The smallest market whose exact pool wait is within the limit.

    Attributes
    ----------
    arrival_rate, token_probability, wait_limit
        lambda, phi and the largest sustainable wait 1 + c - c_help.
    minimum_servers : int or None
        Smallest N >= 2 with exact ``pool_wait <= wait_limit``; None when wait_limit <= 0.
    pool_wait : float
        Exact pool wait at that N (nan when there is none).
    previous_pool_wait : float
        Exact pool wait at N - 1 (nan when N = 2 or there is none).
    mean_field_minimum_servers : int or None
        The mean-field N_min of the same market, for comparison.
    """

    arrival_rate: float
    token_probability: float
    wait_limit: float
    minimum_servers: int | None
    pool_wait: float
    previous_pool_wait: float
    mean_field_minimum_servers: int | None


def exact_minimum_servers(arrival_rate: float, token_probability: float | None = None,
                          processing_cost: float = 1.0, help_cost: float | None = None) -> ExactMinimumServers:
    """Find the smallest N whose exact pool wait is at most 1 + c - c_help, by trying N = 2, 3, ...

    Parameters
    ----------
    arrival_rate, token_probability, processing_cost, help_cost
        As for :func:`exact_pool`.

    Returns
    -------
    ExactMinimumServers

    Raises
    ------
    ValueError
        If a parameter is invalid, or if the search reaches a market with more
        than :data:`MAX_PHASES` phases before the wait falls below the limit.
    """
    first = exact_pool(arrival_rate, 2, token_probability, processing_cost, help_cost)
    rate, phi, limit = first.arrival_rate, first.token_probability, first.wait_limit
    mean_field_minimum = first.mean_field.minimum_servers
    if limit <= 0.0:
        return ExactMinimumServers(rate, phi, limit, None, math.nan, math.nan, None)

    if not first.mean_field.pool_is_mean_field:
        # No server keeps jobs, so the pool is exactly M/M/1 and the closed-form N_min is exact.
        servers = mean_field_minimum
        wait = exact_pool(rate, servers, phi, processing_cost, help_cost).pool_wait
        previous = math.nan if servers == 2 else exact_pool(rate, servers - 1, phi, processing_cost,
                                                            help_cost).pool_wait
        return ExactMinimumServers(rate, phi, limit, servers, wait, previous, mean_field_minimum)

    previous_wait, result, servers = math.nan, first, 2
    while not result.is_sustainable:
        previous_wait = result.pool_wait
        servers += 1
        result = exact_pool(rate, servers, phi, processing_cost, help_cost)
    return ExactMinimumServers(rate, phi, limit, servers, result.pool_wait, previous_wait, mean_field_minimum)


# ---------------------------------------------------------------------------
# Building the blocks.
# ---------------------------------------------------------------------------

def _single_threaded_blas():
    """Limit BLAS to one thread while the context is open, if threadpoolctl is installed.

    With OpenBLAS 0.3 on a busy 2-core machine, threaded inversions of 165 x 165
    matrices were measured 100 times slower than single-threaded ones, and the
    matrices here are too small to gain from threads.
    """
    if threadpool_limits is None:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _enumerate_phases(servers: int, levels: int) -> np.ndarray:
    """Return every vector of ``levels`` non-negative counts summing to ``servers``, one per row."""
    rows = []

    def extend(prefix, remaining, slots):
        if slots == 1:
            rows.append(prefix + [remaining])
            return
        for first in range(remaining, -1, -1):
            extend(prefix + [first], remaining - first, slots - 1)

    extend([], servers, levels)
    return np.array(rows, dtype=np.int64)


def _phase_blocks(phases: np.ndarray, arrival_rate: float, keep: np.ndarray, offer_probability: float):
    """Return (phase generator Q, send rates a, offer rates d) for the given phases."""
    size, levels = phases.shape
    index = {tuple(row): position for position, row in enumerate(phases.tolist())}
    generator = np.zeros((size, size))

    for position, row in enumerate(phases.tolist()):
        for level in range(levels):
            if row[level] == 0:
                continue
            moves = []
            if level + 1 < levels and keep[level] > 0.0:
                moves.append((level + 1, arrival_rate * keep[level] * row[level]))
            if level >= 1:
                moves.append((level - 1, float(row[level])))
            for target_level, rate in moves:
                target = list(row)
                target[level] -= 1
                target[target_level] += 1
                generator[position, index[tuple(target)]] += rate

    np.fill_diagonal(generator, -generator.sum(axis=1))
    sends = arrival_rate * (phases @ (1.0 - keep))
    offers = offer_probability * phases[:, 0].astype(np.float64)
    return generator, sends, offers


def _rate_matrix(generator: np.ndarray, sends: np.ndarray, offers: np.ndarray):
    """Return (R, residual) of the QBD by logarithmic reduction."""
    size = generator.shape[0]
    identity = np.eye(size)
    local = generator - np.diag(sends + offers)

    # Embedded jumps at level changes: up = (-A1)^-1 A0, down = (-A1)^-1 A2.
    inverse = np.linalg.inv(-local)
    up = inverse * sends[None, :]
    down = inverse * offers[None, :]
    passage = down.copy()
    product = up.copy()
    for _ in range(_REDUCTION_STEPS):
        mixing = np.linalg.inv(identity - up @ down - down @ up)
        up, down = mixing @ (up @ up), mixing @ (down @ down)
        # Repeated squaring drives entries towards subnormal floats, which x86 handles far
        # more slowly than normal ones. Entries this small cannot change G.
        up[np.abs(up) < _NEGLIGIBLE] = 0.0
        down[np.abs(down) < _NEGLIGIBLE] = 0.0
        increment = product @ down
        passage += increment
        product = product @ up
        # G is stochastic, but rounding can keep its row sums from reaching 1 at large m.
        # The loop therefore also stops once a step no longer changes G.
        if (np.max(np.abs(1.0 - passage.sum(axis=1))) < 1e-13
                or np.max(np.abs(increment)) < 1e-17):
            break

    # R = A0 (-A1 - A0 G)^-1, and R's rows vanish where nothing is sent.
    rate_matrix = sends[:, None] * np.linalg.inv(-local - sends[:, None] * passage)
    residual = np.diag(sends) + rate_matrix @ local + (rate_matrix @ rate_matrix) * offers[None, :]
    return rate_matrix, float(np.max(np.abs(residual)))


def _pool_moments(generator, sends, offers, rate_matrix):
    """Return (E[L], P(L > 0)) of the stationary law pi_L = pi_0 R^L."""
    size = generator.shape[0]
    identity = np.eye(size)
    boundary = generator - np.diag(sends) + rate_matrix * offers[None, :]
    fundamental = np.linalg.inv(identity - rate_matrix)

    # Replace one balance equation by the normalisation pi_0 (I - R)^-1 1 = 1.
    system = boundary.copy()
    system[:, 0] = fundamental.sum(axis=1)
    right = np.zeros(size)
    right[0] = 1.0
    empty_pool = np.linalg.solve(system.T, right)

    mean_pool = float(empty_pool @ rate_matrix @ fundamental @ fundamental.sum(axis=1))
    return mean_pool, float(1.0 - empty_pool.sum())

