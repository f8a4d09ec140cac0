"""grokking_llc.sampling.chosen: the setting a calibration table chose, read back."""

import json

import pandas as pd
import pytest

from grokking_llc.sampling.chosen import chosen_sampler


def test_chosen_sampler_refuses_tables_without_one_choice():
    s = {"lr": 1e-4, "nbeta": 160.0, "localization": 10.0}
    table = pd.DataFrame({
        "chosen": [False, True, True], "chosen_valid": [False, False, False],
        "reason": ["why"] * 3,
        "settings": [json.dumps({**s, "lr": 1.0}), json.dumps(s), json.dumps(dict(reversed(
            s.items())))],
    })  # fmt: skip
    assert chosen_sampler(table) == (s, False, "why")  # key order does not matter
    with pytest.raises(ValueError, match="chose no setting: why"):
        chosen_sampler(table.assign(chosen=False))
    with pytest.raises(ValueError, match="marks 2 different settings"):
        chosen_sampler(table.assign(chosen=True))
    with pytest.raises(ValueError, match="chose no setting"):
        chosen_sampler(pd.DataFrame({"settings": ["{}"]}))
