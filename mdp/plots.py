"""Figures of a single solver result: the optimal policy on the (q1, q0) grid."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm, ListedColormap  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def plot_policy(result, path, own_extent=None, pool_extent=None):
    """Draw the policy of a :class:`~mdp.solver.DeviationResult` and its stationary distribution.

    Left: expected number of jobs sent from each state. Middle: the capacity
    decision in the state where sending stops. Right: fraction of time in each
    state (log scale). The grid is cut where the stationary mass becomes
    negligible unless ``own_extent`` / ``pool_extent`` are given.

    Returns the path written; the format follows the file extension.
    """
    distribution = result.stationary_distribution
    own_extent = own_extent or _extent(distribution.sum(axis=1))
    pool_extent = pool_extent or _extent(distribution.sum(axis=0))
    sends = result.policy.transfer_count()[:own_extent + 1, :pool_extent + 1]
    capacity = result.policy.capacity_probabilities[:own_extent + 1, :pool_extent + 1]
    time_share = distribution[:own_extent + 1, :pool_extent + 1]

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.6), constrained_layout=True)
    image = axes[0].imshow(sends, origin="lower", aspect="auto", cmap="viridis")
    figure.colorbar(image, ax=axes[0], label="expected jobs sent to the pool")
    axes[0].set_title("requests for help")

    colours = ListedColormap(["tab:blue", "tab:orange", "lightgrey"])
    image = axes[1].imshow(np.argmax(capacity, axis=2), origin="lower", aspect="auto", cmap=colours,
                           vmin=-0.5, vmax=2.5)
    bar = figure.colorbar(image, ax=axes[1], ticks=[0, 1, 2])
    bar.ax.set_yticklabels(["process own job", "offer help", "idle"])
    axes[1].set_title("use of own capacity unit (most likely action)")

    positive = time_share[time_share > 0]
    floor = max(positive.min(), 1e-12) if positive.size else 1e-12
    image = axes[2].imshow(np.where(time_share > 0, time_share, np.nan), origin="lower", aspect="auto",
                           cmap="magma", norm=LogNorm(vmin=floor, vmax=max(time_share.max(), floor * 10)))
    figure.colorbar(image, ax=axes[2], label="fraction of time")
    axes[2].set_title("stationary distribution")

    for axis in axes:
        axis.set_xlabel("pool length q0")
        axis.set_ylabel("own queue q1")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    market = result.market
    mixed = f", mixed (weight {result.mixing_weight:.3f})" if result.is_mixed else ""
    figure.suptitle(f"Best deviation: lambda = {market.arrival_rate:g}, N = {market.servers}, "
                    f"phi = {market.token_probability:g}, c = {market.processing_cost:g}, "
                    f"wait model {market.wait_model}{mixed}; cost {result.best_cost:.6f}")
    figure.savefig(path, dpi=130)
    plt.close(figure)
    return path


def _extent(marginal, mass=1e-6):
    """Return the last index whose tail mass is above ``mass`` (at least 3)."""
    tail = marginal[::-1].cumsum()[::-1]
    above = np.flatnonzero(tail > mass)
    return int(max(3, above[-1] if above.size else 3))
