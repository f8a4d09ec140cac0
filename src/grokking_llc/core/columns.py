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
INIT_LOSS, NBETA, BURN_IN, NUM_BURNIN_STEPS = "init_loss", "nbeta", "burn_in", "num_burnin_steps"
R_HAT, ESS, MALA_ACCEPTANCE, STATIONARY = "r_hat", "ess", "mala_acceptance", "stationary"
LOCALISATION_DOMINATED = "localisation_dominated"
LLC_PER_CHAIN, DIVERGED, LOSS_TRACE = "llc_per_chain", "diverged", "loss_trace"
# a run's settings (training summary and runs table; grokking_llc.core.settings.TrainConfig)
MODEL, LOSS, P, WIDTH, TRAIN_FRAC = "model", "loss", "p", "width", "train_frac"
DATA_SEED, SEED = "data_seed", "seed"
LR, WEIGHT_DECAY, BATCH_SIZE, MAX_STEPS = "lr", "weight_decay", "batch_size", "max_steps"
# the training summary (grokking_llc.science.gsm.summarize_training)
STUDIES, N_TRAIN, GSM, REGIME = "studies", "n_train", "gsm", "regime"
FINAL_TRAIN_ACC, FINAL_VAL_ACC = "final_train_acc", "final_val_acc"
# the runs table's LLC of a run (RUN_LLC): its final estimate and its maximum
FINAL_LLC, FINAL_LLC_VALID = "final_llc", "final_llc_valid"
MAX_LLC, MAX_LLC_VALID, MAX_LLC_ALL = "max_llc", "max_llc_valid", "max_llc_all"
# a sampler grid (results/llc_grid/<grid>/...): the settings varied beside LLC_ESTIMATE
LOCALIZATION, SAMPLER_LR = "localization", "sampler_lr"
# a calibration table (grokking_llc.sampling.calibrate): an estimate's role and place
ROLE, TARGET, KIND, RESOLUTION, RESCALE = "role", "target", "kind", "resolution", "rescale"
CHOSEN, CHOSEN_VALID, REASON, SETTINGS = "chosen", "chosen_valid", "reason", "settings"

# ---------------------------------------------------------------- tables
# results/splits/<split>.parquet (grokking_llc.core.data.make_split)
SPLIT = ("a", "b", "c", "split")

# results/runs/<run>/train_log.parquet: one row per checkpoint (SPEC section 3)
TRAIN_LOG = (STEP, TRAIN_LOSS, VAL_LOSS, TRAIN_ACC, VAL_ACC)

# one LLC estimate and its validity (grokking_llc.sampling.llc.LLCResult.summary, SPEC 4 and 10)
LLC_ESTIMATE = (
    LLC_MEAN, LLC_STD, LLC_SE, INIT_LOSS, NBETA, NUM_BURNIN_STEPS, BURN_IN,
    "num_steps", "num_diverged", REASON, R_HAT, "r_hat_tail", "r_hat_distance", "drift_z",
    ESS, MALA_ACCEPTANCE, "mean_distance", "prior_radius", "grad_loc_ratio", "sampler_kind",
    "ess_tail", "drift_se", "llc_bound", "grad_norm", "gradient_bias", STATIONARY,
    LOCALISATION_DOMINATED, "step_ok", "at_minimum", VALID, STATUS, INVALID_REASON,
)  # fmt: skip

# results/llc/<run>/<sampler>/<track>.parquet: ids, the estimate, per-chain arrays
LLC_IDS = (RUN_ID, SAMPLER_ID, "backend", STEP)
LLC_ARRAYS = (LLC_PER_CHAIN, DIVERGED, LOSS_TRACE)
LLC_TRACK = (*LLC_IDS, *LLC_ESTIMATE, SETTING_VALID, SELECTION, *LLC_ARRAYS, SAMPLER_LR, SECONDS)

# results/tables/runs.parquet: the training summary's columns, then these per named sampler
RUN_LLC = (
    SAMPLER, SAMPLER_ID, FINAL_LLC, "final_llc_std", FINAL_LLC_VALID, "final_llc_status",
    "final_llc_invalid_reason", "final_step_llc", MAX_LLC, "max_llc_step", MAX_LLC_VALID,
    "max_llc_status", "max_llc_invalid_reason", MAX_LLC_ALL, "max_llc_all_step", "n_llc",
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
