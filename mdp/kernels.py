"""Compiled kernels of the best-deviation MDP.

State (a, b): server one's own queue a = q1 in 0..Q1 and the pool b = q0 in 0..Q0.
The chain is uniformised at the total event rate Lambda, so one step is one
event of the market. For a token price eta >= 0, one Bellman sweep computes

    U(a, b) = [ a + lambda A(a, b) + (N-1) lambda h(a, b+) + (N-1) h(a, b-)
                + min{ c + h(a-1, b),  c_help(b) - eta phi + h(a, b-),  h(a, b) } ] / Lambda
    (T h)(a, b) = min( U(a, b),  W(b) + eta + (T h)(a-1, b + s) ),

where b+ = min(b + 1, Q0), b- = max(b - 1, 0), W(b) is the charge for sending
a job that joins behind b others, s is the pool step of a sent job (1 in the
market model, 0 in the one-server fluid model whose pool is a mean-field
summary), and A(a, b) is the value after server one's own arrival: h(a+1, b)
below Q1, a forced send at Q1, the loss of the job when nothing can move. The
second line is the minimum over the number of jobs sent, taken one job at a
time along the anti-diagonal, so increasing a visits every predecessor first.

Ties are broken towards the decision that spends fewer tokens (stop sending,
help rather than process or idle), so that at eta = 0 the greedy policy is the
least token-hungry of the optimal ones.

Kernels work in place on arrays they are given and never allocate in their loops.
"""

from __future__ import annotations

import numpy as np

from ._numba import jit

OWN, HELP, IDLE = 0, 1, 2


def capacity_one_hot(actions: np.ndarray) -> np.ndarray:
    """Turn capacity action codes (OWN, HELP, IDLE) into probabilities on a new last axis."""
    actions = np.asarray(actions, dtype=np.int64)
    probabilities = np.zeros(actions.shape + (3,))
    np.put_along_axis(probabilities, actions[..., None], 1.0, axis=-1)
    return probabilities


@jit
def bellman_sweep(h, out, send, capacity, own_arrival, others_arrival, others_capacity,
                  event_rate, processing_cost, token_probability, token_price,
                  send_cost, help_cost, pool_step):
    """Write T h into ``out`` and the greedy decisions into ``send`` and ``capacity``."""
    own_limit = h.shape[0] - 1
    pool_limit = h.shape[1] - 1
    inverse_rate = 1.0 / event_rate
    help_reward = token_price * token_probability
    for a in range(own_limit + 1):
        for b in range(pool_limit + 1):
            up = min(b + 1, pool_limit)
            down = max(b - 1, 0)
            can_send = b + pool_step <= pool_limit

            if a < own_limit:
                after_arrival = h[a + 1, b]
            elif can_send:
                after_arrival = send_cost[b] + token_price + h[a, b + pool_step]
            else:
                after_arrival = h[a, b]

            best = h[a, b]
            action = IDLE
            value = help_cost[b] - help_reward + h[a, down]
            if value <= best:
                best = value
                action = HELP
            if a >= 1:
                value = processing_cost + h[a - 1, b]
                if value < best:
                    best = value
                    action = OWN

            stay = inverse_rate * (a + own_arrival * after_arrival + others_arrival * h[a, up]
                                   + others_capacity * h[a, down] + best)
            decision = 0
            if a >= 1 and can_send:
                value = send_cost[b] + token_price + out[a - 1, b + pool_step]
                if value < stay:
                    stay = value
                    decision = 1
            out[a, b] = stay
            send[a, b] = decision
            capacity[a, b] = action


@jit
def relative_value_iteration(h, work, send, capacity, own_arrival, others_arrival, others_capacity,
                             event_rate, processing_cost, token_probability, token_price,
                             send_cost, help_cost, pool_step, max_iterations, span_tolerance):
    """Iterate h <- T h - (T h)(0, 0) until the span of T h - h is at most ``span_tolerance``.

    ``h`` is updated in place. ``send`` and ``capacity`` hold the greedy policy
    of the last iterate that was swept. Returns the number of sweeps and the
    smallest and largest entry of T h - h for that iterate: they bracket the
    optimal gain per step, g / Lambda.
    """
    lower = -np.inf
    upper = np.inf
    sweeps = 0
    own_limit = h.shape[0] - 1
    pool_limit = h.shape[1] - 1
    while sweeps < max_iterations:
        bellman_sweep(h, work, send, capacity, own_arrival, others_arrival, others_capacity,
                      event_rate, processing_cost, token_probability, token_price,
                      send_cost, help_cost, pool_step)
        sweeps += 1

        lower = np.inf
        upper = -np.inf
        for a in range(own_limit + 1):
            for b in range(pool_limit + 1):
                difference = work[a, b] - h[a, b]
                lower = min(lower, difference)
                upper = max(upper, difference)

        reference = work[0, 0]
        for a in range(own_limit + 1):
            for b in range(pool_limit + 1):
                h[a, b] = work[a, b] - reference
        if upper - lower <= span_tolerance:
            break
    return sweeps, lower, upper


@jit
def send_walks(transfer_probability, send_cost, pool_step):
    """Follow the sends that start in each state until the policy stops.

    A send from (a, b) moves to (a - 1, b + pool_step). Returns, per starting
    state in row-major order, the distribution of the state where sending stops
    (CSR arrays ``pointer``, ``target``, ``probability``), the expected number
    of jobs sent and their expected total charge.
    """
    own_limit = transfer_probability.shape[0] - 1
    pool_limit = transfer_probability.shape[1] - 1
    columns = pool_limit + 1
    states = (own_limit + 1) * columns
    pointer = np.zeros(states + 1, dtype=np.int64)

    # Counting pass: the walk from (a, b) has at most min(a, ...) + 1 stopping points.
    for a in range(own_limit + 1):
        for b in range(pool_limit + 1):
            length = 0
            row, col, mass = a, b, 1.0
            while mass > 0.0:
                move = transfer_probability[row, col]
                if (1.0 - move) > 0.0:
                    length += 1
                if move <= 0.0:
                    break
                mass *= move
                row -= 1
                col += pool_step
            pointer[a * columns + b + 1] = length
    for index in range(states):
        pointer[index + 1] += pointer[index]

    target = np.empty(pointer[states], dtype=np.int64)
    probability = np.empty(pointer[states])
    expected_sends = np.zeros(states)
    expected_charge = np.zeros(states)
    for a in range(own_limit + 1):
        for b in range(pool_limit + 1):
            start = a * columns + b
            slot = pointer[start]
            row, col, mass = a, b, 1.0
            while mass > 0.0:
                move = transfer_probability[row, col]
                if (1.0 - move) > 0.0:
                    target[slot] = row * columns + col
                    probability[slot] = mass * (1.0 - move)
                    slot += 1
                if move <= 0.0:
                    break
                expected_sends[start] += mass * move
                expected_charge[start] += mass * move * send_cost[col]
                mass *= move
                row -= 1
                col += pool_step
    return pointer, target, probability, expected_sends, expected_charge


@jit
def event_targets(a, b, own_limit, pool_limit, pool_step, own_arrival, others_arrival,
                  others_capacity, capacity_probabilities, targets, rates):
    """Fill ``targets`` and ``rates`` with the states reached by each event from stop state (a, b).

    Rates are per unit time (not divided by Lambda); they sum to the event rate.
    Returns the number of entries written (always 6).
    """
    columns = pool_limit + 1
    up = min(b + 1, pool_limit)
    down = max(b - 1, 0)
    if a < own_limit:
        targets[0] = (a + 1) * columns + b
    elif b + pool_step <= pool_limit:
        targets[0] = a * columns + b + pool_step
    else:
        targets[0] = a * columns + b
    rates[0] = own_arrival
    targets[1] = a * columns + up
    rates[1] = others_arrival
    targets[2] = a * columns + down
    rates[2] = others_capacity
    targets[3] = max(a - 1, 0) * columns + b
    rates[3] = capacity_probabilities[a, b, OWN] if a >= 1 else 0.0
    targets[4] = a * columns + down
    rates[4] = capacity_probabilities[a, b, HELP]
    targets[5] = a * columns + b
    rates[5] = capacity_probabilities[a, b, IDLE] + (capacity_probabilities[a, b, OWN] if a == 0 else 0.0)
    return 6


@jit
def stop_chain_entries(capacity_probabilities, pointer, target, probability, own_arrival,
                       others_arrival, others_capacity, event_rate, pool_step):
    """Return COO arrays of the one-step transition matrix between stop states.

    From a stop state one event happens, then the policy sends jobs until it
    stops again; duplicates in the COO arrays are to be summed.
    """
    own_limit = capacity_probabilities.shape[0] - 1
    pool_limit = capacity_probabilities.shape[1] - 1
    columns = pool_limit + 1
    targets = np.empty(6, dtype=np.int64)
    rates = np.empty(6)

    count = 0
    for a in range(own_limit + 1):
        for b in range(pool_limit + 1):
            event_targets(a, b, own_limit, pool_limit, pool_step, own_arrival, others_arrival,
                          others_capacity, capacity_probabilities, targets, rates)
            for k in range(6):
                count += pointer[targets[k] + 1] - pointer[targets[k]]

    rows = np.empty(count, dtype=np.int64)
    cols = np.empty(count, dtype=np.int64)
    values = np.empty(count)
    slot = 0
    for a in range(own_limit + 1):
        for b in range(pool_limit + 1):
            source = a * columns + b
            event_targets(a, b, own_limit, pool_limit, pool_step, own_arrival, others_arrival,
                          others_capacity, capacity_probabilities, targets, rates)
            for k in range(6):
                step_probability = rates[k] / event_rate
                for entry in range(pointer[targets[k]], pointer[targets[k] + 1]):
                    rows[slot] = source
                    cols[slot] = target[entry]
                    values[slot] = step_probability * probability[entry]
                    slot += 1
    return rows, cols, values


@jit
def entry_rates(stationary, capacity_probabilities, own_arrival, others_arrival, others_capacity,
                pool_step, rates_out):
    """Write into ``rates_out`` the rate per unit time at which each state is entered by an event.

    ``stationary`` is the time fraction spent in each stop state (row-major).
    """
    own_limit = capacity_probabilities.shape[0] - 1
    pool_limit = capacity_probabilities.shape[1] - 1
    columns = pool_limit + 1
    targets = np.empty(6, dtype=np.int64)
    rates = np.empty(6)
    rates_out[:] = 0.0
    for a in range(own_limit + 1):
        for b in range(pool_limit + 1):
            mass = stationary[a * columns + b]
            if mass == 0.0:
                continue
            event_targets(a, b, own_limit, pool_limit, pool_step, own_arrival, others_arrival,
                          others_capacity, capacity_probabilities, targets, rates)
            for k in range(6):
                rates_out[targets[k]] += mass * rates[k]


@jit
def decision_flows(entry, transfer_probability, pool_step, arrival_flow, send_flow):
    """Write the flow into each state's decision (events plus sends from above) and the send flow out.

    Flows are per unit time. The send flow out of (a, b) is the arrival flow
    times the send probability and feeds (a - 1, b + pool_step).
    """
    own_limit = transfer_probability.shape[0] - 1
    pool_limit = transfer_probability.shape[1] - 1
    columns = pool_limit + 1
    for a in range(own_limit, -1, -1):
        for b in range(pool_limit + 1):
            flow = entry[a * columns + b]
            if a < own_limit and b - pool_step >= 0:
                flow += send_flow[(a + 1) * columns + b - pool_step]
            arrival_flow[a * columns + b] = flow
            send_flow[a * columns + b] = flow * transfer_probability[a, b]


@jit
def policy_value_entries(send, capacity, own_arrival, others_arrival, others_capacity, event_rate,
                         processing_cost, token_probability, token_price, send_cost, help_cost, pool_step):
    """Return COO arrays and right-hand side of the relative-value equations of a deterministic policy.

    Unknowns are h on the grid (row-major) and, last, the gain per step g / Lambda.
    A state that sends satisfies h(s) - h(next) = W(b) + eta; a state that
    stops satisfies h(s) - sum_e p_e h(target_e) + g / Lambda = c(s), the
    expected one-step Lagrangian cost; the last row fixes h(0, 0) = 0.
    """
    own_limit = send.shape[0] - 1
    pool_limit = send.shape[1] - 1
    columns = pool_limit + 1
    states = (own_limit + 1) * columns
    capacity_probabilities = np.zeros((own_limit + 1, pool_limit + 1, 3))
    for a in range(own_limit + 1):
        for b in range(pool_limit + 1):
            capacity_probabilities[a, b, capacity[a, b]] = 1.0
    targets = np.empty(6, dtype=np.int64)
    rates = np.empty(6)
    limit = states * 8 + 1
    rows = np.empty(limit, dtype=np.int64)
    cols = np.empty(limit, dtype=np.int64)
    values = np.empty(limit)
    right = np.zeros(states + 1)
    slot = 0
    for a in range(own_limit + 1):
        for b in range(pool_limit + 1):
            state = a * columns + b
            diagonal_slot = slot
            rows[slot] = state
            cols[slot] = state
            values[slot] = 1.0
            slot += 1
            if send[a, b] == 1:
                rows[slot] = state
                cols[slot] = (a - 1) * columns + b + pool_step
                values[slot] = -1.0
                slot += 1
                right[state] = send_cost[b] + token_price
                continue
            event_targets(a, b, own_limit, pool_limit, pool_step, own_arrival, others_arrival,
                          others_capacity, capacity_probabilities, targets, rates)
            # The diagonal is the probability of leaving the state, summed from the
            # moving events: 1 minus the self-loop probability would cancel when
            # Lambda is large.
            leaving = 0.0
            for k in range(6):
                if rates[k] != 0.0 and targets[k] != state:
                    rows[slot] = state
                    cols[slot] = targets[k]
                    values[slot] = -rates[k] / event_rate
                    slot += 1
                    leaving += rates[k] / event_rate
            values[diagonal_slot] = leaving
            rows[slot] = state
            cols[slot] = states
            values[slot] = 1.0
            slot += 1
            cost = float(a)
            if a == own_limit and b + pool_step <= pool_limit:
                cost += own_arrival * (send_cost[b] + token_price)
            action = capacity[a, b]
            if action == OWN:
                cost += processing_cost
            elif action == HELP:
                cost += help_cost[b] - token_price * token_probability
            right[state] = cost / event_rate
    rows[slot] = states
    cols[slot] = 0
    values[slot] = 1.0
    slot += 1
    return rows[:slot], cols[:slot], values[:slot], right
