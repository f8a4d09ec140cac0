"""Column names of every table the pipeline writes, in one place.

Each table's columns are a tuple here; the names a reader picks out by hand are constants too,
so a rename is one edit. The writers build their rows from these (``LLCResult.summary`` gives
:data:`LLC_ESTIMATE` in order, the LLC stage adds :data:`LLC_IDS` and :data:`LLC_ARRAYS`).
"""

from __future__ import annotations

# ---------------------------------------------------------------- names readers pick out
RUN_ID, SAMPLER, SAMPLER_ID, STEP = "run_id", "sampler", "sampler_id", "step"
LLC_MEAN, LLC_STD, LLC_SE = "llc_mean", "llc_std", "llc_se"
VALID, STATUS, INVALID_REASON = "valid", "status", "invalid_reason"
TRAIN_LOSS, VAL_LOSS, TRAIN_ACC, VAL_ACC = "train_loss", "val_loss", "train_acc", "val_acc"
SELECTION, SETTING_VALID, SECONDS = "selection", "setting_valid", "seconds"

# ---------------------------------------------------------------- tables
# results/splits/<split>.parquet (grokking_llc.core.data.make_split)
SPLIT = ("a", "b", "c", "split")

# results/runs/<run>/train_log.parquet: one row per checkpoint (SPEC section 3)
TRAIN_LOG = (STEP, TRAIN_LOSS, VAL_LOSS, TRAIN_ACC, VAL_ACC)

# one LLC estimate and its validity (grokking_llc.sampling.llc.LLCResult.summary, SPEC 4 and 10)
LLC_ESTIMATE = (
    LLC_MEAN, LLC_STD, LLC_SE, "init_loss", "nbeta", "num_burnin_steps", "burn_in",
    "num_steps", "num_diverged", "reason", "r_hat", "r_hat_tail", "r_hat_distance", "drift_z",
    "ess", "mala_acceptance", "mean_distance", "prior_radius", "grad_loc_ratio", "sampler_kind",
    "ess_tail", "drift_se", "llc_bound", "grad_norm", "gradient_bias", "stationary",
    "localisation_dominated", "step_ok", "at_minimum", VALID, STATUS, INVALID_REASON,
)  # fmt: skip

# results/llc/<run>/<sampler>/<track>.parquet: ids, the estimate, per-chain arrays
LLC_IDS = (RUN_ID, SAMPLER_ID, "backend", STEP)
LLC_ARRAYS = ("llc_per_chain", "diverged", "loss_trace")
LLC_TRACK = (*LLC_IDS, *LLC_ESTIMATE, SETTING_VALID, SELECTION, *LLC_ARRAYS, SECONDS)

# results/tables/runs.parquet: the training summary's columns, then these per named sampler
RUN_LLC = (
    SAMPLER, SAMPLER_ID, "final_llc", "final_llc_std", "final_llc_valid", "final_llc_status",
    "final_llc_invalid_reason", "final_step_llc", "max_llc", "max_llc_step", "max_llc_valid",
    "max_llc_status", "max_llc_invalid_reason", "max_llc_all", "max_llc_all_step", "n_llc",
    "n_llc_valid", "n_llc_not_a_minimum",
)  # fmt: skip

# results/calibration/<shape>-<hash>.parquet: the checks of a candidate (beside LLC_ESTIMATE)
CALIBRATION_CHECKS = (
    "eps_change", "gamma_change", "gamma_bias", "nbeta_change", "llc_rescaled_2",
    "llc_rescaled_0.5", "rescale_change", "reference_llc", "reference_change", "checks_passed",
    "check_failures",
)  # fmt: skip

# results/tables/claims.parquet: one row per claim and named sampler
CLAIM_AS_PUBLISHED = (
    "value_as_published", "ci_low_as_published", "ci_high_as_published",
    "verdict_as_published", "reason_as_published",
)  # fmt: skip
CLAIM = (
    "claim", "figure", SAMPLER, "statistic", "paper_value", "value", "ci_low", "ci_high",
    "n_runs", "n_valid", "verdict", "reason", *CLAIM_AS_PUBLISHED,
)  # fmt: skip
