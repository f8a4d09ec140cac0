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
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../../environment.yml"
    script:
        "../scripts/make_split.py"
