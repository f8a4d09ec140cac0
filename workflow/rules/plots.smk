# Plotting rules are cheap: run them on the submitting host under a cluster profile.
localrules:
    plot_summary,
    plot_track,
    plot_h2_panels,
    plot_llc_traces,
    plot_llc_grid,


rule plot_summary:
    input:
        get_summary_figure_input,
    output:
        report(
            f"{RESULTS}/figures/{{summary_figure}}.png",
            caption="../report/summary_figure.rst",
            category="Summaries",
        ),
    params:
        figure=get_summary_figure_params,
        plots=config["plots"],
        code=code_version("plots"),
    log:
        f"{RESULTS}/logs/plot_summary/{{summary_figure}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_summary/{{summary_figure}}.tsv"
    # measured: <= 3 s, 351 MB peak
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../environment.yml"
    script:
        "../scripts/plot_summary.py"


rule plot_track:
    input:
        unpack(get_track_inputs),
    output:
        report(
            f"{RESULTS}/figures/{{track_figure}}.png",
            caption="../report/track_figure.rst",
            category="Training runs",
        ),
    params:
        figure=get_track_params,
        plots=config["plots"],
        code=code_version("plots"),
    log:
        f"{RESULTS}/logs/plot_track/{{track_figure}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_track/{{track_figure}}.tsv"
    # measured: <= 3 s, 356 MB peak
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../environment.yml"
    script:
        "../scripts/plot_track.py"


rule plot_h2_panels:
    input:
        unpack(get_h2_inputs),
    output:
        report(
            f"{RESULTS}/figures/fig_h2_panels.png",
            caption="../report/other_figure.rst",
            category="Training runs",
        ),
    params:
        titles=[run_label(r) for r in H2_RUNS],
        plots=config["plots"],
        code=code_version("plots"),
    log:
        f"{RESULTS}/logs/plot_h2_panels/fig_h2_panels.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_h2_panels/fig_h2_panels.tsv"
    # measured: 7 s, 427 MB peak (20 panels)
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    conda:
        "../../environment.yml"
    script:
        "../scripts/plot_h2_panels.py"


rule plot_llc_traces:
    input:
        get_traces_input,
    output:
        report(
            f"{RESULTS}/figures/fig_llc_traces.png",
            caption="../report/other_figure.rst",
            category="Sampler",
        ),
    params:
        plots=config["plots"],
        code=code_version("plots"),
    log:
        f"{RESULTS}/logs/plot_llc_traces/fig_llc_traces.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_llc_traces/fig_llc_traces.tsv"
    # measured: 3 s, 366 MB peak
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../environment.yml"
    script:
        "../scripts/plot_llc_traces.py"


rule plot_llc_grid:
    input:
        get_grid_figure_input,
    output:
        report(
            f"{RESULTS}/figures/{{grid_figure}}.png",
            caption="../report/other_figure.rst",
            category="Sampler",
        ),
    params:
        plots=config["plots"],
        code=code_version("plots"),
    log:
        f"{RESULTS}/logs/plot_llc_grid/{{grid_figure}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_llc_grid/{{grid_figure}}.tsv"
    # measured: 3 s, 347 MB peak
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../environment.yml"
    script:
        "../scripts/plot_llc_grid.py"
