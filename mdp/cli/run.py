"""``pooling-mdp run`` and ``pooling-mdp reproduce``: run experiment files.

``run FILE.toml`` runs one experiment. ``reproduce`` runs every file of the
experiments directory that has ``reproduce = true``. It then pins the installed
library versions in ``<output>/constraints.txt`` and records the time of every
experiment in ``<output>/reproduce.json``. Both commands print one summary line
per experiment on stderr and exit with status 1 if any point or figure failed.
Ctrl-C stops them at once: ``reproduce`` then runs no further experiment and
leaves ``constraints.txt`` and ``reproduce.json`` as they were.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from ..experiments import find_experiments, load_experiment


def register(subparsers) -> None:
    """Add the ``run`` and ``reproduce`` sub-commands."""
    run = subparsers.add_parser(
        "run", help="run one experiment file",
        description="Solve every point of an experiment file (TOML), reusing cached points, "
                    "and write results/<experiment>/table.csv, metadata.json and figures.")
    run.add_argument("file", metavar="FILE.toml", help="experiment file")
    _add_common_options(run)
    run.set_defaults(handler=handle_run)

    reproduce = subparsers.add_parser(
        "reproduce", help="run every experiment marked reproduce = true",
        description="Run every experiment file with reproduce = true in the experiments "
                    "directory, then write <output>/constraints.txt with the library versions.")
    reproduce.add_argument("--experiments", metavar="DIR", default="experiments",
                           help="directory of experiment files (default: ./experiments)")
    _add_common_options(reproduce)
    reproduce.set_defaults(handler=handle_reproduce)


def _add_common_options(parser) -> None:
    parser.add_argument("--jobs", "-j", type=_positive_integer, default=None, metavar="K",
                        help="parallel workers (default: the number of cores)")
    parser.add_argument("--scheduler", metavar="ADDRESS|local", default=None,
                        help="solve on a Dask cluster: 'local' starts a LocalCluster with K "
                             "workers, otherwise the scheduler address (tcp://host:port)")
    parser.add_argument("--output", metavar="DIR", default="results",
                        help="parent directory of the results (default: ./results)")
    parser.add_argument("--cache", metavar="DIR", default=None,
                        help="cache directory of solved points (default: the per-user cache)")
    parser.add_argument("--fresh", action="store_true",
                        help="solve every point and draw every figure again instead of reusing the cache, "
                             "and replace the cached results")


def _positive_integer(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def handle_run(args) -> int:
    """Run one experiment file; return the exit status."""
    experiment = load_experiment(args.file)
    _prepare_directories(args)
    status, _ = _run([experiment], args)
    return status


def handle_reproduce(args) -> int:
    """Run every experiment with ``reproduce = true``; return the exit status."""
    from ..runner import write_constraints, write_run_summary

    experiments = [item for item in find_experiments(args.experiments) if item.reproduce]
    if not experiments:
        raise ValueError(f"no experiment file in {args.experiments!r} has reproduce = true")
    _prepare_directories(args)
    start = time.perf_counter()
    status, summaries = _run(experiments, args)
    elapsed = time.perf_counter() - start

    output = Path(args.output)
    write_constraints(output / "constraints.txt")
    backend = summaries[0].backend if summaries else "in-process"
    write_run_summary(output / "reproduce.json", summaries, elapsed, _command(), backend)
    print(f"library versions pinned in {output / 'constraints.txt'}, "
          f"timings in {output / 'reproduce.json'}", file=sys.stderr)
    return status


def _prepare_directories(args) -> None:
    """Create the output and cache directories, or reject them before anything is solved."""
    from ..cache import default_cache_dir
    from ..runner import prepare_directory

    prepare_directory(args.output, "--output")
    prepare_directory(args.cache or default_cache_dir(), "--cache")


def _command() -> str:
    return "pooling-mdp " + " ".join(shlex.quote(item) for item in sys.argv[1:])


def _run(experiments: list, args):
    """Run the experiments, print their summaries and return ``(exit status, summaries)``."""
    from ..runner import run_many

    start = time.perf_counter()
    summaries = run_many(experiments, output_root=args.output, cache_dir=args.cache,
                         fresh=args.fresh, jobs=args.jobs, scheduler=args.scheduler,
                         progress=True, command=_command(),
                         on_summary=lambda summary: print(summary.describe(), file=sys.stderr))

    failures = [line for summary in summaries for line in summary.failed]
    for line in failures[:20]:
        print(f"  failed: {line}", file=sys.stderr)
    if len(failures) > 20:
        print(f"  ... and {len(failures) - 20} more failures (see the error column of table.csv)",
              file=sys.stderr)
    elapsed = time.perf_counter() - start
    print(f"{len(experiments)} experiment(s), {len(failures)} failure(s), {elapsed:.1f} s",
          file=sys.stderr)
    return (1 if failures else 0), summaries
