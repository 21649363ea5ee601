"""The simulation figures: files written, tables filled, settings checked (short runs)."""

import pandas as pd
import pytest

from mdp.simulation_figures import DEFAULT_SETTINGS, check_settings, draw_figures

SMALL = {
    "servers": [2, 3],
    "horizon": 2_000.0,
    "warm_up": 100.0,
    "batches": 4,
    "token_servers": 3,
    "endowments": [0, 5],
    "token_horizons": [200.0],
    "replications": 2,
    "trace_servers": 2,
    "trace_horizon": 200.0,
    "deviation_servers": [2],
    "deviation_horizon": 2_000.0,
    "solver_tolerance": 1e-3,
}


def test_draw_figures_writes_tables_and_figures(tmp_path):
    paths = draw_figures(tmp_path, dict(SMALL))
    names = {path.name for path in paths}
    for stem in ("jobs_in_system", "integer_tokens", "token_paths", "deviation_gain"):
        assert {f"{stem}.csv", f"{stem}.png", f"{stem}.pdf"} <= names
    for path in paths:
        assert path.stat().st_size > 0

    jobs = pd.read_csv(tmp_path / "jobs_in_system.csv")
    assert set(jobs["policy"]) == {"none", "crp", "threshold"}
    assert (jobs["half_width"] > 0).all()
    tokens = pd.read_csv(tmp_path / "integer_tokens.csv")
    assert len(tokens) == 2 * 1 * 2
    gain = pd.read_csv(tmp_path / "deviation_gain.csv")
    assert (gain["gap_lower"] <= gain["gap_upper"]).all()


def test_empty_settings_take_defaults():
    assert check_settings({}) == DEFAULT_SETTINGS


@pytest.mark.parametrize("settings, message", [
    ({"servers_count": 3}, "unknown"),
    ({"servers": []}, "servers"),
    ({"arrival_rate": 1.5}, "arrival_rate"),
    ({"replications": 1}, "replications"),
    ({"trace_servers": 20}, "trace_servers"),
    ({"token_horizons": [0.0]}, "token_horizons"),
])
def test_invalid_settings_are_rejected(settings, message):
    with pytest.raises(ValueError, match=message):
        check_settings(settings)
