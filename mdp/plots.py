"""The figure of one deviation policy: its decisions on the (q1, q0) grid and its stationary law.

Both ``pooling-mdp solve --policy-plot`` and the ``deviation_policy``
experiment draw it through :func:`policy_figure`.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors  # noqa: E402 - the backend must be chosen first
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

CAPACITY_COLOURS = matplotlib.colors.ListedColormap(["tab:blue", "tab:orange", "lightgrey"])
CAPACITY_LABELS = ("process own job", "offer help", "idle")


def policy_figure(policy, stationary=None, title="", transfer_count=None):
    """Build the figure of a policy and, when given, its stationary distribution.

    Panels: the expected number of jobs sent from each state, the most likely
    use of server one's capacity unit, and (if ``stationary`` is given) the
    fraction of time in each state on a log scale. The grid is cut where the
    stationary mass of a row or column falls below 1e-6.

    Parameters
    ----------
    policy : Policy
        The policy to draw.
    stationary : ndarray or None
        Fraction of time in each state, shape (Q1 + 1, Q0 + 1).
    title : str
        Figure title.
    transfer_count : ndarray or None
        Precomputed ``policy.transfer_count()``.

    Returns
    -------
    figure : matplotlib.figure.Figure
    shown : tuple of int
        The largest q1 and q0 drawn.
    """
    transfer_count = policy.transfer_count() if transfer_count is None else transfer_count
    action = policy.capacity_action()

    own_limit, pool_limit = policy.truncation
    if stationary is not None:
        own_limit = min(_visible_extent(stationary.sum(axis=1)), policy.truncation[0])
        pool_limit = min(_visible_extent(stationary.sum(axis=0)), policy.truncation[1])
    view = (slice(0, own_limit + 1), slice(0, pool_limit + 1))
    extent = (-0.5, pool_limit + 0.5, -0.5, own_limit + 0.5)

    panels = 3 if stationary is not None else 2
    figure, axes = plt.subplots(1, panels, figsize=(5.0 * panels, 4.6))
    image = axes[0].imshow(transfer_count[view], origin="lower", extent=extent, aspect="auto",
                           cmap="viridis")
    figure.colorbar(image, ax=axes[0], label="expected jobs sent to the pool")
    axes[0].set_title("requests for help")

    axes[1].imshow(action[view], origin="lower", extent=extent, aspect="auto", cmap=CAPACITY_COLOURS,
                   vmin=-0.5, vmax=2.5)
    handles = [matplotlib.patches.Patch(color=CAPACITY_COLOURS(item), label=name)
               for item, name in enumerate(CAPACITY_LABELS)]
    axes[1].legend(handles=handles, fontsize=7, loc="upper right")
    axes[1].set_title("use of own capacity unit (most likely action)")

    if stationary is not None:
        mass = np.where(stationary[view] > 0, stationary[view], np.nan)
        image = axes[2].imshow(mass, origin="lower", extent=extent, aspect="auto", cmap="magma",
                               norm=matplotlib.colors.LogNorm(vmin=max(np.nanmin(mass), 1e-10),
                                                              vmax=np.nanmax(mass)))
        figure.colorbar(image, ax=axes[2], label="stationary probability")
        axes[2].set_title("stationary distribution")
    for panel in axes:
        panel.set_xlabel("pool length q0")
        panel.set_ylabel("own queue q1")
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
        panel.yaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle(title)
    return figure, (own_limit, pool_limit)


def plot_policy(result, path):
    """Draw the policy of a :class:`~mdp.solver.DeviationResult` into ``path``; return the path.

    The file format follows the extension (PNG, PDF or SVG).
    """
    market = result.market
    mixed = f", mixed (weight {result.mixing_weight:.3f})" if result.is_mixed else ""
    title = (f"Best deviation of server one, λ = {market.arrival_rate:g}, N = {market.servers}, "
             f"φ = {market.token_probability:g}, c = {market.processing_cost:g}, wait model "
             f"{market.wait_model}{mixed}: cost {result.best_cost:.6f} vs complete pooling "
             f"{result.crp_cost:.6f}")
    figure, _shown = policy_figure(result.policy, result.stationary_distribution, title)
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)
    return path


def _visible_extent(marginal, mass=1e-6):
    """Return two past the last index whose marginal mass exceeds ``mass``, and at least 4."""
    visible = np.nonzero(marginal > mass)[0]
    return int(max(visible.max(initial=0) + 2, 4))
