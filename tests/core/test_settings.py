"""grokking_llc.core.settings: the paper's protocol written once and pinned (SPEC section 4), in
every config that names it and in the estimator's arithmetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from grokking_llc.core.settings import (
    PAPER_PROTOCOL,
    SCHEMA_PATH,
    ConfigError,
    SamplerConfig,
    sampler_id,
)
from grokking_llc.pipeline.config import load_workflow_config, validate_config
from grokking_llc.pipeline.plan import build_plan
from grokking_llc.sampling.llc import estimate_llc, llc_from_traces

from .helpers import PAPER_NBETA, SPEC_4  # the paper's values (SPEC section 4)

REPO = Path(__file__).resolve().parents[2]


def _paper_sampler(cfg: dict):
    [s] = [s for s in build_plan(cfg).samplers.values() if s.protocol == "paper"]
    return s


class _Linear(torch.nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(d, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def _mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((pred - target) ** 2).mean()


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml", "paper-width.yaml"])
def test_every_config_runs_the_paper_protocol_exactly(name):
    cfg = load_workflow_config([REPO / "config" / name])
    spec = cfg["llc"]["samplers"]["paper"]
    assert spec["protocol"] == "paper" and spec["calibration"] is None
    s = _paper_sampler(cfg)
    assert s.name == "paper" and s.as_published and not s.calibrated
    got = s.settings.to_dict()
    for key, value in SPEC_4.items():
        assert got[key] == value, f"{name}: paper sampler {key} = {got[key]}, SPEC 4 says {value}"
    assert s.settings.resolved_nbeta == pytest.approx(PAPER_NBETA) == pytest.approx(26.38, 1e-3)
    assert s.settings.num_steps == 600
    assert s.settings.seed == 0
    # named by its expanded settings: the same id as writing them out
    written = SamplerConfig(**{**SPEC_4, "seed": 0, "target_ess": 400.0})
    assert s.sampler_id == sampler_id("fast", written) == "fast-d8c9f689"


def test_the_protocol_does_not_follow_the_schema_defaults(tmp_path):
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    props = schema["properties"]["llc"]["properties"]["samplers"]["additionalProperties"]
    props = props["properties"]
    props["burn_in"]["default"] = "auto" if props["burn_in"]["default"] == "fixed" else "fixed"
    props["num_draws"]["default"] = 400
    props["num_burnin_steps"]["default"] = 7
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(schema))
    base = {"studies": {"baseline": {}}, "figures": {"fig3": {"study": "baseline"}}}
    cfg = validate_config(
        {**base, "llc": {"samplers": {"paper": {"protocol": "paper"}, "free": {}}}}, path
    )
    free, paper = cfg["llc"]["samplers"]["free"], cfg["llc"]["samplers"]["paper"]
    assert free["num_draws"] == 400 and free["num_burnin_steps"] == 7  # the patch took effect
    assert free["burn_in"] == props["burn_in"]["default"]
    for key, value in SPEC_4.items():
        assert paper[key] == value, key


@pytest.mark.parametrize("key", sorted(PAPER_PROTOCOL))
def test_writing_a_protocol_key_is_a_config_error(key):
    value = 1 if key != "burn_in" else "fixed"
    cfg = {"llc": {"samplers": {"paper": {"protocol": "paper", key: value}}}}
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    msg = str(err.value)
    assert "\n" not in msg and f"llc.samplers.paper.{key}" in msg and "protocol" in msg


def test_protocol_is_not_calibrated_and_unknown_protocols_are_refused():
    with pytest.raises(ConfigError) as err:
        validate_config(
            {"llc": {"samplers": {"p": {"protocol": "paper", "calibration": "per_shape"}}}}
        )
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("config error at llc.samplers.p.calibration:")
    assert "cannot be calibrated" in msg
    with pytest.raises(ConfigError, match=r"llc\.samplers\.p\.protocol"):
        validate_config({"llc": {"samplers": {"p": {"protocol": "tian"}}}})
    # meta keys stay free: seed, backend, studies, strides
    cfg = validate_config(
        {"llc": {"samplers": {"p": {"protocol": "paper", "seed": 3, "backend": "devinterp"}}}}
    )
    assert cfg["llc"]["samplers"]["p"]["seed"] == 3
    plain = validate_config({"llc": {"samplers": {"p": {}}}})
    assert plain["llc"]["samplers"]["p"]["protocol"] is None
    assert build_plan(plain).samplers["p"].as_published is False


def test_the_estimator_under_the_protocol_drops_exactly_100_steps():
    """SPEC section 4's arithmetic on a small checkpoint: a least-squares fit (d = 3, n = 256,
    seed 0), the paper sampler's settings from the real config: 3 chains of 600 steps, the first
    100 dropped, llc = nbeta (mean of the 500 draws - L(w*)) per chain, averaged over chains."""
    cfg = load_workflow_config([REPO / "config" / "config.yaml"])
    sampler = _paper_sampler(cfg).settings
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(256, 1, generator=g)
    model = _Linear(3)
    with torch.no_grad():
        model.w.copy_(torch.linalg.lstsq(x, y).solution)
    res = estimate_llc(model, x, y, _mse, sampler, seed=0, backend="fast")
    trace = res.loss_trace
    assert trace.shape == (3, 600) and res.burn_in == 100 and res.num_steps == 600
    assert res.nbeta == pytest.approx(PAPER_NBETA)
    by_hand = PAPER_NBETA * (trace[:, 100:].mean(axis=1) - res.init_loss)
    np.testing.assert_allclose(res.llc_per_chain, by_hand, rtol=1e-12)
    assert res.llc_mean == pytest.approx(by_hand.mean(), rel=1e-12)
    # one step more or less of burn-in is a different number
    for burn in (99, 101):
        other = PAPER_NBETA * (trace[:, burn:].mean(axis=1) - res.init_loss)
        assert not np.allclose(other, by_hand, rtol=1e-9)
    # the bookkeeping alone, on a trace made by hand: a plateau the auto rule would cut later
    ramp = np.concatenate([np.linspace(5.0, 1.0, 300), np.ones(300)])[None, :].repeat(3, axis=0)
    ramp = ramp + 0.01 * np.random.default_rng(0).standard_normal(ramp.shape)
    fixed = llc_from_traces(ramp, 0.5, PAPER_NBETA, sampler.num_burnin_steps, burn_in="fixed")
    assert fixed.burn_in == 100
    np.testing.assert_allclose(
        fixed.llc_per_chain, PAPER_NBETA * (ramp[:, 100:].mean(axis=1) - 0.5), rtol=1e-12
    )
