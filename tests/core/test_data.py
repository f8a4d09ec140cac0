import numpy as np
import pytest
import torch

from grokking_llc.core.data import is_prime, make_split, n_train, split_tensors


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


# --------------------------------------------------------------------------- mutation-proofing
# (issue 15: each test below fails for a small deliberate bug in grokking_llc.core.data)


@pytest.mark.parametrize("frac", [0.0, 1.0, 1.5])
def test_fraction_outside_open_interval_refused_by_its_own_check(frac):
    # the range check itself, not the later n check, must refuse these (SPEC section 1: 0 < f < 1)
    with pytest.raises(ValueError, match=r"train_frac must lie in \(0, 1\)"):
        make_split(7, frac, 0)


def test_training_set_size_bounds_are_one_and_p_squared_minus_one():
    # n = round(0.02 * 49) = round(0.98) = 1: the smallest split allowed, one training pair
    df = make_split(7, 0.02, seed=0)
    assert (df["split"] == "train").sum() == 1 and (df["split"] == "val").sum() == 48
    # n = round(0.995 * 49) = round(48.755) = 49 = p^2: no validation pair left, refused
    with pytest.raises(ValueError, match=r"^train_frac=0.995 gives n=49 training pairs out of 49$"):
        make_split(7, 0.995, seed=0)
    # n = round(0.01 * 49) = round(0.49) = 0: refused
    with pytest.raises(ValueError, match=r"gives n=0 training pairs out of 49"):
        make_split(7, 0.01, seed=0)


def test_split_columns_dtypes_and_categories():
    df = make_split(11, 0.4, seed=1)
    assert [str(df[c].dtype) for c in "abc"] == ["int16"] * 3
    assert list(df["split"].cat.categories) == ["train", "val"]
    # every row is labelled: n = round(0.4 * 121) = 48 train, 73 val
    assert (df["split"] == "train").sum() == 48 and (df["split"] == "val").sum() == 73
    # rows ordered by (a, b): row i is (i // p, i % p)
    i = np.arange(121)
    np.testing.assert_array_equal(df["a"], i // 11)
    np.testing.assert_array_equal(df["b"], i % 11)


def test_train_rows_are_numpy_default_rng_choice_without_replacement():
    """Reference draw of SPEC section 1: default_rng(seed).choice(p^2, n, replace=False)."""
    p, frac, seed = 13, 0.3, 5
    n = round(frac * p * p)
    expected = np.zeros(p * p, dtype=bool)
    expected[np.random.default_rng(seed).choice(p * p, size=n, replace=False)] = True
    df = make_split(p, frac, seed)
    np.testing.assert_array_equal(df["split"].to_numpy() == "train", expected)


def test_split_tensors_rows_dtype_and_device():
    df = make_split(7, 0.5, 2)
    train = df[df["split"] == "train"]
    val = df[df["split"] == "val"]
    for part, name in ((train, "train"), (val, "val")):
        x, y = split_tensors(df, name)
        assert x.dtype == torch.int64 and y.dtype == torch.int64
        np.testing.assert_array_equal(x.numpy(), part[["a", "b"]].to_numpy())
        np.testing.assert_array_equal(y.numpy(), part["c"].to_numpy())
    # the device argument reaches both tensors (the meta device needs no accelerator)
    x, y = split_tensors(df, "val", device="meta")
    assert x.device.type == "meta" and y.device.type == "meta"
    assert x.shape == (len(val), 2) and y.shape == (len(val),)
