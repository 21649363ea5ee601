"""Closed forms of the symmetric market, checked against values worked out by hand below."""

import math

import numpy as np
import pytest

from mdp.equilibrium import (best_response, complete_pooling, fluid_equilibrium, minimum_servers,
                             no_pooling, robust_ceil, robust_floor, threshold_and_keep_probability)


# ---------------------------------------------------------------------------
# No pooling and complete pooling.
# ---------------------------------------------------------------------------

def test_no_pooling_by_hand():
    # lambda = 0.75: 0.75 / 0.25 = 3 jobs per server, time 1 / 0.25 = 4, cost 2 * 0.75 + 3 = 4.5.
    result = no_pooling(0.75, 4, processing_cost=2.0)
    assert result.jobs_per_server == pytest.approx(3.0)
    assert result.jobs_in_system == pytest.approx(12.0)
    assert result.time_in_system == pytest.approx(4.0)
    assert result.cost_per_server == pytest.approx(4.5)


def test_complete_pooling_by_hand():
    # lambda = 0.75, N = 4: w = 1 / (4 * 0.25) = 1; cost = 1.5 * 0.75 + 0.75 * 1 = 1.875.
    result = complete_pooling(0.75, 4, processing_cost=1.0, help_cost=1.5)
    assert result.jobs_in_system == pytest.approx(3.0)
    assert result.pool_busy_probability == pytest.approx(0.75)
    assert result.pool_wait == pytest.approx(1.0)
    assert result.cost_per_server == pytest.approx(1.875)
    assert result.wait_limit == pytest.approx(0.5)


def test_complete_pooling_best_response_condition():
    # Wait limit 1 + c - c_help = 0.5 needs 1 / (N * 0.25) <= 0.5, so N >= 8.
    assert not complete_pooling(0.75, 4, help_cost=1.5).is_best_response
    assert not complete_pooling(0.75, 7, help_cost=1.5).is_best_response
    assert complete_pooling(0.75, 8, help_cost=1.5).is_best_response
    assert complete_pooling(0.75, 4, help_cost=1.5).minimum_servers == 8
    # With c_help = c the limit is 1 and N = 4 sits exactly on it (w = 1).
    assert complete_pooling(0.75, 4).is_best_response
    assert not complete_pooling(0.75, 3).is_best_response
    assert complete_pooling(0.75, 3).minimum_servers == 4


def test_complete_pooling_never_best_response_when_help_costs_too_much():
    # c_help = c + 1 leaves no room for any wait.
    result = complete_pooling(0.5, 50, processing_cost=1.0, help_cost=2.0)
    assert not result.is_best_response
    assert result.minimum_servers is None


# ---------------------------------------------------------------------------
# Threshold and keep probability.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [0.3, 0.5, 0.7, 0.8, 0.9, 0.95])
@pytest.mark.parametrize("power", [1, 2, 3, 5, 8])
def test_threshold_exact_at_powers(rate, power):
    threshold, keep = threshold_and_keep_probability(rate, rate ** power)
    assert threshold == power
    assert keep == 0.0


def test_threshold_between_powers():
    # 0.8^2 = 0.64 > 0.6 > 0.512 = 0.8^3, so k = 2 and p = (0.64 - 0.6) / (0.64 - 0.512) = 0.3125.
    threshold, keep = threshold_and_keep_probability(0.8, 0.6)
    assert threshold == 2
    assert keep == pytest.approx(0.3125)


def test_threshold_near_next_power_keeps_almost_surely():
    # Just above 0.5^3 the server keeps a job at 2 waiting jobs almost always.
    threshold, keep = threshold_and_keep_probability(0.5, 0.125 * (1 + 1e-6))
    assert threshold == 2
    assert keep == pytest.approx(1.0, abs=1e-5)


def test_threshold_zero_above_arrival_rate():
    assert threshold_and_keep_probability(0.5, 0.8) == (0, 0.0)


def test_robust_rounding():
    assert robust_ceil(1 / (1 - 0.8)) == 5
    assert robust_ceil(1 / (1 - 0.9)) == 10
    assert robust_ceil(5.1) == 6
    assert robust_floor(math.log(0.9 ** 3) / math.log(0.9)) == 3
    assert robust_floor(2.9) == 2


# ---------------------------------------------------------------------------
# Best response: own-queue law and token rates.
# ---------------------------------------------------------------------------

def test_best_response_one_threshold_by_hand():
    # lambda = 0.5, phi = 0.3: k = 1, p = (0.5 - 0.3) / (0.5 - 0.25) = 0.8.
    # pi ~ (1, 0.8 * 0.5) = (5/7, 2/7); r = 0.5 (0.2 * 5/7 + 2/7) = 3/14; o = 5/7.
    response = best_response(0.5, 0.3)
    assert response.threshold == 1
    assert response.keep_probability == pytest.approx(0.8)
    np.testing.assert_allclose(response.own_queue_distribution, [5 / 7, 2 / 7])
    assert response.mean_own_queue == pytest.approx(2 / 7)
    assert response.request_rate == pytest.approx(3 / 14)
    assert response.offer_rate == pytest.approx(5 / 7)
    assert response.offer_probability == 1.0


def test_best_response_two_thresholds_by_hand():
    # lambda = 0.8, phi = 0.6: pi ~ (1, 0.8, 0.3125 * 0.64) = (1, 0.8, 0.2), sum 2.
    # q = 0.4 + 2 * 0.1 = 0.6; r = 0.8 (0.6875 * 0.4 + 0.1) = 0.3; o = 0.5.
    response = best_response(0.8, 0.6)
    np.testing.assert_allclose(response.own_queue_distribution, [0.5, 0.4, 0.1])
    assert response.mean_own_queue == pytest.approx(0.6)
    assert response.request_rate == pytest.approx(0.3)
    assert response.offer_rate == pytest.approx(0.5)
    assert response.own_processing_rate == pytest.approx(0.5)


def test_best_response_above_arrival_rate_by_hand():
    # lambda = 0.5, phi = 0.8: send everything, offer at 0.5 / 0.8 = 0.625 of capacity units.
    response = best_response(0.5, 0.8)
    assert response.threshold == 0
    assert response.offer_probability == pytest.approx(0.625)
    assert response.request_rate == pytest.approx(0.5)
    assert response.offer_rate == pytest.approx(0.625)
    assert response.mean_own_queue == 0.0


@pytest.mark.parametrize("rate", [0.3, 0.7, 0.9])
@pytest.mark.parametrize("fraction", [0.05, 0.31, 0.5, 0.77, 1.0, 1.05, 1.3])
def test_tokens_balance(rate, fraction):
    phi = min(0.99, rate * fraction)
    response = best_response(rate, phi)
    assert response.request_rate == pytest.approx(phi * response.offer_rate, rel=1e-12)
    assert response.own_queue_distribution.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("phi", [0.05, 0.2, 0.49, 0.64, 0.7, 0.8])
def test_own_work_equals_kept_jobs(phi):
    # For phi <= lambda the own queue is busy 1 - pi_0 of the time and absorbs lambda - r jobs,
    # so o (1 - phi) = 1 - lambda.
    response = best_response(0.8, phi)
    assert 1.0 - response.own_queue_distribution[0] == pytest.approx(0.8 - response.request_rate)
    assert response.offer_rate * (1.0 - phi) == pytest.approx(0.2)


def test_best_response_complete_pooling_at_arrival_rate():
    response = best_response(0.7, 0.7)
    assert response.threshold == 1
    assert response.keep_probability == 0.0
    assert response.mean_own_queue == 0.0
    assert response.request_rate == pytest.approx(0.7)
    assert response.offer_rate == pytest.approx(1.0)


# ---------------------------------------------------------------------------
# The market: pool, jobs in system, cost and market size.
# ---------------------------------------------------------------------------

def test_fluid_equilibrium_mean_field_by_hand():
    # lambda = 0.8, phi = 0.6, N = 10: w = 1 / (10 * 0.5 * 0.4) = 0.5; Q = 10 * 0.6 + 1.5 = 7.5;
    # cost = 1 * (0.8 - 0.3) + 1 * 0.3 + 0.6 + 0.3 * 0.5 = 1.55.
    result = fluid_equilibrium(0.8, 10, 0.6)
    assert result.pool_is_mean_field
    assert result.pool_length == pytest.approx(1.5)
    assert result.pool_busy_probability == pytest.approx(0.6)
    assert result.pool_wait == pytest.approx(0.5)
    assert result.jobs_in_system == pytest.approx(7.5)
    assert result.cost_per_server == pytest.approx(1.55)
    assert result.is_sustainable
    assert result.minimum_servers == 5


def test_fluid_equilibrium_above_arrival_rate_by_hand():
    # lambda = 0.5, phi = 0.8, N = 10: pool 0.8 / 0.2 = 4, w = 1 / (10 * 0.625 * 0.2) = 0.8,
    # cost = 1 * 0.5 + 0.5 * 0.8 = 0.9, N_min = ceil(1 / (0.625 * 0.2)) = 8.
    result = fluid_equilibrium(0.5, 10, 0.8)
    assert not result.pool_is_mean_field
    assert result.pool_length == pytest.approx(4.0)
    assert result.pool_wait == pytest.approx(0.8)
    assert result.cost_per_server == pytest.approx(0.9)
    assert result.minimum_servers == 8
    assert not fluid_equilibrium(0.5, 7, 0.8).is_sustainable


def test_fluid_equilibrium_matches_complete_pooling():
    pooled = complete_pooling(0.8, 6)
    result = fluid_equilibrium(0.8, 6)
    assert not result.pool_is_mean_field
    assert result.jobs_in_system == pytest.approx(pooled.jobs_in_system)
    assert result.pool_wait == pytest.approx(pooled.pool_wait)
    assert result.cost_per_server == pytest.approx(pooled.cost_per_server)


@pytest.mark.parametrize("rate", [0.3, 0.8])
@pytest.mark.parametrize("phi", [0.8, 0.85, 0.9, 0.99])
def test_jobs_in_system_above_arrival_rate(rate, phi):
    for servers in (2, 7, 40):
        result = fluid_equilibrium(rate, servers, phi)
        assert result.jobs_in_system == pytest.approx(phi / (1.0 - phi))


def test_jobs_in_system_grows_linearly_below_arrival_rate():
    small = fluid_equilibrium(0.8, 10, 0.6).jobs_in_system
    large = fluid_equilibrium(0.8, 20, 0.6).jobs_in_system
    assert large - small == pytest.approx(10 * 0.6)


@pytest.mark.parametrize("rate, expected", [(0.5, 2), (0.75, 4), (0.8, 5), (0.9, 10), (0.95, 20), (0.99, 100)])
def test_minimum_servers_at_arrival_rate(rate, expected):
    assert minimum_servers(rate) == expected
    assert minimum_servers(rate, rate) == expected


@pytest.mark.parametrize("rate, expected", [(0.8, 5), (0.9, 10)])
def test_minimum_servers_same_below_arrival_rate(rate, expected):
    for fraction in (0.2, 0.5, 0.9):
        assert minimum_servers(rate, rate * fraction) == expected
    assert minimum_servers(rate, rate ** 2) == expected


def test_minimum_servers_above_arrival_rate():
    # lambda = 0.5, phi = 0.75: 1 / ((2/3) * 0.25) = 6.
    assert minimum_servers(0.5, 0.75) == 6
    # A smaller wait limit asks for a larger market: 1 / (0.2 * 0.5) = 10.
    assert minimum_servers(0.8, 0.8, wait_limit=0.5) == 10


def test_minimum_servers_is_where_wait_falls_below_limit():
    for rate in (0.6, 0.8, 0.9):
        smallest = minimum_servers(rate)
        assert fluid_equilibrium(rate, smallest).is_sustainable
        if smallest > 2:
            assert not fluid_equilibrium(rate, smallest - 1).is_sustainable


def test_help_cost_changes_closed_form_status():
    assert fluid_equilibrium(0.8, 10, 0.6).closed_form_is_best_response
    assert not fluid_equilibrium(0.8, 10, 0.6, help_cost=1.2).closed_form_is_best_response
    # Complete pooling stays a best response with c_help > c while w <= 1 + c - c_help = 0.8.
    assert fluid_equilibrium(0.8, 10, help_cost=1.2).closed_form_is_best_response
    assert not fluid_equilibrium(0.8, 6, help_cost=1.2).closed_form_is_best_response


# ---------------------------------------------------------------------------
# Invalid input.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("arguments, name", [
    ({"arrival_rate": 1.0}, "arrival_rate"),
    ({"arrival_rate": 0.0}, "arrival_rate"),
    ({"arrival_rate": float("nan")}, "arrival_rate"),
    ({"arrival_rate": "0.5"}, "arrival_rate"),
    ({"servers": 1}, "servers"),
    ({"servers": 2.5}, "servers"),
    ({"token_probability": 1.0}, "token_probability"),
    ({"token_probability": -0.2}, "token_probability"),
    ({"processing_cost": -1.0}, "processing_cost"),
    ({"help_cost": float("inf")}, "help_cost"),
])
def test_fluid_equilibrium_rejects_bad_input(arguments, name):
    values = {"arrival_rate": 0.8, "servers": 10, "token_probability": 0.6}
    values.update(arguments)
    with pytest.raises(ValueError, match=name):
        fluid_equilibrium(**values)


def test_best_response_rejects_bad_input():
    with pytest.raises(ValueError, match="token_probability"):
        best_response(0.5, 0.0)
    with pytest.raises(ValueError, match="arrival_rate"):
        best_response(1.5, 0.5)
    with pytest.raises(ValueError, match="wait_limit"):
        minimum_servers(0.5, 0.5, wait_limit=float("nan"))
