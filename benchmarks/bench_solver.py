"""Time the best-deviation solver against HiGHS and a plain scipy-sparse value iteration.

Run by hand from the repository root:

    python benchmarks/bench_solver.py [--tolerance 1e-6] [--highs-limit 600]

For each market (lambda in {0.7, 0.8, 0.9} x N in {5, 20, 50}) it

1. solves with ``solve_best_deviation`` (after a JIT warm-up) and records the
   wall time and, in a child process, the peak resident memory;
2. solves the same truncated model as an occupation-measure LP with HiGHS
   (the formulation of ``tests/lp_reference.py``), up to a time limit;
3. runs a plain relative value iteration on explicit scipy-sparse transition
   matrices at the solver's optimal token price, to the same span.

It prints each time, the speed ratios against the two baselines measured in
the same run, and the largest disagreement between the three optimal costs.
Machines here are shared and noisy: compare ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import time
import warnings

import numpy as np
import scipy.sparse as sparse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from lp_reference import solve_lp  # noqa: E402
from mdp import Market, solve_best_deviation  # noqa: E402

MARKETS = [(rate, servers) for rate in (0.7, 0.8, 0.9) for servers in (5, 20, 50)]


def plain_value_iteration(market, truncation, token_price, span_tolerance, max_sweeps=2_000_000):
    """Relative value iteration with explicit sparse matrices; returns (gain, sweeps)."""
    own_limit, pool_limit = truncation
    shape = (own_limit + 1, pool_limit + 1)
    states = shape[0] * shape[1]
    rate = market.arrival_rate
    others = market.servers - 1
    event_rate = market.event_rate
    own, pool = np.indices(shape)
    own, pool = own.ravel(), pool.ravel()
    index = own * shape[1] + pool
    charge = (pool + 1.0) / market.pool_service_rate

    def matrix(target, weight=1.0):
        return sparse.csr_matrix((np.full(states, weight), (index, target)), shape=(states, states))

    up = own * shape[1] + np.minimum(pool + 1, pool_limit)
    down = own * shape[1] + np.maximum(pool - 1, 0)
    arrival_target = np.where(own < own_limit, index + shape[1],
                              np.where(pool < pool_limit, index + 1, index))
    forced = (own == own_limit) & (pool < pool_limit)
    common = (matrix(arrival_target, rate) + matrix(up, others * rate) + matrix(down, others)) / event_rate
    common_cost = (own + rate * forced * (charge + token_price)) / event_rate
    own_move = matrix(np.where(own >= 1, index - shape[1], index))
    help_move = matrix(down)
    help_cost = np.where(pool >= 1, market.help_cost, 0.0) - token_price * market.token_probability
    sendable = (own >= 1) & (pool < pool_limit)
    send_target = np.where(sendable, index - shape[1] + 1, index)
    send_move = matrix(send_target)

    values = np.zeros(states)
    for sweep in range(1, max_sweeps + 1):
        options = [values, help_cost + help_move @ values]
        own_option = np.where(own >= 1, market.processing_cost + own_move @ values, np.inf)
        options.append(own_option)
        stay = common_cost + common @ values + np.min(options, axis=0) / event_rate
        best = stay.copy()
        # Sending one job at a time along the anti-diagonal, in increasing own queue.
        send_cost = charge + token_price
        for level in range(1, own_limit + 1):
            rows = (own == level) & sendable
            candidate = send_cost[rows] + best[send_target[rows]]
            best[rows] = np.minimum(best[rows], candidate)
        difference = best - values
        values = best - best[0]
        if difference.max() - difference.min() <= span_tolerance / event_rate:
            return event_rate * 0.5 * (difference.max() + difference.min()), sweep
    return float("nan"), max_sweeps


def solver_peak_memory(arguments, queue):
    rate, servers, tolerance = arguments
    solve_best_deviation(Market(rate, servers), tolerance)
    queue.put(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--highs-limit", type=float, default=600.0, help="seconds per LP before giving up")
    parser.add_argument("--skip-highs", action="store_true")
    options = parser.parse_args()
    warnings.simplefilter("ignore")

    solve_best_deviation(Market(0.7, 3), options.tolerance)  # JIT warm-up
    header = (f"{'lambda':>6} {'N':>3} {'Q1,Q0':>9} {'ours s':>8} {'peak MB':>8} {'HiGHS s':>9} "
              f"{'ratio':>7} {'plainVI s':>9} {'ratio':>7} {'max diff':>9}")
    print(header)
    context = multiprocessing.get_context("spawn")
    for rate, servers in MARKETS:
        market = Market(rate, servers)
        start = time.perf_counter()
        result = solve_best_deviation(market, options.tolerance)
        ours = time.perf_counter() - start

        queue = context.Queue()
        child = context.Process(target=solver_peak_memory, args=((rate, servers, options.tolerance), queue))
        child.start()
        peak = queue.get()
        child.join()

        costs = [result.best_cost]
        highs_time = float("nan")
        if not options.skip_highs:
            start = time.perf_counter()
            try:
                costs.append(_highs_with_limit(market, result.truncation, options.highs_limit))
            except TimeoutError:
                pass
            highs_time = time.perf_counter() - start

        start = time.perf_counter()
        gain, _sweeps = plain_value_iteration(market, result.truncation, result.token_price,
                                              options.tolerance * result.crp_cost / 4)
        plain_time = time.perf_counter() - start
        costs.append(gain)
        disagreement = (max(costs) - min(costs)) / result.best_cost
        print(f"{rate:>6} {servers:>3} {str(result.truncation[0]) + ',' + str(result.truncation[1]):>9} "
              f"{ours:>8.2f} {peak:>8.0f} {highs_time:>9.1f} {highs_time / ours:>7.0f} {plain_time:>9.1f} "
              f"{plain_time / ours:>7.0f} {disagreement:>9.1e}", flush=True)


def _highs_with_limit(market, truncation, limit):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_highs_child, args=(market, truncation, queue))
    child.start()
    child.join(limit)
    if child.is_alive():
        child.terminate()
        child.join()
        raise TimeoutError
    return queue.get()


def _highs_child(market, truncation, queue):
    queue.put(solve_lp(market.arrival_rate, market.servers, *truncation,
                       processing_cost=market.processing_cost, help_cost=market.help_cost,
                       token_probability=market.token_probability, pool_rate=market.pool_service_rate))


if __name__ == "__main__":
    main()
