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
    (["--arrival-rate", "0.5", "--servers", "3", "--tolerance", "-1"], "tolerance must be in (0, 0.1]"),
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
