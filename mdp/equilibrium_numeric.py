"""Numerical check of the closed-form best response with the one-server fluid solver.

At phi = lambda complete pooling is a best response exactly while the pool wait
satisfies ``w <= 1 + c - c_help``: sending a job costs w plus one token, which
one processed pool job earns back at cost c_help, while keeping it costs about
one unit of waiting plus c. :func:`pooling_wait_limit` finds the largest w at
which the numerical best response of :func:`mdp.fluid.solve_fluid_best_response`
still keeps no jobs, by bisection, so that it can be compared with that formula.
"""

from __future__ import annotations

from dataclasses import dataclass

from .fluid import solve_fluid_best_response
from .validation import check_real

KEPT_JOBS_THRESHOLD = 1e-6
"""Mean own queue above which a numerical policy counts as keeping jobs."""


@dataclass(frozen=True)
class PoolingWaitLimit:
    """Where complete pooling stops being a best response at phi = lambda.

    Attributes
    ----------
    arrival_rate, processing_cost, help_cost
        lambda, c and c_help.
    lower, upper : float
        Bracket of pool waits: at ``lower`` the numerical best response keeps
        no jobs, at ``upper`` it keeps some.
    closed_form : float
        1 + c - c_help.
    solves : int
        Number of fluid problems solved.
    """

    arrival_rate: float
    processing_cost: float
    help_cost: float
    lower: float
    upper: float
    closed_form: float
    solves: int

    @property
    def estimate(self) -> float:
        """Midpoint of the bracket."""
        return 0.5 * (self.lower + self.upper)


def keeps_jobs(arrival_rate: float, pool_wait: float, processing_cost: float = 1.0,
               help_cost: float | None = None, tolerance: float = 1e-8) -> bool:
    """Return whether the numerical best response at phi = lambda keeps any own jobs."""
    response = solve_fluid_best_response(arrival_rate, arrival_rate, pool_wait, processing_cost,
                                         help_cost, tolerance)
    return response.mean_own_queue > KEPT_JOBS_THRESHOLD


def pooling_wait_limit(arrival_rate: float, processing_cost: float = 1.0, help_cost: float | None = None,
                       width: float = 1e-3, tolerance: float = 1e-8) -> PoolingWaitLimit:
    """Find by bisection the pool wait beyond which a server stops pooling at phi = lambda.

    Parameters
    ----------
    arrival_rate : float
        lambda, in (0, 1).
    processing_cost, help_cost : float
        c and c_help (None means c). The closed form needs ``1 + c - c_help > 0``.
    width : float, default 1e-3
        Width of the returned bracket, in (0, 1).
    tolerance : float, default 1e-8
        Tolerance passed to the fluid solver.

    Returns
    -------
    PoolingWaitLimit

    Raises
    ------
    ValueError
        If a parameter is out of range or ``1 + c - c_help <= 0`` (complete
        pooling is then never a best response and there is nothing to find).
    """
    rate = check_real("arrival_rate", arrival_rate, low=0.0, high=1.0, low_open=True, high_open=True)
    cost = check_real("processing_cost", processing_cost, low=0.0)
    pool_cost = cost if help_cost is None else check_real("help_cost", help_cost, low=0.0)
    width = check_real("width", width, low=0.0, high=1.0, low_open=True, high_open=True)
    closed_form = 1.0 + cost - pool_cost
    if closed_form <= 0.0:
        raise ValueError(f"help_cost must be below processing_cost + 1 for complete pooling to be a best "
                         f"response at any wait, got processing_cost={cost!r}, help_cost={pool_cost!r}")

    lower, upper, solves = 0.0, 2.0 * closed_form + 1.0, 0
    while upper - lower > width:
        middle = 0.5 * (lower + upper)
        solves += 1
        if keeps_jobs(rate, middle, cost, pool_cost, tolerance):
            upper = middle
        else:
            lower = middle
    return PoolingWaitLimit(rate, cost, pool_cost, lower, upper, closed_form, solves)
