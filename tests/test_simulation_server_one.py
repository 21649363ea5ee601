"""Server one on its best-deviation policy, simulated in the real market.

The MDP charges a job sent to the pool its expected wait with the pool served
at rate R. In the real pool the departures that a job waits for happen at rate
N - 1 plus 1 while server one helps, so the simulated cost of any policy lies
between its exact evaluations under R = N ("all") and R = N - 1 ("others").
Tokens are fluid, as in the MDP. Tolerance: WIDTH batch-means standard errors.
"""

import pytest

from mdp.evaluation import evaluate_policy
from mdp.model import Market
from mdp.simulation import simulate_market
from mdp.solver import solve_best_deviation

WIDTH = 5.0  # tolerance in standard errors


@pytest.mark.parametrize("arrival_rate, servers", [(0.8, 3), (0.9, 4), (0.7, 2)])
def test_best_deviation_cost_within_bracket(arrival_rate, servers):
    # 2e5 time units after a warm-up of 1e3 (about 1e6 to 1.5e6 events per market).
    market = Market(arrival_rate, servers)
    policy = solve_best_deviation(market, 1e-4).policy
    all_servers = evaluate_policy(market, policy).cost
    others_only = evaluate_policy(market.replace(wait_model="others"), policy).cost

    result = simulate_market(market, policy, fluid=True, horizon=2e5, warm_up=1e3, seed=31)
    cost = result.servers.cost
    simulated = cost.mean[0]
    error = cost.standard_error[0]
    assert error < 0.02 * simulated
    assert simulated >= all_servers - WIDTH * error, f"{simulated} ± {error} below the R = N cost {all_servers}"
    assert simulated <= others_only + WIDTH * error, f"{simulated} ± {error} above the R = N - 1 cost {others_only}"
    assert result.server_one_outside_grid_fraction < 1e-3


def test_best_deviation_spends_no_more_tokens_than_earned():
    # The solver's policy meets the token constraint exactly; the simulated drift must not be negative.
    market = Market(0.8, 3)
    policy = solve_best_deviation(market, 1e-4).policy
    result = simulate_market(market, policy, fluid=True, horizon=2e5, warm_up=1e3, seed=32)
    drift = result.servers.token_drift
    assert drift.mean[0] >= -WIDTH * drift.standard_error[0]
