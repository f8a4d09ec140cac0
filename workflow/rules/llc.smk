localrules:
    gather_llc,


rule estimate_llc:
    input:
        unpack(get_llc_inputs),
    output:
        f"{RESULTS}/llc/{{run}}/{{sampler}}/{{track}}-chunk{{chunk}}of{{chunks}}.parquet",
    params:
        job=get_llc_params,
        device=DEVICE,
        code=code_version("llc"),
        provenance=get_llc_input_provenance,
    log:
        f"{RESULTS}/logs/estimate_llc/{{run}}/{{sampler}}/{{track}}-chunk{{chunk}}of{{chunks}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/estimate_llc/{{run}}/{{sampler}}/{{track}}-chunk{{chunk}}of{{chunks}}.tsv"
    # measured: <= 170 s for 46 checkpoints at K=1024 (paper's sampler), 478 MB peak
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
        f"{RESULTS}/llc/{{run}}/{{sampler}}/{{track}}.parquet",
    params:
        code=code_version("gather"),
    log:
        f"{RESULTS}/logs/gather_llc/{{run}}/{{sampler}}/{{track}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/gather_llc/{{run}}/{{sampler}}/{{track}}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    run:
        # In-process: pandas only, no interpreter start-up per track.
        gather_in_process(list(input), output[0], log[0], get_llc_provenance(wildcards))


rule estimate_llc_grid:
    input:
        unpack(get_grid_inputs),
    output:
        f"{RESULTS}/llc_grid/{{grid}}/{{run}}-{{sampler}}.parquet",
    params:
        job=get_grid_params,
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


# One job per model shape of a calibrated sampler: {calibration} is <shape>-<hash>
# (grokking_llc.pipeline.plan.CalibrationJob.name).
rule calibrate_sampler:
    input:
        unpack(get_calibration_inputs),
    output:
        f"{RESULTS}/calibration/{{calibration}}.parquet",
    params:
        job=get_calibration_params,
        device=DEVICE,
        code=code_version("calibrate"),
    log:
        f"{RESULTS}/logs/calibrate_sampler/{{calibration}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/calibrate_sampler/{{calibration}}.tsv"
    threads: 1
    priority: 10  # after training, before the LLC tracks (see train_model)
    resources:
        mem_mb=4000,
        runtime=240,
    conda:
        "../../environment.yml"
    script:
        "../scripts/calibrate_sampler.py"
