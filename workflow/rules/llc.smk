localrules:
    gather_llc,


rule estimate_llc:
    input:
        checkpoints=f"{RESULTS}/runs/{{run}}/checkpoints.pt",
        split=get_split_path,
    output:
        f"{RESULTS}/llc/{{run}}/{{sampler}}/chunk{{chunk}}of{{chunks}}.parquet",
    params:
        run=get_run,
        llc=get_llc_params,
        device=DEVICE,
        code=code_version("llc"),
    log:
        f"{RESULTS}/logs/estimate_llc/{{run}}/{{sampler}}/chunk{{chunk}}of{{chunks}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/estimate_llc/{{run}}/{{sampler}}/chunk{{chunk}}of{{chunks}}.tsv"
    # measured: <= 170 s for 46 checkpoints at K=1024, 478 MB peak; 1,000 checkpoints
    # at K=1024 load 650 MB of weights and take ~30 min per chunk
    threads: 1
    resources:
        mem_mb=3000,
        runtime=240,
    conda:
        "../../environment.yml"
    script:
        "../scripts/estimate_llc.py"


rule gather_llc:
    input:
        get_llc_chunks,
    output:
        f"{RESULTS}/llc/{{run}}/{{sampler}}.parquet",
    log:
        f"{RESULTS}/logs/gather_llc/{{run}}/{{sampler}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/gather_llc/{{run}}/{{sampler}}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    run:
        # In-process (no interpreter start-up per run): concatenate the chunks, sorted by step.
        gather_tables(list(input), output[0], sort="step", log_path=log[0])


rule estimate_llc_grid:
    input:
        checkpoints=f"{RESULTS}/runs/{{run}}/checkpoints.pt",
        split=get_split_path,
    output:
        f"{RESULTS}/llc_grid/{{grid}}/{{run}}-{{sampler}}.parquet",
    params:
        run=get_run,
        llc=config["llc"],
        grid=get_grid_list,
        device=DEVICE,
        code=code_version("llc"),
    log:
        f"{RESULTS}/logs/estimate_llc_grid/{{grid}}/{{run}}-{{sampler}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/estimate_llc_grid/{{grid}}/{{run}}-{{sampler}}.tsv"
    # measured: <= 28 s for 12 grid points at K=1024, 415 MB peak
    threads: 1
    resources:
        mem_mb=3000,
        runtime=120,
    conda:
        "../../environment.yml"
    script:
        "../scripts/estimate_llc_grid.py"
