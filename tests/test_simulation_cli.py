"""The ``simulate`` command: output, JSON fields and rejected input."""

import json
import os
import signal
import subprocess
import sys
import time

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
    (["--servers", "1", "--arrival-rate", "0.5"], "error: servers must be an integer in [2, infinity], got 1"),
    (["--servers", "3", "--arrival-rate", "1.0"], "error: arrival_rate must be in (0, 1), got 1.0"),
    (["--servers", "3", "--arrival-rate", "0.5", "--token-probability", "0"], "error: token_probability must"),
    (["--servers", "3", "--arrival-rate", "0.5", "--processing-cost", "-1"], "error: processing_cost must"),
    (["--servers", "3", "--arrival-rate", "0.5", "--help-cost", "-1"], "error: help_cost must"),
    (["--servers", "3", "--arrival-rate", "0.5", "--horizon", "-5"], "error: horizon must"),
    (["--servers", "3", "--arrival-rate", "0.5", "--warm-up", "-1"], "error: warm_up must"),
    (["--servers", "3", "--arrival-rate", "0.5", "--endowment", "-2"], "error: endowment must"),
    (["--servers", "3", "--arrival-rate", "0.5", "--batches", "1"], "error: batches must"),
    (["--servers", "3", "--arrival-rate", "0.5", "--seed", "-1"], "error: seed must"),
    (["--servers", "3", "--arrival-rate", "0.5", "--policy", "greedy"], "error: policy must"),
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


def test_policy_file_mismatch_shows_plain_numbers(tmp_path, capsys):
    market = Market(0.8, 3)
    send = np.zeros((6, 21))
    send[1:, :20] = 1.0
    path = save_policy(Policy.deterministic(market, send, np.ones((6, 21), dtype=np.int64)),
                       tmp_path / "pool.npz")
    status, _, error = run_command(capsys, "--servers", "3", "--arrival-rate", "0.9", "--policy", "file",
                                   "--policy-file", path, "--horizon", "100")
    assert status == 2
    assert "arrival rate 0.8, but the simulated market has 0.9;" in error
    assert "np." not in error


def test_help_shows_single_percent_sign(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--help"])
    assert exit_info.value.code == 0
    output = capsys.readouterr().out
    assert "with 95% batch" in " ".join(output.split())
    assert "%%" not in output


def test_text_output_states_units(capsys):
    status, output, _ = run_command(capsys, "--servers", "3", "--arrival-rate", "0.8", "--horizon", "500")
    assert status == 0
    header = next(line for line in output.splitlines() if line.lstrip().startswith("server "))
    assert header.split() == ["server", "cost/time", "own", "jobs", "pool", "jobs", "requests/t", "refusals/t",
                              "offers/t", "tokens"]
    assert "fraction of requests refused" in output
    assert "refusals/t: requests refused for lack of a token, per unit time" in output
    assert "after a refusal the server sends a job when it next earns a token" in output


def test_text_output_explains_server_one_refusals(tmp_path, capsys):
    market = Market(0.8, 3)
    send = np.zeros((6, 21))
    send[1:, :20] = 1.0
    path = save_policy(Policy.deterministic(market, send, np.ones((6, 21), dtype=np.int64)),
                       tmp_path / "pool.npz")
    status, output, _ = run_command(capsys, "--servers", "3", "--arrival-rate", "0.8", "--policy", "file",
                                    "--policy-file", path, "--horizon", "500")
    assert status == 0
    assert "server 1 decides again after every market event" in output


def _command(*arguments):
    return [sys.executable, "-m", "mdp", "simulate", *arguments]


def _default_sigint():
    # A shell may start background jobs with SIGINT ignored, and Python then installs no handler.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT to a child process")
def test_sigint_stops_long_simulation():
    # 50 servers for 1e9 time units would take hours; the run must stop soon after SIGINT.
    process = subprocess.Popen(_command("--servers", "50", "--arrival-rate", "0.9", "--horizon", "1e9"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_default_sigint)
    try:
        time.sleep(3.0)
        assert process.poll() is None, "the simulation ended before it was interrupted"
        process.send_signal(signal.SIGINT)
        sent = time.monotonic()
        output, error = process.communicate(timeout=30)
        elapsed = time.monotonic() - sent
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130
    assert "pooling-mdp simulate: interrupted" in error
    assert "Traceback" not in error
    assert output == ""
    assert elapsed < 10.0


@pytest.mark.skipif(os.name != "posix", reason="needs a pipe closed by the reader")
def test_closed_pipe_exits_quietly():
    # 200 servers give about 240 kB of JSON, more than a Linux pipe buffers (64 KiB
    # by default), so writing fails after the reader has stopped, as with `| head -3`.
    process = subprocess.Popen(_command("--servers", "200", "--arrival-rate", "0.6", "--horizon", "200",
                                        "--warm-up", "0", "--json"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [process.stdout.readline() for _ in range(3)]
        process.stdout.close()
        error = process.stderr.read()
        process.wait(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert lines[0] == "{\n"
    assert error == ""
    assert process.returncode == 1
