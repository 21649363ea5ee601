"""Event-driven simulation of the token mechanism with N servers and one shared pool.

Server i receives jobs as a Poisson process of rate lambda_i and capacity units
as a Poisson process of rate mu_i (lambda_i = lambda and mu_i = 1 in a
symmetric market). A job waits in its owner's queue until the owner processes
it with a capacity unit or sends it to the shared first-come-first-served pool
(a request). A capacity unit processes an own job, is offered as help (the
oldest pool job, if any, is processed) or is lost. Every accepted request costs
one token and every offer of help earns one token with probability phi, whether
or not the pool held a job. Waiting costs the job's owner 1 per unit of time in
either queue. Processing costs the processing server c for an own job and
c_help for a pool job.

Token balances start at an integer endowment. With integer tokens a request
finds a zero balance refused: the job stays in its owner's queue, the request
stays pending, and the server sends the job as soon as it earns a token (or
drops the pending request when it processes one of its own jobs). In the fluid
mode balances may go negative and no request is refused. The pool is never
truncated.

Policies of the ordinary servers (the ``policy`` names of :func:`simulate`):

``"none"``
    No pooling: keep every job, process own jobs, never offer help.
``"crp"``
    Complete pooling: request help for every job on arrival and offer help at
    every capacity unit (with integer tokens, jobs of refused requests wait for
    a token, because capacity is never used on own jobs).
``"threshold"``
    The fluid mean-field best response to phi (:func:`mdp.equilibrium.best_response`,
    applied with rho_i = lambda_i / mu_i): keep at most k jobs, keep a job that
    arrives to k - 1 jobs with probability p, process own jobs first and offer
    help otherwise, at a fraction lambda / phi of the units when phi > lambda.
``"heterogeneous"``
    Request help for every job and offer help with probability rho_i / rho_max.

A :class:`~mdp.policy.Policy` instead makes server one (index 0) follow it
while the others play complete pooling, as in the best-deviation MDP: server
one sees its own queue and the pool length, decides again right after every
event of the market, sends jobs one at a time with the file's transfer
probability and uses its capacity units with the file's probabilities. Beyond
the file's grid the edge row or column applies; the result counts how often.

Statistics are time averages over ``horizon`` time units after a warm-up of
``warm_up``, cut into equal batches; each estimate carries the batch-means
standard error and a 95 % Student-t half-width. The same seed gives the same
result.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from . import simulation_kernel as kernel
from .model import Market
from .policy import Policy
from .validation import check_choice, check_integer, check_real

POLICIES = ("none", "crp", "threshold", "heterogeneous")
CONFIDENCE_LEVEL = 0.95
_MAXIMUM_TRACE_VALUES = 50_000_000
_MAXIMUM_JOB_LOG = 10_000_000
_RATE_TOLERANCE = 1e-12


@dataclass(frozen=True, eq=False)
class Estimate:
    """A batch-means estimate: the mean, its standard error and a 95 % confidence half-width.

    The fields are floats for a system quantity and arrays of length N for a
    per-server one.
    """

    mean: float | np.ndarray
    standard_error: float | np.ndarray
    half_width: float | np.ndarray

    def as_dict(self) -> dict:
        """Return the three fields as JSON-ready floats or lists."""
        return {name: _plain(getattr(self, name)) for name in ("mean", "standard_error", "half_width")}


@dataclass(frozen=True, eq=False)
class ServerStatistics:
    """Per-server estimates; every field is an :class:`Estimate` of arrays of length N.

    Rates are per unit time. Holding costs equal mean numbers of jobs because a
    waiting job costs 1 per unit of time.
    """

    own_holding_cost: Estimate
    pool_holding_cost: Estimate
    processing_cost: Estimate
    cost: Estimate
    request_rate: Estimate
    refusal_rate: Estimate
    offer_rate: Estimate
    token_earning_rate: Estimate
    token_drift: Estimate
    mean_token_balance: Estimate
    own_processing_rate: Estimate
    pool_processing_rate: Estimate
    processing_load: Estimate
    own_queue_time: Estimate
    pool_time: Estimate


@dataclass(frozen=True, eq=False)
class Trace:
    """State sampled every ``interval`` time units from time zero, warm-up included."""

    interval: float
    times: np.ndarray
    servers: np.ndarray
    token_balances: np.ndarray
    pool_length: np.ndarray
    jobs_in_system: np.ndarray


@dataclass(frozen=True, eq=False)
class JobLog:
    """The first jobs completed after the warm-up, one entry per job.

    ``sent_time`` is NaN for a job its owner processed; the time in the owner's
    queue is ``sent_time - arrival_time`` for pooled jobs and
    ``completion_time - arrival_time`` otherwise.
    """

    owner: np.ndarray
    arrival_time: np.ndarray
    sent_time: np.ndarray
    completion_time: np.ndarray
    processor: np.ndarray
    processing_cost: np.ndarray

    @property
    def own_queue_time(self) -> np.ndarray:
        """Time each job spent in its owner's queue."""
        left_owner = np.where(np.isnan(self.sent_time), self.completion_time, self.sent_time)
        return left_owner - self.arrival_time

    @property
    def pool_time(self) -> np.ndarray:
        """Time each job spent in the pool (zero for jobs processed by their owner)."""
        return np.where(np.isnan(self.sent_time), 0.0, self.completion_time - self.sent_time)


@dataclass(frozen=True, eq=False)
class SimulationSettings:
    """The validated inputs of a run."""

    arrival_rates: np.ndarray
    capacity_rates: np.ndarray
    policy: str
    token_probability: float
    processing_cost: float
    help_cost: float
    endowment: int
    fluid: bool
    horizon: float
    warm_up: float
    batches: int
    seed: int

    @property
    def servers(self) -> int:
        """Number of servers N."""
        return int(self.arrival_rates.shape[0])


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """Outcome of :func:`simulate`.

    Attributes
    ----------
    settings : SimulationSettings
    events : int
        Arrivals and capacity units simulated, warm-up included.
    jobs_in_system : Estimate
        Time-average number of jobs in all own queues and the pool.
    pool_length : Estimate
        Time-average pool length.
    pool_time : Estimate
        Mean time a job spends in the pool, over jobs that left it.
    pool_entry_rate : Estimate
        Accepted requests per unit time, all servers together.
    refusal_fraction : Estimate
        Refused requests as a fraction of all request attempts. An ordinary
        server requests a refused job again when it earns a token, and that
        accepted attempt counts too, so the fraction is at most 1/2 for them.
    pool_length_distribution : ndarray
        Fraction of the measured time with 0, 1, 2, ... jobs in the pool.
    servers : ServerStatistics
    final_token_balances : ndarray
        Token balances at the end of the run.
    server_one_decisions : int
        Decision points of server one after the warm-up (0 without a policy file).
    server_one_outside_grid : int
        Those at which server one's state lay beyond the file's grid, so that an
        edge row or column of the policy applied.
    trace : Trace or None
    job_log : JobLog or None
    """

    settings: SimulationSettings
    events: int
    jobs_in_system: Estimate
    pool_length: Estimate
    pool_time: Estimate
    pool_entry_rate: Estimate
    refusal_fraction: Estimate
    pool_length_distribution: np.ndarray
    servers: ServerStatistics
    final_token_balances: np.ndarray
    server_one_decisions: int
    server_one_outside_grid: int
    trace: Trace | None
    job_log: JobLog | None

    @property
    def server_one_outside_grid_fraction(self) -> float:
        """Fraction of server one's decision points beyond the file's grid (0 without a file)."""
        if self.server_one_decisions == 0:
            return 0.0
        return self.server_one_outside_grid / self.server_one_decisions

    def as_dict(self) -> dict:
        """Return a JSON-ready summary (traces and the job log left out)."""
        settings = {field.name: _plain(getattr(self.settings, field.name))
                    for field in dataclasses.fields(self.settings)}
        settings["servers"] = self.settings.servers
        per_server = {field.name: getattr(self.servers, field.name).as_dict()
                      for field in dataclasses.fields(self.servers)}
        return {
            "settings": settings,
            "confidence_level": CONFIDENCE_LEVEL,
            "events": self.events,
            "jobs_in_system": self.jobs_in_system.as_dict(),
            "pool_length": self.pool_length.as_dict(),
            "pool_time": self.pool_time.as_dict(),
            "pool_entry_rate": self.pool_entry_rate.as_dict(),
            "refusal_fraction": self.refusal_fraction.as_dict(),
            "pool_length_distribution": _plain(np.trim_zeros(self.pool_length_distribution, "b")),
            "servers": per_server,
            "final_token_balances": _plain(self.final_token_balances),
            "server_one_decisions": self.server_one_decisions,
            "server_one_outside_grid": self.server_one_outside_grid,
        }


def simulate(arrival_rates, capacity_rates=None, *, policy="crp", token_probability=None,
             processing_cost=1.0, help_cost=None, endowment=0, fluid=False,
             horizon=100_000.0, warm_up=1_000.0, batches=20, seed=0,
             trace_interval=None, trace_servers=(), job_log_size=0) -> SimulationResult:
    """Simulate the market and estimate its long-run averages by batch means.

    Parameters
    ----------
    arrival_rates : sequence of float
        Job arrival rate of each server; its length is N (at least 2).
    capacity_rates : sequence of float, optional
        Capacity rate of each server; all 1 by default. Each server needs
        ``arrival_rate < capacity_rate``.
    policy : {"none", "crp", "threshold", "heterogeneous"} or Policy
        Policy of every server, or server one's policy (the others then play
        complete pooling). A Policy needs a symmetric market with capacity 1
        that matches its own in N, lambda, phi, c and c_help.
    token_probability : float, optional
        phi in (0, 1). Default: the policy's market's phi for a Policy, else
        rho_max = max_i lambda_i / mu_i (lambda in a symmetric market).
    processing_cost, help_cost : float
        c and c_help (``None`` means c), both >= 0.
    endowment : int
        Initial token balance of every server, >= 0.
    fluid : bool
        Let balances go negative instead of refusing requests.
    horizon : float
        Measured time after the warm-up, > 0.
    warm_up : float
        Time simulated before measuring, >= 0.
    batches : int
        Number of equal batches of the measured time, in [2, 10000].
    seed : int
        Seed in [0, 2**32 - 1].
    trace_interval : float, optional
        Sampling interval of the traces; ``None`` records no trace.
    trace_servers : sequence of int
        Servers whose token balances are traced.
    job_log_size : int
        Number of completed jobs to record after the warm-up (0 records none).

    Returns
    -------
    SimulationResult

    Raises
    ------
    ValueError
        If an argument is invalid, before anything is simulated.
    RuntimeError
        If a queue outgrows 2**27 jobs, which only an unstable market does.
    """
    arrival_rates, capacity_rates = _check_rates(arrival_rates, capacity_rates)
    servers = arrival_rates.shape[0]
    file_policy = policy if isinstance(policy, Policy) else None
    policy_name = "file" if file_policy is not None else check_choice("policy", policy, POLICIES)
    if token_probability is None:
        token_probability = (file_policy.market.token_probability if file_policy is not None
                             else float(np.max(arrival_rates / capacity_rates)))
    settings = SimulationSettings(
        arrival_rates=arrival_rates,
        capacity_rates=capacity_rates,
        policy=policy_name,
        token_probability=check_real("token_probability", token_probability, low=0.0, high=1.0,
                                     low_open=True, high_open=True),
        processing_cost=check_real("processing_cost", processing_cost, low=0.0),
        help_cost=(check_real("processing_cost", processing_cost, low=0.0) if help_cost is None
                   else check_real("help_cost", help_cost, low=0.0)),
        endowment=check_integer("endowment", endowment, low=0),
        fluid=bool(fluid),
        horizon=check_real("horizon", horizon, low=0.0, low_open=True),
        warm_up=check_real("warm_up", warm_up, low=0.0),
        batches=check_integer("batches", batches, low=2, high=10_000),
        seed=check_integer("seed", seed, low=0, high=2**32 - 1),
    )
    if file_policy is not None:
        check_policy_market(file_policy, settings)
    trace_servers = _check_trace(trace_interval, trace_servers, settings)
    job_log_size = check_integer("job_log_size", job_log_size, low=0, high=_MAXIMUM_JOB_LOG)

    keep_limit, keep_probability, help_probability, own_first = _server_policies(settings)
    transfer, capacity_cumulative = _file_arrays(file_policy)
    alias_probability, alias_index = _alias_table(np.concatenate([arrival_rates, capacity_rates]))
    total_time = settings.warm_up + settings.horizon
    boundaries = settings.warm_up + settings.horizon * np.arange(settings.batches + 1) / settings.batches
    boundaries[-1] = total_time
    snapshots = np.zeros((settings.batches + 1, servers, kernel.STATISTIC_COUNT))
    balance = np.full(servers, settings.endowment, dtype=np.int64)
    sample_count = 0 if trace_interval is None else int(math.floor(total_time / trace_interval)) + 1
    trace_balances = np.zeros((trace_servers.shape[0], sample_count), dtype=np.int64)
    trace_pool = np.zeros(sample_count, dtype=np.int64)
    trace_jobs = np.zeros(sample_count, dtype=np.int64)
    log_arrays = (np.zeros(job_log_size, np.int64), np.zeros(job_log_size), np.zeros(job_log_size),
                  np.zeros(job_log_size), np.zeros(job_log_size, np.int64))

    status, events, histogram, decisions, outside, logged = kernel.run_market(
        alias_probability, alias_index, float(np.sum(arrival_rates) + np.sum(capacity_rates)),
        keep_limit, keep_probability, help_probability, own_first,
        file_policy is not None, transfer, capacity_cumulative,
        settings.token_probability, settings.fluid, balance,
        boundaries, snapshots, settings.seed,
        float(trace_interval or 1.0), trace_servers, trace_balances, trace_pool, trace_jobs,
        *log_arrays)
    if status == kernel.QUEUE_LIMIT_REACHED:
        raise RuntimeError(f"a queue outgrew {kernel.MAXIMUM_QUEUE_CAPACITY} jobs; the market is unstable "
                           "under this policy")

    trace = None
    if trace_interval is not None:
        trace = Trace(float(trace_interval), np.arange(sample_count) * float(trace_interval), trace_servers,
                      trace_balances, trace_pool, trace_jobs)
    job_log = _job_log(log_arrays, int(logged), settings) if job_log_size > 0 else None
    return _summarise(settings, snapshots, histogram, int(events), balance, int(decisions), int(outside),
                      trace, job_log)


def simulate_market(market: Market, policy="crp", **options) -> SimulationResult:
    """Simulate a symmetric market: N servers with arrival rate lambda and capacity rate 1.

    ``market`` supplies N, lambda, phi, c and c_help; ``options`` are the
    keyword arguments of :func:`simulate` other than those.
    """
    if not isinstance(market, Market):
        raise ValueError(f"market must be a Market, got {type(market).__name__}")
    return simulate(np.full(market.servers, market.arrival_rate), policy=policy,
                    token_probability=market.token_probability, processing_cost=market.processing_cost,
                    help_cost=market.help_cost, **options)


def check_policy_market(policy: Policy, settings: SimulationSettings) -> None:
    """Raise ``ValueError`` unless the simulated market is the one ``policy`` was computed for.

    The wait model is not compared: the simulation has a real pool, not a charge.
    """
    market = policy.market
    checks = (
        ("servers", settings.servers, market.servers),
        ("arrival rate", settings.arrival_rates, market.arrival_rate),
        ("capacity rate", settings.capacity_rates, 1.0),
        ("token probability", settings.token_probability, market.token_probability),
        ("processing cost", settings.processing_cost, market.processing_cost),
        ("help cost", settings.help_cost, market.help_cost),
    )
    for name, simulated, expected in checks:
        if not np.allclose(simulated, expected, rtol=_RATE_TOLERANCE, atol=0.0):
            raise ValueError(f"the policy was computed for {name} {_format_values(expected)}, but the "
                             f"simulated market has {_format_values(simulated)}; simulate the policy's "
                             "own market")


def _format_values(values) -> str:
    """Format a number, or the distinct values of an array, as plain Python numbers for a message."""
    if np.ndim(values) == 0:
        return repr(values.item() if isinstance(values, np.generic) else values)
    distinct = [float(value) for value in np.unique(np.round(values, 12))]
    return repr(distinct[0]) if len(distinct) == 1 else repr(distinct)


def _check_rates(arrival_rates, capacity_rates):
    arrival_rates = _float_vector("arrival_rates", arrival_rates)
    servers = check_integer("number of servers", arrival_rates.shape[0], low=2)
    if capacity_rates is None:
        capacity_rates = np.ones(servers)
    capacity_rates = _float_vector("capacity_rates", capacity_rates)
    if capacity_rates.shape[0] != servers:
        raise ValueError(f"capacity_rates must have one entry per server ({servers}), "
                         f"got {capacity_rates.shape[0]}")
    for index in range(servers):
        capacity = check_real(f"capacity_rates[{index}]", capacity_rates[index], low=0.0, low_open=True)
        check_real(f"arrival_rates[{index}]", arrival_rates[index], low=0.0, high=capacity,
                   low_open=True, high_open=True)
    return arrival_rates, capacity_rates


def _float_vector(name, values) -> np.ndarray:
    try:
        vector = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of real numbers, got {values!r}") from None
    if vector.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {vector.shape}")
    if not np.all(np.isfinite(vector)):
        raise ValueError(f"{name} must be finite, got {vector.tolist()}")
    return vector


def _check_trace(trace_interval, trace_servers, settings) -> np.ndarray:
    try:
        indices = [check_integer("trace_servers entry", index, low=0, high=settings.servers - 1)
                   for index in trace_servers]
    except TypeError:
        raise ValueError(f"trace_servers must be a sequence of server indices, got {trace_servers!r}") from None
    if trace_interval is None:
        if indices:
            raise ValueError("trace_servers needs a trace_interval")
        return np.zeros(0, dtype=np.int64)
    interval = check_real("trace_interval", trace_interval, low=0.0, low_open=True)
    samples = (settings.warm_up + settings.horizon) / interval + 1.0
    if samples * (len(indices) + 2) > _MAXIMUM_TRACE_VALUES:
        raise ValueError(f"trace_interval {interval!r} gives {samples:.3g} samples of {len(indices) + 2} "
                         f"series, more than {_MAXIMUM_TRACE_VALUES} values; use a longer interval")
    return np.array(indices, dtype=np.int64)


def _server_policies(settings: SimulationSettings):
    """Return the threshold parameters of every server: keep limit, keep probability, help probability, own first."""
    servers = settings.servers
    loads = settings.arrival_rates / settings.capacity_rates
    keep_limit = np.zeros(servers, dtype=np.int64)
    keep_probability = np.zeros(servers)
    help_probability = np.ones(servers)
    own_first = np.zeros(servers, dtype=np.bool_)
    if settings.policy == "none":
        keep_limit[:] = kernel.NEVER_SEND
        help_probability[:] = 0.0
        own_first[:] = True
    elif settings.policy == "threshold":
        from .equilibrium import best_response

        for index in range(servers):
            response = best_response(float(loads[index]), settings.token_probability)
            keep_limit[index] = response.threshold
            keep_probability[index] = response.keep_probability
            help_probability[index] = response.offer_probability
        own_first[:] = True
    elif settings.policy == "heterogeneous":
        help_probability[:] = np.minimum(1.0, loads / loads.max())
    return keep_limit, keep_probability, help_probability, own_first


def _file_arrays(policy: Policy | None):
    if policy is None:
        return np.zeros((1, 1)), np.ones((1, 1, 2))
    capacity = policy.capacity_probabilities
    cumulative = np.stack([capacity[..., 0], capacity[..., 0] + capacity[..., 1]], axis=-1)
    # Writable copies, so that the kernel gets the same array types with and without a file.
    return np.array(policy.transfer_probability, order="C"), np.array(cumulative, order="C")


def _alias_table(weights: np.ndarray):
    """Build Walker's alias table for sampling an index with probability proportional to ``weights``.

    References
    ----------
    M. D. Vose, "A linear algorithm for generating random numbers with a given
    distribution", IEEE Trans. Software Eng. 17(9), 1991.
    """
    count = weights.shape[0]
    scaled = weights * count / weights.sum()
    probability = np.ones(count)
    alias = np.arange(count, dtype=np.int64)
    small = [index for index in range(count) if scaled[index] < 1.0]
    large = [index for index in range(count) if scaled[index] >= 1.0]
    while small and large:
        low = small.pop()
        high = large.pop()
        probability[low] = scaled[low]
        alias[low] = high
        scaled[high] -= 1.0 - scaled[low]
        (small if scaled[high] < 1.0 else large).append(high)
    return probability, alias


def _job_log(arrays, logged: int, settings: SimulationSettings) -> JobLog:
    owner, arrival, sent, completion, processor = (array[:logged] for array in arrays)
    cost = np.where(owner == processor, settings.processing_cost, settings.help_cost)
    return JobLog(owner, arrival, sent, completion, processor, cost)


def _summarise(settings, snapshots, histogram, events, balance, decisions, outside, trace, job_log):
    """Turn the cumulative snapshots into batch-means estimates."""
    batch = np.diff(snapshots, axis=0)
    length = settings.horizon / settings.batches
    column = {name: batch[:, :, getattr(kernel, name)] for name in (
        "ARRIVALS", "OWN_QUEUE_AREA", "POOL_AREA", "BALANCE_AREA", "REQUESTS", "REFUSALS", "OFFERS",
        "TOKENS_EARNED", "OWN_PROCESSED", "POOL_PROCESSED", "COMPLETED", "POOLED_COMPLETED",
        "OWN_QUEUE_TIME", "POOL_TIME")}
    processing = (settings.processing_cost * column["OWN_PROCESSED"]
                  + settings.help_cost * column["POOL_PROCESSED"])
    servers = ServerStatistics(
        own_holding_cost=_estimate(column["OWN_QUEUE_AREA"] / length),
        pool_holding_cost=_estimate(column["POOL_AREA"] / length),
        processing_cost=_estimate(processing / length),
        cost=_estimate((column["OWN_QUEUE_AREA"] + column["POOL_AREA"] + processing) / length),
        request_rate=_estimate(column["REQUESTS"] / length),
        refusal_rate=_estimate(column["REFUSALS"] / length),
        offer_rate=_estimate(column["OFFERS"] / length),
        token_earning_rate=_estimate(column["TOKENS_EARNED"] / length),
        token_drift=_estimate((column["TOKENS_EARNED"] - column["REQUESTS"]) / length),
        mean_token_balance=_estimate(column["BALANCE_AREA"] / length),
        own_processing_rate=_estimate(column["OWN_PROCESSED"] / length),
        pool_processing_rate=_estimate(column["POOL_PROCESSED"] / length),
        processing_load=_estimate((column["OWN_PROCESSED"] + column["POOL_PROCESSED"]) / length),
        own_queue_time=_ratio_estimate(column["OWN_QUEUE_TIME"], column["COMPLETED"]),
        pool_time=_ratio_estimate(column["POOL_TIME"], column["POOLED_COMPLETED"]),
    )
    system = {name: values.sum(axis=1) for name, values in column.items()}
    attempts = system["REQUESTS"] + system["REFUSALS"]
    distribution = histogram / settings.horizon
    return SimulationResult(
        settings=settings,
        events=events,
        jobs_in_system=_estimate((system["OWN_QUEUE_AREA"] + system["POOL_AREA"]) / length),
        pool_length=_estimate(system["POOL_AREA"] / length),
        pool_time=_ratio_estimate(system["POOL_TIME"], system["POOLED_COMPLETED"]),
        pool_entry_rate=_estimate(system["REQUESTS"] / length),
        refusal_fraction=_ratio_estimate(system["REFUSALS"], attempts, empty=0.0),
        pool_length_distribution=np.trim_zeros(distribution, "b") if distribution.any() else distribution[:1],
        servers=servers,
        final_token_balances=balance,
        server_one_decisions=decisions,
        server_one_outside_grid=outside,
        trace=trace,
        job_log=job_log,
    )


def _estimate(values: np.ndarray) -> Estimate:
    """Batch means of ``values`` (batches along axis 0)."""
    batches = values.shape[0]
    mean = values.mean(axis=0)
    error = values.std(axis=0, ddof=1) / math.sqrt(batches)
    quantile = stats.t.ppf(0.5 + CONFIDENCE_LEVEL / 2.0, batches - 1)
    return Estimate(_scalar(mean), _scalar(error), _scalar(quantile * error))


def _ratio_estimate(numerator: np.ndarray, denominator: np.ndarray, empty: float = math.nan) -> Estimate:
    """Ratio of totals, with the standard error of the per-batch ratios.

    A batch with a zero denominator contributes ``empty``.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        total = numerator.sum(axis=0) / denominator.sum(axis=0)
        ratios = np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), empty)
    spread = _estimate(ratios)
    total = np.where(denominator.sum(axis=0) > 0, total, empty)
    return Estimate(_scalar(total), spread.standard_error, spread.half_width)


def _scalar(value):
    return float(value) if np.ndim(value) == 0 else value


def _plain(value):
    """Convert NumPy values to JSON-ready Python values, with NaN (an undefined mean) as None."""
    if isinstance(value, np.ndarray):
        return [_plain(item) for item in value.tolist()]
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
