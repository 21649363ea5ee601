"""Experiment files, command-line errors and backends that need no solve."""

import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import mdp.cli
from mdp.backends import DaskBackend, make_backend
from mdp.cache import PointCache
from mdp.experiments import find_experiments, load_experiment
from mdp.gap_figures import minimum_servers
from mdp.runner import COMPUTE, run_experiment

PROJECT = Path(__file__).resolve().parents[1]

VALID = """
kind = "deviation"
tolerance = 1e-6
figures = ["gap_vs_servers"]

[grid]
arrival_rate = [0.7, 0.8]
servers = {start = 2, stop = 4}
"""


def write(directory, text, name="experiment.toml"):
    path = Path(directory) / name
    path.write_text(text)
    return path


def run_cli(argv, monkeypatch):
    # Only the sub-commands under test, so the test does not depend on the others.
    monkeypatch.setattr(mdp.cli, "COMMAND_MODULES", ("run",))
    return mdp.cli.main(argv)


def test_grid_expands_in_order(tmp_path):
    experiment = load_experiment(write(tmp_path, VALID))
    points = experiment.points()
    assert experiment.name == "experiment"
    assert len(points) == 6
    assert [(p.market.arrival_rate, p.market.servers) for p in points][:3] == [
        (0.7, 2), (0.7, 3), (0.7, 4)]
    assert all(p.market.token_probability == p.market.arrival_rate for p in points)
    assert all(p.tolerance == 1e-6 for p in points)


def test_real_spacing_and_help_cost_default(tmp_path):
    text = """
kind = "deviation"
[grid]
arrival_rate = 0.8
servers = 10
processing_cost = {start = 0.0, stop = 3.0, num = 13}
"""
    points = load_experiment(write(tmp_path, text)).points()
    costs = [p.market.processing_cost for p in points]
    assert costs[:3] == [0.0, 0.25, 0.5]
    assert costs[-1] == 3.0
    assert all(p.market.help_cost == p.market.processing_cost for p in points)


def test_project_experiments_are_valid():
    experiments = {item.name: item for item in find_experiments(PROJECT / "experiments")}
    gap = experiments["gap_vs_servers"]
    assert gap.reproduce
    assert gap.tolerance == 1e-6
    assert len(gap.points()) == 147
    assert {p.market.processing_cost for p in gap.points()} == {1.0}


@pytest.mark.parametrize("text, expected", [
    (VALID.replace("tolerance = 1e-6", "tolerance = 1e-6\ncolour = 'red'"), "unknown key 'colour'"),
    (VALID.replace("servers =", "server ="), "unknown key 'grid.server'"),
    (VALID.replace("tolerance = 1e-6", "tolerance = 'small'"), "'tolerance' must be a number"),
    (VALID.replace("tolerance = 1e-6", "tolerance = 0.5"),
     "'tolerance' must be a number in [1e-10, 0.1]"),
    (VALID.replace("tolerance = 1e-6", "tolerance = 0.0"),
     "'tolerance' must be a number in [1e-10, 0.1]"),
    (VALID.replace("tolerance = 1e-6", "tolerance = nan"),
     "'tolerance' must be a number in [1e-10, 0.1]"),
    (VALID.replace("[0.7, 0.8]", "[0.7, 1.2]"), "arrival_rate must be in (0, 1)"),
    (VALID.replace("[0.7, 0.8]", "['fast']"), "'grid.arrival_rate' must be a finite number"),
    (VALID.replace("{start = 2, stop = 4}", "[1, 2]"), "servers must be an integer in [2"),
    (VALID.replace("{start = 2, stop = 4}", "{start = 2, stop = 4, by = 1}"),
     "unknown key 'grid.servers.by'"),
    (VALID.replace("[0.7, 0.8]", "[0.7, 0.7]"), "must not repeat a value"),
    (VALID.replace('"gap_vs_servers"', '"gap_vs_nothing"'), "unknown figure"),
    (VALID.replace('kind = "deviation"', 'kind = "sweep"'), "'kind' must be one of"),
    (VALID.replace("tolerance = 1e-6", "bracket = true") + "wait_model = 'all'\n",
     "'grid.wait_model' must be omitted"),
    (VALID.replace("tolerance = 1e-6", "reproduce = 'yes'"), "'reproduce' must be true or false"),
    ("kind = 'deviation'\n[grid]\nservers = 3\n", "'grid.arrival_rate' is required"),
    ("kind = 'figures'\n", "'module' is required"),
    ("kind = 'deviation'\n[grid\n", "invalid TOML"),
])
def test_bad_file_names_file_and_key(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as caught:
        load_experiment(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_cli_bad_file_exits_2(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, VALID.replace("servers =", "server ="))
    status = run_cli(["run", str(path), "--cache", str(tmp_path / "cache"),
                      "--output", str(tmp_path / "results")], monkeypatch)
    error = capsys.readouterr().err
    assert status == 2
    assert "unknown key 'grid.server'" in error
    assert str(path) in error
    assert len(error.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("tolerance", [0.1, 1e-10, 1e-8])
def test_tolerance_range_matches_solve(tmp_path, tolerance):
    # pooling-mdp solve --tolerance accepts [1e-10, 0.1]; experiment files accept the same.
    experiment = load_experiment(write(tmp_path, VALID.replace("1e-6", repr(tolerance))))
    assert experiment.tolerance == tolerance


def test_cli_missing_file_exits_2(tmp_path, monkeypatch, capsys):
    status = run_cli(["run", str(tmp_path / "absent.toml")], monkeypatch)
    assert status == 2
    assert "not found" in capsys.readouterr().err


def test_cli_directory_as_file_exits_2(tmp_path, monkeypatch, capsys):
    status = run_cli(["run", str(tmp_path)], monkeypatch)
    error = capsys.readouterr().err
    assert status == 2
    assert "is a directory, not a file" in error
    assert "not found" not in error
    assert len(error.strip().splitlines()) == 1


@pytest.mark.parametrize("option", ["--output", "--cache"])
def test_cli_file_as_directory_exits_2(tmp_path, monkeypatch, capsys, option):
    path = write(tmp_path, VALID)
    occupied = tmp_path / "occupied"
    occupied.write_text("a file\n")
    other = "--cache" if option == "--output" else "--output"
    calls = []
    monkeypatch.setitem(COMPUTE, "deviation", lambda point: calls.append(point))
    status = run_cli(["run", str(path), "--jobs", "1", option, str(occupied),
                      other, str(tmp_path / "other")], monkeypatch)
    error = capsys.readouterr().err
    assert status == 2
    assert f"{option} {str(occupied)!r} is an existing file, not a directory" in error
    assert len(error.strip().splitlines()) == 1
    assert calls == []
    assert occupied.read_text() == "a file\n"


def test_cli_uncreatable_directory_exits_2(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, VALID)
    (tmp_path / "occupied").write_text("a file\n")
    status = run_cli(["run", str(path), "--output", str(tmp_path / "occupied" / "results"),
                      "--cache", str(tmp_path / "cache")], monkeypatch)
    error = capsys.readouterr().err
    assert status == 2
    assert "--output" in error
    assert "cannot create the directory" in error
    assert len(error.strip().splitlines()) == 1


def test_cli_creates_missing_directories(tmp_path, monkeypatch):
    # A figures module that cannot be imported fails at once, so nothing is solved.
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    write(experiments, "kind = 'figures'\nmodule = 'mdp.no_such_figures'\nreproduce = true\n")
    status = run_cli(["reproduce", "--experiments", str(experiments),
                      "--output", str(tmp_path / "new" / "results"),
                      "--cache", str(tmp_path / "new" / "cache")], monkeypatch)
    assert status == 1
    assert (tmp_path / "new" / "results").is_dir()
    assert (tmp_path / "new" / "cache").is_dir()


def test_cli_missing_experiments_dir_exits_2(tmp_path, monkeypatch, capsys):
    status = run_cli(["reproduce", "--experiments", str(tmp_path / "absent")], monkeypatch)
    assert status == 2
    assert "experiments directory" in capsys.readouterr().err


def test_cli_rejects_zero_jobs(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, VALID)
    with pytest.raises(SystemExit) as caught:
        run_cli(["run", str(path), "--jobs", "0"], monkeypatch)
    assert caught.value.code == 2
    assert "--jobs" in capsys.readouterr().err


def test_unreachable_scheduler_fails_fast():
    start = time.perf_counter()
    with pytest.raises(ValueError, match="cannot reach the Dask scheduler"):
        with DaskBackend(address="tcp://127.0.0.1:9", connect_timeout=2.0):
            pass
    assert time.perf_counter() - start < 15.0


def test_cli_unreachable_scheduler_exits_2(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, VALID)
    start = time.perf_counter()
    status = run_cli(["run", str(path), "--scheduler", "tcp://127.0.0.1:9", "--cache",
                      str(tmp_path / "cache"), "--output", str(tmp_path / "results")], monkeypatch)
    assert status == 2
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err
    assert time.perf_counter() - start < 20.0


def test_malformed_scheduler_address_names_option():
    with pytest.raises(ValueError, match="--scheduler: invalid Dask scheduler address 'notanaddress'"):
        with DaskBackend(address="notanaddress", connect_timeout=2.0):
            pass


def test_make_backend_rejects_bad_jobs():
    with pytest.raises(ValueError, match="--jobs"):
        make_backend(jobs=0)


def test_missing_figures_module_is_a_failure(tmp_path):
    text = "kind = 'figures'\nmodule = 'mdp.no_such_figures'\n[settings]\nservers = 3\n"
    experiment = load_experiment(write(tmp_path, text))
    summary = run_experiment(experiment, output_root=tmp_path / "results")
    assert not summary.ok
    assert "mdp.no_such_figures" in summary.failed[0]
    assert (tmp_path / "results" / "experiment" / "metadata.json").is_file()


def test_figures_module_receives_settings(tmp_path, monkeypatch):
    module = tmp_path / "fake_figures.py"
    module.write_text(
        "def draw_figures(output_dir, settings):\n"
        "    (output_dir / 'seen.txt').write_text(repr(sorted(settings.items())))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    text = "kind = 'figures'\nmodule = 'fake_figures'\n[settings]\nservers = 3\n"
    summary = run_experiment(load_experiment(write(tmp_path, text)), output_root=tmp_path / "out")
    assert summary.ok
    assert (tmp_path / "out" / "experiment" / "seen.txt").read_text() == "[('servers', 3)]"


@pytest.mark.parametrize("rate, expected", [(0.7, 4), (0.8, 5), (0.9, 10), (0.5, 2), (0.75, 4)])
def test_minimum_servers_tolerates_rounding(rate, expected):
    assert minimum_servers(rate) == expected
    # A bare ceiling would be wrong: 1 / (1 - 0.8) rounds above 5.
    assert 1.0 / (1.0 - 0.8) > 5.0
    assert math.ceil(1.0 / (1.0 - 0.8)) == 6


def test_reproduce_help_lists_options():
    result = subprocess.run([sys.executable, "-m", "mdp", "reproduce", "--help"],
                            capture_output=True, text=True, cwd=PROJECT)
    assert result.returncode == 0
    for option in ("--experiments", "--jobs", "--scheduler", "--output", "--cache", "--fresh"):
        assert option in result.stdout


def test_cache_key_includes_solver_revision(tmp_path):
    parameters = {"arrival_rate": 0.8, "servers": 3}
    old = PointCache(tmp_path, {"package_version": "0.1.0", "solver_revision": 1})
    new = PointCache(tmp_path, {"package_version": "0.1.0", "solver_revision": 2})
    old.store(old.key("deviation", parameters, 1e-6), {"best_cost": 1.5},
              {"stationary_distribution": np.eye(2)})

    row, arrays = old.load(old.key("deviation", parameters, 1e-6))
    assert row == {"best_cost": 1.5}
    assert np.array_equal(arrays["stationary_distribution"], np.eye(2))
    assert new.load(new.key("deviation", parameters, 1e-6)) is None
    assert old.load(old.key("deviation", parameters, 1e-8)) is None
    assert old.load(old.key("bracket", parameters, 1e-6)) is None


def test_cache_treats_damaged_entry_as_missing(tmp_path):
    cache = PointCache(tmp_path, {"package_version": "0.1.0", "solver_revision": 1})
    key = cache.key("deviation", {"servers": 3}, 1e-6)
    path = cache.store(key, {"best_cost": 1.5})
    path.write_bytes(path.read_bytes()[:20])
    assert cache.load(key) is None
    assert not list(tmp_path.rglob(".tmp-*"))


@pytest.mark.parametrize("name", [".", "..", ".hidden"])
def test_experiment_name_cannot_escape_output(tmp_path, name):
    with pytest.raises(ValueError, match="not starting with '.'"):
        load_experiment(write(tmp_path, f"name = {name!r}\n" + VALID))
