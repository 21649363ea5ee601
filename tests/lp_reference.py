"""An occupation-measure linear program of the truncated constrained MDP, written from the model.

It shares no code with the solver's kernels: every (state, number of jobs
sent, capacity decision) is a variable, the minimum over the number sent is
left to the LP, and HiGHS solves it with tight tolerances.
"""

import numpy as np
import scipy.sparse as sparse
from scipy.optimize import linprog


def solve_lp(arrival_rate, servers, own_limit, pool_limit, processing_cost=1.0, help_cost=None,
             token_probability=None, pool_rate=None):
    """Return the optimal long-run cost of the truncated constrained MDP."""
    help_cost = processing_cost if help_cost is None else help_cost
    phi = arrival_rate if token_probability is None else token_probability
    pool_rate = servers if pool_rate is None else pool_rate
    event_rate = servers * (arrival_rate + 1.0)

    def charge(pool):
        return (pool + 1.0) / pool_rate

    def index(own, pool):
        return own * (pool_limit + 1) + pool

    states = (own_limit + 1) * (pool_limit + 1)
    costs, tokens, columns = [], [], []
    for q1 in range(own_limit + 1):
        for q0 in range(pool_limit + 1):
            for sent in range(min(q1, pool_limit - q0) + 1):
                own, pool = q1 - sent, q0 + sent
                send_charge = sum(charge(q0 + j) for j in range(sent))
                for decision in ("own", "help", "idle"):
                    if decision == "own" and own == 0:
                        continue
                    step_cost = send_charge + own / event_rate
                    step_tokens = float(sent)
                    moves = {}

                    def move(target, probability):
                        moves[target] = moves.get(target, 0.0) + probability

                    arrival = arrival_rate / event_rate
                    if own < own_limit:
                        move(index(own + 1, pool), arrival)
                    elif pool < pool_limit:
                        move(index(own, pool + 1), arrival)
                        step_cost += arrival * charge(pool)
                        step_tokens += arrival
                    else:
                        move(index(own, pool), arrival)
                    move(index(own, min(pool + 1, pool_limit)), (servers - 1) * arrival_rate / event_rate)
                    move(index(own, max(pool - 1, 0)), (servers - 1) / event_rate)
                    unit = 1.0 / event_rate
                    if decision == "own":
                        move(index(own - 1, pool), unit)
                        step_cost += unit * processing_cost
                    elif decision == "help":
                        move(index(own, max(pool - 1, 0)), unit)
                        step_cost += unit * (help_cost if pool >= 1 else 0.0)
                        step_tokens -= unit * phi
                    else:
                        move(index(own, pool), unit)
                    costs.append(step_cost)
                    tokens.append(step_tokens)
                    columns.append((index(q1, q0), moves))

    variables = len(columns)
    rows, cols, values = [], [], []
    for column, (source, moves) in enumerate(columns):
        rows.append(source)
        cols.append(column)
        values.append(1.0)
        for target, probability in moves.items():
            rows.append(target)
            cols.append(column)
            values.append(-probability)
    balance = sparse.csr_matrix((values, (rows, cols)), shape=(states, variables))
    equality = sparse.vstack([balance, sparse.csr_matrix(np.ones((1, variables)))])
    right = np.zeros(states + 1)
    right[-1] = 1.0
    outcome = linprog(
        np.array(costs), A_ub=np.array([tokens]), b_ub=np.array([0.0]), A_eq=equality, b_eq=right,
        bounds=(0, None), method="highs",
        options={"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10},
    )
    assert outcome.status == 0, outcome.message
    return event_rate * outcome.fun
