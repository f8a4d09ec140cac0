rule compute_theory:
    input:
        unpack(get_theory_inputs),
    output:
        f"{RESULTS}/theory/{{run}}.parquet",
    params:
        job=get_theory_params,
        code=code_version("theory"),
    log:
        f"{RESULTS}/logs/compute_theory/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/compute_theory/{{run}}.tsv"
    # measured: < 1 s per run (the counts are closed forms and a graph walk)
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../environment.yml"
    script:
        "../scripts/compute_theory.py"


rule summarize_training:
    input:
        logs=[r.train_log for r in PLAN.runs.values()],
    output:
        PLAN.training_summary_path,
    params:
        runs=PLAN.training_summary_params(),
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
        training=PLAN.training_summary_path,
        llc=[e["path"] for e in PLAN.runs_table_entries()],
    output:
        PLAN.runs_table_path,
    params:
        tracks=PLAN.runs_table_entries(),
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


rule score_claims:
    input:
        **PLAN.claims_inputs(),
    output:
        claims=PLAN.claims_path,
        html=report(
            f"{RESULTS}/report/scorecard.html",
            caption="../report/scorecard.rst",
            category="1. Scorecard",
        ),
    params:
        job=PLAN.claims_params(),
        code=code_version("claims"),
    log:
        f"{RESULTS}/logs/score_claims/claims.log",
    benchmark:
        f"{RESULTS}/benchmarks/score_claims/claims.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../environment.yml"
    script:
        "../scripts/score_claims.py"
