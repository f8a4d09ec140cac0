"""grokking_llc.science.trajectory: Figure 3 and 13's track statistics (SPEC sections 6-7), against
values computed by hand or independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
from figure_tables import (
    llc_track,
    train_log,
)

from grokking_llc.science.stats import (
    spearman_ci,
)
from grokking_llc.science.trajectory import track_statistics

from .helpers import small_log, track


def test_track_statistics_window_and_peak():
    log = train_log(n=60, t_mem=6, t_gen=40)  # train acc 1 at step 600, val acc at 4000
    steps = log["step"].to_numpy()[::2]
    vl = log.set_index("step").loc[steps, "val_loss"].to_numpy()
    values = 10.0 + 100.0 * vl  # falls with the validation loss
    values[1] = 500.0  # the highest estimate, at step 300, before memorisation
    valid = np.ones(steps.size, dtype=bool)
    valid[5] = False
    st = track_statistics(log, llc_track(steps, values, valid))
    assert st["t_mem"] == 600.0 and st["t_gen"] == 4000.0
    in_window = (steps >= 600) & (steps <= 4000) & valid
    assert st["n_window"] == int(in_window.sum()) and st["n_valid"] == steps.size - 1
    assert st["spearman"] == pytest.approx(1.0)
    assert st["peak_step"] == 300.0 and st["peak_position"] == "before memorisation"
    first, last = np.flatnonzero(in_window)[[0, -1]]
    assert st["llc_start"] == pytest.approx(values[first])
    assert st["rel_change"] == pytest.approx(values[last] / values[first] - 1)
    # an invalid estimate never becomes the peak, however high
    values2 = values.copy()
    values2[5] = 1e6
    st2 = track_statistics(log, llc_track(steps, values2, valid))
    assert st2["peak_step"] == 300.0
    rising = track_statistics(log, llc_track(steps, 1000.0 - values, valid))
    assert rising["spearman"] == pytest.approx(-1.0)
    whole = track_statistics(log, llc_track(steps, values, valid), window="all")
    assert whole["n_window"] == steps.size - 1


def test_track_statistics_without_grokking_window():
    log = train_log(n=30, t_mem=6, t_gen=40)  # never reaches validation accuracy 0.99
    st = track_statistics(log, llc_track(log["step"], np.arange(30.0)))
    assert math.isnan(st["t_gen"]) and st["n_window"] == 0 and math.isnan(st["spearman"])
    assert any("no grokking window" in n for n in st["notes"])


def test_track_statistics_with_three_estimates_in_the_window():
    llc = track([200, 400, 600], [9.0, 8.0, 7.0])
    out = track_statistics(small_log(), llc)
    assert out["n_window"] == 3 and out["spearman"] == pytest.approx(1.0)
    assert math.isnan(out["ci_low"]) and math.isnan(out["ci_high"])  # no interval at n = 3


def test_track_statistics_without_a_training_log():
    log = small_log().iloc[:0]
    out = track_statistics(log, track([100], [1.0]))
    assert math.isnan(out["t_mem"]) and math.isnan(out["t_gen"])
    assert out["notes"] == ["no grokking window: the run never memorised or generalised"]
    assert out["peak_position"] == "unknown"


def test_track_statistics_text_estimates_levels_and_unknown_peaks():
    llc = track([100, 200, 300, 400, 500, 600, 700], [5.0, 9.0, 12.0, 10.0, 8.0, 7.0, 6.0])
    out = track_statistics(small_log(), llc, level=0.8)
    rho = out["spearman"]
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(spearman_ci(rho, 5, 0.8))
    llc["llc_mean"] = llc["llc_mean"].astype(object)
    llc.loc[2, "llc_mean"] = "n/a"
    out = track_statistics(small_log(), llc)
    assert out["n_valid"] == 7 and out["peak_step"] == 400.0
    never = small_log().assign(val_acc=0.1)  # memorised at 200, never generalised
    out = track_statistics(never, track([100, 300], [1.0, 2.0]), window="all")
    assert out["peak_step"] == 300.0 and out["peak_position"] == "unknown"
