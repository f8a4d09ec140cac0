rule make_split:
    output:
        f"{RESULTS}/splits/{{split}}.parquet",
    params:
        split=get_split_params,
        code=code_version("split"),
    log:
        f"{RESULTS}/logs/make_split/{{split}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/make_split/{{split}}.tsv"
    # measured on the default config: <= 2 s, 307 MB peak
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../../environment.yml"
    script:
        "../scripts/make_split.py"
