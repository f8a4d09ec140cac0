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
    priority: 20  # as train_model: a priority is not inherited by a job's inputs
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../../environment.yml"
    script:
        "../scripts/make_split.py"


rule train_model:
    # runs trained alone; runs of one setting that differ only in their seed are trained
    # together by the train_group_<id> rules below (same numbers, bitwise; faster)
    wildcard_constraints:
        run="|".join(PLAN.solo_runs) or "NO_RUNS",
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
    # training, then calibrations, before any LLC track: they are the long jobs every calibrated
    # track waits on; started last, they made the default run's tail (README, "Measured")
    priority: 20
    resources:
        mem_mb=2000,
        runtime=120,
    conda:
        "../../environment.yml"
    script:
        "../scripts/train_model.py"


for _group in PLAN.train_groups.values():

    rule:
        name:
            _group.rule_name
        input:
            splits=[r.split_path for r in _group.runs],
        output:
            checkpoints=[r.checkpoints for r in _group.runs],
            train_logs=[r.train_log for r in _group.runs],
        params:
            group=_group.params(),
            device=DEVICE,
            work_dirs=[r.work_dir for r in _group.runs],
            code=code_version("train"),
        log:
            f"{RESULTS}/logs/train_group/{_group.group_id}.log",
        benchmark:
            f"{RESULTS}/benchmarks/train_group/{_group.group_id}.tsv"
        # as train_model, for up to 6 runs at once (stacked parameters; K <= 256 at p = 53)
        threads: 1
        priority: 20  # as train_model
        resources:
            mem_mb=4000,
            runtime=240,
        conda:
            "../../environment.yml"
        script:
            "../scripts/train_group.py"
