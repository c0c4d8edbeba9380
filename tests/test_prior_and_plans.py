import pytest
import torch

import xvae_fast as xf
from xvae_fast import CoordinatePlan, Plan


def test_prior_validation_errors():
    w, M, S = torch.tensor([0.5, 0.5]), torch.zeros(2, 2), torch.ones(2, 2)
    xf.MixturePrior(w, M, S)  # valid
    with pytest.raises(ValueError, match="weights must be non-negative"):
        xf.MixturePrior(torch.tensor([1.5, -0.5]), M, S)
    with pytest.raises(ValueError, match="weights must sum to 1"):
        xf.MixturePrior(torch.tensor([0.5, 0.6]), M, S)
    with pytest.raises(ValueError, match="stds must be > 0"):
        xf.MixturePrior(w, M, torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="stds must have the shape of means"):
        xf.MixturePrior(w, M, torch.ones(2, 3))
    with pytest.raises(ValueError, match="weights must have shape \\(2,\\)"):
        xf.MixturePrior(torch.ones(3) / 3, M, S)
    with pytest.raises(ValueError, match="means must have shape \\(C, K\\)"):
        xf.MixturePrior(w, torch.zeros(2), S)
    with pytest.raises(ValueError, match="means contains NaN"):
        xf.MixturePrior(w, torch.tensor([[0.0, float("nan")], [0.0, 0.0]]), S)
    with pytest.raises(TypeError, match="weights must be a floating-point tensor"):
        xf.MixturePrior(torch.tensor([1, 0]), M, S)


def test_prior_buffers_and_state_dict_round_trip():
    p = xf.MixturePrior(torch.tensor([0.25, 0.75]), torch.randn(2, 2), torch.rand(2, 2) + 0.1)
    assert {n for n, _ in p.named_buffers()} == {"weights", "means", "stds"}
    assert not any(True for _ in p.parameters())
    q = xf.MixturePrior(torch.tensor([0.5, 0.5]), torch.zeros(2, 2), torch.ones(2, 2))
    q.load_state_dict(p.state_dict())
    assert torch.equal(q.means, p.means)
    m, s = p.diag()
    assert torch.equal(m, torch.diagonal(p.means)) and torch.equal(s, torch.diagonal(p.stds))


def test_presets_match_spec_table():
    K = 6
    full = Plan.preset("full", K)
    assert all(c == CoordinatePlan("prior", "none", "prior", "transport") for c in full.coordinates)
    inter = Plan.preset("interleaved", K)
    assert inter.coordinates[1] == CoordinatePlan("home", "none", "prior", "transport")
    assert inter.coordinates[0] == CoordinatePlan("posterior", "row", "prior", "direct")
    # floor(K / 2) transported coordinates: one at K = 3, as in the paper.
    assert sum(c.mode == "transport" for c in Plan.preset("interleaved", 3).coordinates) == 1
    assert inter.needs_pi_q and not full.needs_pi_q
    s23, s13 = Plan.preset("split-2/3", K), Plan.preset("split-1/3", K)
    assert [c.mode for c in s23.coordinates] == ["transport"] * 4 + ["direct"] * 2
    assert [c.mode for c in s13.coordinates] == ["transport"] * 2 + ["direct"] * 4
    for name, route, source in [("k1-pp-np", "prior", "prior_home"), ("k1-pq-np", "posterior", "prior_home"),
                                ("k1-pp-nq", "prior", "posterior"), ("k1-pq-nq", "posterior", "posterior")]:
        p = Plan.preset(name, K)
        assert p.coordinates[:-1] == (CoordinatePlan("home", "none", "prior", "transport"),) * (K - 1)
        assert p.coordinates[-1] == CoordinatePlan(route, "none", source, "direct")
        assert p.num_posterior == (1 if source == "posterior" else 0)


def test_plan_dict_round_trip():
    p = Plan.preset("k1-pq-nq", 5)
    assert Plan.from_dict(p.to_dict()) == p
