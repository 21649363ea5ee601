"""Validation of the market simulator against exact results.

Every tolerance is a multiple ``WIDTH`` of the run's own batch-means standard
error (or of a standard error computed from independent servers), with fixed
seeds and stated run lengths. Horizons are in mean capacity inter-arrival times.
"""

import math
import os
import signal
import threading
import time

import numpy as np
import pytest

from mdp import simulation_kernel
from mdp.equilibrium import best_response
from mdp.exact_pool import exact_pool
from mdp.model import Market
from mdp.policy import Policy
from mdp.simulation import simulate, simulate_market

WIDTH = 5.0  # tolerance in standard errors


def assert_close(estimate, expected, what):
    """Assert that a batch-means estimate lies within WIDTH standard errors of ``expected``."""
    assert abs(estimate.mean - expected) <= WIDTH * estimate.standard_error, (
        f"{what}: simulated {estimate.mean:.5f} ± {estimate.standard_error:.2g} (s.e.), expected {expected:.5f}")


def test_complete_pooling_jobs_in_system():
    # 10 servers, lambda = 0.8, 1e5 time units (1.8e6 events) after a warm-up of 1e3.
    result = simulate(np.full(10, 0.8), policy="crp", fluid=True, horizon=1e5, warm_up=1e3, seed=11)
    target = 0.8 / 0.2
    assert result.jobs_in_system.standard_error < 0.02 * target
    assert_close(result.jobs_in_system, target, "jobs in system under complete pooling")
    assert_close(result.pool_length, target, "pool length under complete pooling")
    assert_close(result.pool_time, 1.0 / (10 * 0.2), "time in pool under complete pooling")
    assert result.servers.own_holding_cost.mean.max() == 0.0


def test_complete_pooling_pool_empty_fraction():
    # The pool is M/M/1 with utilisation lambda: P(empty) = 1 - lambda.
    result = simulate(np.full(10, 0.8), policy="crp", fluid=True, horizon=1e5, warm_up=1e3, seed=12)
    distribution = result.pool_length_distribution
    assert distribution.sum() == pytest.approx(1.0, abs=1e-9)
    assert distribution[0] == pytest.approx(0.2, abs=0.01)
    assert distribution[1] == pytest.approx(0.2 * 0.8, abs=0.01)


def test_no_pooling_jobs_in_system():
    # 5 independent M/M/1 queues at lambda = 0.7, 2e5 time units (1.7e6 events).
    result = simulate(np.full(5, 0.7), policy="none", horizon=2e5, warm_up=1e3, seed=13)
    target = 5 * 0.7 / 0.3
    assert result.jobs_in_system.standard_error < 0.02 * target
    assert_close(result.jobs_in_system, target, "jobs in system without pooling")
    assert result.pool_length.mean == 0.0
    assert result.servers.offer_rate.mean.max() == 0.0


def test_pool_satisfies_little_law():
    # Mean pool length = accepted requests per unit time x mean time in pool, for a threshold market.
    result = simulate(np.full(10, 0.8), policy="threshold", token_probability=0.6, fluid=True,
                      horizon=2e5, warm_up=1e3, seed=14)
    length = result.pool_length
    entry = result.pool_entry_rate
    wait = result.pool_time
    product = entry.mean * wait.mean
    error = math.hypot(length.standard_error, entry.mean * wait.standard_error,
                       wait.mean * entry.standard_error)
    assert abs(length.mean - product) <= WIDTH * error


def test_threshold_policy_matches_exact_finite_pool():
    # lambda = 0.8, phi = 0.6, N = 10: the exact pool (a quasi-birth-death computation) has mean
    # 2.6949 and 8.6949 jobs in system; the mean-field values are 1.5 and 7.5.
    # 2e5 time units after a warm-up of 1e3 (3.6e6 events).
    result = simulate(np.full(10, 0.8), policy="threshold", token_probability=0.6, fluid=True,
                      horizon=2e5, warm_up=1e3, seed=15)
    assert_close(result.jobs_in_system, 8.6949, "jobs in system, threshold policy")
    assert_close(result.pool_length, 2.6949, "pool length, threshold policy")
    assert abs(result.jobs_in_system.mean - 7.5) > 20 * result.jobs_in_system.standard_error
    assert abs(result.pool_length.mean - 1.5) > 20 * result.pool_length.standard_error


def test_threshold_policy_matches_exact_pool_small_market():
    # N = 5, lambda = 0.8, phi = 0.6: compare with the exact quasi-birth-death solution.
    # 2e5 time units after a warm-up of 1e3 (1.8e6 events).
    exact = exact_pool(0.8, 5, 0.6)
    result = simulate(np.full(5, 0.8), policy="threshold", token_probability=0.6, fluid=True,
                      horizon=2e5, warm_up=1e3, seed=33)
    assert_close(result.jobs_in_system, exact.jobs_in_system, "jobs in system, N = 5")
    assert_close(result.pool_time, exact.pool_wait, "time in pool, N = 5")


def test_threshold_policy_own_queue_and_rates():
    # The own queue is an exact birth-death chain: mean 0.6 jobs, request rate r, offer rate o.
    response = best_response(0.8, 0.6)
    result = simulate(np.full(10, 0.8), policy="threshold", token_probability=0.6, fluid=True,
                      horizon=2e5, warm_up=1e3, seed=16)
    per_server = result.servers
    for index in range(10):
        assert abs(per_server.own_holding_cost.mean[index] - response.mean_own_queue) \
            <= WIDTH * per_server.own_holding_cost.standard_error[index]
        assert abs(per_server.request_rate.mean[index] - response.request_rate) \
            <= WIDTH * per_server.request_rate.standard_error[index]
        assert abs(per_server.offer_rate.mean[index] - response.offer_rate) \
            <= WIDTH * per_server.offer_rate.standard_error[index]


def test_fluid_tokens_balance_on_average():
    # With phi < lambda the threshold policy spends exactly what it earns: zero drift per server.
    result = simulate(np.full(10, 0.8), policy="threshold", token_probability=0.6, fluid=True,
                      horizon=2e5, warm_up=1e3, seed=17)
    drift = result.servers.token_drift
    for index in range(10):
        assert abs(drift.mean[index]) <= WIDTH * drift.standard_error[index], f"server {index}"
    assert result.refusal_fraction.mean == 0.0


def test_threshold_above_token_balance_offers_fraction():
    # phi > lambda: every job is sent and a fraction lambda / phi of the capacity units is offered.
    result = simulate(np.full(6, 0.6), policy="threshold", token_probability=0.75, fluid=True,
                      horizon=1e5, warm_up=1e3, seed=18)
    # The pool is exactly M/M/1 with utilisation phi.
    assert_close(result.pool_length, 0.75 / 0.25, "pool length, phi > lambda")
    offers = result.servers.offer_rate
    assert np.all(np.abs(offers.mean - 0.8) <= WIDTH * offers.standard_error)


def test_heterogeneous_servers():
    # rho_i = 0.3, 1/3, 0.75, 0.45; rho_max = 0.75, so the pool has 3 jobs on average,
    # and each server processes its own load lambda_i. 1e5 time units (5.6e5 events).
    arrival_rates = np.array([0.3, 0.5, 0.6, 0.45])
    capacity_rates = np.array([1.0, 1.5, 0.8, 1.0])
    result = simulate(arrival_rates, capacity_rates, policy="heterogeneous", fluid=True,
                      horizon=1e5, warm_up=1e3, seed=19)
    assert result.settings.token_probability == pytest.approx(0.75)
    assert_close(result.jobs_in_system, 0.75 / 0.25, "jobs in system, heterogeneous servers")
    load = result.servers.processing_load
    for index, rate in enumerate(arrival_rates):
        assert abs(load.mean[index] - rate) <= WIDTH * load.standard_error[index], f"server {index}"
    drift = result.servers.token_drift
    assert np.all(np.abs(drift.mean) <= WIDTH * drift.standard_error)


def _refusal_fractions(result):
    """Per-server fraction of request attempts refused; the balances of pooling servers are independent."""
    refused = result.servers.refusal_rate.mean
    accepted = result.servers.request_rate.mean
    return refused / (refused + accepted)


def test_integer_tokens_refuse_requests_at_zero_drift():
    # phi = lambda = 0.8 and complete pooling: each balance is a zero-drift walk, so requests are
    # refused, and a larger endowment refuses fewer. 50 servers, 1e4 time units from time zero.
    fractions = {}
    for endowment in (0, 100):
        result = simulate(np.full(50, 0.8), policy="crp", endowment=endowment,
                          horizon=1e4, warm_up=0.0, seed=20)
        fractions[endowment] = _refusal_fractions(result)
        assert result.servers.refusal_rate.mean.sum() > 0.0
    low, high = fractions[100], fractions[0]
    error = math.hypot(low.std(ddof=1), high.std(ddof=1)) / math.sqrt(50)
    assert high.mean() - low.mean() > WIDTH * error


def test_integer_tokens_raise_jobs_in_system():
    # Refused jobs wait in their owners' queues, so the system contains more than the fluid lambda / (1 - lambda).
    result = simulate(np.full(50, 0.8), policy="crp", endowment=0, horizon=1e4, warm_up=0.0, seed=21)
    assert result.jobs_in_system.mean > 2 * 0.8 / 0.2
    assert result.servers.own_holding_cost.mean.sum() > 0.0


def test_integer_tokens_never_negative():
    result = simulate(np.full(5, 0.8), policy="crp", endowment=2, horizon=2e3, warm_up=0.0, seed=22,
                      trace_interval=1.0, trace_servers=range(5))
    assert result.trace.token_balances.min() >= 0
    assert np.all(result.trace.token_balances[:, 0] == 2)
    assert result.final_token_balances.min() >= 0


def test_same_seed_same_result():
    options = dict(policy="threshold", token_probability=0.6, endowment=3, horizon=5e3, warm_up=100.0)
    first = simulate(np.full(6, 0.8), seed=5, **options)
    second = simulate(np.full(6, 0.8), seed=5, **options)
    other = simulate(np.full(6, 0.8), seed=6, **options)
    assert first.events == second.events
    assert first.jobs_in_system.mean == second.jobs_in_system.mean
    assert np.array_equal(first.final_token_balances, second.final_token_balances)
    assert other.jobs_in_system.mean != first.jobs_in_system.mean


def _assert_same_run(first, second):
    assert first.events == second.events
    assert first.as_dict() == second.as_dict()
    assert np.array_equal(first.pool_length_distribution, second.pool_length_distribution)
    if first.trace is not None:
        assert np.array_equal(first.trace.token_balances, second.trace.token_balances)
        assert np.array_equal(first.trace.pool_length, second.trace.pool_length)
        assert np.array_equal(first.trace.jobs_in_system, second.trace.jobs_in_system)
    if first.job_log is not None:
        for name in ("owner", "arrival_time", "sent_time", "completion_time", "processor"):
            assert np.array_equal(getattr(first.job_log, name), getattr(second.job_log, name), equal_nan=True), name


@pytest.mark.parametrize("chunk_events", [1, 97])
@pytest.mark.parametrize("case", ["integer tokens", "policy file", "pool growth"])
def test_chunk_size_does_not_change_result(monkeypatch, case, chunk_events):
    # The event loop returns to Python every CHUNK_EVENTS events; the random stream must continue unchanged.
    market = Market(0.8, 5)
    options = {
        "integer tokens": dict(arrival_rates=np.full(4, 0.9), policy="crp", endowment=1, horizon=500.0,
                               warm_up=20.0, trace_interval=0.5, trace_servers=[0, 2], job_log_size=300),
        "policy file": dict(arrival_rates=np.full(5, 0.8), policy=_complete_pooling_policy(market, 3, 2), endowment=1,
                            horizon=500.0, warm_up=20.0, job_log_size=300),
        "pool growth": dict(arrival_rates=np.full(2, 0.97), policy="crp", fluid=True, horizon=3e3,
                            warm_up=0.0, job_log_size=3000),
    }[case]
    monkeypatch.setattr(simulation_kernel, "CHUNK_EVENTS", 10**12)
    whole = simulate(seed=8, **options)
    monkeypatch.setattr(simulation_kernel, "CHUNK_EVENTS", chunk_events)
    chunked = simulate(seed=8, **options)
    assert whole.events > 1000
    _assert_same_run(whole, chunked)
    if case == "pool growth":
        assert whole.pool_length_distribution.shape[0] > 65


class _Stop(Exception):
    pass


def _raise_stop(signal_number, frame):
    raise _Stop(signal_number)


def test_sigint_reaches_installed_handler():
    # The simulation defers SIGINT while compiled code runs and then calls the handler that was installed.
    simulate(np.full(10, 0.9), horizon=10.0)
    previous = signal.signal(signal.SIGINT, _raise_stop)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    try:
        timer.start()
        start = time.monotonic()
        with pytest.raises(_Stop):
            simulate(np.full(10, 0.9), horizon=1e9)
        elapsed = time.monotonic() - start
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert elapsed < 5.0
    assert signal.getsignal(signal.SIGINT) is previous


def test_pool_is_first_come_first_served_after_growth():
    # lambda = 0.97 with two servers drives the pool far past its initial 64 slots.
    result = simulate(np.full(2, 0.97), policy="crp", fluid=True, horizon=2e4, warm_up=0.0, seed=23,
                      job_log_size=20_000)
    log = result.job_log
    pooled = ~np.isnan(log.sent_time)
    assert result.pool_length_distribution.shape[0] > 64
    assert np.all(np.diff(log.sent_time[pooled]) >= 0.0)
    assert np.all(log.completion_time >= log.sent_time, where=pooled)


def test_own_queues_grow_and_stay_in_order():
    # Without pooling at lambda = 0.95 own queues pass their initial 16 slots; each is FCFS.
    result = simulate(np.full(3, 0.95), policy="none", horizon=2e4, warm_up=0.0, seed=24, job_log_size=10_000)
    log = result.job_log
    for server in range(3):
        mine = log.owner == server
        assert np.all(np.diff(log.arrival_time[mine]) > 0.0)
    assert np.all(log.processor == log.owner)
    assert np.all(log.processing_cost == 1.0)
    assert log.own_queue_time.max() > 16.0


def test_job_log_accounts_for_every_cost():
    result = simulate(np.full(4, 0.8), policy="threshold", token_probability=0.6, fluid=True,
                      processing_cost=1.0, help_cost=2.5, horizon=1e3, warm_up=10.0, seed=25, job_log_size=500)
    log = result.job_log
    assert log.owner.shape == (500,)
    helped = log.owner != log.processor
    assert np.all(log.processing_cost[helped] == 2.5)
    assert np.all(log.processing_cost[~helped & np.isnan(log.sent_time)] == 1.0)
    assert np.all(log.own_queue_time >= 0.0)
    assert np.all(log.pool_time >= 0.0)
    assert np.all(log.completion_time >= 10.0)


def test_costs_add_up_per_server():
    result = simulate(np.full(4, 0.8), policy="threshold", token_probability=0.6, fluid=True,
                      help_cost=2.0, horizon=1e4, warm_up=100.0, seed=26)
    per_server = result.servers
    parts = (per_server.own_holding_cost.mean + per_server.pool_holding_cost.mean
             + per_server.processing_cost.mean)
    assert np.allclose(per_server.cost.mean, parts)
    expected_processing = per_server.own_processing_rate.mean + 2.0 * per_server.pool_processing_rate.mean
    assert np.allclose(per_server.processing_cost.mean, expected_processing)
    total_holding = per_server.own_holding_cost.mean.sum() + per_server.pool_holding_cost.mean.sum()
    assert total_holding == pytest.approx(result.jobs_in_system.mean)


def _complete_pooling_policy(market, own_limit=10, pool_limit=60):
    send = np.zeros((own_limit + 1, pool_limit + 1))
    send[1:, :pool_limit] = 1.0
    return Policy.deterministic(market, send, np.ones((own_limit + 1, pool_limit + 1), dtype=np.int64))


def test_policy_file_of_complete_pooling():
    # Server one following a file that pools completely costs the closed form c lambda + lambda / (N (1 - lambda)).
    market = Market(0.8, 5)
    result = simulate_market(market, _complete_pooling_policy(market), fluid=True,
                             horizon=1e5, warm_up=1e3, seed=27)
    cost = result.servers.cost
    expected = 0.8 + 0.8 / (5 * 0.2)
    assert abs(cost.mean[0] - expected) <= WIDTH * cost.standard_error[0]
    assert_close(result.jobs_in_system, 4.0, "jobs in system, server one on a pooling file")
    assert result.server_one_decisions > 0


def test_policy_file_edge_use_is_counted():
    # A grid with Q0 = 2 is left whenever the pool has 3 or more jobs.
    market = Market(0.8, 5)
    result = simulate_market(market, _complete_pooling_policy(market, own_limit=3, pool_limit=2), fluid=True,
                             horizon=1e4, warm_up=100.0, seed=28)
    # Beyond Q0 the edge column applies, whose transfer probability is 0, so server one stops sending there.
    assert 0.1 < result.server_one_outside_grid_fraction < 0.9
    assert result.servers.own_holding_cost.mean[0] > 0.0


def test_policy_file_market_must_match():
    policy = _complete_pooling_policy(Market(0.8, 5))
    with pytest.raises(ValueError, match="servers"):
        simulate_market(Market(0.8, 6), policy, horizon=10.0)
    with pytest.raises(ValueError, match="arrival rate"):
        simulate_market(Market(0.7, 5), policy, horizon=10.0)
    with pytest.raises(ValueError, match="token probability"):
        simulate_market(Market(0.8, 5, token_probability=0.6), policy, horizon=10.0)
    with pytest.raises(ValueError, match="help cost"):
        simulate_market(Market(0.8, 5, help_cost=2.0), policy, horizon=10.0)
    with pytest.raises(ValueError, match="capacity rate"):
        simulate(np.full(5, 0.8), np.full(5, 2.0), policy=policy, horizon=10.0)


def test_policy_market_mismatch_shows_plain_numbers():
    policy = _complete_pooling_policy(Market(0.8, 5))
    with pytest.raises(ValueError) as error:
        simulate(np.full(5, 0.9), policy=policy, horizon=10.0)
    assert "computed for arrival rate 0.8, but the simulated market has 0.9;" in str(error.value)
    with pytest.raises(ValueError) as error:
        simulate([0.8, 0.8, 0.8, 0.7, 0.8], policy=policy, horizon=10.0)
    assert "the simulated market has [0.7, 0.8];" in str(error.value)
    assert "np." not in str(error.value)


@pytest.mark.parametrize("options, message", [
    (dict(arrival_rates=[0.8]), "number of servers"),
    (dict(arrival_rates=[0.8, 1.2]), "arrival_rates\\[1\\] must be in \\(0, 1\\), got 1.2$"),
    (dict(arrival_rates=np.array([0.8, np.nan])), "arrival_rates must be finite, got \\[0.8, nan\\]$"),
    (dict(arrival_rates=[0.8, 0.8], capacity_rates=[1.0, 0.0]), "capacity_rates\\[1\\]"),
    (dict(arrival_rates=[0.8, 0.8], token_probability=1.0), "token_probability"),
    (dict(arrival_rates=[0.8, 0.8], horizon=0.0), "horizon"),
    (dict(arrival_rates=[0.8, 0.8], warm_up=-1.0), "warm_up"),
    (dict(arrival_rates=[0.8, 0.8], endowment=-1), "endowment"),
    (dict(arrival_rates=[0.8, 0.8], seed=2**32), "seed"),
    (dict(arrival_rates=[0.8, 0.8], batches=1), "batches"),
    (dict(arrival_rates=[0.8, 0.8], policy="greedy"), "policy"),
    (dict(arrival_rates=[0.8, 0.8], trace_interval=0.0), "trace_interval"),
    (dict(arrival_rates=[0.8, 0.8], trace_interval=1.0, trace_servers=[2]), "trace_servers"),
])
def test_invalid_input_is_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        simulate(**options)
