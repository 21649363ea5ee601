"""Figures that compare the simulated token market with the model's predictions.

The market has N servers with job arrival rate lambda and capacity rate 1, one
shared first-come-first-served pool and token balances (see
:mod:`mdp.simulation`). :func:`draw_figures` writes four CSV tables and four
figures (PNG and PDF):

``jobs_in_system``
    Time-average jobs in system against N without pooling (exactly
    N lambda / (1 - lambda)), under complete pooling (exactly
    lambda / (1 - lambda)) and under the threshold policy at a token
    probability phi < lambda, whose prediction N q + phi / (1 - phi) uses the
    mean-field pool and is therefore only approximate. For that policy the
    figure also marks the exact finite-N value (:func:`mdp.exact_pool.exact_pool`)
    wherever its quasi-birth-death chain is small enough to solve.
``integer_tokens``
    Complete pooling and the threshold policy at phi = lambda with integer
    tokens, started at a common endowment: fraction of requests refused and
    jobs in system over a horizon, against the endowment. Each point averages
    independent replications, because a balance that is a zero-drift walk has
    no steady state to take batch means of.
``token_paths``
    Sampled token balances of a few servers: integer tokens under complete
    pooling, fluid tokens under complete pooling, fluid tokens under the
    threshold policy at phi < lambda.
``deviation_gain``
    Server one's simulated gain from deviating, (CRP cost - simulated cost) /
    simulated cost, when it follows the optimal policy of either pool-wait
    model, against the interval that contains the true gap
    (:func:`mdp.solver.true_gap_bracket`). Tokens are fluid, as in the MDP.

Every simulated number is drawn with its 95 % confidence half-width, and each
figure states the largest one. Seeds are fixed, so the files are the same on
every run with the same settings and library versions.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from .closed_forms import crp_cost  # noqa: E402
from .model import Market  # noqa: E402
from .simulation import CONFIDENCE_LEVEL, simulate, simulate_market  # noqa: E402
from .validation import check_integer, check_real  # noqa: E402

logger = logging.getLogger(__name__)

DEFAULT_SETTINGS = {
    "seed": 2024,
    "arrival_rate": 0.8,
    "servers": [2, 5, 10, 20, 50],
    "horizon": 200_000.0,
    "warm_up": 1_000.0,
    "batches": 20,
    "threshold_token_probability": 0.6,
    "token_servers": 10,
    "endowments": [0, 2, 5, 10, 20, 50, 100],
    "token_horizons": [1_000.0, 10_000.0, 100_000.0],
    "replications": 8,
    "trace_servers": 4,
    "trace_horizon": 10_000.0,
    "trace_interval": 10.0,
    "trace_endowment": 10,
    "deviation_servers": [2, 3, 4, 6, 8, 10, 15, 20],
    "deviation_horizon": 500_000.0,
    "solver_tolerance": 1e-4,
}


def draw_figures(output_dir: Path, settings: dict) -> list[Path]:
    """Simulate the markets of every figure and write their tables and figures.

    Parameters
    ----------
    output_dir : pathlib.Path
        Directory for the CSV tables and the PNG and PDF figures; created if missing.
    settings : dict
        Any of the keys of :data:`DEFAULT_SETTINGS`; missing keys take those values.

    Returns
    -------
    list of pathlib.Path
        The files written.

    Raises
    ------
    ValueError
        If a setting is unknown or out of range, before anything is simulated.
    """
    settings = check_settings(settings)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in (("jobs_in_system", _draw_jobs_in_system), ("integer_tokens", _draw_integer_tokens),
                       ("token_paths", _draw_token_paths), ("deviation_gain", _draw_deviation_gain)):
        start = time.perf_counter()
        paths += draw(output_dir, settings)
        logger.info("simulation figure %s drawn in %.1f s", name, time.perf_counter() - start)
    return paths


def check_settings(settings: dict) -> dict:
    """Return the settings with defaults filled in, or raise ``ValueError`` naming the bad key."""
    if not isinstance(settings, dict):
        raise ValueError(f"settings must be a table (dict), got {type(settings).__name__}")
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
    if unknown:
        raise ValueError(f"unknown simulation figure settings {unknown}; allowed: {sorted(DEFAULT_SETTINGS)}")
    merged = {**DEFAULT_SETTINGS, **settings}
    checked = {
        "seed": check_integer("seed", merged["seed"], low=0, high=2**32 - 1000),
        "arrival_rate": check_real("arrival_rate", merged["arrival_rate"], low=0.0, high=1.0,
                                   low_open=True, high_open=True),
        "servers": _integers("servers", merged["servers"], low=2),
        "horizon": check_real("horizon", merged["horizon"], low=0.0, low_open=True),
        "warm_up": check_real("warm_up", merged["warm_up"], low=0.0),
        "batches": check_integer("batches", merged["batches"], low=2, high=10_000),
        "threshold_token_probability": check_real("threshold_token_probability",
                                                  merged["threshold_token_probability"], low=0.0, high=1.0,
                                                  low_open=True, high_open=True),
        "token_servers": check_integer("token_servers", merged["token_servers"], low=2),
        "endowments": _integers("endowments", merged["endowments"], low=0),
        "token_horizons": _reals("token_horizons", merged["token_horizons"]),
        "replications": check_integer("replications", merged["replications"], low=2, high=1000),
        "trace_servers": check_integer("trace_servers", merged["trace_servers"], low=1, high=20),
        "trace_horizon": check_real("trace_horizon", merged["trace_horizon"], low=0.0, low_open=True),
        "trace_interval": check_real("trace_interval", merged["trace_interval"], low=0.0, low_open=True),
        "trace_endowment": check_integer("trace_endowment", merged["trace_endowment"], low=0),
        "deviation_servers": _integers("deviation_servers", merged["deviation_servers"], low=2),
        "deviation_horizon": check_real("deviation_horizon", merged["deviation_horizon"], low=0.0,
                                        low_open=True),
        "solver_tolerance": check_real("solver_tolerance", merged["solver_tolerance"], low=0.0, high=0.1,
                                       low_open=True),
    }
    if checked["trace_servers"] > checked["token_servers"]:
        raise ValueError(f"trace_servers ({checked['trace_servers']}) must not exceed token_servers "
                         f"({checked['token_servers']})")
    if checked["trace_horizon"] / checked["trace_interval"] > 1_000_000:
        raise ValueError(f"trace_horizon / trace_interval must be at most 1e6 samples, got "
                         f"{checked['trace_horizon'] / checked['trace_interval']:.3g}")
    return checked


def _integers(name, values, *, low):
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{name} must be a non-empty list of integers, got {values!r}")
    return [check_integer(f"{name} entry", value, low=low) for value in values]


def _reals(name, values):
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{name} must be a non-empty list of positive numbers, got {values!r}")
    return [check_real(f"{name} entry", value, low=0.0, low_open=True) for value in values]


# Jobs in system against N.

def _draw_jobs_in_system(output_dir, settings):
    from .equilibrium import best_response

    rate = settings["arrival_rate"]
    phi = settings["threshold_token_probability"]
    response = best_response(rate, phi)
    predictions = {
        "none": (lambda servers: servers * rate / (1.0 - rate), "exact"),
        "crp": (lambda servers: rate / (1.0 - rate), "exact"),
        "threshold": (lambda servers: servers * response.mean_own_queue + phi / (1.0 - phi),
                      "exact" if phi >= rate else "mean-field"),
    }
    rows = []
    for policy, (predict, kind) in predictions.items():
        for servers in settings["servers"]:
            result = simulate(np.full(servers, rate), policy=policy,
                              token_probability=phi if policy == "threshold" else rate, fluid=True,
                              horizon=settings["horizon"], warm_up=settings["warm_up"],
                              batches=settings["batches"], seed=settings["seed"] + servers)
            rows.append(dict(policy=policy, servers=servers, arrival_rate=rate,
                             token_probability=result.settings.token_probability,
                             jobs_in_system=result.jobs_in_system.mean,
                             half_width=result.jobs_in_system.half_width,
                             predicted=predict(servers), prediction=kind,
                             exact=_exact_threshold_jobs(rate, servers, phi) if policy == "threshold" else math.nan,
                             events=result.events))
    table = pd.DataFrame(rows)
    csv_path = output_dir / "jobs_in_system.csv"
    table.to_csv(csv_path, index=False)

    figure, axis = plt.subplots(figsize=(6.4, 4.4))
    labels = {"none": "no pooling", "crp": "complete pooling",
              "threshold": f"threshold policy, phi = {phi:g}"}
    for colour, (policy, group) in zip(_colours(), table.groupby("policy", sort=False)):
        axis.errorbar(group["servers"], group["jobs_in_system"], yerr=group["half_width"], fmt="o",
                      color=colour, capsize=3, label=f"{labels[policy]}: simulated")
        style = "-" if group["prediction"].iloc[0] == "exact" else "--"
        axis.plot(group["servers"], group["predicted"], style, color=colour,
                  label=f"{labels[policy]}: {group['prediction'].iloc[0]} prediction")
        if group["exact"].notna().any() and group["prediction"].iloc[0] != "exact":
            axis.plot(group["servers"], group["exact"], "x", color="black", markersize=7, zorder=3,
                      label=f"{labels[policy]}: exact finite-N value")
    _label_servers(axis, settings["servers"])
    axis.set_yscale("log")
    axis.set_ylabel("time-average jobs in system")
    axis.set_title(f"Jobs in system, lambda = {rate:g}, fluid tokens")
    axis.legend(fontsize=7)
    note = (f"Simulated: {settings['horizon']:g} time units after a warm-up of {settings['warm_up']:g}, "
            f"{settings['batches']} batch means; error bars are 95% half-widths, at most "
            f"{table['half_width'].max():.2g} jobs. The threshold prediction uses the mean-field pool "
            f"when phi < lambda; crosses mark the exact finite-N value where it was computed.")
    return [csv_path] + _save(figure, output_dir, "jobs_in_system", note)


def _exact_threshold_jobs(arrival_rate, servers, token_probability) -> float:
    """Return the exact jobs in system of the threshold market, or NaN where the chain is too large to solve."""
    from .exact_pool import exact_pool

    try:
        return exact_pool(arrival_rate, servers, token_probability).jobs_in_system
    except ValueError:
        return math.nan


# Integer tokens at phi = lambda.

def _draw_integer_tokens(output_dir, settings):
    rate = settings["arrival_rate"]
    servers = settings["token_servers"]
    replications = settings["replications"]
    rows = []
    for policy in ("crp", "threshold"):
        for horizon in settings["token_horizons"]:
            for endowment in settings["endowments"]:
                refused, jobs = [], []
                for replication in range(replications):
                    result = simulate(np.full(servers, rate), policy=policy, token_probability=rate,
                                      endowment=endowment, horizon=horizon, warm_up=0.0,
                                      seed=settings["seed"] + replication)
                    refused.append(result.refusal_fraction.mean)
                    jobs.append(result.jobs_in_system.mean)
                rows.append(dict(policy=policy, servers=servers, arrival_rate=rate, horizon=horizon,
                                 endowment=endowment, replications=replications,
                                 refusal_fraction=np.mean(refused), refusal_half_width=_half_width(refused),
                                 jobs_in_system=np.mean(jobs), jobs_half_width=_half_width(jobs)))
    table = pd.DataFrame(rows)
    csv_path = output_dir / "integer_tokens.csv"
    table.to_csv(csv_path, index=False)

    figure, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    styles = {"crp": ("-", "complete pooling"), "threshold": ("--", "threshold (own jobs first)")}
    for policy, (style, label) in styles.items():
        for colour, horizon in zip(_colours(), settings["token_horizons"]):
            group = table[(table["policy"] == policy) & (table["horizon"] == horizon)]
            x_values = np.asarray(group["endowment"]) + 1
            axes[0].errorbar(x_values, group["refusal_fraction"], yerr=group["refusal_half_width"], fmt=style,
                             marker="o", markersize=3, color=colour, capsize=2,
                             label=f"{label}, horizon {horizon:g}")
            axes[1].errorbar(x_values, group["jobs_in_system"], yerr=group["jobs_half_width"], fmt=style,
                             marker="o", markersize=3, color=colour, capsize=2)
    axes[1].axhline(rate / (1.0 - rate), color="0.5", linewidth=0.8, label="fluid tokens, lambda / (1 - lambda)")
    ticks = [endowment + 1 for endowment in settings["endowments"]]
    for axis in axes:
        axis.set_xscale("log")
        axis.set_xticks(ticks)
        axis.set_xticklabels([str(endowment) for endowment in settings["endowments"]])
        axis.minorticks_off()
        axis.set_xlabel("initial tokens per server (drawn at tokens + 1 on a log axis)")
    axes[1].set_yscale("log")
    axes[0].set_ylabel("fraction of request attempts refused")
    axes[1].set_ylabel("time-average jobs in system")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, bbox_to_anchor=(0.5, 0.04))
    axes[1].legend(fontsize=7)
    figure.suptitle(f"Integer tokens at phi = lambda = {rate:g}, N = {servers}, started at the endowment")
    note = (f"Each point: mean of {replications} independent replications over [0, horizon]; error bars are "
            f"95% Student-t half-widths, at most {table['refusal_half_width'].max():.2g} (refused fraction) and "
            f"{table['jobs_half_width'].max():.3g} jobs.")
    return [csv_path] + _save(figure, output_dir, "integer_tokens", note, bottom=0.17)


# Token balance paths.

def _draw_token_paths(output_dir, settings):
    rate = settings["arrival_rate"]
    phi = settings["threshold_token_probability"]
    servers = settings["token_servers"]
    traced = list(range(settings["trace_servers"]))
    panels = [
        (f"complete pooling, integer tokens, phi = {rate:g}", dict(policy="crp", token_probability=rate)),
        (f"complete pooling, fluid tokens, phi = {rate:g}", dict(policy="crp", token_probability=rate, fluid=True)),
        (f"threshold policy, fluid tokens, phi = {phi:g}", dict(policy="threshold", token_probability=phi,
                                                                fluid=True)),
    ]
    frames = []
    figure, axes = plt.subplots(1, len(panels), figsize=(12, 4), sharey=False)
    for axis, (title, options) in zip(axes, panels):
        result = simulate(np.full(servers, rate), endowment=settings["trace_endowment"],
                          horizon=settings["trace_horizon"], warm_up=0.0, seed=settings["seed"],
                          trace_interval=settings["trace_interval"], trace_servers=traced, **options)
        trace = result.trace
        for row, server in enumerate(trace.servers):
            axis.plot(trace.times, trace.token_balances[row], linewidth=0.8, label=f"server {server + 1}")
            frames.append(pd.DataFrame(dict(panel=title, server=server + 1, time=trace.times,
                                            token_balance=trace.token_balances[row])))
        axis.axhline(0.0, color="0.5", linewidth=0.6)
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("time")
    axes[0].set_ylabel("token balance")
    axes[0].legend(fontsize=7)
    csv_path = output_dir / "token_paths.csv"
    pd.concat(frames, ignore_index=True).to_csv(csv_path, index=False)
    note = (f"Single sample paths (seed {settings['seed']}), N = {servers}, lambda = {rate:g}, endowment "
            f"{settings['trace_endowment']}, sampled every {settings['trace_interval']:g} time units; they are "
            "not estimates, so they carry no confidence half-width.")
    return [csv_path] + _save(figure, output_dir, "token_paths", note)


# Server one's gain from deviating.

def _draw_deviation_gain(output_dir, settings):
    try:
        from .solver import true_gap_bracket
    except ImportError as error:
        logger.warning("deviation_gain figure left out: the solver cannot be imported (%s)", error)
        return []

    rate = settings["arrival_rate"]
    rows = []
    for servers in settings["deviation_servers"]:
        market = Market(rate, servers)
        bracket = true_gap_bracket(market, settings["solver_tolerance"])
        exact_crp = crp_cost(market)
        row = dict(servers=servers, arrival_rate=rate, crp_cost=exact_crp, gap_lower=bracket.gap_lower,
                   gap_upper=bracket.gap_upper, certified_lower=bracket.certified_lower,
                   certified_upper=bracket.certified_upper)
        for label, solution in (("all", bracket.all_servers), ("others", bracket.others_only)):
            result = simulate_market(market, solution.policy, fluid=True, horizon=settings["deviation_horizon"],
                                     warm_up=settings["warm_up"], batches=settings["batches"],
                                     seed=settings["seed"] + servers)
            cost = result.servers.cost
            simulated, half_width = float(cost.mean[0]), float(cost.half_width[0])
            row[f"simulated_cost_{label}"] = simulated
            row[f"cost_half_width_{label}"] = half_width
            row[f"simulated_gain_{label}"] = (exact_crp - simulated) / simulated
            # Delta method: d/dC (CRP - C) / C = -CRP / C^2.
            row[f"gain_half_width_{label}"] = exact_crp / simulated**2 * half_width
            row[f"outside_grid_{label}"] = result.server_one_outside_grid_fraction
        rows.append(row)
    table = pd.DataFrame(rows)
    csv_path = output_dir / "deviation_gain.csv"
    table.to_csv(csv_path, index=False)

    figure, axis = plt.subplots(figsize=(6.4, 4.4))
    axis.fill_between(table["servers"], 100 * table["gap_lower"], 100 * table["gap_upper"], color="0.85",
                      label="true gap lies here (MDP, R = N - 1 to R = N)")
    colours = _colours()
    for offset, (label, text) in enumerate((("all", "policy optimal for R = N"),
                                            ("others", "policy optimal for R = N - 1"))):
        axis.errorbar(table["servers"] * (1 + 0.02 * (2 * offset - 1)), 100 * table[f"simulated_gain_{label}"],
                      yerr=100 * table[f"gain_half_width_{label}"], fmt="o", markersize=4, capsize=3,
                      color=colours[offset], label=f"simulated gain, {text}")
    axis.axhline(0.0, color="0.5", linewidth=0.6)
    _label_servers(axis, settings["deviation_servers"])
    axis.set_ylabel("gain from deviating, % of the deviation cost")
    axis.set_title(f"Server one's gain from deviating, lambda = phi = {rate:g}, c = 1")
    axis.legend(fontsize=7)
    widest = 100 * max(table["gain_half_width_all"].max(), table["gain_half_width_others"].max())
    note = (f"Simulated with fluid tokens for {settings['deviation_horizon']:g} time units after a warm-up of "
            f"{settings['warm_up']:g}, {settings['batches']} batch means; error bars are 95% half-widths, at most "
            f"{widest:.2g} percentage points. Policies from the solver at relative tolerance "
            f"{settings['solver_tolerance']:g}.")
    return [csv_path] + _save(figure, output_dir, "deviation_gain", note)


def _half_width(values) -> float:
    """95 % Student-t half-width of the mean of independent replications."""
    values = np.asarray(values, dtype=np.float64)
    quantile = stats.t.ppf(0.5 + CONFIDENCE_LEVEL / 2.0, values.shape[0] - 1)
    return float(quantile * values.std(ddof=1) / math.sqrt(values.shape[0]))


def _label_servers(axis, servers) -> None:
    """Put N on a logarithmic axis with one plain tick per simulated N."""
    axis.set_xscale("log")
    axis.set_xticks(servers)
    axis.set_xticklabels([str(value) for value in servers])
    axis.minorticks_off()
    axis.set_xlabel("servers N")


def _colours():
    return plt.rcParams["axes.prop_cycle"].by_key()["color"]


def _save(figure, output_dir, stem: str, note: str, bottom: float = 0.07) -> list:
    """Add the note under the figure, write PNG and PDF, close the figure and return both paths.

    ``bottom`` is the fraction of the figure height kept free below the axes.
    """
    figure.text(0.01, 0.005, note, fontsize=7, ha="left", va="bottom", wrap=True, color="0.3")
    figure.tight_layout(rect=(0, bottom, 1, 1))
    paths = [output_dir / f"{stem}.png", output_dir / f"{stem}.pdf"]
    # Fixed metadata keeps the files identical between runs with identical numbers.
    figure.savefig(paths[0], dpi=150, metadata={"Software": None})
    figure.savefig(paths[1], metadata={"CreationDate": None, "Creator": None, "Producer": None})
    plt.close(figure)
    return paths
