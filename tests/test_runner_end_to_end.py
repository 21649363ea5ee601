"""The experiment runner end to end, on tiny grids with the real solver."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import mdp.cli
from mdp.backends import DaskBackend, ProcessBackend, SerialBackend
from mdp.cache import PointCache, solver_version
from mdp.experiments import load_experiment
from mdp.model import Market
from mdp.runner import COMPUTE, run_experiment
from mdp.solver import solve_best_deviation, true_gap_bracket

TOLERANCE = 1e-6

TINY = f"""
kind = "deviation"
tolerance = {TOLERANCE}
figures = ["gap_vs_servers", "gap_decay"]

[grid]
arrival_rate = [0.8, 0.7]
servers = [3, 2]
"""

BRACKET = f"""
kind = "deviation"
tolerance = {TOLERANCE}
bracket = true
figures = ["true_gap_bracket"]

[grid]
arrival_rate = 0.7
servers = [2, 3]
"""

# Enough work (about a second a point) to interrupt a run midway.
SLOW = f"""
kind = "deviation"
tolerance = {TOLERANCE}

[grid]
arrival_rate = 0.9
servers = {{start = 2, stop = 9}}
"""

calls = []


def counting_compute(point):
    calls.append(point)
    return COMPUTE[point.task](point)


def interrupting_compute(point):
    if len(calls) == 2:
        raise KeyboardInterrupt
    return counting_compute(point)


def failing_compute(point):
    if point.market.servers == 3:
        raise ArithmeticError("no convergence in this test")
    return COMPUTE[point.task](point)


@pytest.fixture(autouse=True)
def reset_calls():
    calls.clear()


def experiment_file(directory, text, name="tiny"):
    path = Path(directory) / f"{name}.toml"
    path.write_text(text)
    return load_experiment(path)


def make_cache(directory):
    return PointCache(Path(directory), solver_version())


def read_table(path):
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def table_bytes(root, name="tiny"):
    return (Path(root) / name / "table.csv").read_bytes()


def test_table_matches_solver(tmp_path):
    experiment = experiment_file(tmp_path, TINY)
    summary = run_experiment(experiment, output_root=tmp_path / "results",
                             cache=make_cache(tmp_path / "cache"))
    assert summary.ok
    assert summary.solved == 4
    table = read_table(tmp_path / "results" / "tiny" / "table.csv")

    assert list(table["arrival_rate"]) == [0.7, 0.7, 0.8, 0.8]
    assert list(table["servers"]) == [2, 3, 2, 3]
    assert list(table.columns[:6]) == ["arrival_rate", "servers", "processing_cost", "help_cost",
                                       "token_probability", "wait_model"]
    for column in ("best_cost", "lower_bound", "upper_bound", "crp_cost", "gap", "gap_lower",
                   "gap_upper", "token_price", "own_limit", "pool_limit", "boundary_mass",
                   "converged", "error"):
        assert column in table.columns
    assert "seconds" not in table.columns
    for _, row in table.iterrows():
        direct = solve_best_deviation(Market(row["arrival_rate"], int(row["servers"])),
                                      tolerance=TOLERANCE)
        assert row["best_cost"] == direct.best_cost
        assert row["lower_bound"] == direct.lower_bound
        assert row["crp_cost"] == direct.crp_cost
        assert row["gap"] == direct.gap
        assert row["gap_upper"] == direct.gap_upper
        assert row["token_price"] == direct.token_price
        assert (row["own_limit"], row["pool_limit"]) == direct.truncation
        assert bool(row["converged"]) == direct.converged


def test_outputs_written(tmp_path):
    experiment = experiment_file(tmp_path, TINY)
    run_experiment(experiment, output_root=tmp_path / "results", cache=make_cache(tmp_path / "c"),
                   command="pooling-mdp run tiny.toml")
    directory = tmp_path / "results" / "tiny"
    for name in ("table.csv", "metadata.json", "gap_vs_servers.png", "gap_vs_servers.pdf",
                 "gap_decay.png", "gap_decay.pdf", "decay_fit.csv"):
        assert (directory / name).is_file(), name
    metadata = pd.read_json(directory / "metadata.json", typ="series")
    assert metadata["command"] == "pooling-mdp run tiny.toml"
    assert metadata["versions"]["solver_revision"] == solver_version()["solver_revision"]
    assert set(metadata["stage_seconds"]) >= {"cache_lookup", "solve", "table", "figures"}
    assert metadata["point_seconds"]["points"] == 4
    assert metadata["point_seconds"]["max"] > 0
    assert metadata["point_seconds"]["total"] >= metadata["point_seconds"]["max"]
    assert "servers=" in metadata["point_seconds"]["slowest_point"]


def test_table_identical_across_runs(tmp_path):
    experiment = experiment_file(tmp_path, TINY)
    run_experiment(experiment, output_root=tmp_path / "first", cache=None)
    run_experiment(experiment, output_root=tmp_path / "second", cache=None)
    assert table_bytes(tmp_path / "second") == table_bytes(tmp_path / "first")


def test_cached_points_keep_solve_time(tmp_path):
    experiment = experiment_file(tmp_path, TINY)
    cache = make_cache(tmp_path / "cache")
    run_experiment(experiment, output_root=tmp_path / "first", cache=cache)
    run_experiment(experiment, output_root=tmp_path / "second", cache=cache)
    first = pd.read_json(tmp_path / "first" / "tiny" / "metadata.json", typ="series")
    second = pd.read_json(tmp_path / "second" / "tiny" / "metadata.json", typ="series")
    assert second["points_from_cache"] == 4
    assert second["point_seconds"] == first["point_seconds"]
    assert table_bytes(tmp_path / "second") == table_bytes(tmp_path / "first")


def test_progress_bar_only_with_work(tmp_path, capsys):
    experiment = experiment_file(tmp_path, TINY)
    cache = make_cache(tmp_path / "cache")
    run_experiment(experiment, output_root=tmp_path / "results", cache=cache, progress=True)
    assert "tiny" in capsys.readouterr().err

    summary = run_experiment(experiment, output_root=tmp_path / "results", cache=cache,
                             progress=True)
    assert summary.cached == 4
    assert capsys.readouterr().err == ""


def test_second_run_does_no_solves(tmp_path):
    experiment = experiment_file(tmp_path, TINY)
    cache = make_cache(tmp_path / "cache")
    run_experiment(experiment, output_root=tmp_path / "first", cache=cache)
    first = read_table(tmp_path / "first" / "tiny" / "table.csv")

    summary = run_experiment(experiment, output_root=tmp_path / "second", cache=cache,
                             compute=counting_compute)
    second = read_table(tmp_path / "second" / "tiny" / "table.csv")
    assert calls == []
    assert summary.cached == 4
    assert summary.solved == 0
    pd.testing.assert_frame_equal(first, second)
    assert table_bytes(tmp_path / "second") == table_bytes(tmp_path / "first")


def test_fresh_run_solves_again(tmp_path):
    experiment = experiment_file(tmp_path, TINY)
    cache = make_cache(tmp_path / "cache")
    run_experiment(experiment, output_root=tmp_path / "results", cache=cache)
    summary = run_experiment(experiment, output_root=tmp_path / "results", cache=cache,
                             fresh=True, compute=counting_compute)
    assert len(calls) == 4
    assert summary.cached == 0


def test_interrupted_run_resumes(tmp_path):
    experiment = experiment_file(tmp_path, TINY)
    cache = make_cache(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        run_experiment(experiment, output_root=tmp_path / "results", cache=cache,
                       compute=interrupting_compute)
    assert len(calls) == 2

    calls.clear()
    summary = run_experiment(experiment, output_root=tmp_path / "results", cache=cache,
                             compute=counting_compute)
    assert summary.cached == 2
    assert len(calls) == 2

    run_experiment(experiment, output_root=tmp_path / "reference", cache=None)
    assert table_bytes(tmp_path / "results") == table_bytes(tmp_path / "reference")


def test_failed_point_is_recorded(tmp_path):
    experiment = experiment_file(tmp_path, TINY)
    cache = make_cache(tmp_path / "cache")
    summary = run_experiment(experiment, output_root=tmp_path / "results", cache=cache,
                             compute=failing_compute)
    assert summary.solved == 2
    assert len(summary.failed) == 2
    assert "ArithmeticError: no convergence in this test" in summary.failed[0]
    table = read_table(tmp_path / "results" / "tiny" / "table.csv")
    assert len(table) == 4
    failed_rows = table[table["servers"] == 3]
    assert (failed_rows["error"].str.contains("ArithmeticError")).all()
    assert failed_rows["best_cost"].isna().all()

    # Failures are not cached, so the next run tries those points again.
    summary = run_experiment(experiment, output_root=tmp_path / "results", cache=cache,
                             compute=counting_compute)
    assert summary.ok
    assert [point.market.servers for point in calls] == [3, 3]


def test_bracket_matches_solver(tmp_path):
    experiment = experiment_file(tmp_path, BRACKET, name="bracket")
    summary = run_experiment(experiment, output_root=tmp_path / "results", cache=None)
    assert summary.ok
    table = read_table(tmp_path / "results" / "bracket" / "table.csv")
    assert "wait_model" not in table.columns
    assert (tmp_path / "results" / "bracket" / "true_gap_bracket.png").is_file()
    for _, row in table.iterrows():
        direct = true_gap_bracket(Market(row["arrival_rate"], int(row["servers"])),
                                  tolerance=TOLERANCE)
        assert row["true_gap_lower"] == direct.gap_lower
        assert row["true_gap_upper"] == direct.gap_upper
        assert row["best_cost"] == direct.all_servers.best_cost
        assert row["others_best_cost"] == direct.others_only.best_cost
        assert row["true_gap_lower"] <= row["true_gap_upper"]


def test_backends_give_same_table(tmp_path):
    experiment = experiment_file(tmp_path, TINY)
    tables = {}
    backends = {
        "serial": SerialBackend(),
        "processes": ProcessBackend(2),
        "dask": DaskBackend(jobs=2, cluster_options={"processes": False}),
    }
    for name, backend in backends.items():
        with backend:
            summary = run_experiment(experiment, output_root=tmp_path / name, cache=None,
                                     backend=backend)
        assert summary.ok, summary.failed
        tables[name] = table_bytes(tmp_path / name)
    assert tables["processes"] == tables["serial"]
    assert tables["dask"] == tables["serial"]


def start_run(experiment, cache_dir, output_dir, jobs):
    script = ("import sys, mdp.cli as cli; cli.COMMAND_MODULES = ('run',); "
              "sys.exit(cli.main(sys.argv[1:]))")
    return subprocess.Popen(
        [sys.executable, "-c", script, "run", str(experiment.path), "--jobs", str(jobs),
         "--cache", str(cache_dir), "--output", str(output_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def cache_entries(cache_dir):
    # Entries being written are hidden temporaries (.tmp-*.npz) and do not count.
    return [path for path in cache_dir.rglob("*.npz") if not path.name.startswith(".")]


def wait_for_entries(process, cache_dir, count):
    deadline = time.monotonic() + 90
    while len(cache_entries(cache_dir)) < count:
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, f"fewer than {count} points finished within 90 s"
        time.sleep(0.05)


def child_processes(parent):
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def is_running(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def all_stopped(pids, seconds):
    deadline = time.monotonic() + seconds
    while any(is_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not any(is_running(pid) for pid in pids)


def test_killed_process_resumes(tmp_path):
    experiment = experiment_file(tmp_path, SLOW, name="slow")
    cache_dir = tmp_path / "cache"
    process = start_run(experiment, cache_dir, tmp_path / "killed", jobs=2)
    try:
        wait_for_entries(process, cache_dir, 2)
        workers = child_processes(process.pid)
    finally:
        process.kill()
        process.communicate()
    # SIGKILL during a store can leave a temporary file; the cache never reads it.
    finished = len(cache_entries(cache_dir))
    assert 2 <= finished < 8

    # Orphaned workers notice that the main process is gone and exit.
    assert workers
    assert all_stopped(workers, 30)

    summary = run_experiment(experiment, output_root=tmp_path / "resumed",
                             cache=make_cache(cache_dir), compute=counting_compute)
    assert summary.ok
    assert summary.cached == finished
    assert len(calls) == 8 - finished
    resumed = read_table(tmp_path / "resumed" / "slow" / "table.csv")
    assert list(resumed["servers"]) == list(range(2, 10))
    assert resumed["converged"].all()


def test_ctrl_c_stops_promptly(tmp_path):
    experiment = experiment_file(tmp_path, SLOW, name="slow")
    cache_dir = tmp_path / "cache"
    process = start_run(experiment, cache_dir, tmp_path / "results", jobs=2)
    try:
        wait_for_entries(process, cache_dir, 1)
        workers = child_processes(process.pid)
        process.send_signal(signal.SIGINT)
        _, error = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130
    assert "interrupted" in error
    # Workers are terminated at once; multiprocessing's resource tracker
    # exits when it sees the main process close its pipe.
    assert all_stopped(workers, 10)
    assert len(cache_entries(cache_dir)) >= 1


def test_reproduce_runs_marked_files(tmp_path, monkeypatch, capsys):
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / "tiny.toml").write_text(TINY.replace('kind = "deviation"',
                                                        'kind = "deviation"\nreproduce = true'))
    (experiments / "skipped.toml").write_text(BRACKET)
    (experiments / "absent.toml").write_text(
        "kind = 'figures'\nmodule = 'mdp.no_such_figures'\nreproduce = true\n")
    monkeypatch.setattr(mdp.cli, "COMMAND_MODULES", ("run",))

    status = mdp.cli.main(["reproduce", "--experiments", str(experiments), "--jobs", "1",
                           "--output", str(tmp_path / "results"), "--cache", str(tmp_path / "c")])
    error = capsys.readouterr().err
    assert status == 1
    assert "mdp.no_such_figures" in error
    results = tmp_path / "results"
    assert (results / "tiny" / "table.csv").is_file()
    assert not (results / "skipped").exists()
    assert (results / "absent" / "metadata.json").is_file()
    constraints = (results / "constraints.txt").read_text()
    assert "numpy==" in constraints
    assert "distributed==" in constraints
    assert "threadpoolctl==" in constraints
    # Test tools belong to an optional extra, so they are not pinned.
    assert "pytest==" not in constraints
    timings = pd.read_json(results / "reproduce.json", typ="series")
    assert set(timings["experiments"]) == {"tiny", "absent"}


def test_scheduler_address_backend(tmp_path):
    from distributed import LocalCluster

    experiment = experiment_file(tmp_path, TINY)
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                           host="127.0.0.1", scheduler_port=0, dashboard_address=None)
    try:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        with DaskBackend(address=cluster.scheduler_address) as backend:
            summary = run_experiment(experiment, output_root=tmp_path / "remote", cache=None,
                                     backend=backend)
    finally:
        cluster.close()
    assert summary.ok, summary.failed
    run_experiment(experiment, output_root=tmp_path / "serial", cache=None)
    assert table_bytes(tmp_path / "remote") == table_bytes(tmp_path / "serial")
