"""Figures of the best-deviation sweeps, drawn from the runner's tables.

Each figure function takes the sorted sweep table (a ``DataFrame`` as written to
``table.csv``), the output directory and the per-row arrays stored with the
points (only the policy figure uses them), writes PNG and PDF files and returns
their paths. :data:`FIGURES` maps the names used in experiment files to them.

The sub-optimality gap is (CRP cost - best deviation cost) / best deviation
cost, in percent. Its certified interval ``[gap_lower, gap_upper]`` comes from
the solver's interval for the best cost. ``N_min = ceil(1 / (1 - lambda))`` is
the smallest market in which a job's mean wait in the pool under complete
pooling, 1 / (N (1 - lambda)), is at most one capacity inter-arrival time, so
that complete pooling is a fluid equilibrium at phi = lambda, c_help = c.

The values behind the figures of "Incentivizing Resource Pooling" (C. Chen,
Y. Chen and P. Qian, 2023) are not published. These figures therefore show
what this project's model computes; they are not digitised copies.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors  # noqa: E402 - the backend must be chosen first
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

PROVENANCE_NOTE = ("Computed by this project's best-deviation model. The values of the figures in "
                   "Chen, Chen and Qian (2023) are not published, so this is the model's reading, "
                   "not a copy.")

# A ratio within this relative distance of an integer counts as that integer:
# 1 / (1 - 0.8) is 5.000000000000001 in floating point, and N_min is 5.
_CEILING_TOLERANCE = 1e-9

# A gap is used in the decay fit only if it exceeds its certified interval's
# width this many times, so that the fit follows the gap and not solver noise.
_FIT_SIGNAL_RATIO = 10.0


def minimum_servers(arrival_rate: float) -> int:
    """Return N_min = ceil(1 / (1 - arrival_rate)), at least 2, with a relative tolerance."""
    ratio = 1.0 / (1.0 - arrival_rate)
    nearest = round(ratio)
    if abs(ratio - nearest) <= _CEILING_TOLERANCE * ratio:
        return max(2, int(nearest))
    return max(2, math.ceil(ratio))


def draw_gap_vs_servers(table: pd.DataFrame, output_dir, arrays=None) -> list:
    """Draw the gap (%) against N, one curve per arrival rate, with N_min marked."""
    figure, axes = plt.subplots(figsize=(7.0, 4.6))
    for (label, rows), colour in zip(_curves(table, "servers"), _colours()):
        servers = rows["servers"].to_numpy()
        gap = 100.0 * rows["gap"].to_numpy()
        below = gap - 100.0 * rows["gap_lower"].to_numpy()
        above = 100.0 * rows["gap_upper"].to_numpy() - gap
        axes.errorbar(servers, gap, yerr=[below, above], color=colour, marker="o", markersize=3,
                      linewidth=1.2, capsize=2, label=label)
        rate = float(rows["arrival_rate"].iloc[0])
        n_min = minimum_servers(rate)
        axes.axvline(n_min, color=colour, linestyle=":", linewidth=1.0)
        axes.annotate(f"$N_{{min}}$={n_min}", (n_min, 0.97), xycoords=("data", "axes fraction"),
                      color=colour, fontsize=8, ha="left", va="top", rotation=90)
    axes.set_xlabel("number of servers N")
    axes.set_ylabel("sub-optimality gap of complete pooling (%)")
    axes.set_title("Gain of server one's best deviation from complete pooling")
    axes.set_ylim(bottom=0.0)
    axes.grid(alpha=0.3)
    axes.legend(title="error bars: certified interval", fontsize=8, title_fontsize=8)
    return _save(figure, output_dir, "gap_vs_servers", _interval_note(table))


def fit_decay(table: pd.DataFrame) -> pd.DataFrame:
    """Fit exponential and power laws to the gap for N >= N_min, per curve.

    For each curve two least-squares lines are fitted: log(gap) against N
    (``gap ~ A exp(-rate N)``, straight on semi-log axes) and log(gap) against
    log(N) (``gap ~ A N^-rate``, straight on log-log axes). The law with the
    larger coefficient of determination R^2 is marked ``best``. Only gaps at
    least ten times their certified interval's width are used.

    Returns
    -------
    DataFrame
        One row per curve and law: ``curve, law, rate, prefactor, r_squared,
        points, servers_min, servers_max, best``.
    """
    records = []
    for label, rows in _curves(table, "servers"):
        rate_value = float(rows["arrival_rate"].iloc[0])
        usable = _fit_rows(rows, minimum_servers(rate_value))
        if len(usable) < 3:
            continue
        servers = usable["servers"].to_numpy(dtype=float)
        log_gap = np.log(usable["gap"].to_numpy())
        fits = []
        for law, x in (("exponential", servers), ("power", np.log(servers))):
            slope, intercept = np.polyfit(x, log_gap, 1)
            residual = log_gap - (slope * x + intercept)
            total = np.sum((log_gap - log_gap.mean()) ** 2)
            r_squared = 1.0 - np.sum(residual ** 2) / total if total > 0 else float("nan")
            fits.append(dict(curve=label, law=law, rate=-slope, prefactor=math.exp(intercept),
                             r_squared=r_squared, points=len(usable),
                             servers_min=int(servers.min()), servers_max=int(servers.max())))
        best = max(range(2), key=lambda item: fits[item]["r_squared"])
        for item, fit in enumerate(fits):
            fit["best"] = item == best
        records.extend(fits)
    return pd.DataFrame(records, columns=["curve", "law", "rate", "prefactor", "r_squared",
                                          "points", "servers_min", "servers_max", "best"])


def draw_gap_decay(table: pd.DataFrame, output_dir, arrays=None) -> list:
    """Draw the gap against N on semi-log and log-log axes with the fitted laws; write ``decay_fit.csv``."""
    fits = fit_decay(table)
    output_dir = Path(output_dir)
    fits.to_csv(output_dir / "decay_fit.csv", index=False)

    figure, (semilog, loglog) = plt.subplots(1, 2, figsize=(11.0, 4.6))
    for (label, rows), colour in zip(_curves(table, "servers"), _colours()):
        rows = rows[rows["gap"] > 0]
        servers = rows["servers"].to_numpy(dtype=float)
        gap = 100.0 * rows["gap"].to_numpy()
        for axes in (semilog, loglog):
            axes.plot(servers, gap, "o", color=colour, markersize=3, label=label)
        for axes, law in ((semilog, "exponential"), (loglog, "power")):
            fit = fits[(fits["curve"] == label) & (fits["law"] == law)]
            if fit.empty:
                continue
            fit = fit.iloc[0]
            grid = np.linspace(fit["servers_min"], fit["servers_max"], 100)
            if law == "exponential":
                curve = fit["prefactor"] * np.exp(-fit["rate"] * grid)
                text = f"fit exp(-{fit['rate']:.3f} N)"
            else:
                curve = fit["prefactor"] * grid ** (-fit["rate"])
                text = f"fit N^-{fit['rate']:.2f}"
            marker = " (best)" if fit["best"] else ""
            axes.plot(grid, 100.0 * curve, "-", color=colour, linewidth=1.0,
                      label=f"{text}, R²={fit['r_squared']:.4f}{marker}")

    semilog.set_yscale("log")
    loglog.set_xscale("log")
    loglog.set_yscale("log")
    loglog.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    loglog.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    loglog.set_xticks([2, 5, 10, 20, 50])
    semilog.set_title("semi-log: straight if gap ~ exp(-rate N)")
    loglog.set_title("log-log: straight if gap ~ N^-rate")
    for axes in (semilog, loglog):
        axes.set_xlabel("number of servers N")
        axes.set_ylabel("sub-optimality gap (%)")
        axes.grid(alpha=0.3, which="both")
        axes.legend(fontsize=7)
    note = ("Fits use N >= N_min and gaps at least ten times their certified interval; "
            "no theoretical bound is drawn. " + PROVENANCE_NOTE)
    return _save(figure, output_dir, "gap_decay", note)


def draw_gap_vs_processing_cost(table: pd.DataFrame, output_dir, arrays=None) -> list:
    """Draw the gap (%) against the processing cost c (with c_help = c), one curve per arrival rate."""
    figure, axes = plt.subplots(figsize=(7.0, 4.6))
    for (label, rows), colour in zip(_curves(table, "processing_cost"), _colours()):
        cost = rows["processing_cost"].to_numpy()
        gap = 100.0 * rows["gap"].to_numpy()
        axes.fill_between(cost, 100.0 * rows["gap_lower"], 100.0 * rows["gap_upper"],
                          color=colour, alpha=0.25, linewidth=0)
        axes.plot(cost, gap, marker="o", markersize=3, color=colour, label=label)
    servers = sorted(set(table["servers"]))
    axes.set_xlabel("processing cost c (help cost equal to c)")
    axes.set_ylabel("sub-optimality gap (%)")
    axes.set_title(f"Gap against processing cost, N = {', '.join(map(str, servers))}")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _save(figure, output_dir, "gap_vs_processing_cost", _interval_note(table))


def draw_true_gap_bracket(table: pd.DataFrame, output_dir, arrays=None) -> list:
    """Draw, per arrival rate, the bracket on the true gap from both wait models against N."""
    curves = _curves(table, "servers")
    figure, panels = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 4.2), squeeze=False)
    for axes, (label, rows), colour in zip(panels[0], curves, _colours()):
        servers = rows["servers"].to_numpy()
        axes.fill_between(servers, 100.0 * rows["true_gap_lower"], 100.0 * rows["true_gap_upper"],
                          color=colour, alpha=0.3, linewidth=0,
                          label="true gap bracket (wait rates N-1 and N)")
        axes.plot(servers, 100.0 * rows["gap"], color=colour, linewidth=1.2,
                  label="gap with pool served at rate N")
        axes.axhline(0.0, color="black", linewidth=0.6)
        n_min = minimum_servers(float(rows["arrival_rate"].iloc[0]))
        axes.axvline(n_min, color="grey", linestyle=":", linewidth=1.0, label=f"N_min = {n_min}")
        axes.set_title(label)
        axes.set_xlabel("number of servers N")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    panels[0][0].set_ylabel("sub-optimality gap (%)")
    note = ("The true gap lies in the band: a pooled job leaves at rate between N-1 and N. "
            + PROVENANCE_NOTE)
    return _save(figure, output_dir, "true_gap_bracket", note)


def draw_deviation_policy(table: pd.DataFrame, output_dir, arrays=None) -> list:
    """Draw the optimal deviation policy and its stationary distribution on the (q1, q0) grid.

    One figure per table row, named after its arrival rate and N. The policy
    of each row is also saved with :func:`mdp.policy.save_policy`.
    """
    from .model import Market
    from .policy import Policy, save_policy

    output_dir = Path(output_dir)
    paths = []
    for position, (_, row) in enumerate(table.iterrows()):
        stored = (arrays or [{}] * len(table))[position]
        if "transfer_probability" not in stored:
            raise ValueError(f"no policy stored for row {position} (arrival_rate={row['arrival_rate']}, "
                             f"servers={row['servers']}); rerun with --fresh")
        market = Market(**{name: row[name] for name in ("arrival_rate", "servers", "processing_cost",
                                                        "help_cost", "token_probability",
                                                        "wait_model")})
        stem = f"deviation_policy_lambda{market.arrival_rate:g}_N{market.servers}"
        policy = Policy(market, tuple(n - 1 for n in stored["transfer_probability"].shape),
                        stored["transfer_probability"], stored["capacity_probabilities"],
                        {"source": "pooling-mdp run", "best_cost": float(row["best_cost"])})
        save_policy(policy, output_dir / f"{stem}.npz")
        paths.extend(_draw_policy(policy, stored, row, output_dir, stem))
    return paths


def _draw_policy(policy, stored: dict, row, output_dir: Path, stem: str) -> list:
    from .plots import policy_figure

    market = policy.market
    title = (f"Best deviation of server one, λ = {market.arrival_rate:g}, N = {market.servers}, "
             f"c = {market.processing_cost:g}: cost {row['best_cost']:.6f} "
             f"vs complete pooling {row['crp_cost']:.6f}")
    figure, (own_limit, pool_limit) = policy_figure(policy, stored.get("stationary_distribution"), title,
                                                    stored.get("transfer_count"))
    note = (f"Grid cut at q1 <= {own_limit}, q0 <= {pool_limit} of the truncation "
            f"{policy.truncation}. " + PROVENANCE_NOTE)
    return _save(figure, output_dir, stem, note)


FIGURES = {
    "gap_vs_servers": draw_gap_vs_servers,
    "gap_decay": draw_gap_decay,
    "gap_vs_processing_cost": draw_gap_vs_processing_cost,
    "true_gap_bracket": draw_true_gap_bracket,
    "deviation_policy": draw_deviation_policy,
}


def _usable(table: pd.DataFrame) -> pd.DataFrame:
    """Return the rows without an error."""
    if "error" in table:
        table = table[table["error"].fillna("") == ""]
    return table.dropna(subset=["gap"]) if "gap" in table else table


def _curves(table: pd.DataFrame, x: str) -> list:
    """Split the table into curves along ``x``: one per combination of the other varying parameters."""
    table = _usable(table)
    # A help cost equal to the processing cost, or a token probability equal to
    # the arrival rate, is the default and does not name a curve of its own.
    tied = {"help_cost": "processing_cost", "token_probability": "arrival_rate"}
    fixed = [name for name in ("arrival_rate", "servers", "processing_cost", "help_cost",
                               "token_probability", "wait_model")
             if name in table and name != x and table[name].nunique() > 1
             and not (name in tied and (table[name] == table[tied[name]]).all())]
    if "arrival_rate" not in fixed and x != "arrival_rate":
        fixed.insert(0, "arrival_rate")
    curves = []
    for values, rows in table.groupby(fixed, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        label = ", ".join(_label(name, value) for name, value in zip(fixed, values))
        curves.append((label, rows.sort_values(x)))
    return curves


def _label(name: str, value) -> str:
    symbols = {"arrival_rate": "λ", "servers": "N", "processing_cost": "c", "help_cost": "c_help",
               "token_probability": "φ", "wait_model": "wait model"}
    return f"{symbols.get(name, name)} = {value:g}" if isinstance(value, float) else \
        f"{symbols.get(name, name)} = {value}"


def _fit_rows(rows: pd.DataFrame, n_min: int) -> pd.DataFrame:
    width = rows["gap_upper"] - rows["gap_lower"]
    keep = (rows["servers"] >= n_min) & (rows["gap"] > 0) & (rows["gap"] >= _FIT_SIGNAL_RATIO * width)
    return rows[keep]


def _interval_note(table: pd.DataFrame) -> str:
    usable = _usable(table)
    widest = float((usable["gap_upper"] - usable["gap_lower"]).max() * 100.0) if len(usable) else 0.0
    return (f"Certified intervals of the gap are at most {widest:.2g} percentage points wide. "
            + PROVENANCE_NOTE)


def _colours():
    return plt.rcParams["axes.prop_cycle"].by_key()["color"]


def _save(figure, output_dir, stem: str, note: str) -> list:
    """Add the note under the figure, write PNG and PDF, close the figure and return both paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    figure.text(0.01, 0.005, note, fontsize=7, ha="left", va="bottom", wrap=True, color="0.3")
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    paths = [output_dir / f"{stem}.png", output_dir / f"{stem}.pdf"]
    # Fixed metadata keeps the files identical between runs with identical numbers.
    figure.savefig(paths[0], dpi=150, metadata={"Software": None})
    figure.savefig(paths[1], metadata={"CreationDate": None, "Creator": None, "Producer": None})
    plt.close(figure)
    return paths
