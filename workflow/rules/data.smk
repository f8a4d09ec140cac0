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


rule train_model:
    input:
        split=get_run_split,
    output:
        checkpoints=f"{RESULTS}/runs/{{run}}/checkpoints.pt",
        train_log=f"{RESULTS}/runs/{{run}}/train_log.parquet",
    params:
        run=get_run_params,
        device=DEVICE,
        work_dir=get_work_dir,
        code=code_version("train"),
    log:
        f"{RESULTS}/logs/train_model/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_model/{{run}}.tsv"
    # measured: <= 37 s, 427 MB peak at K=1024 (20,000-step budget); the paper's
    # 100,000 steps and 1,000 checkpoints (650 MB of weights) stay within 2 GB and 2 h
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    conda:
        "../../environment.yml"
    script:
        "../scripts/train_model.py"
