"""Measure the simulator's speed in events per second on one core.

Run by hand: ``python benchmarks/bench_simulation.py [--events 20000000]``.
Each case runs once with a short horizon to load or compile the Numba kernel,
then once timed; the script prints one line per case. The target is at least
5 million events per second.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from mdp.model import Market
from mdp.policy import Policy
from mdp.simulation import simulate

TARGET_EVENTS_PER_SECOND = 5e6


def _complete_pooling_file(market: Market) -> Policy:
    """Build a policy that sends every job and always helps, so server one pools like the others."""
    own_limit, pool_limit = 20, 200
    send = np.zeros((own_limit + 1, pool_limit + 1))
    send[1:, :pool_limit] = 1.0
    help_everywhere = np.ones((own_limit + 1, pool_limit + 1), dtype=np.int64)
    return Policy.deterministic(market, send, help_everywhere)


def _cases():
    rates = np.random.default_rng(1).uniform(0.3, 0.9, 50)
    market = Market(0.9, 10)
    return [
        ("complete pooling, N=50, lambda=0.9, fluid", dict(arrival_rates=np.full(50, 0.9), policy="crp",
                                                          fluid=True)),
        ("complete pooling, N=50, lambda=0.9, integer tokens, endowment 20",
         dict(arrival_rates=np.full(50, 0.9), policy="crp", endowment=20)),
        ("no pooling, N=50, lambda=0.9", dict(arrival_rates=np.full(50, 0.9), policy="none")),
        ("threshold, N=10, lambda=0.8, phi=0.6, fluid", dict(arrival_rates=np.full(10, 0.8),
                                                            policy="threshold", token_probability=0.6,
                                                            fluid=True)),
        ("heterogeneous, N=50, fluid", dict(arrival_rates=rates, policy="heterogeneous", fluid=True)),
        ("policy file for server one, N=10, lambda=0.9, fluid",
         dict(arrival_rates=np.full(10, 0.9), policy=_complete_pooling_file(market), fluid=True)),
    ]


def main() -> None:
    """Time every case and print its events per second."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=float, default=2e7, help="approximate events per case (default 2e7)")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}; "
          f"target {TARGET_EVENTS_PER_SECOND:.0f} events/s")
    for label, options in _cases():
        rates = options["arrival_rates"]
        horizon = args.events / (np.sum(rates) + rates.shape[0])
        simulate(**options, horizon=100.0, warm_up=0.0, seed=1)
        start = time.perf_counter()
        result = simulate(**options, horizon=horizon, warm_up=0.0, seed=1)
        seconds = time.perf_counter() - start
        speed = result.events / seconds
        verdict = "ok" if speed >= TARGET_EVENTS_PER_SECOND else "BELOW TARGET"
        print(f"{label}: {result.events} events in {seconds:.2f} s, {speed / 1e6:.1f} million events/s ({verdict})")


if __name__ == "__main__":
    main()
