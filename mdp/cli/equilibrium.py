"""``pooling-mdp equilibrium``: the fluid mean-field equilibrium of one market, or of unequal servers."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os

import numpy as np

MEAN_FIELD = "[mean-field]"


def register(subparsers) -> None:
    """Add the ``equilibrium`` sub-command."""
    parser = subparsers.add_parser(
        "equilibrium", help="fluid mean-field equilibrium of the token mechanism",
        description="Print the servers' best response to a token probability, the pool it creates, "
                    "the jobs in system, the cost per server and the smallest sustainable market. "
                    "Pool figures for a token probability below the arrival rate are mean-field "
                    "approximations and are marked so; --exact adds the exact finite-N pool. "
                    "Time is measured in mean capacity inter-arrival times.")
    parser.add_argument("--arrival-rate", metavar="LAMBDA", help="job arrival rate per server, in (0, 1)")
    parser.add_argument("--servers", metavar="N", help="number of servers, an integer >= 2")
    parser.add_argument("--token-probability", metavar="PHI",
                        help="probability that an offer of help earns a token, in (0, 1) "
                             "(default: the arrival rate)")
    parser.add_argument("--processing-cost", default="1", metavar="C",
                        help="cost of processing an own job, >= 0 (default 1)")
    parser.add_argument("--help-cost", metavar="C",
                        help="cost of processing a pool job, >= 0 (default: the processing cost)")
    parser.add_argument("--exact", action="store_true",
                        help="also compute the exact stationary pool of the N-server market and the "
                             "smallest N whose exact pool wait is within the limit")
    parser.add_argument("--servers-file", metavar="FILE.csv",
                        help="heterogeneous servers instead: a CSV file with columns arrival_rate and "
                             "capacity_rate, one row per server; the mechanism uses phi = max load")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run)


def run(args) -> int:
    """Validate the arguments, compute the equilibrium and print it; return the exit status."""
    if args.servers_file is not None:
        return _run_heterogeneous(args)

    from ..equilibrium import fluid_equilibrium

    if args.arrival_rate is None or args.servers is None:
        raise ValueError("--arrival-rate and --servers are required unless --servers-file is given")
    equilibrium = fluid_equilibrium(
        arrival_rate=_parse_number("arrival_rate", args.arrival_rate),
        servers=_parse_number("servers", args.servers),
        token_probability=_parse_optional("token_probability", args.token_probability),
        processing_cost=_parse_number("processing_cost", args.processing_cost),
        help_cost=_parse_optional("help_cost", args.help_cost),
    )
    exact, exact_minimum = (_exact_figures(equilibrium) if args.exact else (None, None))

    if args.json:
        payload = {"equilibrium": _jsonable(equilibrium)}
        if args.exact:
            payload["exact"] = _jsonable(exact, skip=("mean_field",))
            payload["exact_minimum_servers"] = _jsonable(exact_minimum)
        print(json.dumps(payload, indent=2))
    else:
        print(format_equilibrium(equilibrium, exact, exact_minimum, args.exact))
    return 0


def _exact_figures(equilibrium):
    """Return (exact pool result, exact minimum market or the reason it is unavailable)."""
    from ..exact_pool import exact_minimum_servers, exact_pool

    arguments = (equilibrium.arrival_rate, equilibrium.servers, equilibrium.token_probability,
                 equilibrium.processing_cost, equilibrium.help_cost)
    exact = exact_pool(*arguments)
    try:
        minimum = exact_minimum_servers(arguments[0], *arguments[2:])
    except ValueError as error:
        # The parameters are valid by now, so the search only stops at the phase limit.
        minimum = str(error)
    return exact, minimum


def format_equilibrium(equilibrium, exact=None, exact_minimum=None, exact_requested=False) -> str:
    """Return a readable table of a fluid equilibrium and, when given, of its exact pool."""
    response = equilibrium.best_response
    mark = f"  {MEAN_FIELD}" if equilibrium.pool_is_mean_field else ""
    lines = [
        f"Fluid mean-field equilibrium: lambda = {equilibrium.arrival_rate:g}, N = {equilibrium.servers}, "
        f"phi = {equilibrium.token_probability:g}, c = {equilibrium.processing_cost:g}, "
        f"c_help = {equilibrium.help_cost:g}",
    ]
    if equilibrium.pool_is_mean_field:
        lines.append(f"  phi < lambda: figures marked {MEAN_FIELD} treat the pool as M/M/1 with utilisation "
                     f"phi, which underestimates the pool at finite N (see --exact)")
    if not equilibrium.closed_form_is_best_response:
        lines.append("  the closed-form policy is not known to be a best response here "
                     "(unsustainable, or c_help != c with phi != lambda); solve the one-server fluid "
                     "problem numerically with mdp.solve_fluid_best_response")

    law = ", ".join(f"{value:.6g}" for value in response.own_queue_distribution)
    sustainable = "yes" if equilibrium.is_sustainable else "no"
    rows = [
        ("policy", _describe_policy(response)),
        ("own-queue law pi", law),
        ("mean own queue q", f"{response.mean_own_queue:.6g}"),
        ("request / offer rate", f"{response.request_rate:.6g} / {response.offer_rate:.6g}  "
                                 f"(tokens balance: r = phi * o)"),
        ("pool length", f"{equilibrium.pool_length:.6g}{mark}"),
        ("P(pool non-empty)", f"{equilibrium.pool_busy_probability:.6g}{mark}"),
        ("pool wait w", f"{equilibrium.pool_wait:.6g}{mark}"),
        ("jobs in system", f"{equilibrium.jobs_in_system:.6g}{mark}"),
        ("cost per server", f"{equilibrium.cost_per_server:.6g}{mark}"),
        ("sustainable", f"{sustainable}: w <= 1 + c - c_help = {equilibrium.wait_limit:g}{mark}"),
        ("smallest market N_min", f"{_text(equilibrium.minimum_servers)}{mark}"),
    ]
    if exact_requested:
        rows.extend(_exact_rows(exact, exact_minimum))
    label_width = max(len(label) for label, _ in rows)
    lines.extend(f"  {label:<{label_width}}  {value}" for label, value in rows)
    return "\n".join(lines)


def _describe_policy(response) -> str:
    if response.threshold == 0:
        return (f"send every job; offer help at {response.offer_probability:.6g} of the capacity units "
                f"that find the own queue empty")
    if response.keep_probability == 0.0:
        largest_kept = response.threshold - 1
        if largest_kept == 0:
            return "send every job on arrival and offer help at every capacity unit (complete pooling)"
        plural = "s" if largest_kept != 1 else ""
        return f"keep at most {largest_kept} job{plural}, send the rest; help when the own queue is empty"
    waiting = response.threshold - 1
    plural = "s" if response.threshold != 1 else ""
    return (f"keep at most k = {response.threshold} job{plural}; keep a job arriving to {waiting} waiting "
            f"job{'s' if waiting != 1 else ''} with probability p = {response.keep_probability:.6g}; "
            f"help when the own queue is empty")


def _exact_rows(exact, exact_minimum):
    rows = [
        ("exact pool length", f"{exact.mean_pool_length:.6g}"),
        ("exact P(pool non-empty)", f"{exact.pool_busy_probability:.6g}"),
        ("exact pool wait w", f"{exact.pool_wait:.6g}"),
        ("exact jobs in system", f"{exact.jobs_in_system:.6g}"),
        ("exact cost per server", f"{exact.cost_per_server:.6g}"),
        ("exact sustainable", "yes" if exact.is_sustainable else "no"),
        ("exact chain", f"{exact.phases} phases, residual {exact.residual:.2g}"),
    ]
    if isinstance(exact_minimum, str):
        rows.append(("exact smallest market", f"not available: {exact_minimum}"))
    else:
        rows.append(("exact smallest market", f"{_text(exact_minimum.minimum_servers)}"
                     + ("" if math.isnan(exact_minimum.pool_wait) else
                        f"  (exact w = {exact_minimum.pool_wait:.4g} there)")))
    return rows


def _text(value) -> str:
    return "none" if value is None else str(value)


# ---------------------------------------------------------------------------
# Heterogeneous servers.
# ---------------------------------------------------------------------------

def _run_heterogeneous(args) -> int:
    from ..heterogeneous import heterogeneous_equilibrium

    unused = [option for option, value in (("--arrival-rate", args.arrival_rate), ("--servers", args.servers),
                                           ("--token-probability", args.token_probability),
                                           ("--help-cost", args.help_cost))
              if value is not None]
    if args.exact:
        unused.append("--exact")
    if unused:
        raise ValueError(f"--servers-file cannot be combined with {', '.join(unused)}: the file gives "
                         f"every server's rates and the mechanism uses phi = max load")
    arrivals, capacities = read_servers_file(args.servers_file)
    result = heterogeneous_equilibrium(arrivals, capacities)
    if args.json:
        payload = _jsonable(result)
        payload["servers"] = result.servers
        print(json.dumps({"heterogeneous": payload}, indent=2))
    else:
        print(format_heterogeneous(result))
    return 0


def read_servers_file(path):
    """Read per-server arrival and capacity rates from a CSV file with columns arrival_rate, capacity_rate.

    Raises
    ------
    ValueError
        If the file is missing or unreadable, lacks a column, has no rows, or
        holds a value that is not a number; the message names the file and row.
    """
    if not os.path.isfile(path):
        raise ValueError(f"servers file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            fields = [name.strip() for name in (reader.fieldnames or [])]
            missing = [name for name in ("arrival_rate", "capacity_rate") if name not in fields]
            if missing:
                raise ValueError(f"servers file {path} is missing the column(s) {', '.join(missing)}; "
                                 f"it has {fields or 'no header'}")
            rows = [{key.strip(): value for key, value in row.items() if key is not None} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"cannot read servers file {path}: {error}") from None

    arrivals, capacities = [], []
    for line, row in enumerate(rows, start=2):
        arrivals.append(_parse_number(f"arrival_rate on line {line} of {path}", row["arrival_rate"]))
        capacities.append(_parse_number(f"capacity_rate on line {line} of {path}", row["capacity_rate"]))
    if not rows:
        raise ValueError(f"servers file {path} has no data rows")
    return arrivals, capacities


def format_heterogeneous(result) -> str:
    """Return a readable table of the mechanism with unequal servers, next to central control."""
    lines = [
        f"Token mechanism with {result.servers} unequal servers: phi = max load = {result.token_probability:g}",
        "  server  arrival  capacity  rho_i  offer prob  token balance  processed (mechanism)  processed (central)",
    ]
    for index in range(result.servers):
        lines.append(
            f"  {index + 1:>6}  {result.arrival_rates[index]:>7.4g}  {result.capacity_rates[index]:>8.4g}  "
            f"{result.loads[index]:>5.4g}  {result.offer_probabilities[index]:>10.4g}  "
            f"{result.token_balances[index]:>13.2g}  {result.processing_rates[index]:>21.4g}  "
            f"{result.central_processing_rates[index]:>19.4g}")
    sustainable = "yes" if result.is_sustainable else "no"
    rows = [
        ("pool utilisation", f"{result.pool_utilisation:.6g}"),
        ("pool wait w", f"{result.pool_wait:.6g}"),
        ("sustainable", f"{sustainable}: w <= min 1 / capacity_rate = {result.wait_limit:.6g}"),
        ("jobs in system (mechanism)", f"{result.jobs_in_system:.6g}"),
        ("jobs in system (central)", f"{result.central_jobs_in_system:.6g}  (load {result.central_load:.6g})"),
        ("jobs in system (no pooling)", f"{result.no_pooling_jobs_in_system:.6g}"),
    ]
    label_width = max(len(label) for label, _ in rows)
    lines.extend(f"  {label:<{label_width}}  {value}" for label, value in rows)
    lines.append("  'processed' is jobs processed per unit time; all figures are exact (the pool is M/M/1)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Parsing and JSON.
# ---------------------------------------------------------------------------

def _parse_number(name: str, text):
    """Convert command-line text to a number, or raise ``ValueError`` naming the argument."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {text!r}") from None
    if name == "servers" and value.is_integer():
        return int(value)
    return value


def _parse_optional(name: str, text):
    return None if text is None else _parse_number(name, text)


def _jsonable(result, skip=()):
    """Return a dataclass result as a JSON-ready dict: arrays become lists, nan and inf become None."""
    if result is None or isinstance(result, str):
        return result
    values = {}
    for field in dataclasses.fields(result):
        if field.name not in skip:
            values[field.name] = _plain(getattr(result, field.name))
    return values


def _plain(value):
    if dataclasses.is_dataclass(value):
        return _jsonable(value)
    if isinstance(value, np.ndarray):
        return [_plain(item) for item in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value
