rule compute_theory:
    input:
        checkpoints=f"{RESULTS}/runs/{{run}}/checkpoints.pt",
        llc=f"{RESULTS}/llc/{{run}}/{{sampler}}.parquet",
    output:
        f"{RESULTS}/theory/{{run}}/{{sampler}}.parquet",
    params:
        run=get_run,
        code=code_version("theory"),
    log:
        f"{RESULTS}/logs/compute_theory/{{run}}/{{sampler}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/compute_theory/{{run}}/{{sampler}}.tsv"
    # measured: < 1 s per run (the counts are closed forms and a graph walk)
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../environment.yml"
    script:
        "../scripts/compute_theory.py"
