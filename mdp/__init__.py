"""Token mechanism for decentralized resource pooling.

Sub-modules, data flowing one way:

- :mod:`mdp.model`: the market parameters (:class:`Market`).
- :mod:`mdp.closed_forms`: exact costs without pooling and under complete pooling.
- :mod:`mdp.policy`: server one's policies on the (q1, q0) grid and their file format.
- :mod:`mdp.kernels`, :mod:`mdp.chain`: compiled Bellman sweeps and the truncated chain.
- :mod:`mdp.evaluation`: exact long-run rates of a given policy.
- :mod:`mdp.dual`: the token dual and its cutting-plane maximisation.
- :mod:`mdp.solver`: server one's best deviation with certified bounds.
- :mod:`mdp.fluid`: the one-server best response to the mean-field pool.
- :mod:`mdp.equilibrium`, :mod:`mdp.exact_pool`, :mod:`mdp.token_design`,
  :mod:`mdp.heterogeneous`: closed forms of the fluid mean-field equilibrium,
  the exact finite-N pool, the choice of phi and unequal servers.
- :mod:`mdp.simulation`: the N-server token market with integer tokens.
- :mod:`mdp.experiments`, :mod:`mdp.runner`: experiment files, sweeps and their cache.
"""

from .closed_forms import crp_cost, no_pooling_cost
from .model import Market
from .equilibrium import best_response, complete_pooling, fluid_equilibrium, minimum_servers, no_pooling
from .evaluation import PolicyEvaluation, evaluate_policy
from .exact_pool import exact_minimum_servers, exact_pool
from .fluid import FluidResponse, solve_fluid_best_response
from .policy import Policy, load_policy, save_policy
from .heterogeneous import heterogeneous_equilibrium
from .simulation import Estimate, SimulationResult, simulate, simulate_market
from .solver import (ConvergenceWarning, DeviationResult, TrueGapBracket, TruncationWarning,
                     solve_best_deviation, true_gap_bracket)

__version__ = "0.1.0"

__all__ = [
    "Market", "Policy", "PolicyEvaluation", "DeviationResult", "TrueGapBracket", "FluidResponse",
    "TruncationWarning", "ConvergenceWarning",
    "solve_best_deviation", "true_gap_bracket", "evaluate_policy", "solve_fluid_best_response",
    "crp_cost", "no_pooling_cost", "load_policy", "save_policy",
    "no_pooling", "complete_pooling", "best_response", "fluid_equilibrium", "minimum_servers",
    "exact_pool", "exact_minimum_servers", "heterogeneous_equilibrium",
    "simulate", "simulate_market", "SimulationResult", "Estimate",
]
