"""The ``simulate`` command: output, JSON fields and rejected input."""

import json

import numpy as np
import pytest

from mdp.cli import main
from mdp.model import Market
from mdp.policy import Policy, save_policy


def run_command(capsys, *arguments):
    status = main(["simulate", *arguments])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_json_reports_jobs_in_system(capsys):
    status, output, _ = run_command(capsys, "--servers", "4", "--arrival-rate", "0.6", "--fluid",
                                    "--horizon", "2000", "--warm-up", "50", "--seed", "3", "--json")
    assert status == 0
    summary = json.loads(output)
    assert set(summary["jobs_in_system"]) == {"mean", "standard_error", "half_width"}
    assert summary["settings"]["servers"] == 4
    assert summary["settings"]["policy"] == "crp"
    assert len(summary["servers"]["cost"]["mean"]) == 4


def test_json_is_strict_without_pool(capsys):
    # Without pooling no job passes through the pool, so its mean time there is undefined: null.
    status, output, _ = run_command(capsys, "--servers", "2", "--arrival-rate", "0.5", "--policy", "none",
                                    "--horizon", "500", "--json")
    assert status == 0
    summary = json.loads(output, parse_constant=lambda name: pytest.fail(f"non-standard JSON constant {name}"))
    assert summary["pool_time"]["mean"] is None


def test_text_output_names_the_run(capsys):
    status, output, _ = run_command(capsys, "--servers", "3", "--arrival-rate", "0.5", "--policy", "none",
                                    "--horizon", "500")
    assert status == 0
    assert "jobs in system" in output
    assert "3 servers, policy none" in output


def test_servers_file(tmp_path, capsys):
    rates = tmp_path / "servers.csv"
    rates.write_text("arrival_rate,capacity_rate\n0.3,1\n0.6,0.8\n0.4,\n")
    status, output, _ = run_command(capsys, "--servers-file", str(rates), "--policy", "heterogeneous",
                                    "--fluid", "--horizon", "1000", "--json")
    assert status == 0
    summary = json.loads(output)
    assert summary["settings"]["capacity_rates"] == [1.0, 0.8, 1.0]
    assert summary["settings"]["token_probability"] == pytest.approx(0.75)


def test_policy_file(tmp_path, capsys):
    market = Market(0.8, 3)
    send = np.zeros((6, 21))
    send[1:, :20] = 1.0
    path = save_policy(Policy.deterministic(market, send, np.ones((6, 21), dtype=np.int64)),
                       tmp_path / "pool.npz")
    status, output, _ = run_command(capsys, "--servers", "3", "--arrival-rate", "0.8", "--policy", "file",
                                    "--policy-file", path, "--fluid", "--horizon", "1000", "--json")
    assert status == 0
    assert json.loads(output)["server_one_decisions"] > 0

    status, _, error = run_command(capsys, "--servers", "4", "--arrival-rate", "0.8", "--policy", "file",
                                   "--policy-file", path, "--horizon", "1000")
    assert status == 2
    assert "servers" in error


@pytest.mark.parametrize("arguments, message", [
    (["--servers", "1", "--arrival-rate", "0.5"], "--servers"),
    (["--servers", "3", "--arrival-rate", "1.0"], "--arrival-rate"),
    (["--servers", "3", "--arrival-rate", "0.5", "--token-probability", "0"], "--token-probability"),
    (["--servers", "3", "--arrival-rate", "0.5", "--horizon", "-5"], "--horizon"),
    (["--servers", "3", "--arrival-rate", "0.5", "--warm-up", "-1"], "--warm-up"),
    (["--servers", "3", "--arrival-rate", "0.5", "--endowment", "-2"], "--endowment"),
    (["--servers", "3", "--arrival-rate", "0.5", "--seed", "-1"], "--seed"),
    (["--servers", "3", "--arrival-rate", "0.5", "--policy", "greedy"], "--policy"),
    (["--servers", "3", "--arrival-rate", "0.5", "--policy", "file"], "--policy-file"),
    (["--servers", "3", "--arrival-rate", "0.5", "--policy", "file", "--policy-file", "missing.npz"],
     "not found"),
    (["--servers", "3"], "--arrival-rate"),
    (["--servers-file", "missing.csv"], "not found"),
])
def test_invalid_input_exits_with_status_2(capsys, arguments, message):
    status, output, error = run_command(capsys, *arguments)
    assert status == 2
    assert output == ""
    assert message in error
    assert len(error.strip().splitlines()) == 1


def test_malformed_policy_file_exits_with_status_2(tmp_path, capsys):
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip archive")
    status, _, error = run_command(capsys, "--servers", "3", "--arrival-rate", "0.5", "--policy", "file",
                                   "--policy-file", str(broken))
    assert status == 2
    assert "broken.npz" in error


def test_malformed_servers_file_exits_with_status_2(tmp_path, capsys):
    rates = tmp_path / "servers.csv"
    rates.write_text("arrival_rate,capacity_rate\n0.3,1\n1.2,1\n")
    status, _, error = run_command(capsys, "--servers-file", str(rates))
    assert status == 2
    assert "line 3" in error
