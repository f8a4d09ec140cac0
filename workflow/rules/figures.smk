# Plotting is cheap: run it on the submitting host under a cluster profile.
localrules:
    plot_figure,


rule plot_figure:
    input:
        unpack(get_figure_inputs),
    output:
        report(
            f"{RESULTS}/figures/{{figure}}.png",
            caption="../report/figure.rst",
            category="2. Figures",
        ),
    params:
        figure=get_figure_params,
        code=code_version("figures"),
    log:
        f"{RESULTS}/logs/plot_figure/{{figure}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_figure/{{figure}}.tsv"
    # measured: <= 7 s, 427 MB peak (the 20-panel H.2 figure)
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    conda:
        "../../environment.yml"
    script:
        "../scripts/plot_figure.py"
