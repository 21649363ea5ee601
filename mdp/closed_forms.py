"""Closed-form costs of the two benchmark behaviours.

Without pooling every server is an M/M/1 queue with utilisation lambda. Under
complete resource pooling (CRP) every job goes to the pool on arrival and every
capacity unit is offered as help, so the pool is an M/M/1 queue with arrival
rate N lambda and service rate N. Both results are exact.
"""

from __future__ import annotations

from .model import Market


def no_pooling_cost(market: Market) -> float:
    """Return a server's long-run cost per unit time without pooling.

    Each server processes its own lambda jobs per unit time at cost c, and its
    queue contains lambda / (1 - lambda) jobs on average:
    ``c * lambda + lambda / (1 - lambda)``.
    """
    rate = market.arrival_rate
    return market.processing_cost * rate + rate / (1.0 - rate)


def crp_cost(market: Market) -> float:
    """Return a server's cost per unit time under complete resource pooling, in the market's wait model.

    A job that joins the pool behind x jobs is charged (x + 1) / R. Under CRP the
    pool seen by an arrival is geometric with ratio lambda, so the mean charge is
    1 / (R (1 - lambda)). Each server sends lambda jobs and processes lambda pool
    jobs per unit time, so the cost is ``c_help * lambda + lambda / (R (1 - lambda))``. With
    R = N this is the exact cost; with R = N - 1 it is the pessimistic charge.
    """
    rate = market.arrival_rate
    return market.help_cost * rate + rate / (market.pool_service_rate * (1.0 - rate))


def crp_jobs_in_system(arrival_rate: float) -> float:
    """Return the mean total number of jobs under complete pooling, lambda / (1 - lambda), whatever N."""
    return arrival_rate / (1.0 - arrival_rate)
