"""The token mechanism with heterogeneous servers, against central control.

Server i receives jobs at rate lambda_i and capacity units at rate mu_i, with
load ``rho_i = lambda_i / mu_i`` in (0, 1). The designer sets the token
probability to the largest load, ``phi = rho_max``. Every server sends every
job to the pool and offers help at each capacity unit with probability
``rho_i / rho_max``, so it offers at rate ``lambda_i / rho_max`` and earns
``phi lambda_i / rho_max = lambda_i`` tokens per unit time, exactly what its
requests spend.

The pool is then an M/M/1 queue with arrival rate ``sum lambda_i`` and service
rate ``sum lambda_i / rho_max``: utilisation rho_max, ``rho_max / (1 - rho_max)``
jobs and mean wait ``w = 1 / (sum lambda_i / rho_max - sum lambda_i)``. Offers
see the pool busy with probability rho_max, so server i processes
``lambda_i`` pool jobs per unit time, the same load it would carry alone.

Central control serves one queue with arrival rate ``sum lambda_i`` and service
rate ``sum mu_i``: load ``rho_c = sum lambda_i / sum mu_i``,
``rho_c / (1 - rho_c)`` jobs, and server i processes ``mu_i rho_c`` jobs per
unit time, in proportion to its capacity. Since rho_c is a capacity-weighted
mean of the rho_i, central control holds fewer jobs unless all loads are equal,
and the gap grows with the spread of the loads.

With c_help = c, server i prefers sending a job to keeping it while w is at
most its own mean wait for a capacity unit, 1 / mu_i, so the mechanism is
sustainable when ``w <= min_i 1 / mu_i``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .validation import check_real


@dataclass(frozen=True, eq=False)
class HeterogeneousEquilibrium:
    """The token mechanism with phi = rho_max in a market of unequal servers, with central control beside it.

    Attributes
    ----------
    arrival_rates, capacity_rates : ndarray
        lambda_i and mu_i per server.
    loads : ndarray
        rho_i = lambda_i / mu_i.
    token_probability : float
        phi = rho_max.
    offer_probabilities : ndarray
        Probability rho_i / rho_max that server i offers help at a capacity unit.
    request_rates, offer_rates : ndarray
        Jobs sent (lambda_i) and capacity units offered (lambda_i / rho_max) per unit time.
    token_balances : ndarray
        Tokens earned minus spent per unit time, phi x offer rate - request rate; zero.
    pool_utilisation : float
        Probability that the pool holds a job, rho_max.
    pool_wait : float
        Mean time in the pool, 1 / (sum lambda_i / rho_max - sum lambda_i).
    jobs_in_system : float
        Mean jobs under the mechanism (all of them in the pool), rho_max / (1 - rho_max).
    processing_rates : ndarray
        Jobs server i processes per unit time under the mechanism, lambda_i.
    wait_limit : float
        min_i 1 / mu_i, the largest wait at which no server prefers keeping a job.
    is_sustainable : bool
        Whether ``pool_wait <= wait_limit``.
    central_load : float
        rho_c = sum lambda_i / sum mu_i.
    central_jobs_in_system : float
        rho_c / (1 - rho_c).
    central_processing_rates : ndarray
        Jobs server i processes per unit time under central control, mu_i rho_c.
    no_pooling_jobs_in_system : float
        sum_i rho_i / (1 - rho_i), every server working alone.
    """

    arrival_rates: np.ndarray
    capacity_rates: np.ndarray
    loads: np.ndarray
    token_probability: float
    offer_probabilities: np.ndarray
    request_rates: np.ndarray
    offer_rates: np.ndarray
    token_balances: np.ndarray
    pool_utilisation: float
    pool_wait: float
    jobs_in_system: float
    processing_rates: np.ndarray
    wait_limit: float
    is_sustainable: bool
    central_load: float
    central_jobs_in_system: float
    central_processing_rates: np.ndarray
    no_pooling_jobs_in_system: float

    @property
    def servers(self) -> int:
        """Number of servers N."""
        return int(self.arrival_rates.size)


def heterogeneous_equilibrium(arrival_rates, capacity_rates) -> HeterogeneousEquilibrium:
    """Compute the phi = rho_max token mechanism and central control for unequal servers.

    Parameters
    ----------
    arrival_rates : array_like
        lambda_i > 0 for each of at least 2 servers.
    capacity_rates : array_like
        mu_i > 0, same length, with every load lambda_i / mu_i below 1.

    Returns
    -------
    HeterogeneousEquilibrium
        All figures are exact: the pool is an M/M/1 queue because every job
        is sent on arrival and offers form a Poisson process.

    Raises
    ------
    ValueError
        If the lengths differ, fewer than 2 servers are given, a rate is not
        positive and finite, or a load is not below 1.
    """
    arrivals, capacities = _check_rates(arrival_rates, capacity_rates)
    loads = arrivals / capacities
    phi = float(loads.max())
    total_arrivals = float(arrivals.sum())

    offer_probabilities = loads / phi
    offer_rates = capacities * offer_probabilities
    wait = 1.0 / (total_arrivals / phi - total_arrivals)
    wait_limit = float(np.min(1.0 / capacities))
    central = total_arrivals / float(capacities.sum())

    return HeterogeneousEquilibrium(
        arrival_rates=arrivals,
        capacity_rates=capacities,
        loads=loads,
        token_probability=phi,
        offer_probabilities=offer_probabilities,
        request_rates=arrivals.copy(),
        offer_rates=offer_rates,
        token_balances=phi * offer_rates - arrivals,
        pool_utilisation=phi,
        pool_wait=wait,
        jobs_in_system=phi / (1.0 - phi),
        processing_rates=arrivals.copy(),
        wait_limit=wait_limit,
        is_sustainable=bool(wait <= wait_limit * (1.0 + 1e-9)),
        central_load=central,
        central_jobs_in_system=central / (1.0 - central),
        central_processing_rates=capacities * central,
        no_pooling_jobs_in_system=float(np.sum(loads / (1.0 - loads))),
    )


def _check_rates(arrival_rates, capacity_rates):
    arrivals = _as_rate_array("arrival_rates", arrival_rates)
    capacities = _as_rate_array("capacity_rates", capacity_rates)
    if arrivals.size != capacities.size:
        raise ValueError(f"arrival_rates and capacity_rates must have the same length, "
                         f"got {arrivals.size} and {capacities.size}")
    if arrivals.size < 2:
        raise ValueError(f"arrival_rates must describe at least 2 servers, got {arrivals.size}")
    loads = arrivals / capacities
    overloaded = np.flatnonzero(loads >= 1.0)
    if overloaded.size:
        first = int(overloaded[0])
        # Servers are numbered from 1 in messages and tables, as in the simulator.
        raise ValueError(f"server {first + 1} has load arrival_rate / capacity_rate = "
                         f"{float(arrivals[first]):g} / {float(capacities[first]):g} = {loads[first]:.6g}; "
                         f"every load must be below 1")
    return arrivals, capacities


def _as_rate_array(name: str, values) -> np.ndarray:
    try:
        items = list(np.ravel(np.asarray(values, dtype=object)))
    except TypeError:
        raise ValueError(f"{name} must be a sequence of positive numbers, got {values!r}") from None
    checked = [check_real(f"{name}[{index}]", item, low=0.0, low_open=True) for index, item in enumerate(items)]
    array = np.array(checked, dtype=np.float64)
    array.setflags(write=False)
    return array
