"""The closed-form best response against the numerical one-server fluid solver."""

import numpy as np
import pytest

from mdp.equilibrium import best_response, complete_pooling, fluid_equilibrium
from mdp.equilibrium_numeric import keeps_jobs, pooling_wait_limit
from mdp.fluid import solve_fluid_best_response

POOL_WAIT = 0.5


def grid():
    """(lambda, phi) pairs: above lambda, at lambda, exact powers, between powers and small phi."""
    cases = []
    for rate in (0.5, 0.8, 0.9):
        cases.append((rate, min(0.97, 1.15 * rate)))
        cases.append((rate, rate))
        cases.append((rate, rate ** 2))
        cases.append((rate, rate ** 3))
        cases.append((rate, 0.7 * rate))
        cases.append((rate, 0.05))
    return cases


@pytest.fixture(scope="module", params=grid(), ids=lambda case: f"lambda={case[0]:g}-phi={case[1]:.4g}")
def solved(request):
    rate, phi = request.param
    numeric = solve_fluid_best_response(rate, phi, POOL_WAIT, processing_cost=1.0, help_cost=1.0)
    return best_response(rate, phi), numeric


def closed_form_cost(response, pool_wait, processing_cost=1.0):
    # With c_help = c every processed job costs c: c lambda + q + r w.
    return processing_cost * response.arrival_rate + response.mean_own_queue + response.request_rate * pool_wait


def test_solver_converged(solved):
    _, numeric = solved
    assert numeric.converged, numeric.message


def test_cost_matches_closed_form(solved):
    response, numeric = solved
    expected = closed_form_cost(response, POOL_WAIT)
    assert numeric.best_cost == pytest.approx(expected, rel=1e-7)
    assert numeric.lower_bound <= expected * (1 + 1e-9)


def test_rates_match_closed_form(solved):
    response, numeric = solved
    assert numeric.request_rate == pytest.approx(response.request_rate, abs=1e-7)
    assert numeric.offer_rate == pytest.approx(response.offer_rate, abs=1e-7)
    assert numeric.mean_own_queue == pytest.approx(response.mean_own_queue, abs=1e-7)


def test_own_queue_law_matches_closed_form(solved):
    response, numeric = solved
    law = numeric.own_queue_distribution
    size = response.own_queue_distribution.size
    np.testing.assert_allclose(law[:size], response.own_queue_distribution, atol=1e-7)
    assert law[size:].sum() < 1e-7


def test_policy_matches_threshold(solved):
    response, numeric = solved
    transfer = numeric.transfer_probability
    capacity = numeric.capacity_probabilities
    largest_kept = response.own_queue_distribution.size - 1
    if response.keep_probability == 0.0 and response.threshold >= 1:
        largest_kept = response.threshold - 1

    # Never send below the largest kept level, always send above it.
    np.testing.assert_array_equal(transfer[1:largest_kept], 0.0)
    np.testing.assert_array_equal(transfer[largest_kept + 1:largest_kept + 4], 1.0)
    if response.keep_probability > 0.0:
        assert 0.0 < transfer[largest_kept] < 1.0

    # Process own jobs whenever there are any; at an empty queue offer help with the closed-form probability.
    np.testing.assert_allclose(capacity[1:largest_kept + 1, 0], 1.0)
    assert capacity[0, 1] == pytest.approx(response.offer_probability, abs=1e-7)
    assert capacity[0, 2] == pytest.approx(1.0 - response.offer_probability, abs=1e-7)


def test_closed_form_policy_independent_of_wait():
    # For every w < 1 the best response is the same threshold policy; only the cost moves.
    response = best_response(0.8, 0.6)
    for pool_wait in (0.0, 0.3, 0.9):
        numeric = solve_fluid_best_response(0.8, 0.6, pool_wait)
        assert numeric.mean_own_queue == pytest.approx(response.mean_own_queue, abs=1e-7)
        assert numeric.best_cost == pytest.approx(closed_form_cost(response, pool_wait), rel=1e-7)


def test_complete_pooling_cost_matches_solver_at_market_wait():
    # lambda = 0.8, N = 10: w = 0.5, so complete pooling is a best response with cost 0.8 + 0.8 * 0.5.
    market = complete_pooling(0.8, 10)
    numeric = solve_fluid_best_response(0.8, 0.8, market.pool_wait)
    assert numeric.best_cost == pytest.approx(market.cost_per_server, rel=1e-7)
    assert numeric.best_cost == pytest.approx(1.2, rel=1e-7)


def test_equilibrium_cost_matches_solver_at_market_wait():
    equilibrium = fluid_equilibrium(0.8, 10, 0.6)
    numeric = solve_fluid_best_response(0.8, 0.6, equilibrium.pool_wait)
    assert numeric.best_cost == pytest.approx(equilibrium.cost_per_server, rel=1e-7)


@pytest.mark.parametrize("processing_cost, help_cost", [(1.0, 1.0), (1.0, 1.3), (1.0, 0.5), (2.0, 1.0)])
def test_pooling_stops_at_wait_limit(processing_cost, help_cost):
    limit = 1.0 + processing_cost - help_cost
    assert not keeps_jobs(0.8, limit - 0.02, processing_cost, help_cost)
    assert keeps_jobs(0.8, limit + 0.02, processing_cost, help_cost)


@pytest.mark.parametrize("rate, processing_cost, help_cost", [(0.8, 1.0, 1.0), (0.8, 1.0, 1.3), (0.5, 1.0, 0.5)])
def test_bisection_finds_wait_limit(rate, processing_cost, help_cost):
    found = pooling_wait_limit(rate, processing_cost, help_cost, width=1e-3)
    assert found.upper - found.lower <= 1e-3
    assert found.lower <= found.closed_form + 1e-6
    assert found.upper >= found.closed_form - 1e-6
    assert found.estimate == pytest.approx(1.0 + processing_cost - help_cost, abs=1e-3)


def test_below_limit_solver_cost_is_complete_pooling():
    # c = 1, c_help = 1.3, w = 0.6 < 0.7: cost = 1.3 * 0.8 + 0.8 * 0.6 = 1.52.
    numeric = solve_fluid_best_response(0.8, 0.8, 0.6, processing_cost=1.0, help_cost=1.3)
    assert numeric.best_cost == pytest.approx(1.52, rel=1e-7)
    assert numeric.mean_own_queue == pytest.approx(0.0, abs=1e-9)


def test_above_limit_solver_beats_complete_pooling():
    numeric = solve_fluid_best_response(0.8, 0.8, 0.8, processing_cost=1.0, help_cost=1.3)
    crp = 1.3 * 0.8 + 0.8 * 0.8
    assert numeric.best_cost < crp - 1e-4


def test_pooling_wait_limit_rejects_costly_help():
    with pytest.raises(ValueError, match="help_cost"):
        pooling_wait_limit(0.8, processing_cost=1.0, help_cost=2.0)
