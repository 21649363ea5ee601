"""Tables and figures of the equilibrium analysis."""

import tomllib
from pathlib import Path

import pandas as pd
import pytest

from mdp.equilibrium_figures import DEFAULT_SETTINGS, check_settings, draw_figures

STEMS = ["jobs_vs_servers", "mean_field_vs_exact", "jobs_vs_token_probability",
         "threshold_vs_token_probability", "minimum_servers_vs_arrival_rate", "heterogeneous"]
EXPERIMENT = Path(__file__).resolve().parent.parent / "experiments" / "equilibrium.toml"


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("equilibrium")
    return output_dir, draw_figures(output_dir, {})


def test_default_run_writes_every_file(drawn):
    output_dir, paths = drawn
    expected = {output_dir / f"{stem}.{suffix}" for stem in STEMS for suffix in ("csv", "png", "pdf")}
    assert set(paths) == expected
    for path in paths:
        assert path.stat().st_size > 0


def test_jobs_vs_servers_table(drawn):
    output_dir, _ = drawn
    table = pd.read_csv(output_dir / "jobs_vs_servers.csv")
    row = table[table["servers"] == 10].iloc[0]
    # lambda = 0.8: no pooling 10 * 4 = 40, pooling 4, phi = 0.6: mean-field 7.5, exact 8.6949.
    assert row["no_pooling"] == pytest.approx(40.0)
    assert row["complete_pooling"] == pytest.approx(4.0)
    assert row["mechanism_at_arrival_rate"] == pytest.approx(4.0)
    assert row["mechanism_low_phi_mean_field"] == pytest.approx(7.5)
    assert row["mechanism_low_phi_exact"] == pytest.approx(8.6949, abs=5e-5)


def test_token_probability_table_minimum(drawn):
    output_dir, _ = drawn
    table = pd.read_csv(output_dir / "jobs_vs_token_probability.csv")
    for (servers, exact), part in table.groupby(["servers", "exact"]):
        sustainable = part[part["is_sustainable"]]
        best = sustainable.loc[sustainable["jobs_in_system"].idxmin()]
        assert best["jobs_in_system"] == pytest.approx(4.0), (servers, exact)


def test_minimum_servers_table(drawn):
    output_dir, _ = drawn
    table = pd.read_csv(output_dir / "minimum_servers_vs_arrival_rate.csv")
    row = table[(table["arrival_rate"] - 0.8).abs() < 1e-9].iloc[0]
    assert row["formula_at_or_below_arrival_rate"] == 5
    # phi = (1 + 0.8) / 2 = 0.9: w = 0.9 / (N 0.8 0.1) <= 1 needs N >= 11.25.
    assert row["exact_above_arrival_rate"] == 12


def test_heterogeneous_table(drawn):
    output_dir, _ = drawn
    table = pd.read_csv(output_dir / "heterogeneous.csv")
    equal = table.iloc[0]
    assert equal["spread"] == 0.0
    assert equal["jobs_mechanism"] == pytest.approx(3.0)
    assert equal["jobs_central"] == pytest.approx(3.0)
    assert (table["jobs_mechanism"].iloc[1:] > table["jobs_central"].iloc[1:]).all()


def test_experiment_file_matches_defaults():
    with EXPERIMENT.open("rb") as stream:
        experiment = tomllib.load(stream)
    assert experiment["kind"] == "figures"
    assert experiment["module"] == "mdp.equilibrium_figures"
    assert experiment["reproduce"] is True
    assert check_settings(experiment["settings"]) == check_settings({})
    assert set(experiment["settings"]) == set(DEFAULT_SETTINGS)


def test_small_settings_run(tmp_path):
    settings = {"max_servers": 6, "exact_servers": [2, 3], "scan_servers": [5],
                "threshold_arrival_rates": 0.5, "heterogeneous_servers": 3}
    paths = draw_figures(tmp_path, settings)
    assert len(paths) == 3 * len(STEMS)


@pytest.mark.parametrize("settings, name", [
    ({"arrival_rate": 1.5}, "arrival_rate"),
    ({"low_token_probability": 0.9}, "low_token_probability"),
    ({"exact_servers": [2, 60]}, "exact_servers"),
    ({"exact_servers": []}, "exact_servers"),
    ({"heterogeneous_max_spread": 0.3}, "heterogeneous_max_spread"),
    ({"servers": 10}, "unknown equilibrium figure setting"),
])
def test_bad_settings(tmp_path, settings, name):
    with pytest.raises(ValueError, match=name):
        draw_figures(tmp_path / "never", settings)
    assert not (tmp_path / "never").exists()
