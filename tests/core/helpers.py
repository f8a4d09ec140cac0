"""The paper's published settings, stated once for the tests that pin them (tests/core/
test_settings.py, tests/pipeline/test_config.py). They are written here from the paper and SPEC,
independently of grokking_llc.core.settings: the package must agree with them, so they are never
read back from it."""

import math

__all__ = ["PAPER_NBETA", "PAPER_TRAINING", "SPEC_4"]

# SPEC section 3: the paper's baseline training run, every key written out (independent of the
# editable defaults).
PAPER_TRAINING = dict(
    p=53, train_frac=0.4, data_seed=0, seed=0, model="quadratic", width=1024, model_options={},
    loss="centred_mse", lr=1e-4, weight_decay=1e-5, batch_size=128, max_steps=100_000,
    checkpoint_every=100, early_stop_patience=10, early_stop_acc=0.99,
)  # fmt: skip

# SPEC section 4, the paper's sampler: "eps = 5e-4, nbeta = default (26.38 at batch 128),
# gamma = 5.0, 3 chains, 100 burn-in steps, 500 draws"; SGLD, no SGLD weight decay; batch 128
# (DevInterp's default nbeta = m / ln m); section 10: "drops a fixed 100 burn-in steps of 600".
SPEC_4 = dict(
    kind="sgld", lr=5e-4, nbeta=None, localization=5.0, num_chains=3, num_burnin_steps=100,
    burn_in="fixed", num_draws=500, batch_size=128, weight_decay=0.0, num_init_loss_batches=32,
    max_steps=None,
)  # fmt: skip

PAPER_NBETA = 128 / math.log(128)  # 26.38: the default nbeta at the paper's batch of 128
