"""The ``pooling-mdp equilibrium`` command, run through the real dispatcher and as a subprocess."""

import json
import subprocess
import sys

import pytest

from mdp.cli import main


def run_command(capsys, *arguments):
    status = main(["equilibrium", *arguments])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_table_marks_mean_field(capsys):
    status, output, error = run_command(capsys, "--arrival-rate", "0.8", "--token-probability", "0.6",
                                        "--servers", "10")
    assert status == 0
    assert error == ""
    assert "keep at most k = 2 jobs" in output
    assert "p = 0.3125" in output
    lines = {line.split("  ")[1].strip(): line for line in output.splitlines() if line.startswith("  ")}
    assert lines["jobs in system"].endswith("7.5  [mean-field]")
    assert lines["pool wait w"].endswith("0.5  [mean-field]")
    assert lines["mean own queue q"].endswith("0.6")


def test_table_exact_pool(capsys):
    status, output, _ = run_command(capsys, "--arrival-rate", "0.8", "--token-probability", "0.6",
                                    "--servers", "10", "--exact")
    assert status == 0
    assert "exact pool length        2.69488" in output
    assert "exact smallest market    10" in output


def test_complete_pooling_has_no_mean_field_mark(capsys):
    status, output, _ = run_command(capsys, "--arrival-rate", "0.8", "--servers", "10")
    assert status == 0
    assert "complete pooling" in output
    assert "[mean-field]" not in output


def test_json_output(capsys):
    status, output, _ = run_command(capsys, "--arrival-rate", "0.5", "--token-probability", "0.8",
                                    "--servers", "10", "--exact", "--json")
    assert status == 0
    payload = json.loads(output)
    # lambda = 0.5, phi = 0.8: pool 4, w = 1 / (10 * 0.625 * 0.2) = 0.8, N_min = 8.
    assert payload["equilibrium"]["pool_length"] == pytest.approx(4.0)
    assert payload["equilibrium"]["pool_wait"] == pytest.approx(0.8)
    assert payload["equilibrium"]["minimum_servers"] == 8
    assert payload["equilibrium"]["pool_is_mean_field"] is False
    assert payload["exact"]["mean_pool_length"] == pytest.approx(4.0)
    assert payload["exact_minimum_servers"]["minimum_servers"] == 8


def test_servers_file(capsys, tmp_path):
    path = tmp_path / "servers.csv"
    path.write_text("arrival_rate,capacity_rate\n0.2,0.5\n0.4,1\n0.3,1\n")
    status, output, _ = run_command(capsys, "--servers-file", str(path), "--json")
    assert status == 0
    payload = json.loads(output)["heterogeneous"]
    assert payload["servers"] == 3
    assert payload["token_probability"] == pytest.approx(0.4)
    assert payload["offer_probabilities"] == pytest.approx([1.0, 1.0, 0.75])
    assert payload["central_jobs_in_system"] == pytest.approx(0.5625)


def test_servers_file_table(capsys, tmp_path):
    path = tmp_path / "servers.csv"
    path.write_text("arrival_rate,capacity_rate\n0.5,1\n0.25,1\n")
    status, output, _ = run_command(capsys, "--servers-file", str(path))
    assert status == 0
    assert "phi = max load = 0.5" in output
    assert "sustainable" in output


@pytest.mark.parametrize("arguments, fragment", [
    (["--arrival-rate", "1.2", "--servers", "10"], "arrival_rate must be in (0, 1), got 1.2"),
    (["--arrival-rate", "0.8", "--servers", "1"], "servers must be an integer"),
    (["--arrival-rate", "0.8", "--servers", "ten"], "servers must be a number, got 'ten'"),
    (["--arrival-rate", "0.8", "--servers", "10", "--token-probability", "1"], "token_probability"),
    (["--arrival-rate", "0.8", "--servers", "10", "--help-cost", "-1"], "help_cost"),
    (["--arrival-rate", "0.8"], "--servers are required"),
    (["--arrival-rate", "0.8", "--servers", "44", "--token-probability", "0.6", "--exact"],
     "pooling-mdp simulate"),
])
def test_bad_input_exits_with_status_two(capsys, arguments, fragment):
    status, output, error = run_command(capsys, *arguments)
    assert status == 2
    assert output == ""
    assert fragment in error
    assert error.count("\n") == 1
    assert error.startswith("pooling-mdp equilibrium: error:")


@pytest.mark.parametrize("content, fragment", [
    ("arrival_rate,capacity\n0.2,0.5\n", "missing the column(s) capacity_rate"),
    ("arrival_rate,capacity_rate\n", "no data rows"),
    ("arrival_rate,capacity_rate\n0.2,fast\n", "capacity_rate on line 2"),
    ("arrival_rate,capacity_rate\n0.9,0.5\n0.1,1\n", "server 1 has load"),
])
def test_bad_servers_file(capsys, tmp_path, content, fragment):
    path = tmp_path / "servers.csv"
    path.write_text(content)
    status, _, error = run_command(capsys, "--servers-file", str(path))
    assert status == 2
    assert fragment in error


def test_servers_file_missing(capsys, tmp_path):
    status, _, error = run_command(capsys, "--servers-file", str(tmp_path / "absent.csv"))
    assert status == 2
    assert "servers file not found" in error


def test_servers_file_rejects_symmetric_options(capsys, tmp_path):
    path = tmp_path / "servers.csv"
    path.write_text("arrival_rate,capacity_rate\n0.5,1\n0.25,1\n")
    status, _, error = run_command(capsys, "--servers-file", str(path), "--servers", "3", "--exact")
    assert status == 2
    assert "--servers, --exact" in error


def test_subprocess_error_has_no_traceback():
    completed = subprocess.run(
        [sys.executable, "-m", "mdp", "equilibrium", "--arrival-rate", "0", "--servers", "10"],
        capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert completed.stderr.strip().splitlines() == [
        "pooling-mdp equilibrium: error: arrival_rate must be in (0, 1), got 0.0"]


def test_subprocess_smoke_run():
    completed = subprocess.run(
        [sys.executable, "-m", "mdp", "equilibrium", "--arrival-rate", "0.9", "--servers", "10", "--exact"],
        capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0
    assert "smallest market N_min    10" in completed.stdout
    assert "exact smallest market" in completed.stdout
