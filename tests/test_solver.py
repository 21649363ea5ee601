"""Best-deviation solver: reference values, closed forms, an independent LP, truncation, I/O."""

import math
import warnings

import numpy as np
import pytest

from lp_reference import solve_lp
from mdp import (Market, Policy, crp_cost, evaluate_policy, load_policy, no_pooling_cost, save_policy,
                 solve_best_deviation, true_gap_bracket)

REFERENCE_VALUES = [
    # (market, truncation, best deviation cost): values of the model specification, obtained
    # there by independent LP and value-iteration solutions agreeing to 1e-10.
    (Market(0.7, 2), (5, 10), 1.4111730501),
    (Market(0.8, 3), (6, 12), 1.5833499970),
    (Market(0.9, 4), (8, 16), 1.9358600207),
    (Market(0.8, 3, wait_model="others"), (6, 12), 1.7878877714),
    (Market(0.8, 3, help_cost=2.0), (6, 12), 1.9520487635),
]


def solve_fixed(market, truncation, tolerance=1e-10):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small truncations have a heavy boundary on purpose
        return solve_best_deviation(market, tolerance, truncation=truncation)


@pytest.mark.parametrize("market, truncation, expected", REFERENCE_VALUES)
def test_reference_values(market, truncation, expected):
    result = solve_fixed(market, truncation)
    assert result.converged, result.message
    assert result.best_cost == pytest.approx(expected, abs=1e-8)
    assert result.lower_bound <= expected + 1e-10
    assert result.upper_bound >= expected - 1e-10


@pytest.mark.parametrize("wait_model", ["all", "others"])
def test_crp_evaluates_to_closed_form(wait_model):
    market = Market(0.8, 6, help_cost=1.5, wait_model=wait_model)
    own_limit, pool_limit = 4, 160
    send = np.ones((own_limit + 1, pool_limit + 1))
    send[0, :] = 0.0
    send[:, -1] = 0.0
    always_help = np.ones((own_limit + 1, pool_limit + 1), dtype=int)
    evaluation = evaluate_policy(market, Policy.deterministic(market, send, always_help))
    rate_of_pool = 6 if wait_model == "all" else 5
    expected = 1.5 * 0.8 + 0.8 / (rate_of_pool * 0.2)
    assert evaluation.cost == pytest.approx(expected, abs=1e-9)
    assert crp_cost(market) == pytest.approx(expected, abs=1e-15)
    assert evaluation.request_rate == pytest.approx(0.8, abs=1e-9)
    assert evaluation.offer_rate == pytest.approx(1.0, abs=1e-12)
    assert evaluation.mean_pool_length == pytest.approx(0.8 / 0.2, abs=1e-9)


def test_no_pooling_closed_form():
    market = Market(0.75, 4, processing_cost=2.0)
    assert no_pooling_cost(market) == pytest.approx(2.0 * 0.75 + 0.75 / 0.25)


LP_CASES = [
    (Market(0.7, 2), (4, 8)),
    (Market(0.8, 3), (5, 10)),
    (Market(0.9, 2), (5, 10)),                          # constraint slack: token price 0
    (Market(0.8, 3, token_probability=0.9), (5, 10)),   # phi > lambda, off-equilibrium
    (Market(0.8, 3, token_probability=0.6), (5, 10)),   # phi < lambda, CRP infeasible
    (Market(0.7, 4, processing_cost=0.0), (4, 10)),
    (Market(0.8, 3, processing_cost=2.5, help_cost=1.0, wait_model="others"), (5, 10)),
]


@pytest.mark.parametrize("market, truncation", LP_CASES)
def test_agrees_with_linear_program(market, truncation):
    result = solve_fixed(market, truncation)
    optimum = solve_lp(market.arrival_rate, market.servers, *truncation,
                       processing_cost=market.processing_cost, help_cost=market.help_cost,
                       token_probability=market.token_probability, pool_rate=market.pool_service_rate)
    assert result.best_cost == pytest.approx(optimum, abs=1e-7)
    assert result.lower_bound <= optimum + 1e-9
    assert optimum <= result.upper_bound + 1e-9
    assert result.token_rate <= 1e-10


def test_slack_constraint_has_zero_price():
    result = solve_best_deviation(Market(0.9, 2), 1e-7)
    assert result.converged, result.message
    assert result.token_price == 0.0
    assert result.token_rate < 0.0
    assert not result.is_mixed


def test_mixed_optimum_spends_exactly_its_tokens():
    result = solve_best_deviation(Market(0.8, 5), 1e-8)
    assert result.is_mixed
    assert 0.0 < result.mixing_weight < 1.0
    assert abs(result.token_rate) < 1e-10
    first, second = (evaluate_policy(result.market, policy) for policy in result.deterministic_policies)
    assert first.token_rate > 0.0
    assert second.token_rate <= 0.0
    mixed_cost = result.mixing_weight * second.cost + (1.0 - result.mixing_weight) * first.cost
    assert result.best_cost == pytest.approx(mixed_cost, rel=1e-9)
    assert evaluate_policy(result.market, result.policy).cost == pytest.approx(result.best_cost, rel=1e-12)


def test_automatic_truncation_matches_doubled():
    tolerance = 1e-6
    market = Market(0.85, 6)
    result = solve_best_deviation(market, tolerance)
    assert result.converged, result.message
    assert result.boundary_mass <= tolerance
    assert result.truncation_change <= tolerance
    own_limit, pool_limit = result.truncation
    doubled = solve_best_deviation(market, 1e-9, truncation=(2 * own_limit, 2 * pool_limit))
    assert abs(result.best_cost - doubled.best_cost) <= 2 * tolerance * doubled.best_cost
    assert result.lower_bound <= doubled.upper_bound * (1 + tolerance)


def test_truncation_limit_warns_and_reports():
    with pytest.warns(RuntimeWarning, match="truncation limit"):
        result = solve_best_deviation(Market(0.9, 5), 1e-8, max_states=400)
    assert not result.converged
    assert "max_states = 400" in result.message


@pytest.mark.parametrize("market", [Market(0.7, 3), Market(0.9, 8), Market(0.8, 4, token_probability=0.95),
                                    Market(0.8, 2, processing_cost=3.0)])
def test_gap_nonnegative_when_crp_feasible(market):
    result = solve_best_deviation(market, 1e-6)
    assert result.best_cost <= result.crp_cost * (1 + 1e-9)
    assert result.gap_lower >= -1e-9
    assert result.gap_lower <= result.gap <= result.gap_upper


def test_gap_decreases_with_servers():
    gaps = [solve_best_deviation(Market(0.8, servers), 1e-6).gap for servers in (3, 6, 12, 24)]
    assert all(later < earlier for earlier, later in zip(gaps, gaps[1:]))


def test_true_gap_bracket():
    market = Market(0.8, 6)
    bracket = true_gap_bracket(market, 1e-7)
    direct = solve_best_deviation(market, 1e-7)
    assert bracket.gap_upper == pytest.approx(direct.gap, rel=1e-6)
    assert bracket.gap_lower <= bracket.gap_upper
    assert bracket.others_only.best_cost >= bracket.all_servers.best_cost
    assert bracket.crp_cost == pytest.approx(crp_cost(market))
    assert bracket.certified_lower <= bracket.gap_lower <= bracket.gap_upper <= bracket.certified_upper


def test_policy_costs_bracket_between_wait_models():
    # The same policy is charged more when only the others serve the pool.
    result = solve_best_deviation(Market(0.8, 4), 1e-6)
    optimistic = evaluate_policy(result.market, result.policy)
    pessimistic = evaluate_policy(result.market.replace(wait_model="others"), result.policy)
    assert optimistic.cost == pytest.approx(result.best_cost, rel=1e-12)
    assert pessimistic.cost > optimistic.cost


def test_saved_policy_loads_back_equal(tmp_path):
    result = solve_best_deviation(Market(0.8, 4), 1e-6)
    path = save_policy(result, tmp_path / "policy")
    assert path.endswith(".npz")
    loaded = load_policy(path)
    assert loaded == result.policy
    assert loaded.metadata["token_price"] == pytest.approx(result.token_price)
    assert evaluate_policy(loaded.market, loaded).cost == pytest.approx(result.best_cost, rel=1e-12)


@pytest.mark.parametrize("arguments, message", [
    (dict(arrival_rate=0.0, servers=3), "arrival_rate must be in \\(0, 1\\), got 0.0"),
    (dict(arrival_rate=1.0, servers=3), "arrival_rate"),
    (dict(arrival_rate=float("nan"), servers=3), "arrival_rate must be finite"),
    (dict(arrival_rate=0.5, servers=1), "servers must be an integer in \\[2, infinity\\], got 1"),
    (dict(arrival_rate=0.5, servers=2.5), "servers must be an integer, got 2.5"),
    (dict(arrival_rate=0.5, servers=3, token_probability=1.0), "token_probability"),
    (dict(arrival_rate=0.5, servers=3, token_probability=0.0), "token_probability"),
    (dict(arrival_rate=0.5, servers=3, processing_cost=-1.0), "processing_cost must be in \\[0, infinity\\)"),
    (dict(arrival_rate=0.5, servers=3, help_cost=float("inf")), "help_cost must be finite"),
    (dict(arrival_rate=0.5, servers=3, wait_model="none"), "wait_model must be one of"),
    (dict(arrival_rate="0.5", servers=3), "arrival_rate must be a real number"),
])
def test_market_rejects_bad_input(arguments, message):
    with pytest.raises(ValueError, match=message):
        Market(**arguments)


@pytest.mark.parametrize("options, message", [
    (dict(tolerance=0.0), "tolerance must be in \\[1e-10, 0.1\\]"),
    (dict(tolerance=1e-13), "tolerance must be in \\[1e-10, 0.1\\]"),
    (dict(tolerance=float("nan")), "tolerance must be finite"),
    (dict(truncation=(3,)), "truncation must be a pair"),
    (dict(truncation=(0, 5)), "truncation Q1 must be an integer in \\[1, infinity\\]"),
    (dict(truncation=(3, 2.5)), "truncation Q0 must be an integer"),
])
def test_solver_rejects_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        solve_best_deviation(Market(0.5, 3), **options)


def test_evaluate_policy_rejects_other_market():
    result = solve_best_deviation(Market(0.8, 4), 1e-5)
    with pytest.raises(ValueError, match="differs"):
        evaluate_policy(Market(0.8, 5), result.policy)


def test_load_policy_rejects_bad_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_policy(tmp_path / "missing.npz")
    other = tmp_path / "other.npz"
    np.savez(other, values=np.zeros(3))
    with pytest.raises(ValueError, match="not a pooling-mdp policy file"):
        load_policy(other)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="cannot read policy file"):
        load_policy(garbage)


def test_numba_fallback_without_cache(monkeypatch):
    import numba

    from mdp import _numba

    real = numba.njit

    def refusing(*args, cache=False, **options):
        if cache:
            raise RuntimeError("cannot cache function: no locator available")
        return real(*args, cache=cache, **options)

    monkeypatch.setattr(_numba.numba, "njit", refusing)

    @_numba.jit
    def add(a, b):
        return a + b

    assert add(2, 3) == 5
    assert math.isclose(add(0.5, 0.25), 0.75)


def test_unwritable_numba_cache_still_solves(tmp_path):
    # A cache directory that cannot be created plays the part of a read-only install.
    import os
    import subprocess
    import sys

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(blocker / "cache"))
    script = "from mdp import Market, solve_best_deviation; print(solve_best_deviation(Market(0.7, 2), 1e-6).best_cost)"
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               env=environment, timeout=600)
    assert completed.returncode == 0, completed.stderr
    in_process = solve_best_deviation(Market(0.7, 2), 1e-6).best_cost
    assert float(completed.stdout) == pytest.approx(in_process, rel=1e-12)


def test_very_large_market_solves_cleanly():
    # With N = 100000 one event in 10^5 moves server one's queue, which used to
    # break the sparse stationary solve.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = solve_best_deviation(Market(0.8, 100_000), 1e-8)
    assert result.converged, result.message
    assert result.lower_bound <= result.best_cost <= result.crp_cost
    assert result.crp_cost == pytest.approx(0.8 + 0.8 / (100_000 * 0.2))


def test_huge_fixed_truncation_rejected_before_work():
    with pytest.raises(ValueError, match="more than max_states"):
        solve_best_deviation(Market(0.8, 4), truncation=(100_000, 100_000))


def test_saved_policy_file_is_world_readable(tmp_path):
    import os
    import stat

    result = solve_best_deviation(Market(0.8, 4), 1e-5)
    path = save_policy(result, tmp_path / "policy.npz")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask


def test_load_policy_rejects_single_arrays(tmp_path):
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        load_policy(single)


def test_stationary_law_with_tiny_pinned_state():
    # A birth-death chain that drifts up: the first state, which the solver
    # pins, has a share of about 1e-15, so its solution spans fifteen decades.
    import scipy.sparse as sparse

    from mdp.evaluation import _stationary

    size, up, down = 16, 0.9, 0.1
    matrix = sparse.lil_matrix((size, size))
    for state in range(size):
        if state + 1 < size:
            matrix[state, state + 1] = up
        if state > 0:
            matrix[state, state - 1] = down
        matrix[state, state] = 1.0 - matrix[state].sum()
    law = _stationary(matrix.tocsr())
    expected = (up / down) ** np.arange(size)
    expected /= expected.sum()
    # Long-run averages need absolute accuracy: the largest share is 0.89.
    assert np.allclose(law, expected, rtol=1e-9, atol=1e-15)
