"""``pooling-mdp solve``: server one's best deviation in one market."""

from __future__ import annotations

import json
import math
import os
import sys
import warnings

from ..model import Market, WAIT_MODELS


def register(subparsers) -> None:
    """Add the ``solve`` sub-command."""
    parser = subparsers.add_parser(
        "solve", help="best deviation of one server against N-1 pooling servers",
        description="Compute server one's best long-run cost when the other N-1 servers pool "
                    "completely, with a certified interval, the cost of complete pooling (CRP) "
                    "and the sub-optimality gap. Time is measured in mean capacity "
                    "inter-arrival times (capacity rate 1). Exit status: 0 when the result "
                    "converged to the tolerance, 1 when it did not (the table says why), 2 on "
                    "invalid input.")
    parser.add_argument("--arrival-rate", required=True, metavar="LAMBDA",
                        help="job arrival rate per server, in (0, 1)")
    parser.add_argument("--servers", required=True, metavar="N", help="number of servers, an integer >= 2")
    parser.add_argument("--processing-cost", default="1", metavar="C",
                        help="cost of processing an own job, >= 0 (default 1)")
    parser.add_argument("--help-cost", metavar="C",
                        help="cost of processing a pool job, >= 0 (default: the processing cost)")
    parser.add_argument("--token-probability", metavar="PHI",
                        help="probability that an offer of help earns a token, in (0, 1) "
                             "(default: the arrival rate, the equilibrium setting)")
    parser.add_argument("--wait-model", default="all", metavar="MODEL",
                        help="charge of a sent job: 'all' (pool served at rate N, default) or "
                             "'others' (rate N-1)")
    parser.add_argument("--tolerance", default="1e-8", metavar="T",
                        help="relative tolerance for the interval, truncation change and boundary mass, "
                             "in [1e-10, 0.1] (default 1e-8)")
    parser.add_argument("--truncation", nargs=2, metavar=("Q1", "Q0"),
                        help="solve exactly this truncation instead of sizing it automatically")
    parser.add_argument("--bracket", action="store_true",
                        help="also solve the 'others' wait model and print the true-gap interval")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--save-policy", metavar="FILE.npz", help="write the optimal policy to this file")
    parser.add_argument("--policy-plot", metavar="FILE.png|.pdf|.svg",
                        help="draw the optimal policy and its stationary distribution")
    parser.set_defaults(handler=run)


def run(args) -> int:
    """Validate every argument, solve, and print the result."""
    market = Market(
        arrival_rate=parse_number("arrival_rate", args.arrival_rate),
        servers=parse_number("servers", args.servers),
        processing_cost=parse_number("processing_cost", args.processing_cost),
        help_cost=None if args.help_cost is None else parse_number("help_cost", args.help_cost),
        token_probability=(None if args.token_probability is None
                           else parse_number("token_probability", args.token_probability)),
        wait_model=args.wait_model if args.wait_model in WAIT_MODELS else _bad_wait_model(args.wait_model),
    )
    tolerance = parse_number("tolerance", args.tolerance)
    truncation = None
    if args.truncation is not None:
        truncation = tuple(parse_number(f"truncation {name}", value)
                           for name, value in zip(("Q1", "Q0"), args.truncation))

    from ..policy import check_truncation
    from ..solver import solve_best_deviation, true_gap_bracket
    from ..validation import check_real
    check_real("tolerance", tolerance, low=1e-10, high=0.1)
    if truncation is not None:
        truncation = check_truncation(truncation)
    check_output_path("save_policy", args.save_policy, (".npz",))
    check_output_path("policy_plot", args.policy_plot, (".png", ".pdf", ".svg"))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.bracket:
            bracket = true_gap_bracket(market, tolerance, truncation=truncation)
            result = bracket.all_servers if market.wait_model == "all" else bracket.others_only
        else:
            bracket = None
            result = solve_best_deviation(market, tolerance, truncation)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)

    if args.save_policy:
        from ..policy import save_policy
        print(f"policy written to {save_policy(result, args.save_policy)}", file=sys.stderr)
    if args.policy_plot:
        from ..plots import plot_policy
        print(f"policy plot written to {plot_policy(result, args.policy_plot)}", file=sys.stderr)

    if args.json:
        payload = result.as_dict()
        payload["equilibrium_setting"] = market.is_equilibrium_setting
        if bracket is not None:
            payload.update(bracket.as_dict())
        print(json.dumps(_finite_or_none(payload), indent=2, default=_json_default, allow_nan=False))
    else:
        print(format_result(result, bracket))
    solved = [result] if bracket is None else [bracket.all_servers, bracket.others_only]
    return 0 if all(item.converged for item in solved) else 1


def parse_number(name: str, text):
    """Convert command-line text to a number, or raise ``ValueError`` naming the option."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {text!r}") from None
    return int(value) if value.is_integer() and name in ("servers", "truncation Q1", "truncation Q0") else value


def _truncation_check(result) -> str:
    if result.truncation_fixed:
        note = "fixed by --truncation, not compared with a larger one"
        if result.boundary_mass > result.tolerance:
            note += "; the boundary mass exceeds the tolerance, so the cost is that of the truncated model only"
        return note
    if math.isnan(result.truncation_change):
        return "not compared with a larger truncation (the solve stopped first)"
    return f"change from smaller truncation {result.truncation_change:.2g}"


def check_output_path(name: str, path, suffixes) -> None:
    """Raise ``ValueError`` unless ``path`` has one of ``suffixes`` and lies in an existing, writable directory."""
    if path is None:
        return
    if not str(path).lower().endswith(suffixes):
        raise ValueError(f"{name} must be a file name ending in {' or '.join(suffixes)}, got {path!r}")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"{name}: directory {directory} does not exist (got {path!r})")
    if not os.access(directory, os.W_OK):
        raise ValueError(f"{name}: directory {directory} is not writable (got {path!r})")
    if os.path.isdir(path):
        raise ValueError(f"{name} must be a file, but {path!r} is a directory")


def _bad_wait_model(value):
    raise ValueError(f"wait_model must be one of {', '.join(map(repr, WAIT_MODELS))}, got {value!r}")


def _finite_or_none(payload: dict) -> dict:
    """Replace NaN and infinities, which JSON cannot represent, by None (JSON null)."""
    return {key: (None if isinstance(value, float) and not math.isfinite(value) else value)
            for key, value in payload.items()}


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return float(value)


def format_result(result, bracket=None) -> str:
    """Return a readable table of a solver result (and of the true-gap interval when given)."""
    market = result.market
    lines = [
        f"Market: lambda = {market.arrival_rate:g}, N = {market.servers}, c = {market.processing_cost:g}, "
        f"c_help = {market.help_cost:g}, phi = {market.token_probability:g}, "
        f"wait model '{market.wait_model}' (R = {market.pool_service_rate})",
    ]
    if not market.is_equilibrium_setting:
        lines.append("  off-equilibrium: phi != lambda, so the other servers' complete pooling is not "
                     "their equilibrium")
    if market.token_probability < market.arrival_rate:
        lines.append("  phi < lambda: complete pooling is infeasible for server one, so the gap may be negative")
    if market.wait_model == "others":
        lines.append("  wait model 'others' charges complete pooling with R = N-1 too, so this gap is not a "
                     "bound on the true gap; --bracket gives that interval")
    width = 100 * result.interval_width
    rows = [
        ("best deviation cost", f"{result.best_cost:.10f}  (feasible policy, exactly evaluated)"),
        ("certified interval", f"[{result.lower_bound:.10f}, {result.upper_bound:.10f}]  "
                               f"(relative width {width:.2g}%)"),
        ("CRP cost", f"{result.crp_cost:.10f}  (closed form)"),
        ("sub-optimality gap", f"{100 * result.gap:.6g}%  in [{100 * result.gap_lower:.6g}%, "
                               f"{100 * result.gap_upper:.6g}%]"),
        ("token price", f"{result.token_price:.6g}"
                        + ("  (constraint slack)" if result.token_price == 0 else "")),
        ("policy", f"mixed: {result.mixing_weight:.6f} x (policy within its token budget) + "
                   f"{1 - result.mixing_weight:.6f} x (policy over it)" if result.is_mixed else "deterministic"),
        ("request / offer rate", f"{result.request_rate:.6f} / {result.offer_rate:.6f}"),
        ("token rate", f"{result.token_rate:.3g}  (requests - phi * offers)"),
        ("mean own queue / pool", f"{result.mean_own_queue:.6f} / {result.mean_pool_length:.6f}"),
        ("truncation (Q1, Q0)", f"{result.truncation}, boundary mass {result.boundary_mass:.2g}, "
                                + _truncation_check(result)),
        ("lost arrivals", f"{result.lost_rate:.2g} per unit time"),
        ("work", f"{result.value_iterations} value-iteration sweeps, {result.prices_tried} token prices, "
                 f"{result.evaluations} exact policy evaluations, {result.seconds:.2f} s"),
        ("status", ("converged" if result.converged else "NOT CONVERGED") + f": {result.message}"),
    ]
    if bracket is not None:
        rows.append(("true gap (R = N-1 .. N)",
                     f"[{100 * bracket.gap_lower:.6g}%, {100 * bracket.gap_upper:.6g}%]  "
                     f"(certified [{100 * bracket.certified_lower:.6g}%, {100 * bracket.certified_upper:.6g}%]; "
                     f"best cost with R = N-1: {bracket.others_only.best_cost:.10f})"))
    label_width = max(len(label) for label, _ in rows)
    lines.extend(f"  {label:<{label_width}}  {value}" for label, value in rows)
    return "\n".join(lines)
