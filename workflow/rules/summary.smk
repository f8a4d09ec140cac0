rule summarize_training:
    input:
        logs=[train_log_path(r) for r in RUNS],
    output:
        f"{RESULTS}/tables/training_summary.parquet",
    params:
        runs=get_run_meta(list(RUNS)),
        code=code_version("summary"),
    log:
        f"{RESULTS}/logs/summarize_training/training_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/summarize_training/training_summary.tsv"
    # measured: 2 s, 314 MB peak
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../environment.yml"
    script:
        "../scripts/summarize_training.py"


rule summarize_runs:
    input:
        training=f"{RESULTS}/tables/training_summary.parquet",
        llc=[llc_path(r) for r in LLC_RUNS],
    output:
        f"{RESULTS}/tables/runs.parquet",
    params:
        llc_runs=LLC_RUNS,
        sampler_ids=[run_sampler_id(r) for r in LLC_RUNS],
        code=code_version("summary"),
    log:
        f"{RESULTS}/logs/summarize_runs/runs.log",
    benchmark:
        f"{RESULTS}/benchmarks/summarize_runs/runs.tsv"
    # measured: 2 s, 377 MB peak
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../../environment.yml"
    script:
        "../scripts/summarize_runs.py"
