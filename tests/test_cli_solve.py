"""The ``solve`` command: output, files written and bad input."""

import json
import subprocess
import sys

import pytest

from mdp import load_policy
from mdp.cli import main


def test_solve_json(capsys):
    assert main(["solve", "--arrival-rate", "0.8", "--servers", "4", "--tolerance", "1e-6", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["servers"] == 4
    assert payload["crp_cost"] == pytest.approx(0.8 + 0.8 / (4 * 0.2))
    assert payload["lower_bound"] <= payload["best_cost"] <= payload["crp_cost"]
    assert payload["converged"] is True
    assert payload["equilibrium_setting"] is True


def test_solve_table_with_bracket_and_files(tmp_path, capsys):
    policy_path = tmp_path / "policy.npz"
    plot_path = tmp_path / "policy.png"
    code = main(["solve", "--arrival-rate", "0.8", "--servers", "4", "--tolerance", "1e-6", "--bracket",
                 "--token-probability", "0.85", "--save-policy", str(policy_path),
                 "--policy-plot", str(plot_path)])
    output = capsys.readouterr().out
    assert code == 0
    assert "certified interval" in output
    assert "true gap" in output
    assert "off-equilibrium" in output
    assert load_policy(policy_path).market.token_probability == 0.85
    assert plot_path.stat().st_size > 10_000


@pytest.mark.parametrize("arguments, message", [
    (["--arrival-rate", "1.5", "--servers", "3"], "arrival_rate must be in (0, 1), got 1.5"),
    (["--arrival-rate", "abc", "--servers", "3"], "arrival_rate must be a number, got 'abc'"),
    (["--arrival-rate", "0.5", "--servers", "1"], "servers must be an integer in [2, infinity], got 1"),
    (["--arrival-rate", "0.5", "--servers", "3", "--tolerance", "-1"], "tolerance must be in [1e-10, 0.1]"),
    (["--arrival-rate", "0.5", "--servers", "3", "--wait-model", "x"], "wait_model must be one of"),
    (["--arrival-rate", "0.5", "--servers", "3", "--truncation", "4", "0"], "truncation Q0"),
    (["--arrival-rate", "0.5", "--servers", "3", "--help-cost", "nan"], "help_cost must be finite"),
])
def test_solve_bad_input_exits_2(arguments, message, capsys, tmp_path):
    policy_path = tmp_path / "keep.npz"
    policy_path.write_bytes(b"existing")
    code = main(["solve", *arguments, "--save-policy", str(policy_path)])
    error = capsys.readouterr().err
    assert code == 2
    assert message in error
    assert error.count("\n") == 1
    assert policy_path.read_bytes() == b"existing"


def test_module_entry_point_has_no_traceback():
    completed = subprocess.run([sys.executable, "-m", "mdp", "solve", "--arrival-rate", "2", "--servers", "3"],
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert "arrival_rate must be in (0, 1), got 2" in completed.stderr


@pytest.mark.parametrize("arguments, message", [
    (["--save-policy", "/nonexistent-directory/policy.npz"], "directory /nonexistent-directory does not exist"),
    (["--save-policy", "policy.txt"], "save_policy must be a file name ending in .npz"),
    (["--policy-plot", "policy.jpg"], "policy_plot must be a file name ending in .png or .pdf or .svg"),
    (["--truncation", "100000", "100000"], "more than max_states"),
])
def test_solve_rejects_outputs_before_work(arguments, message, capsys):
    code = main(["solve", "--arrival-rate", "0.8", "--servers", "4", *arguments])
    assert code == 2
    assert message in capsys.readouterr().err


def test_solve_not_converged_exits_1(capsys, monkeypatch):
    import functools

    import mdp.solver

    code = main(["solve", "--arrival-rate", "0.9", "--servers", "5", "--tolerance", "1e-6",
                 "--truncation", "3", "20", "--json"])
    assert code == 0  # a fixed truncation is the model asked for, so it converges
    capsys.readouterr()
    # A small state budget makes the automatic truncation stop before it settles.
    limited = functools.partial(mdp.solver.solve_best_deviation, max_states=400)
    monkeypatch.setattr(mdp.solver, "solve_best_deviation", limited)
    code = main(["solve", "--arrival-rate", "0.9", "--servers", "5", "--tolerance", "1e-8"])
    captured = capsys.readouterr()
    assert code == 1
    assert "NOT CONVERGED" in captured.out
    assert "truncation limit reached" in captured.err


def test_output_to_closed_pipe_is_quiet():
    command = [sys.executable, "-m", "mdp", "solve", "--arrival-rate", "0.8", "--servers", "4"]
    completed = subprocess.run(f"{' '.join(command)} | head -1", shell=True, capture_output=True, text=True,
                               timeout=300)
    assert "Traceback" not in completed.stderr
    assert completed.stdout.startswith("Market:")


def test_json_has_no_nan(capsys):
    code = main(["solve", "--arrival-rate", "0.8", "--servers", "4", "--truncation", "4", "30", "--json"])
    output = capsys.readouterr().out
    assert code == 0
    payload = json.loads(output, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    assert payload["truncation_change"] is None
    assert payload["truncation_fixed"] is True
