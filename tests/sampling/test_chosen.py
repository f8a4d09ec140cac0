"""grokking_llc.sampling.chosen: the setting a calibration table chose, read back."""

import json

import pandas as pd
import pytest

from grokking_llc.sampling.chosen import chosen_edge_fraction, chosen_sampler


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


def test_the_edge_fraction_is_the_chosen_rows_own_scale():
    """The chosen rows at the search's own scale (rescale 1) give one lr_scaled; a rescaled
    row of the chosen setting does not count; no column or two values: None."""
    table = pd.DataFrame({"chosen": [False, True, True, True],
                          "lr_scaled": [0.2, 0.1, 0.05, 0.1],
                          "rescale": [1.0, 1.0, 2.0, 1.0]})  # fmt: skip
    assert chosen_edge_fraction(table) == 0.1
    assert chosen_edge_fraction(table.drop(columns="lr_scaled")) is None
    assert chosen_edge_fraction(table.assign(rescale=1.0)) is None  # 0.1 and 0.05: ambiguous
    assert chosen_edge_fraction(table.assign(chosen=False)) is None
