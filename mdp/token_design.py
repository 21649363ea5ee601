"""Which token probability phi the designer should choose.

For a market of N servers that all play the fluid best response to phi, the
jobs in system are ``Q(phi) = N q(phi) + E[pool]``. For ``phi >= lambda`` no
server keeps jobs and ``Q = phi / (1 - phi)`` exactly, which grows with phi.
For ``phi < lambda`` every server keeps ``q(phi) > 0`` jobs, so ``N q`` grows
linearly in N, while the mean-field pool wait ``1 / (N (1 - lambda))`` is the
same as at phi = lambda. The market is sustainable when the pool wait is at
most ``1 + c - c_help``. Among sustainable markets phi = lambda gives the
fewest jobs, in the mean-field formula and with the exact finite-N pool of
:mod:`mdp.exact_pool`; :func:`scan_token_probability` computes Q over a grid
of phi and reports the best sustainable one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .equilibrium import fluid_equilibrium
from .exact_pool import MAX_PHASES, exact_pool, phase_count, policy_levels
from .validation import check_real


@dataclass(frozen=True, eq=False)
class TokenProbabilityScan:
    """Jobs in system over a grid of token probabilities for one market.

    Attributes
    ----------
    arrival_rate, servers, processing_cost, help_cost
        The market parameters lambda, N, c and c_help.
    exact : bool
        Whether the pool was evaluated exactly (else mean-field for phi < lambda).
    token_probabilities : ndarray
        The grid of phi, increasing; it always contains lambda.
    jobs_in_system : ndarray
        Q(phi) at every grid point. Where ``is_lower_bound`` is set it is only
        ``N q(phi)``, a lower bound, because the exact pool had too many phases.
    pool_wait : ndarray
        Pool wait w(phi); nan where ``is_lower_bound`` is set.
    is_sustainable : ndarray of bool
        Whether ``w <= 1 + c - c_help``; False where it is unknown.
    pool_is_mean_field : ndarray of bool
        True where Q and w use the mean-field pool (phi < lambda without ``exact``).
    is_lower_bound : ndarray of bool
        True where only the lower bound ``N q(phi)`` is known.
    best_token_probability : float
        The sustainable grid point with the fewest jobs, lambda when it ties
        with others; nan if none is sustainable.
    best_jobs_in_system : float
        Q at that point; nan if none is sustainable.
    is_conclusive : bool
        False if some lower bound lies below ``best_jobs_in_system``, so that an
        unevaluated point might do better.
    """

    arrival_rate: float
    servers: int
    processing_cost: float
    help_cost: float
    exact: bool
    token_probabilities: np.ndarray
    jobs_in_system: np.ndarray
    pool_wait: np.ndarray
    is_sustainable: np.ndarray
    pool_is_mean_field: np.ndarray
    is_lower_bound: np.ndarray
    best_token_probability: float
    best_jobs_in_system: float
    is_conclusive: bool


def default_token_grid(arrival_rate: float) -> np.ndarray:
    """Return phi = 0.02, 0.04, ..., 0.98 together with lambda, sorted."""
    grid = np.round(np.linspace(0.02, 0.98, 49), 12)
    return np.unique(np.append(grid, arrival_rate))


def scan_token_probability(arrival_rate: float, servers: int, token_probabilities=None,
                           exact: bool = False, processing_cost: float = 1.0,
                           help_cost: float | None = None) -> TokenProbabilityScan:
    """Compute the jobs in system over a grid of phi and find the best sustainable phi.

    Parameters
    ----------
    arrival_rate : float
        lambda, in (0, 1).
    servers : int
        Number of servers N, at least 2.
    token_probabilities : array_like or None
        The phi to try, each in (0, 1); lambda is added if missing. None uses
        :func:`default_token_grid`.
    exact : bool, default False
        Evaluate the pool exactly for phi < lambda. Grid points whose chain has
        more than :data:`mdp.exact_pool.MAX_PHASES` phases get the lower bound
        ``N q(phi)`` instead (see ``is_lower_bound``).
    processing_cost, help_cost : float
        c and c_help, which set the sustainable wait ``1 + c - c_help``.

    Returns
    -------
    TokenProbabilityScan

    Raises
    ------
    ValueError
        If a parameter or a grid point is outside its range.
    """
    reference = fluid_equilibrium(arrival_rate, servers, None, processing_cost, help_cost)
    rate = reference.arrival_rate
    grid = default_token_grid(rate) if token_probabilities is None else _check_grid(token_probabilities, rate)

    size = grid.size
    jobs = np.empty(size)
    waits = np.empty(size)
    sustainable = np.zeros(size, dtype=bool)
    mean_field = np.zeros(size, dtype=bool)
    lower_bound = np.zeros(size, dtype=bool)
    for position, phi in enumerate(grid):
        point = fluid_equilibrium(rate, reference.servers, phi, processing_cost, help_cost)
        if not (exact and point.pool_is_mean_field):
            jobs[position], waits[position] = point.jobs_in_system, point.pool_wait
            sustainable[position], mean_field[position] = point.is_sustainable, point.pool_is_mean_field
        elif _exact_is_affordable(point):
            truth = exact_pool(rate, reference.servers, phi, processing_cost, help_cost)
            jobs[position], waits[position] = truth.jobs_in_system, truth.pool_wait
            sustainable[position] = truth.is_sustainable
        else:
            jobs[position] = reference.servers * point.best_response.mean_own_queue
            waits[position] = math.nan
            lower_bound[position] = True

    best_value, best_phi = math.nan, math.nan
    if sustainable.any():
        candidates = np.where(sustainable, jobs, np.inf)
        best = int(np.argmin(candidates))
        # At N = 1 / (1 - lambda) exactly, the mean-field Q is flat on [lambda^2, lambda],
        # so ties are real; report lambda whenever it attains the minimum.
        at_rate = int(np.argmin(np.abs(grid - rate)))
        if sustainable[at_rate] and jobs[at_rate] <= jobs[best] * (1.0 + 1e-9):
            best = at_rate
        best_value, best_phi = float(jobs[best]), float(grid[best])
    conclusive = not np.any(lower_bound & (jobs < best_value)) if sustainable.any() else not lower_bound.any()

    return TokenProbabilityScan(
        arrival_rate=rate, servers=reference.servers,
        processing_cost=reference.processing_cost, help_cost=reference.help_cost, exact=exact,
        token_probabilities=grid, jobs_in_system=jobs, pool_wait=waits, is_sustainable=sustainable,
        pool_is_mean_field=mean_field, is_lower_bound=lower_bound,
        best_token_probability=best_phi, best_jobs_in_system=best_value, is_conclusive=bool(conclusive),
    )


def _check_grid(token_probabilities, arrival_rate: float) -> np.ndarray:
    values = [check_real("token_probabilities", value, low=0.0, high=1.0, low_open=True, high_open=True)
              for value in np.ravel(np.asarray(token_probabilities, dtype=object))]
    if not values:
        raise ValueError("token_probabilities must contain at least one value, got an empty grid")
    return np.unique(np.append(np.array(values, dtype=np.float64), arrival_rate))


def _exact_is_affordable(point) -> bool:
    response = point.best_response
    levels = policy_levels(response.threshold, response.keep_probability)
    return phase_count(point.servers, levels) <= MAX_PHASES
