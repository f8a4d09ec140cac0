rule train_model:
    input:
        split=get_split_path,
    output:
        checkpoints=f"{RESULTS}/runs/{{run}}/checkpoints.pt",
        train_log=f"{RESULTS}/runs/{{run}}/train_log.parquet",
    params:
        run=get_run,
        device=DEVICE,
        work_dir=get_work_dir,
        code=code_version("train"),
    log:
        f"{RESULTS}/logs/train_model/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_model/{{run}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    conda:
        "../../environment.yml"
    script:
        "../scripts/train_model.py"
