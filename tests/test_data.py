import numpy as np
import pytest

from grokking_llc.data import is_prime, make_split, n_train, split_tensors


@pytest.mark.parametrize("p, frac", [(7, 0.4), (53, 0.4), (11, 0.9)])
def test_split_sizes_and_labels(p, frac):
    df = make_split(p, frac, seed=0)
    assert list(df.columns) == ["a", "b", "c", "split"]
    assert len(df) == p * p
    assert (df["split"] == "train").sum() == round(frac * p * p)
    assert ((df["a"] + df["b"]) % p == df["c"]).all()
    # every pair exactly once
    assert len(set(zip(df["a"], df["b"], strict=True))) == p * p


def test_paper_baseline_size():
    assert n_train(53, 0.4) == 1124  # SPEC section 1: round(0.4 * 53^2)


def test_split_deterministic_and_seeded():
    a = make_split(13, 0.5, seed=3)
    b = make_split(13, 0.5, seed=3)
    c = make_split(13, 0.5, seed=4)
    assert a.equals(b)
    assert not (a["split"] == c["split"]).all()


@pytest.mark.parametrize("p", [1, 4, 9, 51])
def test_rejects_non_prime(p):
    with pytest.raises(ValueError, match="prime"):
        make_split(p, 0.5, 0)


@pytest.mark.parametrize("frac", [0.0, 1.0, -0.1, 1.5])
def test_rejects_bad_fraction(frac):
    with pytest.raises(ValueError, match="train_frac"):
        make_split(7, frac, 0)


def test_is_prime():
    assert [q for q in range(30) if is_prime(q)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]


def test_split_tensors():
    df = make_split(7, 0.5, 0)
    x, y = split_tensors(df, "train")
    assert x.shape == (round(0.5 * 49), 2) and y.shape == (x.shape[0],)
    np.testing.assert_array_equal((x[:, 0] + x[:, 1]) % 7, y)
