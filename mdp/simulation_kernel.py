"""Compiled event loop of the token market simulation.

The market is a continuous-time Markov chain: server i receives jobs at rate
``arrival_rates[i]`` and capacity units at rate ``capacity_rates[i]``. The loop
draws the time to the next event from the total rate and the event itself from
a Walker alias table over the 2N event kinds (index i < N is an arrival at
server i, index N + i a capacity unit of server i), so each event costs O(1)
whatever N is.

Every job lives in one of two kinds of ring buffers: a per-server own queue
(one row of a 2-D array) or the shared first-come-first-served pool. Both
double in size when full, so no job ever becomes a Python object and memory
grows only with the largest queue reached, not with the run length.

Time integrals (own queue, own jobs in the pool, token balance) are kept per
server and brought up to date only when that server's state changes, so an
event touches O(1) servers. At each batch boundary every server is brought up
to date and the cumulative statistics are copied into ``snapshots``. The
caller takes differences of consecutive snapshots to obtain batch means.

The compiled loop runs a bounded number of events per call and keeps its whole
state in a :class:`MarketState` between calls. :func:`run_market` calls it
until the run ends, so Python gets control back every ``chunk_events`` events
and a Ctrl-C raises ``KeyboardInterrupt`` there. A Numba function cannot be
interrupted while it runs.

The kernel only reads the arrays it is given and writes into its output
buffers and its state. It allocates only when a ring buffer grows.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from dataclasses import dataclass

import numba
import numpy as np

from ._numba import jit

# Columns of the per-server statistics array. Counts and time integrals are
# cumulative from time zero; the caller differences snapshots.
ARRIVALS = 0
OWN_QUEUE_AREA = 1          # integral of the server's own queue length
POOL_AREA = 2               # integral of the number of the server's jobs in the pool
BALANCE_AREA = 3            # integral of the token balance
REQUESTS = 4                # accepted requests (jobs sent to the pool)
REFUSALS = 5                # requests refused for lack of a token
OFFERS = 6                  # capacity units offered as help
TOKENS_EARNED = 7
OWN_PROCESSED = 8           # own jobs the server processed
POOL_PROCESSED = 9          # pool jobs the server processed (any owner)
COMPLETED = 10              # the server's jobs completed, by anyone
POOLED_COMPLETED = 11       # the server's jobs completed after passing through the pool
OWN_QUEUE_TIME = 12         # summed time the server's completed jobs spent in its own queue
POOL_TIME = 13              # summed time the server's completed jobs spent in the pool
STATISTIC_COUNT = 14

# Exit codes of the kernel.
FINISHED = 0
QUEUE_LIMIT_REACHED = 1
EVENT_LIMIT_REACHED = 2     # the chunk is done; call the kernel again to go on

# Entries of MarketState.counters.
EVENTS = 0
DECISIONS = 1
DECISIONS_OUTSIDE_GRID = 2
LOGGED = 3
NEXT_BOUNDARY = 4
NEXT_SAMPLE = 5
POOL_HEAD = 6
POOL_LENGTH = 7
JOBS_IN_SYSTEM = 8
COUNTER_COUNT = 9

# Entries of MarketState.clock.
TIME = 0
HISTOGRAM_TIME = 1          # time up to which the pool-length histogram is counted

# Events per call of the compiled loop. At the 5 million events per second
# that benchmarks/bench_simulation.py requires, a call takes at most 0.2 s.
# Each call costs about 5 microseconds of argument passing (measured with
# one-event chunks), which is negligible here.
CHUNK_EVENTS = 1_000_000

# A ring buffer never grows past this many jobs; a run that needs more is
# unstable for all practical purposes and stops with QUEUE_LIMIT_REACHED.
MAXIMUM_QUEUE_CAPACITY = 1 << 27

# Keep limit that means "never send a job": larger than any reachable queue.
NEVER_SEND = 1 << 62


@jit
def _bring_up_to_date(statistics, server, time, last_update, own_length, pool_count, balance):
    elapsed = time - last_update[server]
    statistics[server, OWN_QUEUE_AREA] += own_length[server] * elapsed
    statistics[server, POOL_AREA] += pool_count[server] * elapsed
    statistics[server, BALANCE_AREA] += balance[server] * elapsed
    last_update[server] = time


@jit
def _grow_pool(owner, arrival, sent, head, count, histogram):
    capacity = owner.shape[0]
    new_owner = np.empty(2 * capacity, np.int64)
    new_arrival = np.empty(2 * capacity)
    new_sent = np.empty(2 * capacity)
    for position in range(count):
        index = (head + position) & (capacity - 1)
        new_owner[position] = owner[index]
        new_arrival[position] = arrival[index]
        new_sent[position] = sent[index]
    new_histogram = np.zeros(2 * capacity + 1)
    new_histogram[:histogram.shape[0]] = histogram
    return new_owner, new_arrival, new_sent, new_histogram


@jit
def _grow_own_queues(own_arrival, own_head, own_length):
    servers, capacity = own_arrival.shape
    grown = np.empty((servers, 2 * capacity))
    for server in range(servers):
        for position in range(own_length[server]):
            grown[server, position] = own_arrival[server, (own_head[server] + position) & (capacity - 1)]
        own_head[server] = 0
    return grown


@dataclass(eq=False)
class MarketState:
    """The state of the market between two calls of the compiled loop.

    The ring buffers and the histogram are replaced when they grow, so the
    loop returns them and :func:`run_market` stores the new arrays here.
    """

    counters: np.ndarray        # int64, indexed by EVENTS ... JOBS_IN_SYSTEM
    clock: np.ndarray           # float64, indexed by TIME and HISTOGRAM_TIME
    statistics: np.ndarray      # (N, STATISTIC_COUNT), cumulative from time zero
    last_update: np.ndarray     # time up to which each server's integrals are counted
    own_length: np.ndarray
    pending: np.ndarray         # refused requests still waiting for a token
    pool_count: np.ndarray      # each server's jobs in the pool
    own_head: np.ndarray
    own_arrival: np.ndarray     # (N, capacity) ring buffers of arrival times
    pool_owner: np.ndarray
    pool_arrival: np.ndarray
    pool_sent: np.ndarray
    histogram: np.ndarray       # time with 0, 1, 2, ... jobs in the pool after the warm-up

    @classmethod
    def empty(cls, servers: int, warm_up: float) -> "MarketState":
        """Return the state at time zero: empty queues and an empty pool."""
        clock = np.zeros(2)
        clock[HISTOGRAM_TIME] = warm_up
        own_capacity = 16
        pool_capacity = 64
        return cls(
            counters=np.zeros(COUNTER_COUNT, np.int64),
            clock=clock,
            statistics=np.zeros((servers, STATISTIC_COUNT)),
            last_update=np.zeros(servers),
            own_length=np.zeros(servers, np.int64),
            pending=np.zeros(servers, np.int64),
            pool_count=np.zeros(servers, np.int64),
            own_head=np.zeros(servers, np.int64),
            own_arrival=np.empty((servers, own_capacity)),
            pool_owner=np.empty(pool_capacity, np.int64),
            pool_arrival=np.empty(pool_capacity),
            pool_sent=np.empty(pool_capacity),
            histogram=np.zeros(pool_capacity + 1),
        )


@jit
def _seed_random(seed):
    # Numba keeps its own generator per thread, which only compiled code can seed.
    np.random.seed(seed)


def run_market(alias_probability, alias_index, total_rate,
               keep_limit, keep_probability, help_probability, own_first,
               follows_file, transfer_probability, capacity_cumulative,
               token_probability, fluid, balance,
               boundaries, snapshots, seed,
               trace_interval, trace_servers, trace_balances, trace_pool, trace_jobs,
               log_owner, log_arrival, log_sent, log_completion, log_processor,
               chunk_events=None):
    """Simulate the market from empty queues until ``boundaries[-1]``.

    The compiled loop runs ``chunk_events`` events per call, so a
    ``KeyboardInterrupt`` is raised within one chunk. The chunk size does not
    change the result: every chunk continues the same random stream.

    Parameters
    ----------
    alias_probability, alias_index : ndarray, shape (2N,)
        Walker alias table of the event kinds.
    total_rate : float
        Sum of all arrival and capacity rates.
    keep_limit, keep_probability, help_probability : ndarray, shape (N,)
        Threshold policy of each server: a job that arrives to j waiting jobs is
        kept when j < k - 1, kept with probability p when j = k - 1 and sent when
        j >= k; a capacity unit that is not used on an own job is offered as help
        with probability ``help_probability``.
    own_first : ndarray of bool, shape (N,)
        Whether a capacity unit processes an own job whenever the own queue is
        not empty.
    follows_file : bool
        Whether server 0 follows ``transfer_probability`` and
        ``capacity_cumulative`` instead of its threshold policy.
    transfer_probability : ndarray, shape (Q1 + 1, Q0 + 1)
    capacity_cumulative : ndarray, shape (Q1 + 1, Q0 + 1, 2)
        Cumulative probabilities of own and own + help at server 0's capacity unit.
    token_probability : float
        Probability that an offer of help earns a token.
    fluid : bool
        Whether balances may go negative (requests are never refused).
    balance : ndarray of int64, shape (N,)
        Initial token balances; on return it contains the final balances.
    boundaries : ndarray, shape (B + 1,)
        End of the warm-up, then the end of each batch.
    snapshots : ndarray, shape (B + 1, N, STATISTIC_COUNT)
        Filled with the cumulative statistics at each boundary.
    seed : int
        Seed of Numba's random generator.
    trace_interval : float
        Sampling interval of the traces (ignored when the trace arrays are empty).
    trace_servers : ndarray of int64
        Servers whose token balance is traced.
    trace_balances, trace_pool, trace_jobs : ndarray
        Traces of the balances, the pool length and the jobs in system at times
        0, dt, 2 dt, ...; shapes (S, T), (T,), (T,).
    log_owner, log_arrival, log_sent, log_completion, log_processor : ndarray
        Filled with the first jobs completed after the warm-up; ``log_sent`` is
        NaN for a job its owner processed.
    chunk_events : int, optional
        Events per call of the compiled loop, >= 1; ``CHUNK_EVENTS`` by default.

    Returns
    -------
    tuple
        ``(status, events, pool_histogram, decisions, decisions_outside_grid, logged)``.
    """
    if chunk_events is None:
        chunk_events = CHUNK_EVENTS
    state = MarketState.empty(keep_limit.shape[0], boundaries[0])
    arguments = (alias_probability, alias_index, total_rate,
                 keep_limit, keep_probability, help_probability, own_first,
                 follows_file, transfer_probability, capacity_cumulative,
                 token_probability, fluid, balance,
                 boundaries, snapshots,
                 trace_interval, trace_servers, trace_balances, trace_pool, trace_jobs,
                 log_owner, log_arrival, log_sent, log_completion, log_processor)
    # Compile (or load from the cache) before SIGINT is deferred, so that Ctrl-C
    # still stops a compilation, which can take several seconds.
    _advance_market.compile(tuple(numba.typeof(value) for value in
                                  (*arguments, *_state_arrays(state), state.counters[EVENTS])))

    # NOTE: the chunks share Numba's per-thread generator, so no other compiled
    # code may draw random numbers on this thread until the run ends.
    _seed_random(seed)
    status = EVENT_LIMIT_REACHED
    with _interrupts_between_calls() as deliver_interrupt:
        while status == EVENT_LIMIT_REACHED:
            event_limit = state.counters[EVENTS] + chunk_events
            (status, state.own_arrival, state.pool_owner, state.pool_arrival, state.pool_sent,
             state.histogram) = _advance_market(*arguments, *_state_arrays(state), event_limit)
            deliver_interrupt()
    counters = state.counters
    return (status, int(counters[EVENTS]), state.histogram, int(counters[DECISIONS]),
            int(counters[DECISIONS_OUTSIDE_GRID]), int(counters[LOGGED]))


def _state_arrays(state: MarketState) -> tuple:
    return (state.counters, state.clock, state.statistics, state.last_update, state.own_length,
            state.pending, state.pool_count, state.own_head,
            state.own_arrival, state.pool_owner, state.pool_arrival, state.pool_sent, state.histogram)


@contextlib.contextmanager
def _interrupts_between_calls():
    """Hold back SIGINT while compiled code runs; the yielded function passes it on.

    A Python signal handler runs at the next Python bytecode. Numba 0.68 runs
    a Python function (``numba.core.serialize._numba_unpickle``) while it boxes
    the arrays that a compiled function returns, and a ``KeyboardInterrupt``
    raised there becomes ``SystemError: ... returned a result with an
    exception set``. So the handler here only records the signal, and the
    yielded function calls the previous handler, which raises
    ``KeyboardInterrupt`` by default. Nothing is deferred outside the main
    thread, where Python never runs signal handlers, or when SIGINT has no
    Python handler (ignored or the operating system's default).
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGINT)
    if not callable(previous):
        yield lambda: None
        return

    frames = []

    def record(signal_number, frame):
        frames.append(frame)

    def deliver():
        if frames:
            frame = frames[0]
            frames.clear()
            previous(signal.SIGINT, frame)

    signal.signal(signal.SIGINT, record)
    try:
        yield deliver
    finally:
        signal.signal(signal.SIGINT, previous)


@jit
def _advance_market(alias_probability, alias_index, total_rate,
                    keep_limit, keep_probability, help_probability, own_first,
                    follows_file, transfer_probability, capacity_cumulative,
                    token_probability, fluid, balance,
                    boundaries, snapshots,
                    trace_interval, trace_servers, trace_balances, trace_pool, trace_jobs,
                    log_owner, log_arrival, log_sent, log_completion, log_processor,
                    counters, clock, statistics, last_update, own_length, pending, pool_count, own_head,
                    own_arrival, pool_owner, pool_arrival, pool_sent, histogram,
                    event_limit):
    """Continue the market from ``counters`` and ``clock`` until the run ends or ``event_limit`` events.

    The arguments are those of :func:`run_market` and the fields of
    :class:`MarketState`, which this function updates in place. It stops only
    between events, so the next call draws the next random number of the same
    stream.

    Returns
    -------
    tuple
        ``(status, own_arrival, pool_owner, pool_arrival, pool_sent, histogram)``,
        the last five possibly grown.
    """
    servers = keep_limit.shape[0]
    kinds = alias_probability.shape[0]
    own_grid_limit = transfer_probability.shape[0] - 1
    pool_grid_limit = transfer_probability.shape[1] - 1
    warm_up = boundaries[0]
    boundary_count = boundaries.shape[0]
    sample_count = trace_pool.shape[0]
    log_size = log_owner.shape[0]

    own_capacity = own_arrival.shape[1]
    pool_capacity = pool_owner.shape[0]
    pool_head = counters[POOL_HEAD]
    pool_length = counters[POOL_LENGTH]
    histogram_time = clock[HISTOGRAM_TIME]
    jobs_in_system = counters[JOBS_IN_SYSTEM]
    time = clock[TIME]
    events = counters[EVENTS]
    decisions = counters[DECISIONS]
    decisions_outside_grid = counters[DECISIONS_OUTSIDE_GRID]
    logged = counters[LOGGED]
    boundary = counters[NEXT_BOUNDARY]
    sample = counters[NEXT_SAMPLE]
    status = FINISHED

    while True:
        next_time = time - math.log(1.0 - np.random.random()) / total_rate

        # Traces record the state in force at each sampling time.
        while sample < sample_count and sample * trace_interval <= next_time:
            for row in range(trace_servers.shape[0]):
                trace_balances[row, sample] = balance[trace_servers[row]]
            trace_pool[sample] = pool_length
            trace_jobs[sample] = jobs_in_system
            sample += 1

        # Batch boundaries: bring every server up to date and copy the totals.
        while boundary < boundary_count and next_time >= boundaries[boundary]:
            for server in range(servers):
                _bring_up_to_date(statistics, server, boundaries[boundary], last_update,
                                  own_length, pool_count, balance)
            snapshots[boundary, :, :] = statistics
            boundary += 1
        if boundary == boundary_count:
            if boundaries[-1] > histogram_time:
                histogram[pool_length] += boundaries[-1] - histogram_time
            break

        if next_time > histogram_time:
            histogram[pool_length] += next_time - histogram_time
            histogram_time = next_time
        time = next_time
        events += 1

        # Event kind from the alias table, with one uniform number.
        scaled = np.random.random() * kinds
        kind = int(scaled)
        if kind >= kinds:
            kind = kinds - 1
        if scaled - kind >= alias_probability[kind]:
            kind = alias_index[kind]

        send_from = -1
        offer_from = -1
        if kind < servers:

            # Arrival: the job joins the tail of its owner's queue.
            server = kind
            _bring_up_to_date(statistics, server, time, last_update, own_length, pool_count, balance)
            statistics[server, ARRIVALS] += 1.0
            if own_length[server] == own_capacity:
                if 2 * own_capacity > MAXIMUM_QUEUE_CAPACITY:
                    status = QUEUE_LIMIT_REACHED
                    break
                own_arrival = _grow_own_queues(own_arrival, own_head, own_length)
                own_capacity *= 2
            found = own_length[server]
            own_arrival[server, (own_head[server] + found) & (own_capacity - 1)] = time
            own_length[server] += 1
            jobs_in_system += 1
            if not (follows_file and server == 0):
                limit = keep_limit[server]
                if found >= limit:
                    send_from = server
                elif found == limit - 1 and np.random.random() >= keep_probability[server]:
                    send_from = server
        else:

            # Capacity unit: an own job, an offer of help, or idle.
            server = kind - servers
            _bring_up_to_date(statistics, server, time, last_update, own_length, pool_count, balance)
            use_own = False
            if follows_file and server == 0:
                row = min(own_length[0], own_grid_limit)
                column = min(pool_length, pool_grid_limit)
                draw = np.random.random()
                if draw < capacity_cumulative[row, column, 0]:
                    use_own = own_length[0] > 0
                elif draw < capacity_cumulative[row, column, 1]:
                    offer_from = server
            elif own_first[server] and own_length[server] > 0:
                use_own = True
            else:
                chance = help_probability[server]
                if chance >= 1.0 or np.random.random() < chance:
                    offer_from = server

            if use_own:
                head = own_head[server]
                arrived = own_arrival[server, head]
                own_head[server] = (head + 1) & (own_capacity - 1)
                own_length[server] -= 1
                jobs_in_system -= 1
                if pending[server] > 0:
                    pending[server] -= 1
                statistics[server, OWN_PROCESSED] += 1.0
                statistics[server, COMPLETED] += 1.0
                statistics[server, OWN_QUEUE_TIME] += time - arrived
                if time >= warm_up and logged < log_size:
                    log_owner[logged] = server
                    log_arrival[logged] = arrived
                    log_sent[logged] = np.nan
                    log_completion[logged] = time
                    log_processor[logged] = server
                    logged += 1

        if offer_from >= 0:

            # Offer of help: process the oldest pool job, earn a token with probability phi.
            server = offer_from
            statistics[server, OFFERS] += 1.0
            if pool_length > 0:
                owner = pool_owner[pool_head]
                arrived = pool_arrival[pool_head]
                sent = pool_sent[pool_head]
                pool_head = (pool_head + 1) & (pool_capacity - 1)
                pool_length -= 1
                jobs_in_system -= 1
                if owner != server:
                    _bring_up_to_date(statistics, owner, time, last_update, own_length, pool_count, balance)
                pool_count[owner] -= 1
                statistics[server, POOL_PROCESSED] += 1.0
                statistics[owner, COMPLETED] += 1.0
                statistics[owner, POOLED_COMPLETED] += 1.0
                statistics[owner, OWN_QUEUE_TIME] += sent - arrived
                statistics[owner, POOL_TIME] += time - sent
                if time >= warm_up and logged < log_size:
                    log_owner[logged] = owner
                    log_arrival[logged] = arrived
                    log_sent[logged] = sent
                    log_completion[logged] = time
                    log_processor[logged] = server
                    logged += 1
            if np.random.random() < token_probability:
                balance[server] += 1
                statistics[server, TOKENS_EARNED] += 1.0
                # A request refused earlier is sent as soon as a token is there.
                if pending[server] > 0 and own_length[server] > 0:
                    pending[server] -= 1
                    send_from = server

        # Requests: an ordinary server's send, then server 0's decisions from the file.
        attempts = 1 if send_from >= 0 else 0
        if follows_file:
            attempts += 1
        first_decision = True
        while attempts > 0:
            if send_from < 0:
                # Server 0 decides again after every event of the market.
                row = own_length[0]
                column = pool_length
                if first_decision:
                    first_decision = False
                    if time >= warm_up:
                        decisions += 1
                        if row > own_grid_limit or column > pool_grid_limit:
                            decisions_outside_grid += 1
                chance = transfer_probability[min(row, own_grid_limit), min(column, pool_grid_limit)]
                if chance <= 0.0 or (chance < 1.0 and np.random.random() >= chance):
                    break
                if own_length[0] == 0:
                    break
                server = 0
                _bring_up_to_date(statistics, server, time, last_update, own_length, pool_count, balance)
            else:
                server = send_from
                send_from = -1
                attempts -= 1

            if not fluid and balance[server] <= 0:
                statistics[server, REFUSALS] += 1.0
                if not (follows_file and server == 0):
                    pending[server] += 1
                    continue
                break

            # Accepted request: the newest own job moves to the tail of the pool.
            if pool_length == pool_capacity:
                if 2 * pool_capacity > MAXIMUM_QUEUE_CAPACITY:
                    status = QUEUE_LIMIT_REACHED
                    break
                pool_owner, pool_arrival, pool_sent, histogram = _grow_pool(
                    pool_owner, pool_arrival, pool_sent, pool_head, pool_length, histogram)
                pool_head = 0
                pool_capacity *= 2
            newest = (own_head[server] + own_length[server] - 1) & (own_capacity - 1)
            tail = (pool_head + pool_length) & (pool_capacity - 1)
            pool_owner[tail] = server
            pool_arrival[tail] = own_arrival[server, newest]
            pool_sent[tail] = time
            pool_length += 1
            own_length[server] -= 1
            pool_count[server] += 1
            balance[server] -= 1
            statistics[server, REQUESTS] += 1.0
        if status != FINISHED:
            break
        if events >= event_limit:
            status = EVENT_LIMIT_REACHED
            break

    counters[EVENTS] = events
    counters[DECISIONS] = decisions
    counters[DECISIONS_OUTSIDE_GRID] = decisions_outside_grid
    counters[LOGGED] = logged
    counters[NEXT_BOUNDARY] = boundary
    counters[NEXT_SAMPLE] = sample
    counters[POOL_HEAD] = pool_head
    counters[POOL_LENGTH] = pool_length
    counters[JOBS_IN_SYSTEM] = jobs_in_system
    clock[TIME] = time
    clock[HISTOGRAM_TIME] = histogram_time
    return status, own_arrival, pool_owner, pool_arrival, pool_sent, histogram
