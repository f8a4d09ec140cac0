rule plot_fig3:
    input:
        unpack(get_fig3_inputs),
    output:
        f"{RESULTS}/figures/fig3_llc_tracks_generalisation.png",
    params:
        title=get_fig3_title,
        plots=config["plots"],
        code=code_version("plots"),
    log:
        f"{RESULTS}/logs/plot_fig3/fig3.log",
    benchmark:
        f"{RESULTS}/benchmarks/plot_fig3/fig3.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../environment.yml"
    script:
        "../scripts/plot_fig3.py"
