"""``pooling-mdp simulate``: simulate the token market and print its long-run averages.

Every argument is checked before the simulation starts. An invalid one raises
``ValueError`` naming the argument as :func:`mdp.simulation.simulate` calls it
(``arrival_rate``, ``horizon``), the value and the valid range, and the
dispatcher prints it as one line before exiting with status 2. Options that
exist only on the command line, such as ``--servers-file``, keep their option
names.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time

import numpy as np

from ..model import Market
from ..policy import load_policy
from ..simulation import POLICIES, simulate
from ..validation import check_choice, check_integer, check_real

POLICY_CHOICES = POLICIES + ("file",)
_PER_SERVER_ROWS = 10


def register(subparsers) -> None:
    """Add the ``simulate`` sub-command."""
    parser = subparsers.add_parser(
        "simulate", help="simulate N servers with tokens and a shared pool",
        description="Simulate the token mechanism event by event: N servers, one shared "
                    "first-come-first-served pool and token balances. Prints time averages "
                    "with 95% batch-means confidence half-widths.")
    parser.add_argument("--servers", type=int, metavar="N",
                        help="number of identical servers, at least 2 (or use --servers-file)")
    parser.add_argument("--arrival-rate", type=float, metavar="L",
                        help="job arrival rate per server, in (0, 1); capacity rate is 1")
    parser.add_argument("--servers-file", metavar="FILE.csv",
                        help="CSV with one row per server and columns arrival_rate and, optionally, "
                             "capacity_rate (default 1); replaces --servers and --arrival-rate")
    parser.add_argument("--policy", default="crp", metavar="|".join(POLICY_CHOICES),
                        help="policy of every server; 'file' makes server one follow --policy-file "
                             "while the others pool completely (default: crp)")
    parser.add_argument("--policy-file", metavar="FILE.npz",
                        help="server one's policy as saved by the solver (needs --policy file)")
    parser.add_argument("--token-probability", type=float, metavar="P",
                        help="probability that an offer of help earns a token, in (0, 1) "
                             "(default: the largest load lambda_i / mu_i, or the policy file's)")
    parser.add_argument("--processing-cost", type=float, default=1.0, metavar="C",
                        help="cost of processing an own job, >= 0 (default: 1)")
    parser.add_argument("--help-cost", type=float, metavar="C",
                        help="cost of processing a pool job, >= 0 (default: the processing cost)")
    parser.add_argument("--endowment", type=int, default=0, metavar="T",
                        help="initial token balance of every server, >= 0 (default: 0)")
    parser.add_argument("--fluid", action="store_true",
                        help="let token balances go negative instead of refusing requests")
    parser.add_argument("--horizon", type=float, default=100_000.0, metavar="H",
                        help="measured time after the warm-up, in mean capacity inter-arrival "
                             "times, > 0 (default: 100000)")
    parser.add_argument("--warm-up", type=float, default=1_000.0, metavar="W",
                        help="time simulated before measuring, >= 0 (default: 1000)")
    parser.add_argument("--batches", type=int, default=20, metavar="B",
                        help="batches for the confidence intervals, in [2, 10000] (default: 20)")
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help="random seed, in [0, 4294967295] (default: 0)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=run)


def run(args) -> int:
    """Check the arguments, simulate, and print the result; return the exit status."""
    arrival_rates, capacity_rates = _market_rates(args)
    policy = check_choice("policy", args.policy, POLICY_CHOICES)
    if policy == "file":
        if args.policy_file is None:
            raise ValueError("policy 'file' needs --policy-file FILE.npz")
        policy = load_policy(args.policy_file)
    elif args.policy_file is not None:
        raise ValueError(f"--policy-file is used only with --policy file, got --policy {args.policy}")
    options = dict(
        policy=policy,
        token_probability=_optional_real("token_probability", args.token_probability,
                                         low=0.0, high=1.0, low_open=True, high_open=True),
        processing_cost=check_real("processing_cost", args.processing_cost, low=0.0),
        help_cost=_optional_real("help_cost", args.help_cost, low=0.0),
        endowment=check_integer("endowment", args.endowment, low=0),
        fluid=args.fluid,
        horizon=check_real("horizon", args.horizon, low=0.0, low_open=True),
        warm_up=check_real("warm_up", args.warm_up, low=0.0),
        batches=check_integer("batches", args.batches, low=2, high=10_000),
        seed=check_integer("seed", args.seed, low=0, high=2**32 - 1),
    )

    start = time.perf_counter()
    result = simulate(arrival_rates, capacity_rates, **options)
    seconds = time.perf_counter() - start
    if args.json:
        summary = result.as_dict()
        summary["seconds"] = seconds
        json.dump(summary, sys.stdout, indent=2, allow_nan=False)
        print()
    else:
        _print_summary(result, seconds)
    # Flush here so that a reader that closed the pipe early (`| head`) raises
    # BrokenPipeError inside the dispatcher, which exits quietly with status 1,
    # and not in the flush at interpreter exit, which would print a warning.
    sys.stdout.flush()
    return 0


def _market_rates(args):
    """Return the per-server arrival and capacity rates from the options."""
    if args.servers_file is not None:
        if args.servers is not None or args.arrival_rate is not None:
            raise ValueError("--servers-file replaces --servers and --arrival-rate; give either the file "
                             "or both options")
        return read_servers_file(args.servers_file)
    if args.servers is None or args.arrival_rate is None:
        raise ValueError("give --servers N and --arrival-rate L, or --servers-file FILE.csv")
    # Market checks arrival_rate and servers and names them in its errors.
    market = Market(arrival_rate=args.arrival_rate, servers=args.servers)
    return np.full(market.servers, market.arrival_rate), np.ones(market.servers)


def read_servers_file(path):
    """Read per-server rates from a CSV file with columns ``arrival_rate`` and optional ``capacity_rate``.

    Raises
    ------
    ValueError
        If the file is missing, lacks the ``arrival_rate`` column, has fewer than
        two rows, or contains a rate that is not a positive number below its
        server's capacity rate.
    """
    if not os.path.isfile(path):
        raise ValueError(f"--servers-file not found: {path}")
    arrival_rates, capacity_rates = [], []
    with open(path, newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        if reader.fieldnames is None or "arrival_rate" not in reader.fieldnames:
            raise ValueError(f"--servers-file {path} needs a header with the column arrival_rate "
                             f"(and optionally capacity_rate), got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            arrival = _parse_rate(path, line, "arrival_rate", row.get("arrival_rate"))
            capacity_text = row.get("capacity_rate")
            capacity = 1.0 if capacity_text in (None, "") else _parse_rate(path, line, "capacity_rate",
                                                                           capacity_text)
            if arrival >= capacity:
                raise ValueError(f"--servers-file {path}, line {line}: arrival_rate {arrival!r} must be "
                                 f"below capacity_rate {capacity!r}")
            arrival_rates.append(arrival)
            capacity_rates.append(capacity)
    if len(arrival_rates) < 2:
        raise ValueError(f"--servers-file {path} must list at least 2 servers, got {len(arrival_rates)}")
    return np.array(arrival_rates), np.array(capacity_rates)


def _parse_rate(path, line, column, text) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"--servers-file {path}, line {line}: {column} must be a number, got {text!r}") from None
    return check_real(f"--servers-file {path}, line {line}: {column}", value, low=0.0, low_open=True)


def _optional_real(name, value, **bounds):
    return None if value is None else check_real(name, value, **bounds)


def _print_summary(result, seconds: float) -> None:
    settings = result.settings
    tokens = "fluid tokens" if settings.fluid else f"integer tokens, endowment {settings.endowment}"
    print(f"{settings.servers} servers, policy {settings.policy}, token probability "
          f"{settings.token_probability:g}, {tokens}")
    print(f"measured {settings.horizon:g} time units after a warm-up of {settings.warm_up:g}, "
          f"{settings.batches} batches, seed {settings.seed}; {result.events} events in {seconds:.2f} s")
    print("estimates are means ± 95% confidence half-widths")
    print("time unit: the mean time between two capacity units of a server with capacity rate 1")
    for label, estimate in (("jobs in system", result.jobs_in_system),
                            ("jobs in the pool", result.pool_length),
                            ("time in pool per pooled job", result.pool_time),
                            ("fraction of requests refused", result.refusal_fraction)):
        print(f"  {label:<28} {estimate.mean:.5g} ± {estimate.half_width:.2g}")
    if result.server_one_decisions:
        print(f"  server one was beyond the policy grid at {result.server_one_outside_grid_fraction:.3g} "
              "of its decision points")

    per_server = result.servers
    print(f"{'server':>6} {'cost/time':>16} {'own jobs':>9} {'pool jobs':>9} {'requests/t':>10} "
          f"{'refusals/t':>10} {'offers/t':>9} {'tokens':>8}")
    shown = min(settings.servers, _PER_SERVER_ROWS)
    for index in range(shown):
        cost = f"{per_server.cost.mean[index]:.4f} ± {per_server.cost.half_width[index]:.1g}"
        print(f"{index + 1:>6} {cost:>16} {per_server.own_holding_cost.mean[index]:>9.4f} "
              f"{per_server.pool_holding_cost.mean[index]:>9.4f} {per_server.request_rate.mean[index]:>10.4f} "
              f"{per_server.refusal_rate.mean[index]:>10.4f} {per_server.offer_rate.mean[index]:>9.4f} "
              f"{result.final_token_balances[index]:>8d}")
    if shown < settings.servers:
        print(f"(first {shown} of {settings.servers} servers; use --json for all)")
    for line in _legend(settings, result.server_one_decisions > 0):
        print(line)


def _legend(settings, server_one_follows_file: bool) -> list:
    """Return the lines that explain the per-server columns and their units."""
    lines = [
        "cost/time: holding and processing cost per unit time",
        "own jobs, pool jobs: mean number of the server's jobs waiting in its own queue, in the pool",
        "requests/t, offers/t: jobs sent to the pool and capacity units offered as help, per unit time",
        "refusals/t: requests refused for lack of a token, per unit time; tokens: final token balance",
    ]
    if not settings.fluid:
        lines.append("after a refusal the server sends a job when it next earns a token, and that "
                     "counts as a request")
        if server_one_follows_file:
            lines.append("server 1 decides again after every market event, so one of its jobs can be "
                         "refused many times")
    return lines
