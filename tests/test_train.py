import pandas as pd
import pytest
import torch

from grokking_llc.core.data import make_split
from grokking_llc.core.settings import TrainConfig
from grokking_llc.training.checkpoints import load_checkpoints
from grokking_llc.training.train import LOG_COLUMNS, train, train_run

CFG = TrainConfig(
    p=7, train_frac=0.6, width=16, lr=1e-2, weight_decay=1e-4, batch_size=16,
    max_steps=120, checkpoint_every=20,
)  # fmt: skip


@pytest.fixture(scope="module")
def split():
    return make_split(CFG.p, CFG.train_frac, CFG.data_seed)


def test_log_schema_and_checkpoints(split, tmp_path):
    res = train(CFG, split, tmp_path / "w")
    assert tuple(res.log.columns) == LOG_COLUMNS
    assert res.log["step"].tolist() == list(range(0, CFG.max_steps + 1, CFG.checkpoint_every))
    assert res.checkpoints["steps"].tolist() == res.log["step"].tolist()
    assert res.checkpoints["params"]["W"].shape == (7, 14, 16)
    assert res.log["train_loss"].iloc[-1] < res.log["train_loss"].iloc[0]


def test_same_seed_same_numbers(split, tmp_path):
    a = train(CFG, split, tmp_path / "a")
    b = train(CFG, split, tmp_path / "b")
    pd.testing.assert_frame_equal(a.log, b.log)
    assert torch.equal(a.checkpoints["params"]["V"], b.checkpoints["params"]["V"])
    c = train(TrainConfig(**{**CFG.to_dict(), "seed": 1}), split, tmp_path / "c")
    assert not torch.equal(a.checkpoints["params"]["V"], c.checkpoints["params"]["V"])


@pytest.mark.parametrize("kill_at", [20, 60, 100])
def test_resume_after_interruption_gives_uninterrupted_result(split, tmp_path, kill_at):
    whole = train(CFG, split, tmp_path / "whole")
    work = tmp_path / "killed"
    assert train(CFG, split, work, _stop_after_step=kill_at) is None  # the "kill"
    # a stray temporary file, as a kill during a write would leave, is ignored
    (work / ".state.pt.abc.tmp").write_bytes(b"garbage")
    resumed = train(CFG, split, work)
    pd.testing.assert_frame_equal(whole.log, resumed.log)
    for name, value in whole.checkpoints["params"].items():
        assert torch.equal(value, resumed.checkpoints["params"][name]), name


def test_early_stop(split, tmp_path):
    cfg = TrainConfig(**{**CFG.to_dict(), "early_stop_acc": 0.0, "early_stop_patience": 3})
    res = train(cfg, split, tmp_path / "w")
    # the accuracy condition holds at every checkpoint: steps 0, 20, 40 make three
    assert res.log["step"].tolist() == [0, 20, 40]


def test_train_run_writes_outputs_and_cleans_up(split, tmp_path):
    work = tmp_path / "partial"
    train_run(
        CFG, split, log_path=tmp_path / "log.parquet", checkpoints_path=tmp_path / "ck.pt",
        work_dir=work,
    )  # fmt: skip
    assert not work.exists() and not (tmp_path / "partial.discard").exists()
    assert tuple(pd.read_parquet(tmp_path / "log.parquet").columns) == LOG_COLUMNS
    ck = load_checkpoints(tmp_path / "ck.pt", train_log=tmp_path / "log.parquet")
    assert ck["run_id"] == CFG.run_id and ck["config"] == CFG.to_dict()
    assert not list(tmp_path.glob("*.tmp"))


def test_resume_refuses_other_runs_state(split, tmp_path):
    train(CFG, split, tmp_path / "w", _stop_after_step=20)
    other = TrainConfig(**{**CFG.to_dict(), "lr": 5e-3})
    with pytest.raises(RuntimeError, match="belongs to run"):
        train(other, split, tmp_path / "w")


def test_cuda_requested_without_gpu_is_a_clear_error(split, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        train(CFG, split, tmp_path / "w", device="cuda")
