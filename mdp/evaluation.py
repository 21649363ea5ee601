"""Exact evaluation of a stationary policy on the truncated chain.

Sends happen in zero time, so the process observed at the states where server
one stops sending is a Markov chain on the grid: one event, then sends until
the policy stops. Its stationary law nu is the fraction of time spent in each
state. The policy is evaluated on the recurrent behaviour reached from the
empty state (0, 0): the long-run averages starting there, which mix the
closed classes by their absorption probabilities when there is more than one.

From nu and the rate at which events enter each state follow every long-run
rate: holding cost sum nu(a, b) a, processing at the capacity units, sends
(forced at q1 = Q1 and chosen), offers of help, lost arrivals, and the cost
per unit time of the policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sparse
from scipy.sparse import csgraph
from scipy.sparse.linalg import splu, spsolve

from . import kernels
from .chain import ChainModel, market_chain
from .model import Market
from .policy import Policy


@dataclass(frozen=True, eq=False)
class PolicyEvaluation:
    """Long-run averages of one policy on the truncated chain, per unit time.

    Attributes
    ----------
    cost : float
        Server one's cost per unit time: holding, processing and the charge of sent jobs.
    token_rate : float
        ``request_rate - phi * offer_rate``; a policy is feasible when it is <= 0.
    request_rate, offer_rate : float
        Jobs sent to the pool (forced sends at q1 = Q1 included) and offers of help.
    own_processing_rate, pool_processing_rate : float
        Server one's own jobs processed, and pool jobs processed by server one's help.
    holding_cost, processing_cost, send_charge : float
        The three parts of ``cost``.
    mean_own_queue, mean_pool_length : float
        Time averages of q1 and q0.
    boundary_mass : float
        Fraction of time with q1 = Q1 or q0 = Q0.
    own_boundary_mass, pool_boundary_mass : float
        Fraction of time with q1 = Q1, and with q0 = Q0.
    lost_rate : float
        Arrivals of all servers lost at the truncation boundary, per unit time.
    stationary_distribution : ndarray, shape (Q1 + 1, Q0 + 1)
        Fraction of time in each state.
    closed_classes : int
        Number of closed classes reachable from the empty state (1 for a unichain policy).
    """

    cost: float
    token_rate: float
    request_rate: float
    offer_rate: float
    own_processing_rate: float
    pool_processing_rate: float
    holding_cost: float
    processing_cost: float
    send_charge: float
    mean_own_queue: float
    mean_pool_length: float
    boundary_mass: float
    own_boundary_mass: float
    pool_boundary_mass: float
    lost_rate: float
    stationary_distribution: np.ndarray = field(repr=False)
    closed_classes: int = 1
    decision_flow: np.ndarray = field(default=None, repr=False)
    send_flow: np.ndarray = field(default=None, repr=False)

    def objective(self, token_price: float) -> float:
        """Return the Lagrangian cost + token_price * token_rate of this policy."""
        return self.cost + token_price * self.token_rate


def evaluate_policy(market: Market, policy: Policy) -> PolicyEvaluation:
    """Evaluate a policy exactly on its truncated chain, in the market's wait model.

    Parameters
    ----------
    market : Market
        The market, whose wait model sets the charge of a sent job. It may differ
        from ``policy.market`` only in ``wait_model``, so that one policy can be
        priced under both pool-wait models.
    policy : Policy
        The policy; its truncation fixes the chain.

    Returns
    -------
    PolicyEvaluation

    Raises
    ------
    ValueError
        If the market differs from the policy's in anything but the wait model.
    """
    if not isinstance(market, Market):
        raise ValueError(f"market must be a Market, got {type(market).__name__}")
    if not isinstance(policy, Policy):
        raise ValueError(f"policy must be a Policy, got {type(policy).__name__}")
    if market.replace(wait_model=policy.market.wait_model) != policy.market:
        raise ValueError(f"the policy was computed for {policy.market}, which differs from {market} "
                         "in more than the wait model")
    chain = market_chain(market, policy.truncation)
    return evaluate_chain(chain, policy.transfer_probability, policy.capacity_probabilities)


def evaluate_chain(chain: ChainModel, transfer_probability: np.ndarray,
                   capacity_probabilities: np.ndarray) -> PolicyEvaluation:
    """Evaluate policy arrays on a chain; the engine behind :func:`evaluate_policy`."""
    transfer_probability = np.ascontiguousarray(transfer_probability, dtype=np.float64)
    capacity_probabilities = np.ascontiguousarray(capacity_probabilities, dtype=np.float64)
    send_cost, help_cost, pool_step = chain.cost_arguments()

    pointer, target, probability, expected_sends, expected_charge = kernels.send_walks(
        transfer_probability, send_cost, pool_step)
    rows, cols, values = kernels.stop_chain_entries(
        capacity_probabilities, pointer, target, probability, chain.own_arrival,
        chain.others_arrival, chain.others_capacity, chain.event_rate, pool_step)
    states = transfer_probability.size
    step_matrix = sparse.csr_matrix((values, (rows, cols)), shape=(states, states))
    # Events the policy never takes leave explicit zeros, which the graph
    # search below would read as transitions.
    step_matrix.eliminate_zeros()
    stationary, closed_classes = _long_run_distribution(step_matrix, start=0)

    entry = np.empty(states)
    kernels.entry_rates(stationary, capacity_probabilities, chain.own_arrival, chain.others_arrival,
                        chain.others_capacity, pool_step, entry)
    decision_flow = np.empty(states)
    send_flow = np.empty(states)
    kernels.decision_flows(entry, transfer_probability, pool_step, decision_flow, send_flow)
    return _long_run_rates(chain, stationary.reshape(chain.shape), capacity_probabilities, entry,
                           expected_sends, expected_charge, closed_classes, decision_flow, send_flow)


def _long_run_rates(chain, grid, capacity, entry, expected_sends, expected_charge,
                    closed_classes, decision_flow, send_flow) -> PolicyEvaluation:
    own_limit, pool_limit = chain.own_limit, chain.pool_limit
    own = np.arange(own_limit + 1)[:, None]
    can_send_at_full = np.arange(pool_limit + 1) + chain.pool_step <= pool_limit

    full_row = grid[own_limit, :]
    forced_sends = chain.own_arrival * float(full_row[can_send_at_full].sum())
    forced_charge = chain.own_arrival * float((full_row * chain.send_cost)[can_send_at_full].sum())
    lost_own = chain.own_arrival * float(full_row[~can_send_at_full].sum())
    lost_others = chain.others_arrival * float(grid[:, pool_limit].sum()) if chain.pool_step else 0.0

    own_rate = float((grid * capacity[:, :, kernels.OWN])[1:, :].sum())
    offer_rate = float((grid * capacity[:, :, kernels.HELP]).sum())
    help_charge = float((grid * capacity[:, :, kernels.HELP] * chain.help_cost[None, :]).sum())
    pool_processing = float((grid * capacity[:, :, kernels.HELP])[:, 1:].sum()) if chain.pool_step else offer_rate * chain.token_probability

    request_rate = forced_sends + float(entry @ expected_sends)
    send_charge = forced_charge + float(entry @ expected_charge)
    holding = float((grid * own).sum())
    processing = chain.processing_cost * own_rate + help_charge
    own_boundary = float(full_row.sum())
    pool_boundary = float(grid[:, pool_limit].sum()) if chain.pool_step else 0.0
    boundary = own_boundary + pool_boundary - (float(grid[own_limit, pool_limit]) if chain.pool_step else 0.0)
    return PolicyEvaluation(
        cost=holding + processing + send_charge,
        token_rate=request_rate - chain.token_probability * offer_rate,
        request_rate=request_rate,
        offer_rate=offer_rate,
        own_processing_rate=own_rate,
        pool_processing_rate=pool_processing,
        holding_cost=holding,
        processing_cost=processing,
        send_charge=send_charge,
        mean_own_queue=holding,
        mean_pool_length=float((grid * np.arange(pool_limit + 1)[None, :]).sum()),
        boundary_mass=boundary,
        own_boundary_mass=own_boundary,
        pool_boundary_mass=pool_boundary,
        lost_rate=lost_own + lost_others,
        stationary_distribution=grid,
        closed_classes=closed_classes,
        decision_flow=decision_flow.reshape(chain.shape),
        send_flow=send_flow.reshape(chain.shape),
    )


def _long_run_distribution(step_matrix: sparse.csr_matrix, start: int):
    """Return the long-run state frequencies from ``start`` and the number of closed classes reached."""
    reached = np.sort(csgraph.breadth_first_order(step_matrix, start, directed=True,
                                                  return_predecessors=False))
    local = step_matrix[reached][:, reached].tocsr()
    count, labels = csgraph.connected_components(local, directed=True, connection="strong")
    coo = local.tocoo()
    leaving = (labels[coo.row] != labels[coo.col]) & (coo.data > 0.0)
    open_components = np.unique(labels[coo.row[leaving]])
    closed = np.setdiff1d(np.arange(count), open_components)

    start_local = int(np.searchsorted(reached, start))
    weights = _absorption_weights(local, labels, closed, start_local)
    distribution_local = np.zeros(reached.size)
    for component, weight in zip(closed, weights):
        if weight <= 0.0:
            continue
        members = np.flatnonzero(labels == component)
        distribution_local[members] = weight * _stationary(local[members][:, members])
    distribution = np.zeros(step_matrix.shape[0])
    distribution[reached] = distribution_local
    return distribution, int(closed.size)


def _absorption_weights(matrix, labels, closed, start):
    """Return the probability of ending in each closed class, starting from ``start``."""
    if closed.size == 1:
        return np.ones(1)
    start_label = labels[start]
    if start_label in closed:
        return (closed == start_label).astype(float)
    transient = np.flatnonzero(~np.isin(labels, closed))
    position = {int(state): index for index, state in enumerate(transient)}
    inside = matrix[transient][:, transient]
    system = (sparse.identity(transient.size, format="csc") - inside).tocsc()
    weights = np.empty(closed.size)
    for index, component in enumerate(closed):
        members = np.flatnonzero(labels == component)
        into = np.asarray(matrix[transient][:, members].sum(axis=1)).ravel()
        weights[index] = np.atleast_1d(spsolve(system, into))[position[int(start)]]
    return weights / weights.sum()


def _stationary(matrix) -> np.ndarray:
    """Return the stationary distribution of an irreducible stochastic matrix.

    One balance equation is replaced by pi(first state) = 1, which keeps the
    system as sparse as the chain (a row of ones would fill the LU factors),
    and the solution is normalised afterwards. In an irreducible chain every
    state has positive mass, so the pinned value is valid. The diagonal is
    minus the sum of the off-diagonal probabilities rather than p_ii - 1,
    which would cancel to zero when an event moves the state with a
    probability near machine precision (N in the tens of thousands).
    """
    size = matrix.shape[0]
    if size == 1:
        return np.ones(1)
    off_diagonal = (matrix - sparse.diags(matrix.diagonal())).tocsr()
    off_diagonal.eliminate_zeros()
    leaving = np.asarray(off_diagonal.sum(axis=1)).ravel()
    balance = (off_diagonal.T - sparse.diags(leaving)).tocsr()
    pin = sparse.csr_matrix(([1.0], ([0], [0])), shape=(1, size))
    system = sparse.vstack([pin, balance[1:]], format="csc")
    right = np.zeros(size)
    right[0] = 1.0
    solution = _solve_sparse(system, right)
    np.clip(solution, 0.0, None, out=solution)
    return solution / solution.sum()


def _solve_sparse(system, right) -> np.ndarray:
    """Solve a nonsingular sparse system, trying a second column ordering if LU breaks down.

    With event probabilities of very different sizes (N in the tens of
    thousands), SuperLU's default ordering can produce an exactly zero pivot
    in a nonsingular balance system. A symmetric minimum-degree ordering
    avoided it in the cases seen.
    """
    for ordering in ("COLAMD", "MMD_AT_PLUS_A"):
        try:
            solution = splu(system, permc_spec=ordering).solve(right)
        except RuntimeError:
            continue
        if not np.all(np.isfinite(solution)):
            continue
        # Judge the residual against the size of the terms it cancels: the
        # pinned state may have a small share, so the solution can reach 1e8.
        residual = np.max(np.abs(system @ solution - right))
        scale = abs(system).sum(axis=1).max() * max(1.0, np.max(np.abs(solution)))
        if residual <= 1e-10 * scale:
            return solution
    raise RuntimeError(f"the stationary equations of a {system.shape[0]}-state class could not be solved "
                       "accurately with SuperLU")
