"""Run experiments: solve every point of a sweep in parallel, cache it, tabulate it, plot it.

Data flow of one ``kind = "deviation"`` experiment::

    experiment file -> Experiment.points() -> cache lookup
        -> missing points solved on a backend (processes, Dask, or in-process)
        -> each finished point stored in the cache as it arrives
        -> results/<name>/table.csv -> figures (mdp.gap_figures) -> metadata.json

The table contains no timings, so runs with the same versions write identical
tables. Each point's solve time goes to the cache entry and, summed up, to
``metadata.json``.

A ``kind = "figures"`` experiment imports its module and calls
``draw_figures(output_dir, settings)`` on a staging folder next to the
output folder. The staging folder replaces the output folder only when
``draw_figures`` succeeds, so an interrupted or failed run leaves the
previous outputs and their ``metadata.json`` unchanged. That
``metadata.json`` stores the key of the drawing (:func:`figures_key`) and
the files written. A later run with the same key skips the module while
every listed file exists.

The computation of a point is looked up in :data:`COMPUTE` by its task,
``"deviation"`` or ``"bracket"``. A caller may pass another function with the
same signature, ``compute(point) -> (row, arrays)``. A point whose computation
raises is recorded in the table with its error and does not stop the sweep.
Because the main process stores every finished point before it looks at the
next one, an interrupted run loses only the points that were being solved.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd

from .backends import SerialBackend, make_backend
from .cache import PointCache, default_cache_dir, solver_version
from .experiments import GRID_PARAMETERS, Experiment, Point

# Bumped when the layout of the key in figures_key() changes.
FIGURES_KEY_FORMAT = 1

# Leading columns of a table, after the parameters, in this order; the
# remaining result fields follow in alphabetical order.
RESULT_COLUMNS = (
    "equilibrium_setting",
    "best_cost", "lower_bound", "upper_bound", "crp_cost",
    "gap", "gap_lower", "gap_upper",
    "true_gap_lower", "true_gap_upper", "true_gap_certified_lower", "true_gap_certified_upper",
    "token_price",
    "own_limit", "pool_limit", "truncation_change", "boundary_mass", "lost_rate",
    "converged", "message",
)

# Libraries whose versions go into metadata.json.
LIBRARIES = ("numpy", "scipy", "numba", "pandas", "matplotlib", "tqdm", "dask",
             "distributed", "platformdirs")


# ---------------------------------------------------------------------------
# Computations of one point. They run in worker processes, so they are plain
# module-level functions that import the solver when called.

def compute_deviation(point: Point):
    """Solve server one's best deviation at ``point``; return its table row and policy arrays."""
    from .solver import solve_best_deviation

    result = solve_best_deviation(point.market, tolerance=point.tolerance)
    return flatten_result(result.as_dict()), policy_arrays(result)


def compute_bracket(point: Point):
    """Solve both wait models at ``point``; return the row with the true-gap bracket.

    The row contains the R = N solution under the usual names, the bracket's
    fields, and the R = N - 1 solution with the prefix ``others_``.
    """
    from .solver import true_gap_bracket

    bracket = true_gap_bracket(point.market, tolerance=point.tolerance)
    row = flatten_result(bracket.all_servers.as_dict())
    row.update(flatten_result(bracket.as_dict()))
    others = flatten_result(bracket.others_only.as_dict())
    row.update({f"others_{name}": value for name, value in others.items()})
    return row, {}


COMPUTE = {"deviation": compute_deviation, "bracket": compute_bracket}


def flatten_result(fields: dict) -> dict:
    """Return the scalar result fields of a solver row as plain Python values.

    The market parameters are dropped because the runner writes them from the
    point itself, and the solver's ``seconds`` because the runner measures each
    point's wall time the same way for every task.
    """
    row = {}
    for name, value in fields.items():
        if name in GRID_PARAMETERS or name == "seconds":
            continue
        if isinstance(value, (bool, np.bool_)):
            row[name] = bool(value)
        elif isinstance(value, (int, np.integer)):
            row[name] = int(value)
        elif isinstance(value, (float, np.floating)):
            row[name] = float(value)
        elif isinstance(value, str) or value is None:
            row[name] = value
    return row


def policy_arrays(result) -> dict:
    """Return the optimal policy and its stationary distribution as plain arrays."""
    policy = result.policy
    arrays = {
        "transfer_probability": policy.transfer_probability,
        "capacity_probabilities": policy.capacity_probabilities,
        "transfer_count": policy.transfer_count(),
    }
    stationary = getattr(result, "stationary_distribution", None)
    if stationary is not None:
        arrays["stationary_distribution"] = np.asarray(stationary)
    return arrays


def solve_point(compute, index: int, point: Point):
    """Run ``compute(point)`` and return ``(index, row, arrays, error, seconds)``.

    An exception becomes the error text (type, message and the innermost
    frame), so that a failed point is reported instead of stopping the sweep.
    """
    start = time.perf_counter()
    try:
        row, arrays = compute(point)
        error = None
    except Exception as exception:  # noqa: BLE001 - a point's failure must not stop the sweep
        row, arrays = {}, {}
        frame = traceback.extract_tb(exception.__traceback__)[-1]
        error = (f"{type(exception).__name__}: {exception} "
                 f"(at {Path(frame.filename).name}:{frame.lineno})")
    return index, row, arrays, error, time.perf_counter() - start


# ---------------------------------------------------------------------------
# Running experiments.

@dataclasses.dataclass
class RunSummary:
    """Counts, failures and timing of one experiment run.

    Attributes
    ----------
    name : str
        Experiment name.
    output_dir : Path
        Where its table, figures and metadata were written.
    points : int
        Points in the grid (0 for ``kind = "figures"``).
    cached : int
        Points read from the cache.
    solved : int
        Points solved in this run.
    failed : list of str
        One line per failed point or figure.
    not_converged : int
        Points whose solver reported ``converged = False``.
    seconds : float
        Wall time of the whole run.
    backend : str
        Description of the backend the points were solved on.
    up_to_date : bool
        For ``kind = "figures"``: the previous outputs were current, so the
        module was not run.
    """

    name: str
    output_dir: Path
    points: int = 0
    cached: int = 0
    solved: int = 0
    failed: list = dataclasses.field(default_factory=list)
    not_converged: int = 0
    seconds: float = 0.0
    backend: str = "in-process"
    up_to_date: bool = False

    @property
    def ok(self) -> bool:
        """Whether every point and figure succeeded."""
        return not self.failed

    def describe(self) -> str:
        """Return a one-line summary for the command line."""
        if self.up_to_date:
            return f"{self.name}: up to date (from cache) -> {self.output_dir}"
        if self.points:
            text = (f"{self.name}: {self.points} points, {self.solved} solved, "
                    f"{self.cached} from cache, {len(self.failed)} failed")
            if self.not_converged:
                text += f", {self.not_converged} not converged"
        else:
            text = f"{self.name}: {'failed' if self.failed else 'done'}"
        return f"{text} ({self.seconds:.1f} s) -> {self.output_dir}"


def run_experiment(experiment: Experiment, *, output_root="results", cache: PointCache | None = None,
                   fresh: bool = False, backend=None, compute=None, progress: bool = False,
                   command: str | None = None) -> RunSummary:
    """Run one experiment and write its outputs under ``output_root/<name>/``.

    Parameters
    ----------
    experiment : Experiment
        A validated experiment (:func:`mdp.experiments.load_experiment`).
    output_root : str or Path
        Parent directory of the experiment's output directory.
    cache : PointCache or None
        Where finished points are looked up and stored; ``None`` keeps nothing.
    fresh : bool
        Solve every point again even if the cache contains it (the new results
        replace the cached ones), or run a figures module even if its outputs
        are up to date.
    backend : backend object or None
        Where points are solved (see :mod:`mdp.backends`); ``None`` solves in
        this process.
    compute : callable or None
        ``compute(point) -> (row, arrays)``; ``None`` uses :data:`COMPUTE`.
    progress : bool
        Show a progress bar with ETA on stderr.
    command : str or None
        The command line recorded in ``metadata.json``.

    Returns
    -------
    RunSummary

    Raises
    ------
    KeyboardInterrupt
        Passed on after the points finished so far have been stored. Also
        raised when Ctrl-C reached a figure or figures module that turned it
        into another exception.
    """
    output_dir = Path(output_root) / experiment.name
    summary = RunSummary(name=experiment.name, output_dir=output_dir,
                         backend=getattr(backend, "description", "in-process"))
    start = time.perf_counter()
    stages = {}
    metadata = {"output_root": Path(output_root), "backend": backend, "command": command}

    with _watch_interrupts() as interrupts:
        if experiment.kind == "figures":
            _run_figures_experiment(experiment, output_dir, summary, stages, cache=cache, fresh=fresh,
                                    interrupts=interrupts, start=start, metadata=metadata)
            return summary

        output_dir.mkdir(parents=True, exist_ok=True)
        timings = _run_deviation(experiment, output_dir, summary, stages, cache=cache, fresh=fresh,
                                 backend=backend or SerialBackend(), compute=compute,
                                 progress=progress, interrupts=interrupts)
        summary.seconds = time.perf_counter() - start
        write_metadata(output_dir / "metadata.json", experiment, summary, stages,
                       point_seconds=timings, **metadata)
    return summary


def _run_deviation(experiment, output_dir, summary, stages, *, cache, fresh, backend, compute,
                   progress, interrupts):
    """Solve, tabulate and plot a sweep; return the per-point timing summary for the metadata."""
    clock = time.perf_counter()
    points = experiment.points()
    summary.points = len(points)
    rows = [None] * len(points)
    arrays = [None] * len(points)
    errors = [None] * len(points)
    keys = [None] * len(points)
    seconds = [None] * len(points)
    stages["expand"] = time.perf_counter() - clock

    # Cache lookup.
    clock = time.perf_counter()
    missing = []
    for index, point in enumerate(points):
        if cache is not None:
            keys[index] = cache.key(point.task, point.market.as_dict(), point.tolerance)
        entry = None if (cache is None or fresh) else cache.load(keys[index])
        if entry is None:
            missing.append(index)
        else:
            rows[index], arrays[index] = entry
    summary.cached = len(points) - len(missing)
    stages["cache_lookup"] = time.perf_counter() - clock

    # Solve what is missing; larger markets first, so that the slowest points
    # do not start last and leave the other workers idle at the end.
    clock = time.perf_counter()
    missing.sort(key=lambda index: _expected_work(points[index]), reverse=True)
    work = [(index, points[index]) for index in missing]
    if compute is None and points:
        compute = COMPUTE[points[0].task]
    # No bar at all when every point came from the cache.
    bar = _progress_bar(len(work), experiment.name, progress and bool(work))
    try:
        for index, row, point_arrays, error, point_seconds in backend.map(solve_point, compute,
                                                                          work):
            if error is None:
                # The cache entry keeps the solve time; the table does not.
                if cache is not None:
                    cache.store(keys[index], {**row, "seconds": point_seconds}, point_arrays)
                rows[index], arrays[index] = row, point_arrays
                summary.solved += 1
            else:
                errors[index] = error
                rows[index], arrays[index] = {}, {}
            seconds[index] = point_seconds
            bar.update(1)
    finally:
        bar.close()
    stages["solve"] = time.perf_counter() - clock

    # Table, without timings, so that it is identical across runs.
    clock = time.perf_counter()
    for index, row in enumerate(rows):
        if row and "seconds" in row:
            row = dict(row)
            stored = row.pop("seconds")
            if seconds[index] is None:
                seconds[index] = stored
            rows[index] = row
    table, order = build_table(points, rows, errors)
    _write_text(output_dir / "table.csv", table.to_csv(index=False))
    summary.failed = [f"{points[index].describe()}: {errors[index]}"
                      for index in range(len(points)) if errors[index] is not None]
    if "converged" in table:
        summary.not_converged = int((table["converged"] == False).sum())  # noqa: E712 - NaN rows are failures
    stages["table"] = time.perf_counter() - clock

    # Figures.
    clock = time.perf_counter()
    from .gap_figures import FIGURES

    sorted_arrays = [arrays[index] or {} for index in order]
    for figure in experiment.figures:
        try:
            FIGURES[figure](table, output_dir, sorted_arrays)
        except Exception as exception:  # noqa: BLE001 - one bad figure must not hide the others
            interrupts.raise_if_interrupted(exception)
            summary.failed.append(f"figure {figure!r}: {type(exception).__name__}: {exception}")
        interrupts.raise_if_interrupted()
    stages["figures"] = time.perf_counter() - clock
    return point_timings(points, seconds)


def point_timings(points: list, seconds: list) -> dict:
    """Summarise the solve time of every point whose time is known.

    A point read from the cache has the time it took when it was solved, so
    ``total`` estimates the time to solve the whole grid on one worker.
    """
    timed = [(value, index) for index, value in enumerate(seconds)
             if value is not None and not math.isnan(value)]
    if not timed:
        return {"points": 0, "total": 0.0, "max": None, "slowest_point": None}
    slowest, index = max(timed)
    return {
        "points": len(timed),
        "total": round(sum(value for value, _ in timed), 3),
        "max": round(slowest, 3),
        "slowest_point": points[index].describe(),
    }


def _expected_work(point: Point) -> float:
    """Rough relative cost of solving ``point``, for scheduling only."""
    market = point.market
    load = 1.0 / (1.0 - market.arrival_rate)
    return market.servers * load * load * (2.0 if point.bracket else 1.0)


def _progress_bar(total: int, name: str, enabled: bool):
    from tqdm import tqdm

    # Off a terminal (a log file, CI) redraw rarely, so the log stays readable.
    interval = 0.1 if sys.stderr.isatty() else 10.0
    return tqdm(total=total, desc=name, unit="point", file=sys.stderr, disable=not enabled,
                dynamic_ncols=True, smoothing=0.1, mininterval=interval)


def build_table(points: list, rows: list, errors: list):
    """Return the sweep table sorted by its parameters, and the row order used.

    Parameters
    ----------
    points : list of Point
    rows : list of dict
        Result fields per point (possibly empty for a failed point).
    errors : list of str or None
        Error text per failed point.

    Returns
    -------
    table : DataFrame
        One row per point: the parameters, then :data:`RESULT_COLUMNS`, the
        other result fields in alphabetical order and ``error``.
    order : list of int
        ``order[i]`` is the index into ``points`` of the table's row ``i``.
    """
    bracket = bool(points) and points[0].bracket
    records = []
    for point, row, error in zip(points, rows, errors):
        parameters = point.market.as_dict()
        if bracket:
            # Both wait models are solved; the market's own wait_model is only the R = N side.
            del parameters["wait_model"]
        record = {**parameters, "equilibrium_setting": point.market.is_equilibrium_setting}
        record.update(row or {})
        record["error"] = error or ""
        records.append(record)

    parameter_columns = [name for name in GRID_PARAMETERS if not (bracket and name == "wait_model")]
    order = sorted(range(len(points)),
                   key=lambda index: tuple(records[index][name] for name in parameter_columns))
    table = pd.DataFrame([records[index] for index in order])

    leading = parameter_columns + [name for name in RESULT_COLUMNS if name in table]
    trailing = ["error"]
    # Alphabetical, so the order does not depend on whether rows came from the cache.
    middle = sorted(name for name in table.columns if name not in leading and name not in trailing)
    return table[leading + middle + trailing], order


def _run_figures_experiment(experiment, output_dir, summary, stages, *, cache, fresh, interrupts, start,
                            metadata):
    """Run a figures module into a staging folder and swap it in on success.

    The module is skipped when ``output_dir/metadata.json`` has the same key
    and every file it lists exists, unless ``fresh`` is set.
    """
    clock = time.perf_counter()
    module = _import_figures_module(experiment, summary)
    if module is None:
        _keep_previous_outputs(experiment, output_dir, summary, stages, start, metadata)
        return
    key = figures_key(experiment, module)
    # The outputs alone are not enough: committed results carry a matching key
    # on a machine that never drew them, and "reproduce" must draw them there.
    stamp = _figures_stamp(cache, key)
    if not fresh and figures_up_to_date(output_dir, key) and (stamp is None or stamp.is_file()):
        summary.up_to_date = True
        summary.seconds = time.perf_counter() - start
        return

    staging = output_dir.with_name(f".{output_dir.name}.partial")
    _remove_tree(staging)
    staging.mkdir(parents=True)
    try:
        try:
            module.draw_figures(staging, dict(experiment.settings))
        except Exception as exception:  # noqa: BLE001 - reported in the run summary
            interrupts.raise_if_interrupted(exception)
            summary.failed.append(f"{experiment.module}.draw_figures failed: "
                                  f"{type(exception).__name__}: {exception}")
        interrupts.raise_if_interrupted()
        stages["figures"] = time.perf_counter() - clock

        if summary.failed:
            _remove_tree(staging)
            _keep_previous_outputs(experiment, output_dir, summary, stages, start, metadata)
            return

        files = sorted(path.relative_to(staging).as_posix() for path in staging.rglob("*")
                       if path.is_file() and path.name != "metadata.json")
        summary.seconds = time.perf_counter() - start
        write_metadata(staging / "metadata.json", experiment, summary, stages,
                       figures={"key": key, "files": files}, **metadata)
        with interrupts.deferred():
            _replace_directory(staging, output_dir)
            if stamp is not None:
                stamp.parent.mkdir(parents=True, exist_ok=True)
                _write_json(stamp, key)
    finally:
        # Only left over when draw_figures or the swap was interrupted.
        _remove_tree(staging)


def _import_figures_module(experiment, summary):
    """Return the experiment's module, or ``None`` after recording why it cannot be used."""
    try:
        module = importlib.import_module(experiment.module)
    except ModuleNotFoundError as error:
        summary.failed.append(f"module {experiment.module!r} cannot be imported: {error}")
        return None
    if getattr(module, "draw_figures", None) is None:
        summary.failed.append(f"module {experiment.module!r} has no function draw_figures")
        return None
    return module


def _keep_previous_outputs(experiment, output_dir, summary, stages, start, metadata):
    """Record a failed figures experiment without touching the outputs of an earlier run.

    ``metadata.json`` with the failure is written only when the folder has no
    earlier ``metadata.json``. Without a stored key the next run retries.
    """
    summary.seconds = time.perf_counter() - start
    if (output_dir / "metadata.json").exists():
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    write_metadata(output_dir / "metadata.json", experiment, summary, stages, **metadata)


def figures_key(experiment: Experiment, module) -> dict:
    """Return what the outputs of a figures experiment depend on.

    The key contains the module name, its settings, the package version, the
    solver revision and the module's ``FIGURES_REVISION`` (``None`` if it
    defines none). A module that changes its output without a new package
    version should raise its ``FIGURES_REVISION``.
    """
    from .solver import SOLVER_REVISION
    from . import __version__

    key = {
        "key_format": FIGURES_KEY_FORMAT,
        "module": experiment.module,
        "settings": experiment.settings,
        "package_version": __version__,
        "solver_revision": int(SOLVER_REVISION),
        "figures_revision": getattr(module, "FIGURES_REVISION", None),
    }
    # The JSON round trip makes the key compare equal to the one read back
    # from metadata.json (tuples become lists, TOML dates become strings).
    return json.loads(json.dumps(key, default=str))


def _figures_stamp(cache, key: dict):
    """Return the cache file that records a drawing with ``key`` on this machine (None without a cache)."""
    if cache is None:
        return None
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()
    return Path(cache.directory) / "figures" / f"{digest}.json"


def figures_up_to_date(output_dir: Path, key: dict) -> bool:
    """Return True if ``output_dir/metadata.json`` has ``key`` and every file it lists exists."""
    try:
        stored = json.loads((Path(output_dir) / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    figures = stored.get("figures") if isinstance(stored, dict) else None
    if not isinstance(figures, dict) or figures.get("key") != key:
        return False
    files = figures.get("files")
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        return False
    return all((Path(output_dir) / name).is_file() for name in files)


def _replace_directory(staging: Path, target: Path) -> None:
    """Move ``staging`` to ``target``, removing the old ``target`` once the new one is in place."""
    if not target.exists():
        os.replace(staging, target)
        return
    previous = target.with_name(f".{target.name}.previous")
    _remove_tree(previous)
    os.replace(target, previous)
    os.replace(staging, target)
    _remove_tree(previous)


def _remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


class _InterruptWatch:
    """SIGINT handler that records Ctrl-C while an experiment runs.

    Code that catches every ``Exception`` to report a failure (a figure,
    a figures module) can receive Ctrl-C as another exception, for example
    when a library wraps it. Such handlers call :meth:`raise_if_interrupted`,
    so that Ctrl-C still stops the run instead of being reported as a failure.
    """

    def __init__(self):
        self.interrupted = False
        self._deferring = False

    def handle(self, signum, frame):
        self.interrupted = True
        if not self._deferring:
            raise KeyboardInterrupt

    def raise_if_interrupted(self, cause: BaseException | None = None) -> None:
        if self.interrupted:
            raise KeyboardInterrupt from cause

    @contextlib.contextmanager
    def deferred(self):
        """Hold Ctrl-C back until the block ends, so that its steps are not split."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        self.raise_if_interrupted()


@contextlib.contextmanager
def _watch_interrupts():
    """Install an :class:`_InterruptWatch` as the SIGINT handler for the block.

    Only Python's default handler is replaced, and only in the main thread,
    where signal handlers can be set. Elsewhere the watch records nothing.
    """
    watch = _InterruptWatch()
    replace = (threading.current_thread() is threading.main_thread()
               and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if not replace:
        yield watch
        return
    signal.signal(signal.SIGINT, watch.handle)
    try:
        yield watch
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def run_many(experiments: list, *, output_root="results", cache_dir=None, fresh=False, jobs=None,
             scheduler=None, progress=False, command=None, compute=None, on_summary=None) -> list:
    """Run several experiments on one backend; return their summaries.

    Parameters
    ----------
    experiments : list of Experiment
    output_root : str or Path
        Results go to ``output_root/<name>/``.
    cache_dir : str, Path or None
        Cache directory; ``None`` uses :func:`mdp.cache.default_cache_dir`.
    fresh : bool
        Ignore cached points (and replace them with the new results).
    jobs : int or None
        Parallel workers; ``None`` means the number of cores.
    scheduler : str or None
        ``None`` for local processes, ``"local"`` for a Dask ``LocalCluster``,
        otherwise the address of a Dask scheduler.
    progress : bool
        Show progress bars on stderr.
    command : str or None
        The command line recorded in each ``metadata.json``.
    compute : callable or None
        Replaces the solver computation (see :func:`run_experiment`).
    on_summary : callable or None
        Called with each :class:`RunSummary` as soon as its experiment ends.

    Raises
    ------
    ValueError
        If ``jobs`` is not positive, the Dask scheduler cannot be reached, or
        the output or cache directory is a file or cannot be created.
    """
    cache_dir = cache_dir or default_cache_dir()
    prepare_directory(output_root, "output_root")
    prepare_directory(cache_dir, "cache_dir")
    cache = PointCache(cache_dir, solver_version())
    needs_solver = any(experiment.kind == "deviation" for experiment in experiments)
    summaries = []
    with make_backend(jobs=jobs, scheduler=scheduler, start=needs_solver) as backend:
        for experiment in experiments:
            summary = run_experiment(experiment, output_root=output_root, cache=cache, fresh=fresh,
                                     backend=backend, compute=compute, progress=progress,
                                     command=command)
            summaries.append(summary)
            if on_summary is not None:
                on_summary(summary)
    return summaries


def prepare_directory(path, option: str) -> Path:
    """Create the directory ``path`` if it is missing and check that files can be written to it.

    ``option`` names the setting in the message, such as ``--output``.

    Raises
    ------
    ValueError
        If ``path`` is an existing file, cannot be created or is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {str(path)!r} is an existing file, not a directory; "
                         "pass a directory (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{option} {str(path)!r}: cannot create the directory: "
                         f"{error.strerror or error}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {str(path)!r} is not writable; pass a directory you can "
                         "write to")
    return path


# ---------------------------------------------------------------------------
# Provenance.

def write_metadata(path: Path, experiment: Experiment, summary: RunSummary, stages: dict, *,
                   output_root, backend, command: str | None, point_seconds: dict | None = None,
                   figures: dict | None = None) -> None:
    """Write ``metadata.json``: versions, git commit, command, machine, timings and counts.

    Paths are stored relative to the working directory, so that committed
    metadata does not contain the developer's home or checkout path.
    ``point_seconds`` is the solve-time summary of a sweep (:func:`point_timings`).
    ``figures`` is the key and file list of a figures experiment.
    """
    metadata = {
        "experiment": experiment.name,
        "experiment_file": relative_path(experiment.path),
        "kind": experiment.kind,
        "description": experiment.description,
        "command": command if command is not None else " ".join(sys.argv),
        "versions": library_versions(),
        "git_commit": git_commit(exclude=output_root),
        "machine": machine_description(),
        "backend": summary.backend,
        "points": summary.points,
        "points_from_cache": summary.cached,
        "points_solved": summary.solved,
        "points_failed": len(summary.failed),
        "points_not_converged": summary.not_converged,
        "failures": summary.failed,
        "total_seconds": round(summary.seconds, 3),
        "stage_seconds": {name: round(value, 3) for name, value in stages.items()},
    }
    if point_seconds is not None:
        metadata["point_seconds"] = point_seconds
    if experiment.kind == "deviation":
        metadata["tolerance"] = experiment.tolerance
        metadata["bracket"] = experiment.bracket
        metadata["grid"] = {name: list(values) for name, values in experiment.grid.items()}
    else:
        metadata["module"] = experiment.module
        metadata["settings"] = experiment.settings
    if figures is not None:
        metadata["figures"] = figures
    _write_json(path, metadata)


def write_run_summary(path, summaries: list, seconds: float, command: str | None,
                      backend_description: str) -> None:
    """Write the timing of a multi-experiment run (``pooling-mdp reproduce``) to ``path``.

    Each experiment's own ``metadata.json`` has the details; this file puts
    their wall times and point counts side by side with the total. The git
    commit ignores changes inside the directory of ``path``, the results.
    """
    path = Path(path)
    data = {
        "command": command if command is not None else " ".join(sys.argv),
        "versions": library_versions(),
        "git_commit": git_commit(exclude=path.parent),
        "machine": machine_description(),
        "backend": backend_description,
        "total_seconds": round(seconds, 3),
        "experiments": {
            summary.name: {
                "seconds": round(summary.seconds, 3),
                "points": summary.points,
                "points_from_cache": summary.cached,
                "points_solved": summary.solved,
                "up_to_date": summary.up_to_date,
                "failures": len(summary.failed),
            }
            for summary in summaries
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_json(path, data)


def library_versions() -> dict:
    """Return the versions of Python, this package, its solver revision and its libraries."""
    from importlib import metadata as distributions

    from . import __version__

    versions = {"python": platform.python_version(), "pooling-mdp": __version__}
    try:
        from .solver import SOLVER_REVISION
        versions["solver_revision"] = int(SOLVER_REVISION)
    except ImportError:
        versions["solver_revision"] = None
    for name in LIBRARIES:
        try:
            versions[name] = distributions.version(name)
        except distributions.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(exclude=None) -> str | None:
    """Return the git commit of the working directory's repository, or ``None`` outside one.

    The commit gets the suffix ``-dirty`` if a tracked file has uncommitted
    changes. Changes under ``exclude`` (the output directory, which the run
    itself rewrites) do not count. The working directory is used, not the
    package's location, because the results belong to the repository they are
    written into, and an installed package may come from elsewhere.
    """
    def git(*arguments):
        return subprocess.run(["git", *arguments], cwd=Path.cwd(), capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        top = Path(git("rev-parse", "--show-toplevel")).resolve()
        pathspecs = [":/"]
        if exclude is not None:
            excluded = Path(exclude).resolve()
            if excluded == top:
                return commit
            if excluded.is_relative_to(top):
                pathspecs.append(f":(top,exclude){excluded.relative_to(top).as_posix()}")
        status = git("status", "--porcelain", "--untracked-files=no", "--", *pathspecs)
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if status else commit


def relative_path(path) -> str:
    """Return ``path`` relative to the working directory, with ``/`` separators."""
    try:
        return Path(os.path.relpath(Path(path).resolve(), Path.cwd().resolve())).as_posix()
    except ValueError:
        # On Windows a path on another drive has no relative form.
        return Path(path).resolve().as_posix()


def machine_description() -> dict:
    """Return the platform, processor and core count of this machine."""
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
    }


def write_constraints(path, project: str = "pooling-mdp") -> list:
    """Write a pip constraints file pinning the installed versions of the project's dependencies.

    The pins cover every distribution that ``project`` requires, directly or
    through other requirements, without optional extras, so the file does not
    depend on whether test tools happen to be installed. Requirements that
    are not installed (other platforms) are skipped, and so is the project
    itself. Returns the pinned lines.
    """
    from importlib import metadata as distributions

    def normalise(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pins = {}
    pending = [(project, frozenset())]
    seen = set()
    while pending:
        name, extras = pending.pop()
        name = normalise(name)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            distribution = distributions.distribution(name)
        except distributions.PackageNotFoundError:
            continue
        if name != normalise(project):
            pins[name] = distribution.version
        for requirement in distribution.requires or []:
            # Follow a requirement that belongs to an extra only when that extra
            # was requested, as in "dask[distributed]".
            wanted = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
            if wanted and wanted.group(1) not in extras:
                continue
            head = requirement.split(";", 1)[0].strip()
            requested = re.search(r"\[([^\]]*)\]", head)
            requested_extras = frozenset(
                item.strip() for item in requested.group(1).split(",")) if requested else frozenset()
            pending.append((re.split(r"[\s<>=!~\[(]", head, maxsplit=1)[0], requested_extras))

    lines = [f"{name}=={version}" for name, version in sorted(pins.items())]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ("# Versions of the project's dependencies installed when these results were produced.\n"
              "# Install with: pip install . -c results/constraints.txt\n")
    _write_text(path, header + "\n".join(lines) + "\n")
    return lines


def _write_json(path: Path, data) -> None:
    _write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in JSON")


def _write_text(path: Path, text: str) -> None:
    """Write a text file atomically, so that an interrupted run never leaves half a file."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
