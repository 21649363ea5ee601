"""Token mechanism for decentralized resource pooling.

Sub-modules, data flowing one way:

- :mod:`mdp.model`: the market parameters (:class:`Market`).
- :mod:`mdp.closed_forms`: exact costs without pooling and under complete pooling.
- :mod:`mdp.policy`: server one's policies on the (q1, q0) grid and their file format.
"""

from .closed_forms import crp_cost, no_pooling_cost
from .model import Market
from .policy import Policy, load_policy, save_policy

__version__ = "0.1.0"

__all__ = [
    "Market", "Policy", "crp_cost", "no_pooling_cost", "load_policy", "save_policy",
]
