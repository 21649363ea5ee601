"""Exact finite-N pool, the design question and heterogeneous servers."""

import itertools

import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg

from mdp.equilibrium import fluid_equilibrium
from mdp.exact_pool import MAX_PHASES, exact_minimum_servers, exact_pool, phase_count
from mdp.heterogeneous import heterogeneous_equilibrium
from mdp.token_design import scan_token_probability


def brute_force_mean_pool(rate, servers, keep, offer_probability, pool_limit):
    """Mean pool of the market built server by server, with the pool truncated at ``pool_limit``.

    ``keep[j]`` is the probability of keeping a job that arrives to j own jobs;
    the last level always sends. Each server is tracked separately, so this
    shares no code with the count-based chain under test.
    """
    levels = len(keep)
    own_states = list(itertools.product(range(levels), repeat=servers))
    index = {}
    for own in own_states:
        for pool in range(pool_limit + 1):
            index[(own, pool)] = len(index)
    rows, columns, values = [], [], []

    def add(source, target, rate_value):
        rows.append(index[source])
        columns.append(index[target])
        values.append(rate_value)

    for (own, pool), _ in index.items():
        for server, level in enumerate(own):
            up = list(own)
            up[server] = level + 1
            if keep[level] > 0:
                add((own, pool), (tuple(up), pool), rate * keep[level])
            if keep[level] < 1 and pool < pool_limit:
                add((own, pool), (own, pool + 1), rate * (1 - keep[level]))
            if level > 0:
                down = list(own)
                down[server] = level - 1
                add((own, pool), (tuple(down), pool), 1.0)
            elif pool > 0:
                add((own, pool), (own, pool - 1), offer_probability)

    size = len(index)
    generator = scipy.sparse.csr_matrix((values, (rows, columns)), shape=(size, size))
    generator = generator - scipy.sparse.diags(np.asarray(generator.sum(axis=1)).ravel())
    system = generator.T.tolil()
    system[0, :] = 1.0
    right = np.zeros(size)
    right[0] = 1.0
    law = scipy.sparse.linalg.spsolve(system.tocsc(), right)
    pools = np.array([pool for (_, pool) in index])
    return float(law @ pools)


# ---------------------------------------------------------------------------
# Exact pool.
# ---------------------------------------------------------------------------

def test_exact_pool_reference_example():
    # lambda = 0.8, phi = 0.6, N = 10: mean pool 2.6949, w = 0.8983, Q = 8.6949.
    result = exact_pool(0.8, 10, 0.6)
    assert result.mean_pool_length == pytest.approx(2.6949, abs=5e-5)
    assert result.pool_wait == pytest.approx(0.8983, abs=5e-5)
    assert result.jobs_in_system == pytest.approx(8.6949, abs=5e-5)
    assert result.phases == 66
    assert result.residual < 1e-10


def test_exact_pool_against_server_by_server_chain():
    # lambda = 0.8, phi = 0.6: keep at 0 jobs, keep at 1 job with p = 0.3125, send at 2 jobs.
    # P(L > x) decays roughly like 0.8^x, so a pool limit of 200 leaves about 1e-19 behind.
    expected = brute_force_mean_pool(0.8, 3, [1.0, 0.3125, 0.0], 1.0, pool_limit=200)
    assert exact_pool(0.8, 3, 0.6).mean_pool_length == pytest.approx(expected, rel=1e-8)


def test_exact_pool_against_chain_at_one_threshold():
    # lambda = 0.5, phi = 0.3: keep at 0 jobs with p = 0.8, send at 1 job.
    expected = brute_force_mean_pool(0.5, 4, [0.8, 0.0], 1.0, pool_limit=150)
    assert exact_pool(0.5, 4, 0.3).mean_pool_length == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("rate, phi, servers", [(0.6, 0.75, 5), (0.7, 0.7, 6), (0.3, 0.9, 2), (0.9, 0.9, 200)])
def test_exact_pool_is_mm1_without_kept_jobs(rate, phi, servers):
    # M/M/1 with utilisation phi: E[L] = phi / (1 - phi), P(L > 0) = phi, w = E[L] / (N lambda).
    result = exact_pool(rate, servers, phi)
    assert result.phases == 1
    assert result.mean_pool_length == pytest.approx(phi / (1 - phi), rel=1e-10)
    assert result.pool_busy_probability == pytest.approx(phi, rel=1e-10)
    assert result.pool_wait == pytest.approx(phi / (1 - phi) / (servers * rate), rel=1e-10)
    assert result.jobs_in_system == pytest.approx(phi / (1 - phi), rel=1e-10)


def test_exact_pool_at_power_drops_unreachable_level():
    # phi = 0.8^2 keeps at most one job, so 5 servers on levels {0, 1} give 6 phases.
    assert exact_pool(0.8, 5, 0.64).phases == 6


@pytest.mark.parametrize("phi", [0.45, 0.6, 0.7])
def test_exact_pool_longer_than_mean_field(phi):
    for servers in (3, 8):
        result = exact_pool(0.8, servers, phi)
        assert result.mean_pool_length > result.mean_field.pool_length
        assert result.pool_wait > result.mean_field.pool_wait


def test_exact_pool_busy_probability_is_token_probability():
    # Tokens balance only if offers find the pool busy with probability phi; offers come from
    # servers with empty queues, which see a busier pool than a random time does.
    result = exact_pool(0.8, 10, 0.6)
    assert result.pool_busy_probability > 0.6


def test_exact_cost_uses_exact_wait():
    # c = 1, c_help = 2: cost = (0.8 - 0.3) + 2 * 0.3 + 0.6 + 0.3 w.
    result = exact_pool(0.8, 10, 0.6, processing_cost=1.0, help_cost=2.0)
    assert result.cost_per_server == pytest.approx(0.5 + 0.6 + 0.6 + 0.3 * result.pool_wait)
    assert result.wait_limit == pytest.approx(0.0)
    assert not result.is_sustainable


def test_exact_minimum_servers_reference_example():
    # The exact wait is 1.014 at N = 9 and 0.898 at N = 10; the mean-field N_min is 5.
    result = exact_minimum_servers(0.8, 0.6)
    assert result.minimum_servers == 10
    assert result.previous_pool_wait == pytest.approx(1.014, abs=1e-3)
    assert result.pool_wait == pytest.approx(0.8983, abs=1e-4)
    assert result.mean_field_minimum_servers == 5


def test_exact_minimum_servers_at_arrival_rate():
    assert exact_minimum_servers(0.8).minimum_servers == 5
    assert exact_minimum_servers(0.9).minimum_servers == 10


def test_exact_minimum_servers_above_arrival_rate():
    # phi = 0.9 > lambda = 0.8: w = 0.9 / (N 0.8 0.1) = 11.25 / N, so N = 12 (w = 0.9375), and N = 11 has 1.0227.
    result = exact_minimum_servers(0.8, 0.9)
    assert result.minimum_servers == 12
    assert result.pool_wait == pytest.approx(0.9375)
    assert result.previous_pool_wait == pytest.approx(11.25 / 11)


def test_exact_pool_rejects_large_chain():
    servers = 44
    assert phase_count(servers, 3) > MAX_PHASES
    with pytest.raises(ValueError, match="pooling-mdp simulate"):
        exact_pool(0.8, servers, 0.6)


def test_exact_pool_rejects_bad_input():
    with pytest.raises(ValueError, match="servers"):
        exact_pool(0.8, 1, 0.6)
    with pytest.raises(ValueError, match="token_probability"):
        exact_pool(0.8, 10, 1.2)


# ---------------------------------------------------------------------------
# Which phi minimises the jobs in system.
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [0.5, 0.7, 0.8, 0.9])
def test_arrival_rate_minimises_mean_field_jobs(rate):
    smallest = fluid_equilibrium(rate, 2).minimum_servers
    for servers in (smallest, 2 * smallest, 50):
        scan = scan_token_probability(rate, servers)
        assert scan.best_token_probability == rate
        assert scan.best_jobs_in_system == pytest.approx(rate / (1 - rate))
        assert scan.is_conclusive


def test_mean_field_jobs_flat_at_smallest_market():
    # With N = 1 / (1 - lambda) and lambda^2 <= phi <= lambda: p lambda = (lambda - phi) / (1 - lambda),
    # q = p lambda / (1 + p lambda) = (lambda - phi) / (1 - phi), and
    # N q + phi / (1 - phi) = (lambda - phi lambda) / ((1 - lambda)(1 - phi)) = lambda / (1 - lambda).
    for phi in (0.26, 0.3, 0.42, 0.49):
        assert fluid_equilibrium(0.5, 2, phi).jobs_in_system == pytest.approx(1.0)
    assert fluid_equilibrium(0.5, 2, 0.2).jobs_in_system > 1.0
    assert fluid_equilibrium(0.5, 3, 0.3).jobs_in_system > 1.0


def test_arrival_rate_minimises_exact_jobs():
    scan = scan_token_probability(0.8, 10, exact=True)
    assert scan.best_token_probability == 0.8
    assert scan.is_conclusive
    assert not scan.pool_is_mean_field.any()
    # phi = 0.6 is sustainable exactly at N = 10 but holds 8.69 jobs against 4.
    position = int(np.argmin(np.abs(scan.token_probabilities - 0.6)))
    assert scan.is_sustainable[position]
    assert scan.jobs_in_system[position] == pytest.approx(8.6949, abs=5e-5)


def test_scan_below_minimum_market_has_no_sustainable_point():
    scan = scan_token_probability(0.8, 4)
    assert not scan.is_sustainable.any()
    assert np.isnan(scan.best_token_probability)


def test_scan_marks_mean_field_points():
    scan = scan_token_probability(0.8, 10, token_probabilities=[0.5, 0.9])
    np.testing.assert_array_equal(scan.token_probabilities, [0.5, 0.8, 0.9])
    np.testing.assert_array_equal(scan.pool_is_mean_field, [True, False, False])


def test_scan_rejects_bad_grid():
    with pytest.raises(ValueError, match="token_probabilities"):
        scan_token_probability(0.8, 10, token_probabilities=[0.5, 1.0])
    with pytest.raises(ValueError, match="token_probabilities"):
        scan_token_probability(0.8, 10, token_probabilities=[])


# ---------------------------------------------------------------------------
# Heterogeneous servers.
# ---------------------------------------------------------------------------

def test_heterogeneous_by_hand():
    # loads (0.4, 0.4, 0.3), phi = 0.4; offers 0.2/0.4, 0.4/0.4, 0.3/0.4 = (0.5, 1, 0.75);
    # pool rate 0.9 / 0.4 = 2.25, w = 1 / (2.25 - 0.9); central load 0.9 / 2.5 = 0.36.
    result = heterogeneous_equilibrium([0.2, 0.4, 0.3], [0.5, 1.0, 1.0])
    assert result.token_probability == pytest.approx(0.4)
    np.testing.assert_allclose(result.offer_probabilities, [1.0, 1.0, 0.75])
    np.testing.assert_allclose(result.offer_rates, [0.5, 1.0, 0.75])
    np.testing.assert_allclose(result.token_balances, [0.0, 0.0, 0.0], atol=1e-15)
    assert result.pool_utilisation == pytest.approx(0.4)
    assert result.jobs_in_system == pytest.approx(2 / 3)
    assert result.pool_wait == pytest.approx(1 / 1.35)
    np.testing.assert_allclose(result.processing_rates, [0.2, 0.4, 0.3])
    assert result.central_load == pytest.approx(0.36)
    assert result.central_jobs_in_system == pytest.approx(0.5625)
    np.testing.assert_allclose(result.central_processing_rates, [0.18, 0.36, 0.36])
    assert result.no_pooling_jobs_in_system == pytest.approx(4 / 3 + 3 / 7)
    assert result.wait_limit == pytest.approx(1.0)
    assert result.is_sustainable


def test_heterogeneous_unsustainable_with_fast_server():
    # loads (0.75, 0.1): w = 1 / (1.6 / 0.75 - 1.6) = 1.875 > min(1/2, 1/1).
    result = heterogeneous_equilibrium([1.5, 0.1], [2.0, 1.0])
    assert result.pool_wait == pytest.approx(1.875)
    assert result.wait_limit == pytest.approx(0.5)
    assert not result.is_sustainable


def test_heterogeneous_equal_servers_is_complete_pooling():
    result = heterogeneous_equilibrium([0.8] * 5, [1.0] * 5)
    assert result.pool_wait == pytest.approx(1 / (5 * 0.2))
    assert result.jobs_in_system == pytest.approx(4.0)
    assert result.central_jobs_in_system == pytest.approx(4.0)


@pytest.mark.parametrize("arrivals, capacities, name", [
    ([0.5, 0.5], [1.0], "same length"),
    ([0.5], [1.0], "at least 2"),
    ([0.5, -0.1], [1.0, 1.0], r"arrival_rates\[1\]"),
    ([0.5, 0.2], [1.0, 0.0], r"capacity_rates\[1\]"),
    ([0.5, 1.0], [1.0, 1.0], "server 2 has load"),
])
def test_heterogeneous_rejects_bad_input(arrivals, capacities, name):
    with pytest.raises(ValueError, match=name):
        heterogeneous_equilibrium(arrivals, capacities)
