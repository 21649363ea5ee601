"""Experiment files: declarative sweeps read from TOML.

An experiment file describes one experiment. The runner (:mod:`mdp.runner`)
turns it into points, solves each point, caches it, writes a table and draws
figures. This module only reads and checks the file and expands the grid:

    experiment file --(load_experiment)--> Experiment --(points)--> [Point, ...]

Two kinds exist.

``kind = "deviation"`` sweeps server one's best deviation
(:func:`mdp.solver.solve_best_deviation`) over a grid::

    kind = "deviation"
    description = "Sub-optimality gap against the number of servers"
    reproduce = true          # run by `pooling-mdp reproduce`
    tolerance = 1e-6          # relative tolerance passed to the solver
    bracket = false           # also solve R = N - 1 and report the true-gap bracket
    figures = ["gap_vs_servers", "gap_decay"]

    [grid]
    arrival_rate = [0.7, 0.8, 0.9]
    servers = {start = 2, stop = 50}     # inclusive range, optional step
    processing_cost = 1.0

Every grid entry is a single value or a list; ``servers`` also accepts an
inclusive integer range ``{start, stop, step}`` and the real-valued parameters
an inclusive even spacing ``{start, stop, num}``. Omitted parameters take the
defaults of :class:`mdp.model.Market`: ``help_cost`` equals ``processing_cost``
and ``token_probability`` equals ``arrival_rate`` at each point.

``kind = "figures"`` delegates to a module that draws its own figures::

    kind = "figures"
    module = "mdp.equilibrium_figures"
    reproduce = true

    [settings]
    servers = 10

The runner imports ``module`` and calls ``draw_figures(output_dir, settings)``.

Every problem in a file (unknown key, wrong type, value out of range, a grid
point that is not a valid market) raises ``ValueError`` naming the file, the
key and what is allowed, before anything is solved.
"""

from __future__ import annotations

import itertools
import math
import numbers
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .model import WAIT_MODELS, Market

KINDS = ("deviation", "figures")
GRID_PARAMETERS = ("arrival_rate", "servers", "processing_cost", "help_cost",
                   "token_probability", "wait_model")
REAL_PARAMETERS = ("arrival_rate", "processing_cost", "help_cost", "token_probability")

# Keys each kind accepts at the top level of the file.
_COMMON_KEYS = ("kind", "name", "description", "reproduce")
_DEVIATION_KEYS = _COMMON_KEYS + ("grid", "tolerance", "bracket", "figures")
_FIGURES_KEYS = _COMMON_KEYS + ("module", "settings")

# Relative tolerances in [1e-10, 0.1], the range `pooling-mdp solve --tolerance`
# accepts, so that a point solved on the command line can also be swept.
TOLERANCE_RANGE = (1e-10, 0.1)
DEFAULT_TOLERANCE = 1e-8

# Upper bound on the points one file may expand to, so that a typo in a range
# (stop = 5000 for 50) fails at once instead of queueing hours of work.
MAX_POINTS = 100_000

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")
_MODULE_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class Point:
    """One market of a sweep and how to solve it.

    Parameters
    ----------
    market : Market
        The validated market.
    tolerance : float
        Relative tolerance passed to the solver.
    bracket : bool
        Whether to solve both wait models and report the true-gap bracket.
    """

    market: Market
    tolerance: float
    bracket: bool = False

    @property
    def task(self) -> str:
        """Name of the computation: ``"deviation"`` or ``"bracket"``."""
        return "bracket" if self.bracket else "deviation"

    def describe(self) -> str:
        """Return a short human-readable label, for logs and error summaries."""
        market = self.market
        text = (f"arrival_rate={market.arrival_rate:g} servers={market.servers} "
                f"processing_cost={market.processing_cost:g} help_cost={market.help_cost:g} "
                f"token_probability={market.token_probability:g}")
        if not self.bracket:
            text += f" wait_model={market.wait_model}"
        return text


@dataclass(frozen=True)
class Experiment:
    """A validated experiment file.

    Parameters
    ----------
    name : str
        Name of the experiment; its results go to ``results/<name>/``.
    kind : {"deviation", "figures"}
        What the runner does with it.
    path : Path
        The file it was read from.
    description : str
        One line saying what the experiment shows.
    reproduce : bool
        Whether ``pooling-mdp reproduce`` runs it.
    grid : dict
        For ``"deviation"``: parameter name to the tuple of its values.
    tolerance : float
        For ``"deviation"``: relative solver tolerance.
    bracket : bool
        For ``"deviation"``: solve both wait models and report the true-gap bracket.
    figures : tuple of str
        For ``"deviation"``: names of the figures to draw (see :mod:`mdp.gap_figures`).
    module : str
        For ``"figures"``: the module whose ``draw_figures`` the runner calls.
    settings : dict
        For ``"figures"``: passed unchanged to ``draw_figures``.
    """

    name: str
    kind: str
    path: Path
    description: str = ""
    reproduce: bool = False
    grid: dict = field(default_factory=dict)
    tolerance: float = DEFAULT_TOLERANCE
    bracket: bool = False
    figures: tuple = ()
    module: str = ""
    settings: dict = field(default_factory=dict)

    def points(self) -> list:
        """Expand the grid into points, in a fixed order (the grid's own order).

        Returns an empty list for ``kind = "figures"``.
        """
        if self.kind != "deviation":
            return []
        names = [name for name in GRID_PARAMETERS if name in self.grid]
        points = []
        for values in itertools.product(*(self.grid[name] for name in names)):
            market = Market(**dict(zip(names, values)))
            points.append(Point(market=market, tolerance=self.tolerance, bracket=self.bracket))
        return points


def load_experiment(path) -> Experiment:
    """Read and validate an experiment file.

    Parameters
    ----------
    path : str or Path
        A TOML file in the format described in this module's docstring.

    Returns
    -------
    Experiment

    Raises
    ------
    ValueError
        If the file is missing, is a directory or cannot be read. Also if it
        is not valid TOML, or has an unknown key or a value of the wrong type
        or out of range. The message names the file and the key.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"experiment file {str(path)!r} is a directory, not a file; pass one "
                         "*.toml file, or run a whole directory with "
                         "pooling-mdp reproduce --experiments DIR")
    if not path.is_file():
        raise ValueError(f"experiment file {str(path)!r} not found")
    try:
        with path.open("rb") as stream:
            data = tomllib.load(stream)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: invalid TOML: {error}") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot read the file: {error.strerror}") from None
    return parse_experiment(data, path)


def parse_experiment(data: dict, path) -> Experiment:
    """Validate the parsed TOML ``data`` of the experiment file ``path``.

    See :func:`load_experiment`; ``path`` is used for the name and in messages.
    """
    path = Path(path)
    context = _Context(path)

    kind = data.get("kind")
    if kind not in KINDS:
        allowed = ", ".join(repr(name) for name in KINDS)
        raise context.error("kind", f"must be one of {allowed}", kind)
    allowed_keys = _DEVIATION_KEYS if kind == "deviation" else _FIGURES_KEYS
    context.reject_unknown(data, allowed_keys, "")

    name = data.get("name", path.stem)
    # A name is a folder under the output directory: "." or ".." would be the
    # output directory itself or its parent, and a leading dot hides the folder.
    if not isinstance(name, str) or not _NAME_PATTERN.match(name) or name.startswith("."):
        raise context.error("name", "must be a non-empty string of letters, digits, '_', '-' or '.', "
                            "not starting with '.'", name)
    common = dict(
        name=name,
        kind=kind,
        path=path,
        description=context.string(data, "description", ""),
        reproduce=context.boolean(data, "reproduce", False),
    )
    if kind == "figures":
        return Experiment(**common, **_parse_figures(data, context))
    experiment = Experiment(**common, **_parse_deviation(data, context))
    _check_points(experiment, context)
    return experiment


def find_experiments(directory) -> list:
    """Load every ``*.toml`` file of ``directory``, sorted by file name.

    Raises
    ------
    ValueError
        If the directory does not exist, contains no experiment file, any file is
        invalid, or two files share an experiment name.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"experiments directory {str(directory)!r} not found; "
                         "run from the project directory or pass --experiments DIR")
    paths = sorted(directory.glob("*.toml"))
    if not paths:
        raise ValueError(f"experiments directory {str(directory)!r} contains no *.toml file")
    experiments = [load_experiment(path) for path in paths]
    seen = {}
    for experiment in experiments:
        if experiment.name in seen:
            raise ValueError(f"{experiment.path}: experiment name {experiment.name!r} "
                             f"is already used by {seen[experiment.name]}")
        seen[experiment.name] = experiment.path
    return experiments


def _parse_deviation(data: dict, context) -> dict:
    tolerance = data.get("tolerance", DEFAULT_TOLERANCE)
    low, high = TOLERANCE_RANGE
    requirement = f"must be a number in [{low:g}, {high:g}], as for pooling-mdp solve --tolerance"
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real):
        raise context.error("tolerance", requirement, tolerance)
    if not (low <= tolerance <= high):
        raise context.error("tolerance", requirement, tolerance)

    bracket = context.boolean(data, "bracket", False)

    from .gap_figures import FIGURES

    figures = data.get("figures", [])
    if not isinstance(figures, list) or not all(isinstance(item, str) for item in figures):
        raise context.error("figures", "must be a list of figure names", figures)
    for figure in figures:
        if figure not in FIGURES:
            allowed = ", ".join(repr(item) for item in FIGURES)
            raise context.error("figures", f"names an unknown figure; allowed: {allowed}", figure)

    grid_data = data.get("grid")
    if not isinstance(grid_data, dict):
        raise context.error("grid", "is required: a table of parameter values "
                            "(at least arrival_rate and servers)", grid_data)
    context.reject_unknown(grid_data, GRID_PARAMETERS, "grid.")
    for required in ("arrival_rate", "servers"):
        if required not in grid_data:
            raise context.error(f"grid.{required}", "is required", None)
    if bracket and "wait_model" in grid_data:
        raise context.error("grid.wait_model", "must be omitted when bracket = true, "
                            "because the bracket solves both wait models", grid_data["wait_model"])
    grid = {name: _grid_values(name, value, context) for name, value in grid_data.items()}
    return dict(grid=grid, tolerance=float(tolerance), bracket=bracket, figures=tuple(figures))


def _parse_figures(data: dict, context) -> dict:
    module = data.get("module")
    if not isinstance(module, str) or not _MODULE_PATTERN.match(module):
        raise context.error("module", "is required: a dotted module name such as "
                            "'mdp.equilibrium_figures'", module)
    settings = data.get("settings", {})
    if not isinstance(settings, dict):
        raise context.error("settings", "must be a table", settings)
    return dict(module=module, settings=settings)


def _grid_values(name: str, value, context) -> tuple:
    """Return the values of one grid parameter as a tuple, checked for type and duplicates."""
    key = f"grid.{name}"
    if isinstance(value, dict):
        values = _expand_range(name, value, context)
    elif isinstance(value, list):
        values = value
    else:
        values = [value]
    if not values:
        raise context.error(key, "must list at least one value", value)

    checked = []
    for item in values:
        checked.append(_grid_item(name, item, context))
    if len(set(checked)) != len(checked):
        raise context.error(key, "must not repeat a value", value)
    return tuple(checked)


def _grid_item(name: str, item, context):
    key = f"grid.{name}"
    if name == "wait_model":
        if item not in WAIT_MODELS:
            allowed = ", ".join(repr(model) for model in WAIT_MODELS)
            raise context.error(key, f"must be one of {allowed}", item)
        return item
    if name == "servers":
        if isinstance(item, bool) or not isinstance(item, numbers.Integral):
            raise context.error(key, "must be an integer >= 2, a list of them or "
                                "a range {start, stop, step}", item)
        return int(item)
    if isinstance(item, bool) or not isinstance(item, numbers.Real) or not math.isfinite(item):
        raise context.error(key, "must be a finite number, a list of them or "
                            "an even spacing {start, stop, num}", item)
    return float(item)


def _expand_range(name: str, table: dict, context) -> list:
    """Expand ``{start, stop, step}`` (servers) or ``{start, stop, num}`` (real parameters)."""
    key = f"grid.{name}"
    if name == "servers":
        context.reject_unknown(table, ("start", "stop", "step"), f"{key}.")
        start, stop, step = table.get("start"), table.get("stop"), table.get("step", 1)
        for part, number in (("start", start), ("stop", stop), ("step", step)):
            if isinstance(number, bool) or not isinstance(number, int):
                raise context.error(f"{key}.{part}", "must be an integer", number)
        if step < 1 or stop < start:
            raise context.error(key, "must have step >= 1 and stop >= start "
                                "(stop is included)", table)
        if (stop - start) // step + 1 > MAX_POINTS:
            raise context.error(key, f"expands to more than {MAX_POINTS} values", table)
        return list(range(start, stop + 1, step))
    if name in REAL_PARAMETERS:
        context.reject_unknown(table, ("start", "stop", "num"), f"{key}.")
        start, stop, num = table.get("start"), table.get("stop"), table.get("num")
        for part, number in (("start", start), ("stop", stop)):
            if isinstance(number, bool) or not isinstance(number, numbers.Real):
                raise context.error(f"{key}.{part}", "must be a number", number)
        if isinstance(num, bool) or not isinstance(num, int) or not 2 <= num <= MAX_POINTS:
            raise context.error(f"{key}.num", f"must be an integer in [2, {MAX_POINTS}]", num)
        # Round away the last bits of linspace so that 0.1-steps print as 0.1
        # and the values, which are cache keys, do not depend on the platform.
        return [round(float(value), 12) for value in np.linspace(start, stop, num)]
    raise context.error(key, "does not accept a range table; give a value or a list", table)


def _check_points(experiment: Experiment, context) -> None:
    """Build every point once, so that an invalid market fails before any solve."""
    count = math.prod(len(values) for values in experiment.grid.values())
    if count > MAX_POINTS:
        raise context.error("grid", f"expands to {count} points, more than {MAX_POINTS}", None)
    try:
        experiment.points()
    except ValueError as error:
        raise ValueError(f"{context.path}: [grid] contains an invalid market: {error}") from None


class _Context:
    """Builds error messages that name the experiment file and the key."""

    def __init__(self, path: Path):
        self.path = path

    def error(self, key: str, requirement: str, value) -> ValueError:
        shown = "missing" if value is None else f"got {value!r}"
        return ValueError(f"{self.path}: key {key!r} {requirement} ({shown})")

    def reject_unknown(self, table: dict, allowed, prefix: str) -> None:
        for key in table:
            if key not in allowed:
                names = ", ".join(allowed)
                raise ValueError(f"{self.path}: unknown key {prefix + key!r}; allowed keys: {names}")

    def string(self, data: dict, key: str, default: str) -> str:
        value = data.get(key, default)
        if not isinstance(value, str):
            raise self.error(key, "must be a string", value)
        return value

    def boolean(self, data: dict, key: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "must be true or false", value)
        return value
