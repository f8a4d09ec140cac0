"""Tests of grokking_llc.plots on small hand-made tables (SPEC section 7)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from grokking_llc import plots, theory  # noqa: E402

PRIMES = [5, 7, 11, 13]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _texts(fig: Figure) -> str:
    """Every piece of text in the figure: axes texts, titles, labels and legend entries."""
    parts = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
    return "\n".join(parts)


def _legend_labels(ax) -> list[str]:
    leg = ax.get_legend()
    return [t.get_text() for t in leg.get_texts()] if leg is not None else []


def _run(**kw) -> dict:
    base = {
        "run_id": "r",
        "studies": ["s"],
        "p": 11,
        "train_frac": 0.4,
        "data_seed": 0,
        "seed": 0,
        "model": "quadratic",
        "width": 16,
        "loss": "centred_mse",
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "batch_size": 32,
        "max_steps": 1000,
        "checkpoint_every": 100,
        "early_stop_patience": 10,
        "early_stop_acc": 0.99,
        "n_train": 48,
        "final_step": 1000,
        "final_train_acc": 1.0,
        "final_val_acc": 1.0,
        "final_train_loss": 0.01,
        "final_val_loss": 0.02,
        "gsm": 0.2,
        "delay": 300.0,
        "t_memorise": 200.0,
        "t_generalise": 500.0,
        "regime": "grokking",
        "llc_final": 10.0,
        "llc_final_std": 1.0,
        "llc_max": 20.0,
        "llc_max_step": 400.0,
        "sampler_id": "s0",
    }
    base.update(kw)
    base["run_id"] = "-".join(f"{k}{v}" for k, v in kw.items()) or "r"
    return base


def _runs_vs_p(fn=lambda p, seed: 3.0 * p + 2.0, seeds=(0, 1), width=16) -> pd.DataFrame:
    rows = [
        _run(p=p, seed=s, width=width, llc_final=fn(p, s), n_train=round(0.4 * p * p))
        for p in PRIMES
        for s in seeds
    ]
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- Figure 1


def test_fit_llc_vs_p_recovers_exact_line():
    fit = plots.fit_llc_vs_p(_runs_vs_p())
    assert fit["slope"] == pytest.approx(3.0)
    assert fit["intercept"] == pytest.approx(2.0)
    assert fit["r2"] == pytest.approx(1.0)
    assert fit["width"] == 16
    assert fit["n_runs"] == 8 and fit["n_p"] == 4
    assert fit["fit_skipped"] is None


def test_fit_llc_vs_p_theory_scale_is_exact_for_theory_shaped_data():
    # data = 0.01 * llc_quadratic(p, K): the scale is 0.01, R^2 1, and at K = 16 every p here is
    # under-parametrised (K (3p-1)/2), so the theory's slope in p is 3K/2 = 24.
    runs = _runs_vs_p(fn=lambda p, s: 0.01 * theory.llc_quadratic(p, 16))
    fit = plots.fit_llc_vs_p(runs)
    assert fit["theory_scale"] == pytest.approx(0.01)
    assert fit["theory_r2"] == pytest.approx(1.0)
    assert fit["theory_slope"] == pytest.approx(24.0)
    assert fit["theory_slope_scaled"] == pytest.approx(0.24)
    assert fit["slope"] == pytest.approx(0.24)
    assert math.isfinite(fit["bound_scale"]) and fit["bound_scale"] > 0


def test_fig1_uses_most_common_width_and_drops_nan():
    runs = _runs_vs_p()
    extra = pd.DataFrame([_run(p=7, width=64, llc_final=1.0), _run(p=13, llc_final=math.nan)])
    runs = pd.concat([runs, extra], ignore_index=True)
    fit = plots.fit_llc_vs_p(runs)
    assert fit["width"] == 16 and fit["n_runs"] == 8
    assert fit["slope"] == pytest.approx(3.0)
    fig = plots.plot_fig1_llc_vs_p(runs)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 1
    text = _texts(fig)
    assert "slope 3" in text and "R² 1" in text
    assert "most common" in text and "dropped 1 run" in text
    assert "over 2 runs" in text  # runs per point
    labels = _legend_labels(fig.axes[0])
    assert any(lab.startswith("least squares") for lab in labels)
    assert any(lab.startswith("theory llc_quadratic") for lab in labels)
    assert any(lab.startswith("data-restricted bound") for lab in labels)


def test_fig1_single_p_draws_data_and_skips_fit():
    runs = pd.DataFrame([_run(p=11, seed=0, llc_final=5.0), _run(p=11, seed=1, llc_final=6.0)])
    fit = plots.fit_llc_vs_p(runs)
    assert math.isnan(fit["slope"]) and "skipped" in fit["fit_skipped"]
    fig = plots.plot_fig1_llc_vs_p(runs)
    assert "fits skipped" in _texts(fig)
    assert not any(lab.startswith("least squares") for lab in _legend_labels(fig.axes[0]))


def test_fig1_all_nan_gives_a_note_not_an_error():
    runs = pd.DataFrame([_run(p=11, llc_final=math.nan)])
    fig = plots.plot_fig1_llc_vs_p(runs)
    assert "no runs with a finite final LLC" in _texts(fig)
    assert plots.fit_llc_vs_p(runs)["n_runs"] == 0


# --------------------------------------------------------------------------- Figure 2


def _runs_vs_width(fn, seeds=(0, 1), p=11):
    return pd.DataFrame(
        [_run(p=p, width=k, seed=s, llc_final=fn(k, s)) for k in (4, 8, 16, 32) for s in seeds]
    )


def test_fit_llc_vs_width_recovers_proportional_constant():
    fit = plots.fit_llc_vs_width(_runs_vs_width(lambda k, s: 5.0 * k))
    assert fit["prop_c"] == pytest.approx(5.0)
    assert fit["prop_r2"] == pytest.approx(1.0)
    assert fit["slope"] == pytest.approx(5.0)
    assert fit["intercept"] == pytest.approx(0.0, abs=1e-9)
    assert fit["r2"] == pytest.approx(1.0)
    assert fit["p"] == 11 and fit["n_width"] == 4
    # under-parametrised at p = 11 for all these K: theory = K * 32 / 2 = 16 K
    assert fit["theory_scale"] == pytest.approx(5.0 / 16.0)
    assert fit["theory_slope"] == pytest.approx(16.0)


def test_fig2_prints_both_fits_with_seed_spread():
    runs = _runs_vs_width(lambda k, s: 5.0 * k + (1.0 if s else -1.0))
    runs = pd.concat([runs, pd.DataFrame([_run(p=13, width=8, llc_final=3.0)])])
    fig = plots.plot_fig2_llc_vs_width(runs)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    text = _texts(fig)
    assert "proportional fit: c = 5" in text
    assert "free line: slope 5" in text
    assert "p = 11" in text and "over 2 runs" in text
    # error bars present: the errorbar container has bar lines
    assert any(len(c.lines[2]) for c in fig.axes[0].containers)


def test_fig2_single_width_skips_fit():
    runs = pd.DataFrame([_run(width=16, llc_final=3.0)])
    fit = plots.fit_llc_vs_width(runs)
    assert math.isnan(fit["prop_c"]) and fit["fit_skipped"]
    fig = plots.plot_fig2_llc_vs_width(runs)
    assert "fits skipped" in _texts(fig) and "each point: 1 run" in _texts(fig)


# --------------------------------------------------------------------------- Figure 4


def _runs_lr_gsm():
    lrs = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
    rows = []
    for wd in (1e-4, 1e-3):
        for lr in lrs:
            for s in (0, 1):
                g = 0.8 * math.exp(-300.0 * lr) + 0.05 + (0.01 if s else -0.01)
                rows.append(_run(lr=lr, weight_decay=wd, seed=s, gsm=g))
    return pd.DataFrame(rows)


def test_fit_lr_vs_gsm_recovers_exponential_per_weight_decay():
    fits = plots.fit_lr_vs_gsm(_runs_lr_gsm())
    assert sorted(fits) == [1e-4, 1e-3]
    for fit in fits.values():
        assert fit["skipped"] is None
        assert fit["b"] == pytest.approx(300.0, rel=1e-3)
        assert fit["a"] == pytest.approx(0.8, rel=1e-3)
        assert fit["c"] == pytest.approx(0.05, abs=1e-3)
        assert fit["n_runs"] == 10 and fit["n_lr"] == 5


def test_fig4_one_panel_per_weight_decay_with_fit_text():
    runs = _runs_lr_gsm()
    runs = pd.concat(
        [runs, pd.DataFrame([_run(lr=1e-3, weight_decay=1e-2, gsm=0.1)])], ignore_index=True
    )
    runs.loc[0, "gsm"] = math.nan
    fig = plots.plot_fig4_lr_vs_gsm(runs)
    assert len(fig.axes) == 3
    fits = plots.fit_lr_vs_gsm(runs)
    assert fits[1e-2]["skipped"] and math.isnan(fits[1e-2]["a"])
    text = _texts(fig)
    assert f"b = {fits[1e-3]['b']:.4g}" in text
    assert "R² = 1" in text or "R² = 0.99" in text
    assert "fit skipped" in text and "dropped 1 run" in text
    for ax in fig.axes:
        assert ax.get_xscale() == "log"
    assert fig.axes[0].get_shared_y_axes().joined(fig.axes[0], fig.axes[2])
    # fitted curve drawn on the two fitted panels only
    assert [len(ax.lines) for ax in fig.axes][2] < len(fig.axes[0].lines)


def test_fig4_empty_table():
    fig = plots.plot_fig4_lr_vs_gsm(pd.DataFrame([_run(gsm=math.nan)]))
    assert "no runs" in _texts(fig)


# --------------------------------------------------------------------------- H.3 max LLC


def test_lr_vs_max_llc_one_line_per_weight_decay():
    rows = [
        _run(lr=lr, weight_decay=wd, seed=s, llc_max=100 * lr + wd + s)
        for wd in (1e-4, 1e-3)
        for lr in (1e-4, 1e-3, 1e-2)
        for s in (0, 1)
    ]
    rows.append(_run(lr=1e-1, weight_decay=1e-4, llc_max=math.nan))
    fig = plots.plot_lr_vs_max_llc(pd.DataFrame(rows))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert len(ax.containers) == 2
    labels = _legend_labels(ax)
    assert labels == ["weight decay 0.0001", "weight decay 0.001"]
    assert "over 2 runs" in _texts(fig) and "dropped 1 run" in _texts(fig)


def test_lr_vs_max_llc_unequal_counts_annotated_per_point():
    rows = [_run(lr=1e-3, seed=0, llc_max=1.0), _run(lr=1e-3, seed=1, llc_max=2.0)]
    rows.append(_run(lr=1e-2, seed=0, llc_max=3.0))
    fig = plots.plot_lr_vs_max_llc(pd.DataFrame(rows))
    text = _texts(fig)
    assert "n=2" in text and "n=1" in text


# --------------------------------------------------------------------------- GSM vs LLC


def test_fit_gsm_vs_llc_exact_line_and_plot():
    rows = [
        _run(llc_final=x, gsm=0.5 * x - 1.0, lr=lr, seed=i)
        for i, (x, lr) in enumerate([(2.0, 1e-4), (4.0, 1e-3), (6.0, 1e-2), (8.0, 1e-2)])
    ]
    rows.append(_run(llc_final=math.nan, gsm=0.3))
    runs = pd.DataFrame(rows)
    fit = plots.fit_gsm_vs_llc(runs)
    assert fit["slope"] == pytest.approx(0.5)
    assert fit["intercept"] == pytest.approx(-1.0)
    assert fit["r2"] == pytest.approx(1.0)
    assert fit["n"] == 4 and fit["n_dropped_nan"] == 1
    fig = plots.plot_gsm_vs_llc(runs)
    assert len(fig.axes) == 2  # plot and its learning-rate colour bar
    text = _texts(fig)
    assert "GSM = 0.5 LLC -1" in text and "R² = 1" in text
    assert "0.1288" in text and "not drawn" in text
    assert "4 runs" in text
    assert len(fig.axes[0].lines) == 1  # only our fit line: the paper's is not drawn


def test_gsm_vs_llc_single_run():
    fig = plots.plot_gsm_vs_llc(pd.DataFrame([_run()]))
    assert "fit skipped" in _texts(fig)
    assert plots.fit_gsm_vs_llc(pd.DataFrame([_run()]))["skipped"]


# --------------------------------------------------------------------------- one-run panels


def _train_log(n=20, grok_at=12):
    step = np.arange(1, n + 1) * 100
    train_acc = np.minimum(1.0, np.arange(1, n + 1) / 4)
    val_acc = np.where(np.arange(n) >= grok_at, 1.0, 0.1)
    return pd.DataFrame(
        {
            "step": step,
            "train_loss": np.geomspace(1.0, 1e-3, n),
            "val_loss": np.geomspace(1.0, 1e-1, n),
            "train_acc": train_acc,
            "val_acc": val_acc,
        }
    )


def _llc_table(steps=(200, 600, 1000, 1400, 2000), chains=3, T=30, burn=10, diverge_last=True):
    rng = np.random.default_rng(0)
    rows = []
    nbeta, init = 5.0, 0.1
    for k, st in enumerate(steps):
        trace = init + 0.05 + 0.01 * rng.standard_normal((chains, T))
        diverged = np.zeros(chains, dtype=bool)
        if diverge_last and k == len(steps) - 1:
            trace[-1] = np.linspace(0.1, 1e3, T)
            diverged[-1] = True
        trace = trace.astype(np.float32).astype(float)
        per_chain = nbeta * (trace[:, burn:].mean(axis=1) - init)
        good = per_chain[~diverged]
        rows.append(
            {
                "step": st,
                "llc_mean": float(good.mean()),
                "llc_std": float(good.std()),
                "llc_per_chain": per_chain.tolist(),
                "diverged": diverged.tolist(),
                "init_loss": init,
                "nbeta": nbeta,
                "num_diverged": int(diverged.sum()),
                "reason": "",
                "loss_trace": [row.tolist() for row in trace],
                "seconds": 0.1,
            }
        )
    return pd.DataFrame(rows)


def test_draw_loss_llc_loss_label_kwarg():
    fig, ax = plt.subplots()
    plots.draw_loss_llc(ax, _train_log(), _llc_table())
    assert ax.get_ylabel() == "loss (centred MSE)"
    fig2, ax2 = plt.subplots()
    plots.draw_loss_llc(ax2, _train_log(), _llc_table(), loss_label="loss (cross-entropy)")
    assert ax2.get_ylabel() == "loss (cross-entropy)"


def test_fig3_and_fig13():
    fig = plots.plot_fig3(_train_log(), _llc_table(), "baseline")
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "baseline"
    fig13 = plots.plot_fig13_transformer(_train_log(), _llc_table(), "transformer")
    assert len(fig13.axes) == 2
    assert fig13.axes[0].get_ylabel() == "loss (cross-entropy)"
    assert fig13.axes[1].get_ylabel() == "estimated LLC"
    assert "val acc 0.99" in _texts(fig13)


@pytest.mark.parametrize("n_panels, n_rows", [(1, 1), (4, 2), (6, 2)])
def test_h2_panels_grid(n_panels, n_rows):
    panels = [(f"p = {p}", _train_log(), _llc_table()) for p in range(n_panels)]
    fig = plots.plot_h2_panels(panels)
    assert len(fig.axes) == 2 * n_panels  # loss axis + LLC twin per panel, spare cells removed
    main = fig.axes[:n_panels]
    assert main[0].get_legend() is not None
    assert all(ax.get_legend() is None for ax in main[1:])
    rows = {round(ax.get_position().y0, 3) for ax in main}
    assert len(rows) == n_rows


def test_h2_panels_empty():
    fig = plots.plot_h2_panels([])
    assert "no runs" in _texts(fig)


# --------------------------------------------------------------------------- Figure 14


def test_fig14_lines_per_p_regime_markers_and_reference_lines():
    rows = []
    for p in (11, 13):
        for frac, regime, acc in ((0.2, "no_generalisation", 0.1), (0.4, "grokking", 0.95)):
            for s in (0, 1):
                rows.append(
                    _run(
                        p=p,
                        train_frac=frac,
                        n_train=round(frac * p * p),
                        seed=s,
                        final_val_acc=acc + 0.01 * s,
                        regime=regime,
                    )
                )
    rows.append(_run(p=7, n_train=20, final_val_acc=1.0, regime="immediate_generalisation"))
    rows.append(_run(p=7, n_train=30, final_val_acc=math.nan))
    fig = plots.plot_fig14_scaling_regimes(pd.DataFrame(rows))
    ax = fig.axes[0]
    xs = {round(line.get_xdata()[0], 6) for line in ax.lines if len(line.get_xdata()) == 2}
    assert {2.75, 5.3} <= {round(x, 6) for x in xs}
    text = _texts(fig)
    for lab in ("no generalisation", "grokking", "immediate generalisation"):
        assert lab in text
    for lab in ("p = 7", "p = 11", "p = 13"):
        assert lab in text
    assert "Tian critical ratio 2.75" in text and "paper baseline 5.3" in text
    assert "dropped 1 run" in text
    assert "1-2 runs" in text
    # x of the p = 11 line is n_train / (p ln p), sorted
    p11 = [c for c in ax.containers if len(c.lines[0].get_xdata()) == 2]
    assert p11
    x = np.asarray(p11[0].lines[0].get_xdata())
    assert np.all(np.diff(x) > 0)


def test_fig14_single_run():
    fig = plots.plot_fig14_scaling_regimes(pd.DataFrame([_run()]))
    assert "one run per point" in _texts(fig)


# --------------------------------------------------------------------------- sampler / traces


def test_sampler_sensitivity_log_axes_and_lines():
    rows = [
        {
            "localization": g,
            "sampler_lr": lr,
            "llc_mean": 10 * lr * 1e3 * math.log(g + 2),
            "llc_std": 0.5,
        }
        for lr in (1e-4, 5e-4)
        for g in (1.0, 10.0, 100.0)
    ]
    rows.append({"localization": 1000.0, "sampler_lr": 1e-4, "llc_mean": math.nan, "llc_std": 0.1})
    fig = plots.plot_sampler_sensitivity(pd.DataFrame(rows))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert len(ax.containers) == 2
    assert _legend_labels(ax) == ["SGLD step size 0.0001", "SGLD step size 0.0005"]
    assert "dropped 1 run" in _texts(fig)


def test_sampler_sensitivity_negative_estimates_keep_linear_y():
    rows = [
        {"localization": 1.0, "sampler_lr": 1e-4, "llc_mean": -1.0, "llc_std": 0.1},
        {"localization": 10.0, "sampler_lr": 1e-4, "llc_mean": 2.0, "llc_std": math.nan},
    ]
    fig = plots.plot_sampler_sensitivity(pd.DataFrame(rows))
    assert fig.axes[0].get_yscale() == "linear"
    assert "some estimates are <= 0" in _texts(fig)


def test_llc_traces_default_steps_include_last_and_flag_divergence():
    table = _llc_table()
    fig = plots.plot_llc_traces(table)
    assert len(fig.axes) == 4
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[-1].startswith("checkpoint step 2000")
    assert titles[0].startswith("checkpoint step 200:")
    last = fig.axes[-1]
    dashed_red = [ln for ln in last.lines if ln.get_linestyle() == "--" and ln.get_color() == "red"]
    assert len(dashed_red) == 1
    labels = _legend_labels(last)
    assert any("(diverged)" in lab for lab in labels)
    assert any(lab.startswith("burn-in (10 steps)") for lab in labels)  # inferred burn-in
    assert "burn-in inferred" in _texts(fig)
    assert any(lab == "L(w*) at the checkpoint" for lab in labels)


def test_llc_traces_explicit_steps_and_burnin():
    table = _llc_table()
    fig = plots.plot_llc_traces(table, steps=[600, 999], num_burnin_steps=5)
    assert len(fig.axes) == 1
    assert "no estimate at step(s) [999]" in _texts(fig)
    assert any(lab.startswith("burn-in (5 steps)") for lab in _legend_labels(fig.axes[0]))
    fig2 = plots.plot_llc_traces(table.iloc[:0])
    assert "no LLC estimates" in _texts(fig2)


def test_bias_reduced_plot_shows_the_intercept():
    nbeta = np.array([13.0, 26.0, 52.0])
    table = pd.DataFrame({"nbeta": nbeta, "llc_mean": 4.0 + 26.0 / nbeta, "llc_std": 0.1})
    fig = plots.plot_bias_reduced(table)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("bias-reduced LLC = 4" in s for s in labels), labels
    plt.close(fig)
