"""Figures of the fluid mean-field equilibrium, its exact finite-N pool and heterogeneous servers.

:func:`draw_figures` writes one CSV table and one figure (PNG and PDF) for each
of these, all from closed forms except where marked exact:

``jobs_vs_servers``
    Jobs in system against N: no pooling ``N lambda / (1 - lambda)``, complete
    pooling ``lambda / (1 - lambda)`` (which is also the mechanism at
    phi = lambda), and the mechanism at a phi < lambda, whose mean-field value
    ``N q + phi / (1 - phi)`` is drawn next to the exact finite-N value.
``mean_field_vs_exact``
    For the same phi < lambda: mean-field and exact jobs in system and pool
    wait against N, with the wait limit 1 that decides sustainability.
``jobs_vs_token_probability``
    Mean-field ``Q(phi)`` for several market sizes, dotted where the market is
    not sustainable; the minimum among sustainable phi is at phi = lambda.
    Exact points for one market size show the same.
``threshold_vs_token_probability``
    The threshold k and the keep probability p against phi for several lambda.
``minimum_servers_vs_arrival_rate``
    The smallest sustainable market against lambda: the mean-field formula
    ``ceil(1 / (1 - lambda))`` (exact at phi = lambda), the exact value at
    phi = lambda^2, and the exact value at phi = (1 + lambda) / 2.
``heterogeneous``
    N unequal servers with capacity 1 and loads spread evenly around a mean:
    jobs in system, jobs processed per unit time by the busiest and the least
    busy server, and the pool wait, for the phi = rho_max mechanism against
    central control, against the spread of the loads.

Every setting has a default, so ``draw_figures(path, {})`` works. The defaults
took 10 to 15 seconds on a busy 2-core x86 machine, most of it in the exact pools.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .equilibrium import best_response, fluid_equilibrium, minimum_servers  # noqa: E402
from .exact_pool import MAX_PHASES, exact_minimum_servers, exact_pool, phase_count, policy_levels  # noqa: E402
from .heterogeneous import heterogeneous_equilibrium  # noqa: E402
from .token_design import scan_token_probability  # noqa: E402
from .validation import check_integer, check_real  # noqa: E402

logger = logging.getLogger(__name__)

DEFAULT_SETTINGS = {
    "arrival_rate": 0.8,
    "low_token_probability": 0.6,
    "max_servers": 50,
    "exact_servers": [2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 25, 30, 35, 40],
    "scan_servers": [5, 10, 20, 50],
    "exact_scan_servers": 10,
    "threshold_arrival_rates": [0.7, 0.8, 0.9],
    "heterogeneous_servers": 10,
    "heterogeneous_mean_load": 0.75,
    "heterogeneous_max_spread": 0.2,
}

# Two figures use the same exact pools; the results are immutable, so caching them is safe.
_cached_exact_pool = functools.lru_cache(maxsize=256)(exact_pool)

MEAN_FIELD_NOTE = "Mean-field: the pool is treated as M/M/1 with utilisation phi, exact only for phi >= lambda"


def draw_figures(output_dir: Path, settings: dict) -> list[Path]:
    """Write every table and figure of the equilibrium analysis into ``output_dir``.

    Parameters
    ----------
    output_dir : pathlib.Path
        Folder for the files; created if missing.
    settings : dict
        Any of the keys of :data:`DEFAULT_SETTINGS`; missing keys take the default.

    Returns
    -------
    list of pathlib.Path
        The CSV, PNG and PDF files written.

    Raises
    ------
    ValueError
        If a setting is unknown or out of range, before anything is drawn.
    """
    settings = check_settings(settings)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    paths = []
    for draw in (_draw_jobs_vs_servers, _draw_mean_field_vs_exact, _draw_jobs_vs_token_probability,
                 _draw_threshold, _draw_minimum_servers, _draw_heterogeneous):
        clock = time.perf_counter()
        paths.extend(draw(output_dir, settings))
        logger.info("%s took %.1f s", draw.__name__.removeprefix("_draw_"), time.perf_counter() - clock)
    return paths


def check_settings(settings: dict) -> dict:
    """Return the settings with defaults filled in, or raise ``ValueError`` naming the bad one."""
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
    if unknown:
        raise ValueError(f"unknown equilibrium figure setting(s) {', '.join(unknown)}; "
                         f"valid settings are {', '.join(DEFAULT_SETTINGS)}")
    merged = {**DEFAULT_SETTINGS, **settings}

    rate = check_real("arrival_rate", merged["arrival_rate"], low=0.0, high=1.0, low_open=True, high_open=True)
    low = check_real("low_token_probability", merged["low_token_probability"], low=0.0, high=rate,
                     low_open=True, high_open=True)
    checked = {
        "arrival_rate": rate,
        "low_token_probability": low,
        "max_servers": check_integer("max_servers", merged["max_servers"], low=2, high=10_000),
        "exact_servers": _integers("exact_servers", merged["exact_servers"], low=2),
        "scan_servers": _integers("scan_servers", merged["scan_servers"], low=2),
        "exact_scan_servers": check_integer("exact_scan_servers", merged["exact_scan_servers"], low=2),
        "threshold_arrival_rates": [
            check_real("threshold_arrival_rates", value, low=0.0, high=1.0, low_open=True, high_open=True)
            for value in _as_list(merged["threshold_arrival_rates"])],
        "heterogeneous_servers": check_integer("heterogeneous_servers", merged["heterogeneous_servers"], low=2),
        "heterogeneous_mean_load": check_real("heterogeneous_mean_load", merged["heterogeneous_mean_load"],
                                              low=0.0, high=1.0, low_open=True, high_open=True),
    }
    mean_load = checked["heterogeneous_mean_load"]
    checked["heterogeneous_max_spread"] = check_real(
        "heterogeneous_max_spread", merged["heterogeneous_max_spread"], low=0.0,
        high=min(mean_load, 1.0 - mean_load), high_open=True)

    levels = policy_levels(*_threshold(rate, low))
    too_large = [servers for servers in checked["exact_servers"] if phase_count(servers, levels) > MAX_PHASES]
    if too_large:
        raise ValueError(f"exact_servers contains {too_large}, whose exact pools at phi = {low:g} have more "
                         f"than {MAX_PHASES} phases; use smaller markets")
    return checked


def _threshold(rate, phi):
    response = best_response(rate, phi)
    return response.threshold, response.keep_probability


def _as_list(values):
    return list(values) if isinstance(values, (list, tuple)) else [values]


def _integers(name, values, *, low):
    items = [check_integer(name, value, low=low) for value in _as_list(values)]
    if not items:
        raise ValueError(f"{name} must contain at least one value, got an empty list")
    return sorted(set(items))


# ---------------------------------------------------------------------------
# Symmetric markets.
# ---------------------------------------------------------------------------

def _draw_jobs_vs_servers(output_dir, settings):
    rate, low = settings["arrival_rate"], settings["low_token_probability"]
    servers = np.arange(2, settings["max_servers"] + 1)
    exact_servers = [count for count in settings["exact_servers"] if count <= settings["max_servers"]]
    exact = {count: _cached_exact_pool(rate, count, low).jobs_in_system for count in exact_servers}

    table = pd.DataFrame({
        "servers": servers,
        "no_pooling": servers * rate / (1.0 - rate),
        "complete_pooling": np.full(servers.size, rate / (1.0 - rate)),
        "mechanism_at_arrival_rate": [fluid_equilibrium(rate, count).jobs_in_system for count in servers],
        "mechanism_low_phi_mean_field": [fluid_equilibrium(rate, count, low).jobs_in_system for count in servers],
        "mechanism_low_phi_exact": [exact.get(count, math.nan) for count in servers],
    })
    csv_path = output_dir / "jobs_vs_servers.csv"
    table.to_csv(csv_path, index=False)

    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    axes.plot(servers, table["no_pooling"], color="0.4", label="no pooling")
    axes.plot(servers, table["complete_pooling"], color="C0", linewidth=2.5,
              label=f"complete pooling = mechanism at phi = lambda = {rate:g}")
    axes.plot(servers, table["mechanism_low_phi_mean_field"], color="C3", linestyle="--",
              label=f"mechanism at phi = {low:g}, mean-field")
    axes.plot(exact_servers, [exact[count] for count in exact_servers], "o", color="C3", markersize=4,
              label=f"mechanism at phi = {low:g}, exact finite N")
    _log_axis(axes)
    axes.set_xlabel("servers N")
    axes.set_ylabel("mean jobs in system")
    axes.set_title(f"Jobs in system, lambda = {rate:g}")
    axes.legend(fontsize=8)
    return [csv_path, *_save(figure, output_dir, "jobs_vs_servers", MEAN_FIELD_NOTE)]


def _draw_mean_field_vs_exact(output_dir, settings):
    rate, low = settings["arrival_rate"], settings["low_token_probability"]
    rows = []
    for count in settings["exact_servers"]:
        truth = _cached_exact_pool(rate, count, low)
        rows.append({
            "servers": count,
            "jobs_mean_field": truth.mean_field.jobs_in_system,
            "jobs_exact": truth.jobs_in_system,
            "pool_mean_field": truth.mean_field.pool_length,
            "pool_exact": truth.mean_pool_length,
            "wait_mean_field": truth.mean_field.pool_wait,
            "wait_exact": truth.pool_wait,
        })
    table = pd.DataFrame(rows)
    csv_path = output_dir / "mean_field_vs_exact.csv"
    table.to_csv(csv_path, index=False)

    figure, (left, right) = plt.subplots(1, 2, figsize=(9.6, 4.0))
    left.plot(table["servers"], table["jobs_mean_field"], "--", color="C3", label="mean-field")
    left.plot(table["servers"], table["jobs_exact"], "o-", color="C3", markersize=4, label="exact finite N")
    left.set_xlabel("servers N")
    left.set_ylabel("mean jobs in system")
    left.set_title(f"Jobs in system, lambda = {rate:g}, phi = {low:g}")
    left.legend(fontsize=8)

    right.plot(table["servers"], table["wait_mean_field"], "--", color="C2", label="mean-field")
    right.plot(table["servers"], table["wait_exact"], "o-", color="C2", markersize=4, label="exact finite N")
    right.axhline(1.0, color="0.5", linewidth=0.8)
    _log_axis(right)
    right.set_xlabel("servers N")
    right.set_ylabel("mean time in pool w")
    right.set_title("Pool wait; sustainable below w = 1 (c_help = c)")
    right.legend(fontsize=8)
    note = (f"{MEAN_FIELD_NOTE}. Exact: stationary law of the chain over the counts of servers per own-queue "
            f"level and the pool length (matrix-geometric).")
    return [csv_path, *_save(figure, output_dir, "mean_field_vs_exact", note)]


def _draw_jobs_vs_token_probability(output_dir, settings):
    rate = settings["arrival_rate"]
    grid = np.unique(np.append(np.round(np.linspace(0.05, 0.97, 93), 12), rate))
    frames = []
    for count in settings["scan_servers"]:
        scan = scan_token_probability(rate, count, grid)
        frames.append(pd.DataFrame({
            "servers": count, "token_probability": scan.token_probabilities,
            "jobs_in_system": scan.jobs_in_system, "pool_wait": scan.pool_wait,
            "is_sustainable": scan.is_sustainable, "pool_is_mean_field": scan.pool_is_mean_field,
            "exact": False,
        }))
    exact_scan = scan_token_probability(rate, settings["exact_scan_servers"],
                                        np.round(np.linspace(0.3, 0.95, 27), 12), exact=True)
    evaluated = ~exact_scan.is_lower_bound
    frames.append(pd.DataFrame({
        "servers": settings["exact_scan_servers"], "token_probability": exact_scan.token_probabilities[evaluated],
        "jobs_in_system": exact_scan.jobs_in_system[evaluated], "pool_wait": exact_scan.pool_wait[evaluated],
        "is_sustainable": exact_scan.is_sustainable[evaluated],
        "pool_is_mean_field": exact_scan.pool_is_mean_field[evaluated], "exact": True,
    }))
    table = pd.concat(frames, ignore_index=True)
    csv_path = output_dir / "jobs_vs_token_probability.csv"
    table.to_csv(csv_path, index=False)

    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    for colour, count in enumerate(settings["scan_servers"]):
        part = table[(table["servers"] == count) & ~table["exact"]]
        jobs = part["jobs_in_system"].to_numpy()
        sustainable = part["is_sustainable"].to_numpy()
        phi = part["token_probability"].to_numpy()
        axes.plot(phi, np.where(sustainable, jobs, np.nan), color=f"C{colour}",
                  label=f"N = {count}, mean-field below phi = lambda")
        axes.plot(phi, np.where(sustainable, np.nan, jobs), color=f"C{colour}", linestyle=":")
    exact_part = table[table["exact"]]
    axes.plot(exact_part["token_probability"], exact_part["jobs_in_system"], "ko", markersize=3,
              label=f"N = {settings['exact_scan_servers']}, exact finite N")
    axes.axvline(rate, color="0.5", linewidth=0.8)
    _log_axis(axes)
    axes.set_xlabel("token probability phi")
    axes.set_ylabel("mean jobs in system")
    axes.set_title(f"Jobs in system against phi, lambda = {rate:g} (minimum at phi = lambda)")
    axes.legend(fontsize=8)
    note = (f"Dotted: not sustainable (pool wait above 1). Above phi = lambda every N has Q = phi / (1 - phi), "
            f"so the curves coincide there. {MEAN_FIELD_NOTE}.")
    return [csv_path, *_save(figure, output_dir, "jobs_vs_token_probability", note)]


def _draw_threshold(output_dir, settings):
    phi = np.round(np.linspace(0.2, 0.995, 796), 12)
    rows = []
    for rate in settings["threshold_arrival_rates"]:
        for value in phi:
            threshold, keep = _threshold(rate, value)
            rows.append({"arrival_rate": rate, "token_probability": value, "threshold": threshold,
                         "keep_probability": keep})
    table = pd.DataFrame(rows)
    csv_path = output_dir / "threshold_vs_token_probability.csv"
    table.to_csv(csv_path, index=False)

    figure, (left, right) = plt.subplots(1, 2, figsize=(9.6, 4.0))
    for colour, rate in enumerate(settings["threshold_arrival_rates"]):
        part = table[table["arrival_rate"] == rate]
        left.step(part["token_probability"], part["threshold"], where="post", color=f"C{colour}",
                  label=f"lambda = {rate:g}")
        # p jumps from 1 back to 0 where k changes; a gap there avoids drawing a false vertical line.
        keep = part["keep_probability"].to_numpy().copy()
        keep[1:][np.diff(part["threshold"].to_numpy()) != 0] = np.nan
        right.plot(part["token_probability"], keep, color=f"C{colour}", label=f"lambda = {rate:g}")
    for axes in (left, right):
        axes.set_xlabel("token probability phi")
        axes.legend(fontsize=8)
    left.set_ylabel("threshold k (largest number of jobs kept)")
    left.set_title("Threshold k = floor(log_lambda phi)")
    right.set_ylabel("keep probability p at k - 1 jobs")
    right.set_title("Boundary keep probability p")
    note = "Closed-form best response for w < 1 and c_help = c; k = 0 (send everything) for phi > lambda."
    return [csv_path, *_save(figure, output_dir, "threshold_vs_token_probability", note)]


def _draw_minimum_servers(output_dir, settings):
    rates = np.round(np.arange(0.05, 0.951, 0.025), 12)
    rows = []
    for rate in rates:
        rows.append({
            "arrival_rate": rate,
            "formula_at_or_below_arrival_rate": minimum_servers(rate),
            "exact_at_arrival_rate_squared": exact_minimum_servers(rate, rate ** 2).minimum_servers,
            "exact_above_arrival_rate": exact_minimum_servers(rate, (1.0 + rate) / 2.0).minimum_servers,
        })
    table = pd.DataFrame(rows)
    csv_path = output_dir / "minimum_servers_vs_arrival_rate.csv"
    table.to_csv(csv_path, index=False)

    figure, axes = plt.subplots(figsize=(6.4, 4.4))
    axes.step(table["arrival_rate"], table["formula_at_or_below_arrival_rate"], where="mid", color="C0",
              label="phi <= lambda: ceil(1 / (1 - lambda)); exact at phi = lambda, mean-field below")
    axes.plot(table["arrival_rate"], table["exact_at_arrival_rate_squared"], "s", color="C3", markersize=4,
              label="phi = lambda^2, exact finite N")
    axes.plot(table["arrival_rate"], table["exact_above_arrival_rate"], "^", color="C2", markersize=4,
              label="phi = (1 + lambda) / 2, exact (M/M/1 pool)")
    _log_axis(axes)
    axes.set_xlabel("arrival rate lambda")
    axes.set_ylabel("smallest sustainable market N_min")
    axes.set_title("Smallest market with pool wait at most 1 (c_help = c)")
    axes.legend(fontsize=8)
    return [csv_path, *_save(figure, output_dir, "minimum_servers_vs_arrival_rate", MEAN_FIELD_NOTE)]


# ---------------------------------------------------------------------------
# Heterogeneous servers.
# ---------------------------------------------------------------------------

def spread_loads(mean_load: float, spread: float, servers: int) -> np.ndarray:
    """Return ``servers`` loads evenly spaced on [mean_load - spread, mean_load + spread]."""
    return np.linspace(mean_load - spread, mean_load + spread, servers)


def _draw_heterogeneous(output_dir, settings):
    count, mean_load = settings["heterogeneous_servers"], settings["heterogeneous_mean_load"]
    spreads = np.linspace(0.0, settings["heterogeneous_max_spread"], 21)
    rows = []
    for spread in spreads:
        loads = spread_loads(mean_load, spread, count)
        result = heterogeneous_equilibrium(loads, np.ones(count))
        rows.append({
            "spread": spread,
            "max_load": result.token_probability,
            "jobs_mechanism": result.jobs_in_system,
            "jobs_central": result.central_jobs_in_system,
            "jobs_no_pooling": result.no_pooling_jobs_in_system,
            "busiest_processed_mechanism": result.processing_rates.max(),
            "least_processed_mechanism": result.processing_rates.min(),
            "processed_central": result.central_processing_rates.max(),
            "pool_wait": result.pool_wait,
            "wait_limit": result.wait_limit,
            "is_sustainable": result.is_sustainable,
        })
    table = pd.DataFrame(rows)
    csv_path = output_dir / "heterogeneous.csv"
    table.to_csv(csv_path, index=False)

    figure, (jobs, work, wait) = plt.subplots(1, 3, figsize=(12.0, 3.9))
    jobs.plot(table["spread"], table["jobs_mechanism"], color="C3", label="mechanism, phi = rho_max")
    jobs.plot(table["spread"], table["jobs_central"], color="C0", label="central control")
    jobs.plot(table["spread"], table["jobs_no_pooling"], color="0.4", label="no pooling")
    _log_axis(jobs)
    jobs.set_ylabel("mean jobs in system")
    jobs.set_title("Jobs in system")

    work.plot(table["spread"], table["busiest_processed_mechanism"], color="C3", label="mechanism, busiest server")
    work.plot(table["spread"], table["least_processed_mechanism"], color="C3", linestyle="--",
              label="mechanism, least busy server")
    work.plot(table["spread"], table["processed_central"], color="C0", label="central control, every server")
    work.set_ylabel("jobs processed per unit time")
    work.set_title("Processing load per server")

    wait.plot(table["spread"], table["pool_wait"], color="C3", label="pool wait, mechanism")
    wait.plot(table["spread"], table["wait_limit"], color="0.5", linestyle=":", label="limit min 1 / mu_i")
    wait.set_ylabel("mean time in pool")
    wait.set_title("Sustainability")
    for axes in (jobs, work, wait):
        axes.set_xlabel("spread of loads rho_i around the mean")
        axes.legend(fontsize=7)
    note = (f"{count} servers with capacity rate 1 and loads evenly spaced on [{mean_load:g} - spread, "
            f"{mean_load:g} + spread]. All values exact: the mechanism's pool and the central queue are M/M/1.")
    return [csv_path, *_save(figure, output_dir, "heterogeneous", note)]


def _log_axis(axes) -> None:
    """Put the y axis on a log scale labelled with plain numbers at 1, 2 and 5 times powers of ten."""
    axes.set_yscale("log")
    axes.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.yaxis.set_minor_locator(LogLocator(subs=(3.0, 4.0, 6.0, 7.0, 8.0, 9.0)))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: ""))


def _save(figure, output_dir, stem: str, note: str) -> list:
    """Add the note under the figure, write PNG and PDF, close the figure and return both paths."""
    figure.text(0.01, 0.005, note, fontsize=7, ha="left", va="bottom", wrap=True, color="0.3")
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    paths = [output_dir / f"{stem}.png", output_dir / f"{stem}.pdf"]
    # Fixed metadata keeps the files identical between runs with identical numbers.
    figure.savefig(paths[0], dpi=150, metadata={"Software": None})
    figure.savefig(paths[1], metadata={"CreationDate": None, "Creator": None, "Producer": None})
    plt.close(figure)
    return paths
