"""Tests of grokking_llc.figures: the registry, loading inputs, and the drawn content read back
from the axes (line data, error bars, hollow vs filled markers, axis scales) against values
computed here independently (SPEC section 7; issues 10, 12 and 15)."""

from __future__ import annotations

import math
from dataclasses import FrozenInstanceError

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from figure_tables import (
    PRIMES,
    b2_table,
    bias_table,
    calibration_table,
    grokking_track,
    gsm_runs,
    run_row,
    runs_vs_p,
    runs_vs_width,
    trace_rows,
    train_log,
)

from grokking_llc import figures
from grokking_llc.figures import REGISTRY, draw_figure
from grokking_llc.figures._common import plotting_axes
from grokking_llc.figures._track import draw_llc
from grokking_llc.figures.registry import FigureSpec, register

PARAMS = {"plots": {"dpi": 60, "style": "whitegrid"}, "sampler": "paper"}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def draw(key: str, data, **params):
    return REGISTRY[key].draw(data, {**PARAMS, **params})


def by_gid(fig, gid: str) -> list:
    return [a for a in fig.findobj(lambda a: a.get_gid() == gid)]


def one(fig, gid: str):
    found = by_gid(fig, gid)
    assert len(found) == 1, (gid, found)
    return found[0]


def xy(line) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(line.get_xdata(), dtype=float), np.asarray(line.get_ydata(), dtype=float)


def texts(fig) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))


def hollow(line) -> bool:
    return line.get_markerfacecolor() == "none"


def sorted_pairs(x, y) -> list[tuple[float, float]]:
    return sorted(zip(np.round(x, 9), np.round(y, 9), strict=True))


EXPECTED = {
    "fig1": ("runs", True), "fig2": ("runs", True), "fig3": ("track", False),
    "fig4": ("training", False), "lr_vs_max_llc": ("runs", True), "gsm_vs_llc": ("runs", True),
    "h2": ("panels", True), "fig13": ("track", False), "fig14": ("training", False),
    "traces": ("traces", True), "b2": ("grid", True), "bias_reduced": ("grid", True),
    "calibration": ("calibration", False),
}  # fmt: skip


def test_registry_holds_every_figure_once():
    assert set(REGISTRY) == set(EXPECTED)
    for key, (reads, per_sampler) in EXPECTED.items():
        spec = REGISTRY[key]
        assert (spec.key, spec.reads, spec.per_sampler) == (key, reads, per_sampler)
        assert spec.caption and callable(spec.draw)
    stems = [s.stem for s in REGISTRY.values()]
    assert len(set(stems)) == len(stems)
    with pytest.raises(FrozenInstanceError):
        REGISTRY["fig1"].stem = "x"  # type: ignore[misc]


def test_register_refuses_duplicates_and_unknown_kinds():
    with pytest.raises(ValueError, match="registered twice"):
        register("fig1", stem="other", reads="runs", per_sampler=True)(lambda d, p: None)
    with pytest.raises(ValueError, match="stem"):
        register("new_key", stem="fig1_llc_vs_p", reads="runs", per_sampler=True)(lambda d, p: None)
    with pytest.raises(ValueError, match="reads must be one of"):
        register("new_key", stem="s", reads="nonsense", per_sampler=True)
    assert "new_key" not in REGISTRY and isinstance(REGISTRY["fig2"], FigureSpec)


def test_draw_figure_loads_runs_of_the_study_and_sampler(tmp_path):
    runs = runs_vs_p(studies=["over_p"])
    other = runs.assign(sampler="calibrated", final_llc=runs["final_llc"] * 100)
    elsewhere = runs_vs_p(fn=lambda p, s: -5.0, studies=["other"])
    path = tmp_path / "runs.parquet"
    pd.concat([runs, other, elsewhere], ignore_index=True).to_parquet(path)
    fig = draw_figure("fig1", {"runs": str(path)}, {**PARAMS, "study": "over_p"})
    x, y = xy(one(fig, "means"))
    assert x.tolist() == PRIMES and y == pytest.approx([3.0 * p + 2.0 for p in PRIMES])
    assert "sampler: paper" in texts(fig)
    with pytest.raises(KeyError, match="no figure registered"):
        draw_figure("nope", {}, PARAMS)
    with pytest.raises(KeyError, match="input roles"):
        draw_figure("fig1", {"training": str(path)}, PARAMS)


def test_draw_figure_loads_each_kind(tmp_path):
    log = train_log()
    paths = {
        "log": tmp_path / "log.parquet", "llc_a": tmp_path / "a.parquet",
        "llc_b": tmp_path / "b.parquet", "grid": tmp_path / "grid.parquet",
        "cal": tmp_path / "cal.parquet", "training": tmp_path / "training.parquet",
        "traces": tmp_path / "traces.parquet",
    }  # fmt: skip
    log.to_parquet(paths["log"])
    grokking_track(log).to_parquet(paths["llc_a"])
    grokking_track(log, invalid_every=2).to_parquet(paths["llc_b"])
    b2_table().to_parquet(paths["grid"])
    calibration_table().to_parquet(paths["cal"])
    gsm_runs(lambda lr, wd, s: 0.1).assign(studies=[["lr_wd"]] * 30).to_parquet(paths["training"])
    trace_rows().to_parquet(paths["traces"])
    track = {"train_log": str(paths["log"]), "llc": [str(paths["llc_a"]), str(paths["llc_b"])]}
    fig = draw_figure("fig3", track, {**PARAMS, "samplers": ["paper", "calibrated"]})
    assert by_gid(fig, "llc_line:paper") and by_gid(fig, "llc_line:calibrated")
    with pytest.raises(ValueError, match="samplers"):
        draw_figure("fig3", track, {**PARAMS, "samplers": ["paper"]})
    panels = {"logs": [str(paths["log"])] * 2, "llcs": [str(paths["llc_a"])] * 2}
    fig = draw_figure("h2", panels, {**PARAMS, "titles": ["first run", "second run"]})
    assert "first run" in texts(fig) and "second run" in texts(fig)
    assert draw_figure("b2", {"grid": str(paths["grid"])}, PARAMS)
    assert draw_figure("calibration", {"calibration": str(paths["cal"])}, PARAMS)
    assert draw_figure("traces", {"llc": str(paths["traces"])}, PARAMS)
    fig = draw_figure("fig4", {"training": str(paths["training"])}, {**PARAMS, "study": "lr_wd"})
    assert len(by_gid(fig, "means")) == 2


def test_fig1_means_fit_and_invalid_points():
    rng = np.random.default_rng(0)
    noise = {(p, s): rng.normal(0, 2.0) for p in PRIMES for s in (0, 1, 2)}
    runs = runs_vs_p(fn=lambda p, s: 3.0 * p + 2.0 + noise[(p, s)], invalid={(7, 1), (13, 2)})
    runs.loc[~runs["final_llc_valid"], "final_llc"] = [400.0, -300.0]
    fig = draw("fig1", runs)
    ok = runs[runs["final_llc_valid"]]
    # means: mean over the valid runs of each p (not the maximum, not with invalid ones)
    x, y = xy(one(fig, "means"))
    expected = [ok.loc[ok["p"] == p, "final_llc"].mean() for p in PRIMES]
    assert x.tolist() == PRIMES and y == pytest.approx(expected)
    # error bars: +- std (ddof=1) of the valid runs
    ax = plotting_axes(fig)[0]
    segs = ax.containers[0].lines[2][0].get_segments()
    half = [0.5 * (s[1][1] - s[0][1]) for s in segs]
    assert half == pytest.approx([ok.loc[ok["p"] == p, "final_llc"].std(ddof=1) for p in PRIMES])
    # invalid runs hollow at their own values; valid ones filled
    bad = one(fig, "runs_invalid")
    assert hollow(bad) and sorted_pairs(*xy(bad)) == [(7.0, 400.0), (13.0, -300.0)]
    good = one(fig, "runs_valid")
    assert not hollow(good) and len(xy(good)[0]) == 10
    # the fitted line is least squares on the valid per-run points only
    slope, icpt = np.polyfit(ok["p"], ok["final_llc"], 1)
    fx, fy = xy(one(fig, "fit"))
    assert fy == pytest.approx(slope * fx + icpt)
    assert "2 of 12 final LLC estimates not valid" in texts(fig)


def test_fig1_without_valid_estimates_draws_them_hollow_and_fits_nothing():
    fig = draw("fig1", runs_vs_p().drop(columns=["final_llc_valid"]))
    assert not by_gid(fig, "fit") and not by_gid(fig, "means")
    assert len(xy(one(fig, "runs_invalid"))[0]) == 12
    assert "not validated" in texts(fig)


def test_fig2_proportional_fit_and_theory():
    runs = runs_vs_width(lambda k, s: 5.0 * k + s, invalid={(16, 0)})
    fig = draw("fig2", runs)
    ok = runs[runs["final_llc_valid"]]
    c = float(np.sum(ok["width"] * ok["final_llc"]) / np.sum(ok["width"] ** 2))
    fx, fy = xy(one(fig, "fit"))
    assert fy == pytest.approx(c * fx) and fx[0] == 0.0
    tx, ty = xy(one(fig, "theory"))
    # p = 11: the closed form is 16 K at these widths, scaled through the origin to the data
    scale = float(np.sum(16 * ok["width"] * ok["final_llc"]) / np.sum((16 * ok["width"]) ** 2))
    assert ty == pytest.approx(scale * 16 * tx)
    assert plotting_axes(fig)[0].get_xlim()[0] == 0.0


def test_fig3_draws_every_sampler_mean_not_std():
    log = train_log()
    a = grokking_track(log, sampler="paper")
    b = grokking_track(log, invalid_every=3, sampler="calibrated")
    b["llc_std"] = 1e3 + b["llc_mean"]  # a std that differs from the mean everywhere
    fig = draw("fig3", (log, {"paper": a, "calibrated": b}), samplers=["paper", "calibrated"],
               title="baseline run")  # fmt: skip
    assert len(plotting_axes(fig)) == 3  # losses + one LLC panel per sampler
    for name, track in (("paper", a), ("calibrated", b)):
        x, y = xy(one(fig, f"llc_line:{name}"))
        assert x.tolist() == track["step"].tolist()
        assert y == pytest.approx(track["llc_mean"].to_numpy())
    bad = one(fig, "llc_invalid:calibrated")
    assert hollow(bad)
    inv = b[~b["valid"]]
    assert xy(bad)[0].tolist() == inv["step"].tolist()
    assert xy(bad)[1] == pytest.approx(inv["llc_mean"].to_numpy())
    assert not hollow(one(fig, "llc_valid:calibrated"))
    assert not by_gid(fig, "llc_invalid:paper")
    lx, ly = xy(one(fig, "val_loss"))
    assert ly == pytest.approx(log["val_loss"].to_numpy())
    loss_ax = plotting_axes(fig)[0]
    assert loss_ax.get_yscale() == "log" and loss_ax.get_title() == "baseline run"
    # memorisation at step 600 and generalisation at 4000 marked on every panel
    assert xy(by_gid(fig, "mark:train acc 0.99")[0])[0][0] == 600.0
    assert len(by_gid(fig, "mark:val acc 0.99")) == 3
    assert "calibrated: " in texts(fig) and "Spearman" in texts(fig)


def test_fig13_labels_the_transformer_loss():
    log = train_log()
    fig = draw("fig13", (log, {"paper": grokking_track(log)}), samplers=["paper"])
    assert plotting_axes(fig)[0].get_ylabel() == "loss (cross-entropy)"
    assert "over the run" in texts(fig)


@pytest.mark.parametrize("n_panels", [1, 4, 5])
def test_h2_titles_fit_and_do_not_overlap(n_panels):
    log = train_log()
    title = ("quadratic p=53, K=256, lr=0.0001, wd=0.0001, batch=128, train_frac=0.4, seed=0"
             "\nrun quadratic-p53-K256-0123456789ab")  # fmt: skip
    panels = [(title.replace("p=53", f"p={p}"), log, grokking_track(log, invalid_every=4))
              for p in range(n_panels)]  # fmt: skip
    fig = draw("h2", panels)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    fig_box = fig.bbox
    boxes = []
    for ax in plotting_axes(fig):
        t = ax.title
        if t.get_text():
            bb = t.get_window_extent(renderer)
            assert fig_box.x0 - 1 <= bb.x0 and bb.x1 <= fig_box.x1 + 1  # not cut off
            boxes.append(bb)
    assert len(boxes) == n_panels
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j])
    assert len(by_gid(fig, "llc_invalid:paper")) == n_panels


def test_fig1_under_the_papers_protocol_draws_and_fits_every_estimate():
    rng = np.random.default_rng(1)
    noise = {(p, s): rng.normal(0, 2.0) for p in PRIMES for s in (0, 1, 2)}
    runs = runs_vs_p(fn=lambda p, s: 3.0 * p + 2.0 + noise[(p, s)], invalid={(7, 1), (13, 2)})
    fig = draw("fig1", runs, protocol="paper")
    # every run filled, none hollow: what the paper draws
    assert not by_gid(fig, "runs_invalid")
    assert len(xy(one(fig, "runs_valid"))[0]) == 12
    # means and the least-squares line go through all 12 runs
    x, y = xy(one(fig, "means"))
    assert y == pytest.approx([runs.loc[runs["p"] == p, "final_llc"].mean() for p in PRIMES])
    slope, icpt = np.polyfit(runs["p"], runs["final_llc"], 1)
    fx, fy = xy(one(fig, "fit"))
    assert fy == pytest.approx(slope * fx + icpt)
    # marked as the paper's protocol, with the count that fails the validity checks
    assert "the paper's protocol" in plotting_axes(fig)[0].get_title()
    assert "2 of 12 fail the validity checks (2 failed a check, 0 not a minimum)" in texts(fig)
    # the same table under a validated sampler leaves them out
    valid_fit = xy(one(draw("fig1", runs, protocol=None), "fit"))[1]
    assert not np.allclose(valid_fit, fy)


def test_estimates_at_a_checkpoint_that_is_not_a_minimum_are_a_grey_x():
    runs = runs_vs_p(invalid={(7, 1), (11, 0), (13, 2)})
    runs["final_llc_status"] = np.where(runs["final_llc_valid"], "valid", "invalid")
    runs.loc[(runs["p"] == 11) & (runs["seed"] == 0), "final_llc_status"] = "not_a_minimum"
    runs.loc[(runs["p"] == 11) & (runs["seed"] == 0), "final_llc"] = -500.0
    fig = draw("fig1", runs)
    nam = one(fig, "runs_not_a_minimum")
    assert nam.get_marker() == "x" and sorted_pairs(*xy(nam)) == [(11.0, -500.0)]
    assert len(xy(one(fig, "runs_invalid"))[0]) == 2
    means = xy(one(fig, "means"))[1]
    assert -500.0 not in means and means[PRIMES.index(11)] == pytest.approx(3.0 * 11 + 2.0)
    assert (
        "3 of 12 final LLC estimates not valid, left out of means and fits: 2 failed a check "
        "(hollow), 1 at a checkpoint that is not a minimum (grey x)"
    ) in " ".join(texts(fig).split())


def test_track_figures_under_the_papers_protocol_and_events_that_never_happen():
    log = train_log(t_gen=70)  # validation accuracy never reaches 0.99 (60 checkpoints)
    paper = grokking_track(log, invalid_every=2)
    cal = grokking_track(log, invalid_every=3, sampler="calibrated")
    cal.loc[0, ["valid", "invalid_reason"]] = [False, "not_a_minimum: |grad| 0.012"]
    fig = draw("fig3", (log, {"paper": paper, "calibrated": cal}), samplers=["paper", "calibrated"],
               protocols=["paper", None], title="baseline run")  # fmt: skip
    # the paper's protocol: every estimate filled, none hollow, its panel marked
    filled = one(fig, "llc_valid:paper")
    assert xy(filled)[0].tolist() == paper["step"].tolist() and not by_gid(fig, "llc_invalid:paper")
    assert any("paper: the paper's protocol" in a.get_title(loc="left") for a in fig.axes)
    # the validated sampler: hollow where invalid, a grey x where not a minimum
    assert xy(one(fig, "llc_not_a_minimum:calibrated"))[0].tolist() == [cal["step"].iloc[0]]
    assert len(xy(one(fig, "llc_invalid:calibrated"))[0]) == int((~cal["valid"]).sum()) - 1
    notes = " ".join(texts(fig).split())
    assert "validation acc at step never" in notes and "nan" not in notes
    assert f"{int((~paper['valid']).sum())} of {len(paper)} fail the validity checks" in notes
    assert "(1 at a checkpoint that is not a minimum)" in notes


def test_runs_figures_under_the_papers_protocol_fill_every_point():
    runs = gsm_runs(lambda lr, wd, s: 2.0 - 100.0 * lr + 0.01 * s)
    runs["final_llc"] = 10.0 * runs["gsm"] + 5.0
    runs["max_llc"] = 300.0 - 1e4 * runs["lr"]
    runs.loc[::4, ["final_llc_valid", "max_llc_valid"]] = False
    for key in ("lr_vs_max_llc", "gsm_vs_llc"):
        paper = draw(key, runs, protocol="paper")
        assert not by_gid(paper, "runs_invalid"), key
        assert "the paper's protocol" in plotting_axes(paper)[0].get_title(), key
        assert by_gid(draw(key, runs), "runs_invalid"), key
    # GSM on LLC: the pooled line is fitted through every run
    fx, fy = xy(one(draw("gsm_vs_llc", runs, protocol="paper"), "fit"))
    slope, icpt = np.polyfit(runs["final_llc"], runs["gsm"], 1)
    assert fy == pytest.approx(slope * fx + icpt)
    panels = [("run", train_log(), grokking_track(train_log(), invalid_every=2))]
    h2 = draw("h2", panels, protocol="paper")
    assert not by_gid(h2, "llc_invalid:paper") and "the paper's protocol" in texts(h2)


def test_fig4_never_generalised_runs_are_counted_not_drawn_as_zero():
    never = {(1e-4, 1e-4, 0), (1e-4, 1e-4, 1), (1e-3, 1e-4, 2)}
    runs = gsm_runs(lambda lr, wd, s: 0.8 * math.exp(-300.0 * lr) + 0.05 + 0.01 * s, never=never)
    fig = draw("fig4", runs)
    # panels in weight-decay order: 1e-4 (never-generalised runs at lr 1e-4 and 1e-3), 1e-3
    means = sorted(by_gid(fig, "means"), key=lambda ln: plotting_axes(fig).index(ln.axes))
    x0, y0 = xy(means[0])
    assert x0.tolist() == [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
    gen = runs[runs["final_val_acc"] > 0.9]
    exp0 = [gen[(gen["weight_decay"] == 1e-4) & (gen["lr"] == lr)]["gsm"].mean() for lr in x0]
    assert y0 == pytest.approx(exp0)
    assert np.all(y0 > 0.05)  # no GSM 0 averaged in
    strips = by_gid(fig, "never")
    assert sorted(xy(strips[0])[1].tolist()) == [0, 0, 0, 1, 2]
    assert xy(strips[1])[1].tolist() == [0] * 5
    # the usable exponential fit is drawn, a exp(-b lr) + c through the generalised points
    fits = by_gid(fig, "fit")
    assert len(fits) == 2
    fx, fy = xy(fits[1])
    assert fy == pytest.approx(0.8 * np.exp(-300.0 * fx) + 0.06, rel=2e-3)
    for ax in plotting_axes(fig):
        assert ax.get_xscale() == "log"
    assert len(xy(means[1])[0]) == 5


def test_fig4_unusable_fit_is_not_drawn():
    # GSM falling on a straight line in lr: the exponential fit has no curvature to resolve
    runs = gsm_runs(lambda lr, wd, s: 0.5 - 100.0 * lr + 0.001 * s, lrs=(1e-4, 2e-4, 5e-4, 1e-3),
                    wds=(1e-5,))  # fmt: skip
    fig = draw("fig4", runs)
    assert not by_gid(fig, "fit")
    assert "no usable exponential fit" in texts(fig)
    flat = " ".join(texts(fig).split())  # notes wrap to the figure's width
    assert "exponential fit not usable: no exponential curvature resolved" in flat


def test_lr_vs_max_llc_means_per_weight_decay():
    rows = [run_row(lr=lr, weight_decay=wd, seed=s, max_llc=1e4 * lr + 10 * s + 1e5 * wd,
                    max_llc_valid=not (lr == 1e-3 and s == 0))
            for wd in (1e-4, 1e-3) for lr in (1e-4, 1e-3, 1e-2) for s in (0, 1, 2)]  # fmt: skip
    df = pd.DataFrame(rows)
    fig = draw("lr_vs_max_llc", df)
    ax = plotting_axes(fig)[0]
    assert ax.get_xscale() == "log"
    lines = by_gid(fig, "means")
    assert len(lines) == 2
    ok = df[df["max_llc_valid"]]
    for line, wd in zip(lines, (1e-4, 1e-3), strict=True):
        x, y = xy(line)
        sub = ok[ok["weight_decay"] == wd]
        assert y == pytest.approx([sub.loc[sub["lr"] == lr, "max_llc"].mean() for lr in x])
    assert sum(len(xy(b)[0]) for b in by_gid(fig, "runs_invalid")) == 2


def test_gsm_vs_llc_fits_valid_generalised_runs():
    rows = []
    for wd, (slope, icpt) in {1e-5: (0.05, 0.1), 1e-4: (0.02, 0.3)}.items():
        for i, llc in enumerate([2.0, 4.0, 6.0, 9.0]):
            rows.append(run_row(weight_decay=wd, lr=1e-4 * (i + 1), final_llc=llc,
                                gsm=slope * llc + icpt))  # fmt: skip
    rows.append(run_row(weight_decay=1e-5, final_llc=3.0, gsm=5.0, final_llc_valid=False))
    rows.append(run_row(weight_decay=1e-4, final_llc=7.0, gsm=0.0, final_val_acc=0.1))
    fig = draw("gsm_vs_llc", pd.DataFrame(rows))
    ok = pd.DataFrame(rows[:8])
    slope, icpt = np.polyfit(ok["final_llc"], ok["gsm"], 1)
    fx, fy = xy(one(fig, "fit"))
    assert fy == pytest.approx(slope * fx + icpt)
    wx, wy = xy(one(fig, "fit:1e-05"))
    assert wy == pytest.approx(0.05 * wx + 0.1)
    bad = [b for b in by_gid(fig, "runs_invalid") if len(xy(b)[0])]
    assert sorted_pairs(*xy(bad[0])) == [(3.0, 5.0)] and hollow(bad[0])
    strip = plotting_axes(fig)[1]
    strip_pts = [ln for ln in strip.lines if ln.get_gid() == "runs_valid"]
    assert sum(len(xy(ln)[0]) for ln in strip_pts) == 1  # the run that never generalised
    assert "0.1288" in texts(fig) and "1 run(s) never generalised" in texts(fig)


def test_fig14_x_axis_is_n_over_p_ln_p():
    rows = []
    for p in (11, 13):
        for frac in (0.2, 0.4, 0.6):
            for s in (0, 1):
                n = round(frac * p * p)
                gen = frac > 0.3
                rows.append(run_row(p=p, train_frac=frac, n_train=n, seed=s,
                                    final_val_acc=0.95 + 0.01 * s if gen else 0.1 + 0.02 * s,
                                    regime="grokking" if gen else "no_generalisation"))  # fmt: skip
    fig = draw("fig14", pd.DataFrame(rows))
    x, y = xy(one(fig, "means:p=11"))
    # n = 24, 48, 73 at p = 11: n / (11 ln 11) = 0.909890, 1.819780, 2.767582
    assert x == pytest.approx([0.909890, 1.819780, 2.767582], rel=1e-5)
    assert y == pytest.approx([0.11, 0.955, 0.955])
    assert xy(one(fig, "tian"))[0][0] == 2.75 and xy(one(fig, "baseline"))[0][0] == 5.3
    no_gen = [c for c in by_gid(fig, "runs:no_generalisation")]
    assert len(no_gen) == 2 and all(len(c.get_offsets()) == 2 for c in no_gen)
    # both p: generalise from n = 48 (p = 11) / 68 (p = 13), not at 24 / 34
    lo = (24 / (11 * math.log(11)) + 34 / (13 * math.log(13))) / 2
    hi = (48 / (11 * math.log(11)) + 68 / (13 * math.log(13))) / 2
    span = one(fig, "bracket")  # a Rectangle in data x, axes y
    assert span.get_x() == pytest.approx(lo) and span.get_x() + span.get_width() == pytest.approx(
        hi
    )
    assert "Tian critical ratio 2.75" in texts(fig)


def test_traces_titles_carry_validity_and_divergence():
    fig = draw("traces", trace_rows())
    titles = [ax.get_title() for ax in plotting_axes(fig)]
    assert len(titles) == 4 and titles[0].startswith("checkpoint step 200")
    assert "valid" in titles[0] and "NOT valid (r_hat 1.6)" in titles[1]
    last = plotting_axes(fig)[-1]
    red = [ln for ln in last.lines if ln.get_linestyle() == "--" and ln.get_color() == "red"]
    assert len(red) == 1
    assert "burn-in (10 steps)" in [t.get_text() for t in last.get_legend().get_texts()]
    fig2 = draw("traces", trace_rows(), options={"steps": [600, 999]})
    assert len(plotting_axes(fig2)) == 1 and "no estimate at step(s) [999]" in texts(fig2)


def test_b2_log_axes_and_hollow_invalid():
    table = b2_table()
    fig = draw("b2", table)
    ax = plotting_axes(fig)[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    inv = table[~table["valid"]]
    drawn = [p for b in by_gid(fig, "runs_invalid") for p in zip(*xy(b), strict=True)]
    assert sorted(np.round(drawn, 9).tolist()) == sorted(
        np.round(inv[["localization", "llc_mean"]].to_numpy(), 9).tolist()
    )


def test_bias_reduced_fit_uses_valid_temperatures():
    table = bias_table(invalid_nbeta=(13.0,))
    table.loc[0, "llc_mean"] = 50.0
    fig = draw("bias_reduced", table)
    ix, iy = xy(one(fig, "intercept"))
    assert ix[0] == 0.0 and iy[0] == pytest.approx(4.0)
    assert hollow(one(fig, "runs_invalid"))


def test_calibration_ladders_checks_and_the_choice():
    """A panel per sampler kind and one for the other targets; a line per nbeta through its
    ladder's rungs against the resolution; each check's run beside its candidate (the rescaled
    ones and the reference at the candidate's resolution, the nbeta run in its candidate's
    colour); not valid hollow, not a minimum a grey x; the chosen candidate ringed, and its run
    at the other target."""
    from grokking_llc.figures.calibration import CHECK_STYLE

    table = calibration_table()
    fig = draw("calibration", table)
    axes = plotting_axes(fig)
    assert [ax.get_title() for ax in axes] == [
        "gn_diag, at step 9000", "sgld, at step 9000", "other targets (the candidates' step)",
    ]  # fmt: skip
    assert [ax.get_xscale() for ax in axes[:2]] == ["log", "log"]
    ladders = sorted(sorted_pairs(*xy(line)) for line in by_gid(fig, "ladder"))
    assert ladders == sorted([
        [(32.0, 4.0), (64.0, 7.0), (128.0, 7.5)],
        [(32.0, 40.0), (64.0, 70.0), (128.0, 85.0), (256.0, 92.0)],
        [(64.0, 60.0), (128.0, 80.0), (256.0, 88.0)],
    ])  # fmt: skip
    hollow_rungs = [p for line in by_gid(fig, "runs_invalid") for p in zip(*xy(line), strict=True)]
    assert sorted(hollow_rungs) == [(32.0, 4.0), (32.0, 40.0), (128.0, 7.5)]

    def at(role, kappa=256.0):
        return kappa * 2.0 ** CHECK_STYLE[role][1]

    steps = sorted(sorted_pairs(*xy(line)) for line in by_gid(fig, "check:step"))
    assert steps == [[(round(at("step"), 9), 88.0)], [(round(at("step"), 9), 92.0)]]
    nbeta = {float(xy(line)[1][0]): hollow(line) for line in by_gid(fig, "check:nbeta")}
    assert nbeta == {93.6: False, 70.0: True}  # the sgld candidate's nbeta run is not valid
    (x2,) = by_gid(fig, "check:rescale x2")
    assert xy(x2) == (pytest.approx([at("rescale x2")]), pytest.approx([91.8]))
    (ref,) = by_gid(fig, "check:reference")
    assert xy(ref) == (pytest.approx([256.0]), pytest.approx([91.0]))
    assert ref.get_color() == by_gid(fig, "ladder")[0].get_color()  # gn_diag, nbeta 1e4
    assert len(by_gid(fig, "candidate")) == 2
    assert xy(one(fig, "chosen")) == (pytest.approx([256.0]), pytest.approx([90.0]))
    assert xy(one(fig, "chosen_other")) == (pytest.approx([0.0]), pytest.approx([60.0]))
    assert xy(one(fig, "runs_not_a_minimum")) == (pytest.approx([0.0]), pytest.approx([-3.0]))
    notes = one(fig, "notes").get_text()
    assert "chosen (valid): gn_diag, nbeta 1e+04" in notes and "(κ 256)" in notes
    assert "calibration: gn_diag lr=4.5e-06" in notes
    assert "4 failed a check (hollow), 1 at a checkpoint that is not a minimum" in notes


def test_calibration_fallback_one_target_and_empty():
    table = calibration_table()
    fig = draw("calibration", table[table["target"] == 1].assign(chosen_valid=False))
    assert len(plotting_axes(fig)) == 2  # no other target: no panel for them
    notes = one(fig, "notes").get_text()
    assert "chosen (NOT valid)" in notes and "the chosen setting is NOT valid" in notes
    fig = draw("calibration", table.assign(chosen=False))
    assert not by_gid(fig, "chosen") and "no setting chosen" in one(fig, "notes").get_text()
    fig = draw("calibration", table.iloc[:0])
    assert "no calibration estimates" in texts(fig)


def test_notes_sit_below_the_plots_for_every_figure():
    log = train_log()
    data = {
        "fig1": runs_vs_p(invalid={(5, 0)}), "fig2": runs_vs_width(lambda k, s: k),
        "fig3": (log, {"paper": grokking_track(log)}),
        "fig13": (log, {"paper": grokking_track(log)}),
        "fig4": gsm_runs(lambda lr, wd, s: lr), "lr_vs_max_llc": gsm_runs(lambda lr, wd, s: 1.0),
        "gsm_vs_llc": gsm_runs(lambda lr, wd, s: lr), "h2": [("t", log, grokking_track(log))],
        "fig14": gsm_runs(lambda lr, wd, s: 1.0), "traces": trace_rows(), "b2": b2_table(),
        "bias_reduced": bias_table(), "calibration": calibration_table(),
    }  # fmt: skip
    assert set(data) == set(REGISTRY)
    for key, d in data.items():
        fig = draw(key, d, samplers=["paper"])
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        note = one(fig, "notes").get_window_extent(r)
        assert fig.bbox.y0 - 1 <= note.y0, key  # inside the figure
        for ax in plotting_axes(fig):
            if ax.get_visible() and ax.axison:
                assert note.y1 <= ax.get_position().transformed(fig.transFigure).y0 + 1, key


def test_module_docs_name_their_spec_section():
    import importlib

    for name in ("llc_scaling", "tracks", "h2_panels", "fig4_lr_vs_gsm", "lr_vs_max_llc",
                 "gsm_vs_llc", "fig14_scaling_regimes", "traces", "sampler_grids"):  # fmt: skip
        doc = importlib.import_module(f"grokking_llc.figures.{name}").__doc__
        assert "SPEC section" in doc, name
    assert figures.READS == ("runs", "training", "track", "panels", "grid", "traces",
                             "calibration")  # fmt: skip


def test_the_track_figure_marks_the_sampled_checkpoints():
    df = pd.DataFrame(
        {
            "step": [0, 40, 50, 60, 80],
            "llc_mean": [1.0, 2.0, 5.0, 6.0, 6.5],
            "llc_std": [0.1] * 5,
            "valid": [False] * 5,
            "selection": ["coarse", "coarse", "refined", "refined", "coarse"],
        }
    )
    fig, ax = plt.subplots()
    draw_llc(ax, df, color="C0", name="paper")
    by_gid = {c.get_gid(): c for c in ax.collections}
    coarse = by_gid["llc_sampled_coarse:paper"].get_segments()
    refined = by_gid["llc_sampled_refined:paper"].get_segments()
    assert sorted(seg[0][0] for seg in coarse) == [0, 40, 80]
    assert sorted(seg[0][0] for seg in refined) == [50, 60]
    assert all(seg[1][1] == pytest.approx(0.06) for seg in refined)
    assert all(seg[1][1] == pytest.approx(0.03) for seg in coarse)
    plt.close(fig)
    fig, ax = plt.subplots()
    draw_llc(ax, df.assign(selection="all"), color="C0", name="paper")
    assert not any(str(c.get_gid()).startswith("llc_sampled") for c in ax.collections)
    plt.close(fig)
    assert math.isfinite(df["llc_mean"].sum())
