"""The truncated chain that the kernels work on, built from a market or from the fluid model.

Both the market model (server one against N - 1 pooling servers, state
(q1, q0)) and the one-server fluid model (state q1, the pool replaced by its
mean-field summary) are the same kind of chain: own arrivals at rate lambda,
pool arrivals and pool departures caused by the other servers, server one's
capacity units at rate 1, a charge W(b) per job sent, a processing cost per
help that may depend on the pool, and a pool step of 1 or 0 for a sent job.
:class:`ChainModel` holds those arrays and rates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import Market


@dataclass(frozen=True, eq=False)
class ChainModel:
    """Rates, costs and truncation of one truncated chain.

    Attributes
    ----------
    own_arrival, others_arrival, others_capacity : float
        Rates of server one's arrivals, of arrivals sent to the pool by the other
        servers, and of the other servers' capacity units (offers of help).
    event_rate : float
        The uniformisation constant Lambda: the sum of the three rates and 1.
    processing_cost, token_probability : float
        c and phi.
    send_cost : ndarray, shape (Q0 + 1,)
        Charge W(b) for a job sent when the pool contains b jobs.
    help_cost : ndarray, shape (Q0 + 1,)
        Expected processing cost of one offer of help when the pool contains b jobs.
    pool_step : int
        How much a sent job adds to the pool state: 1, or 0 in the fluid model.
    own_limit, pool_limit : int
        Q1 and Q0.
    """

    own_arrival: float
    others_arrival: float
    others_capacity: float
    event_rate: float
    processing_cost: float
    token_probability: float
    send_cost: np.ndarray
    help_cost: np.ndarray
    pool_step: int
    own_limit: int
    pool_limit: int

    @property
    def shape(self) -> tuple:
        """Grid shape (Q1 + 1, Q0 + 1)."""
        return (self.own_limit + 1, self.pool_limit + 1)

    def kernel_arguments(self) -> tuple:
        """Return the rate and cost arguments in the order the kernels take them, up to the token price."""
        return (self.own_arrival, self.others_arrival, self.others_capacity, self.event_rate,
                self.processing_cost, self.token_probability)

    def cost_arguments(self) -> tuple:
        """Return the per-pool-state cost arrays and the pool step, in kernel order."""
        return (self.send_cost, self.help_cost, self.pool_step)


def market_chain(market: Market, truncation: tuple) -> ChainModel:
    """Build the truncated chain of server one's deviation in ``market``."""
    own_limit, pool_limit = truncation
    others = market.servers - 1
    pool = np.arange(pool_limit + 1, dtype=np.float64)
    help_cost = np.where(pool >= 1, market.help_cost, 0.0)
    return ChainModel(
        own_arrival=market.arrival_rate,
        others_arrival=others * market.arrival_rate,
        others_capacity=float(others),
        event_rate=market.event_rate,
        processing_cost=market.processing_cost,
        token_probability=market.token_probability,
        send_cost=(pool + 1.0) / market.pool_service_rate,
        help_cost=help_cost,
        pool_step=1,
        own_limit=own_limit,
        pool_limit=pool_limit,
    )


def fluid_chain(arrival_rate: float, token_probability: float, pool_wait: float,
                processing_cost: float, help_cost: float, own_limit: int) -> ChainModel:
    """Build the one-server fluid chain: a sent job costs ``pool_wait``, a help costs ``help_cost * phi``."""
    return ChainModel(
        own_arrival=arrival_rate,
        others_arrival=0.0,
        others_capacity=0.0,
        event_rate=arrival_rate + 1.0,
        processing_cost=processing_cost,
        token_probability=token_probability,
        send_cost=np.array([pool_wait]),
        help_cost=np.array([help_cost * token_probability]),
        pool_step=0,
        own_limit=own_limit,
        pool_limit=0,
    )
