"""Figures experiments: skipping up-to-date outputs, staging, Ctrl-C, and provenance."""

import importlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import mdp.cli
from mdp.experiments import load_experiment
from mdp.runner import git_commit, run_experiment

# A figures module that counts its calls in calls.txt next to itself and
# behaves as the environment variable FAKE_FIGURES_MODE sets: "ok" writes two
# files, "fail" writes one and raises, "interrupt" sends itself SIGINT and
# re-raises it wrapped in a RuntimeError, as some libraries do.
FAKE_MODULE = '''
import os
import signal
import time
from pathlib import Path

FIGURES_REVISION = {revision}


def draw_figures(output_dir, settings):
    calls = Path(__file__).with_name("calls.txt")
    calls.write_text(calls.read_text() + "x" if calls.exists() else "x")
    mode = os.environ.get("FAKE_FIGURES_MODE", "ok")
    (output_dir / "curve.csv").write_text(f"value\\n{{settings['value']}}\\n")
    if mode == "fail":
        raise ArithmeticError("no convergence in this test")
    if mode == "interrupt":
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt as error:
            raise RuntimeError("wrapped interrupt") from error
    (output_dir / "plots").mkdir()
    (output_dir / "plots" / "curve.png").write_bytes(b"png")
    return [output_dir / "curve.csv", output_dir / "plots" / "curve.png"]
'''

EXPERIMENT = """
kind = "figures"
module = "{module}"
reproduce = true

[settings]
value = {value}
"""


@pytest.fixture
def fake_module(tmp_path, monkeypatch):
    """Yield a function that writes the fake module under a given name and returns the name."""
    directory = tmp_path / "modules"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    monkeypatch.delenv("FAKE_FIGURES_MODE", raising=False)

    written = set()

    def write(name="fake_figures", revision=1):
        (directory / f"{name}.py").write_text(FAKE_MODULE.format(revision=revision))
        # Forget an earlier import, so that the next run imports this text.
        sys.modules.pop(name, None)
        importlib.invalidate_caches()
        written.add(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


def calls(tmp_path):
    path = tmp_path / "modules" / "calls.txt"
    return len(path.read_text()) if path.exists() else 0


def experiment_file(directory, module, value=1, name="figs"):
    path = Path(directory) / f"{name}.toml"
    path.write_text(EXPERIMENT.format(module=module, value=value))
    return load_experiment(path)


def read_metadata(directory):
    return json.loads((Path(directory) / "metadata.json").read_text())


def test_second_run_skips_module(tmp_path, fake_module):
    experiment = experiment_file(tmp_path, fake_module())
    first = run_experiment(experiment, output_root=tmp_path / "results")
    assert first.ok
    assert not first.up_to_date
    assert calls(tmp_path) == 1
    output = tmp_path / "results" / "figs"
    metadata = read_metadata(output)
    assert metadata["figures"]["files"] == ["curve.csv", "plots/curve.png"]
    assert metadata["figures"]["key"]["figures_revision"] == 1
    assert metadata["figures"]["key"]["settings"] == {"value": 1}

    second = run_experiment(experiment, output_root=tmp_path / "results")
    assert second.up_to_date
    assert second.ok
    assert calls(tmp_path) == 1
    assert second.describe().startswith("figs: up to date (from cache)")
    assert read_metadata(output) == metadata


def test_changed_key_or_missing_file_redraws(tmp_path, fake_module):
    module = fake_module()
    root = tmp_path / "results"
    run_experiment(experiment_file(tmp_path, module, value=1), output_root=root)
    assert calls(tmp_path) == 1

    run_experiment(experiment_file(tmp_path, module, value=2), output_root=root)
    assert calls(tmp_path) == 2
    assert (root / "figs" / "curve.csv").read_text() == "value\n2\n"

    (root / "figs" / "plots" / "curve.png").unlink()
    run_experiment(experiment_file(tmp_path, module, value=2), output_root=root)
    assert calls(tmp_path) == 3
    assert (root / "figs" / "plots" / "curve.png").is_file()


def test_figures_revision_redraws(tmp_path, fake_module):
    root = tmp_path / "results"
    run_experiment(experiment_file(tmp_path, fake_module("revised", revision=1)), output_root=root)
    fake_module("revised", revision=2)
    summary = run_experiment(experiment_file(tmp_path, "revised"), output_root=root)
    assert not summary.up_to_date
    assert calls(tmp_path) == 2
    assert read_metadata(root / "figs")["figures"]["key"]["figures_revision"] == 2


def test_fresh_redraws(tmp_path, fake_module):
    experiment = experiment_file(tmp_path, fake_module())
    run_experiment(experiment, output_root=tmp_path / "results")
    summary = run_experiment(experiment, output_root=tmp_path / "results", fresh=True)
    assert not summary.up_to_date
    assert calls(tmp_path) == 2


def test_redraw_removes_stale_files(tmp_path, fake_module):
    experiment = experiment_file(tmp_path, fake_module())
    output = tmp_path / "results" / "figs"
    run_experiment(experiment, output_root=tmp_path / "results")
    (output / "old_figure.png").write_bytes(b"old")
    run_experiment(experiment, output_root=tmp_path / "results", fresh=True)
    assert sorted(path.name for path in output.iterdir()) == ["curve.csv", "metadata.json",
                                                              "plots"]
    assert sorted(path.name for path in output.parent.iterdir()) == ["figs"]


def test_failed_redraw_keeps_previous_outputs(tmp_path, fake_module, monkeypatch):
    module = fake_module()
    root = tmp_path / "results"
    run_experiment(experiment_file(tmp_path, module, value=1), output_root=root)
    before = {path: path.read_bytes() for path in (root / "figs").rglob("*") if path.is_file()}

    monkeypatch.setenv("FAKE_FIGURES_MODE", "fail")
    summary = run_experiment(experiment_file(tmp_path, module, value=2), output_root=root)
    assert not summary.ok
    assert "ArithmeticError: no convergence in this test" in summary.failed[0]
    after = {path: path.read_bytes() for path in (root / "figs").rglob("*") if path.is_file()}
    assert after == before
    assert sorted(path.name for path in root.iterdir()) == ["figs"]

    # The stored key is the old one, so the next run draws again.
    monkeypatch.setenv("FAKE_FIGURES_MODE", "ok")
    summary = run_experiment(experiment_file(tmp_path, module, value=2), output_root=root)
    assert summary.ok
    assert not summary.up_to_date
    assert (root / "figs" / "curve.csv").read_text() == "value\n2\n"


def test_first_failed_run_records_failure(tmp_path, fake_module, monkeypatch):
    monkeypatch.setenv("FAKE_FIGURES_MODE", "fail")
    experiment = experiment_file(tmp_path, fake_module())
    summary = run_experiment(experiment, output_root=tmp_path / "results")
    assert not summary.ok
    output = tmp_path / "results" / "figs"
    assert sorted(path.name for path in output.iterdir()) == ["metadata.json"]
    metadata = read_metadata(output)
    assert metadata["failures"] == summary.failed
    assert "figures" not in metadata


def test_wrapped_interrupt_stops_run(tmp_path, fake_module, monkeypatch):
    module = fake_module()
    root = tmp_path / "results"
    run_experiment(experiment_file(tmp_path, module, value=1), output_root=root)
    before = {path: path.read_bytes() for path in (root / "figs").rglob("*") if path.is_file()}

    monkeypatch.setenv("FAKE_FIGURES_MODE", "interrupt")
    with pytest.raises(KeyboardInterrupt):
        run_experiment(experiment_file(tmp_path, module, value=2), output_root=root)
    after = {path: path.read_bytes() for path in (root / "figs").rglob("*") if path.is_file()}
    assert after == before
    assert sorted(path.name for path in root.iterdir()) == ["figs"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_reproduce_stops_at_interrupt(tmp_path, fake_module, monkeypatch, capsys):
    module = fake_module()
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    experiment_file(experiments, module, value=1, name="a_first")
    experiment_file(experiments, module, value=2, name="b_second")
    results = tmp_path / "results"
    results.mkdir()
    (results / "reproduce.json").write_text("{}\n")
    monkeypatch.setattr(mdp.cli, "COMMAND_MODULES", ("run",))
    monkeypatch.setenv("FAKE_FIGURES_MODE", "interrupt")

    status = mdp.cli.main(["reproduce", "--experiments", str(experiments), "--jobs", "1",
                           "--output", str(results), "--cache", str(tmp_path / "cache")])
    error = capsys.readouterr().err
    assert status == 130
    assert "interrupted" in error
    assert "failed" not in error
    assert calls(tmp_path) == 1
    assert sorted(path.name for path in results.iterdir()) == ["reproduce.json"]
    assert (results / "reproduce.json").read_text() == "{}\n"


def test_reproduce_reports_up_to_date(tmp_path, fake_module, monkeypatch, capsys):
    module = fake_module()
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    experiment_file(experiments, module, name="figs")
    monkeypatch.setattr(mdp.cli, "COMMAND_MODULES", ("run",))
    argv = ["reproduce", "--experiments", str(experiments), "--jobs", "1",
            "--output", str(tmp_path / "results"), "--cache", str(tmp_path / "cache")]
    assert mdp.cli.main(argv) == 0
    capsys.readouterr()

    assert mdp.cli.main(argv) == 0
    assert "figs: up to date (from cache)" in capsys.readouterr().err
    assert calls(tmp_path) == 1
    timings = json.loads((tmp_path / "results" / "reproduce.json").read_text())
    assert timings["experiments"]["figs"]["up_to_date"] is True


# ---------------------------------------------------------------------------
# Provenance.

def git(directory, *arguments):
    return subprocess.run(["git", "-c", "user.name=Test", "-c", "user.email=test@example.org",
                           *arguments], cwd=directory, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path):
    """A git repository with one commit that tracks a source file and a results table."""
    repository = tmp_path / "checkout"
    (repository / "results" / "figs").mkdir(parents=True)
    (repository / "source.py").write_text("x = 1\n")
    (repository / "results" / "figs" / "table.csv").write_text("a\n1\n")
    git(repository, "init", "-q")
    git(repository, "add", ".")
    git(repository, "commit", "-q", "-m", "Start")
    return repository


def test_commit_ignores_output_directory(checkout, monkeypatch):
    monkeypatch.chdir(checkout)
    head = git(checkout, "rev-parse", "HEAD")
    (checkout / "results" / "figs" / "table.csv").write_text("a\n2\n")
    assert git_commit(exclude="results") == head
    assert git_commit() == f"{head}-dirty"

    (checkout / "source.py").write_text("x = 2\n")
    assert git_commit(exclude="results") == f"{head}-dirty"


def test_commit_from_working_directory(checkout, tmp_path, monkeypatch):
    monkeypatch.chdir(checkout)
    assert git_commit() == git(checkout, "rev-parse", "HEAD")
    outside = tmp_path / "not_a_checkout"
    outside.mkdir()
    monkeypatch.chdir(outside)
    assert git_commit() is None


def test_metadata_has_commit_and_relative_paths(checkout, fake_module, monkeypatch):
    monkeypatch.chdir(checkout)
    (checkout / "experiments").mkdir()
    experiment = experiment_file(checkout / "experiments", fake_module())
    # An earlier run left the committed table changed; that must not count as dirty.
    (checkout / "results" / "figs" / "table.csv").write_text("a\n2\n")
    run_experiment(experiment, output_root="results")

    text = (checkout / "results" / "figs" / "metadata.json").read_text()
    metadata = json.loads(text)
    assert metadata["git_commit"] == git(checkout, "rev-parse", "HEAD")
    assert metadata["experiment_file"] == "experiments/figs.toml"
    assert str(checkout) not in text
    assert os.path.realpath(checkout) not in text


def test_metadata_path_of_absolute_experiment_file(checkout, fake_module, monkeypatch):
    monkeypatch.chdir(checkout)
    experiment_file(checkout, fake_module())
    experiment = load_experiment(checkout / "figs.toml")
    assert experiment.path.is_absolute()
    run_experiment(experiment, output_root=checkout / "out")
    assert read_metadata(checkout / "out" / "figs")["experiment_file"] == "figs.toml"



def test_empty_cache_redraws_committed_outputs(tmp_path, fake_module):
    # Results copied from elsewhere (a fresh clone) carry a matching key, but
    # this machine's cache never saw them drawn, so they are drawn again.
    from mdp.cache import PointCache, solver_version

    experiment = experiment_file(tmp_path, fake_module())
    root = tmp_path / "results"
    first_cache = PointCache(tmp_path / "cache-a", solver_version())
    run_experiment(experiment, output_root=root, cache=first_cache)
    assert calls(tmp_path) == 1

    again = run_experiment(experiment, output_root=root, cache=first_cache)
    assert again.up_to_date
    assert calls(tmp_path) == 1

    fresh_machine = PointCache(tmp_path / "cache-b", solver_version())
    redrawn = run_experiment(experiment, output_root=root, cache=fresh_machine)
    assert not redrawn.up_to_date
    assert calls(tmp_path) == 2
