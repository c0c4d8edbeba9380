"""--kl-weight (issue 28): the KL's weight in the trained loss of X-VAE's stage 2 and of the standard
VAE. The reported objective stays the negative ELBO; the option is recorded, resumes exactly, and is
refused where it does not apply."""
import json
import os

import pytest
import torch
import yaml

import xvae_fast as xf
from xvae_fast.config import DEFAULT_KL_WEIGHT, TrainConfig, resolve
from xvae_fast.models.vae import VAE

from train_utils import TINY_CLUSTERS, TINY_DIGITS, cli, load_ck, train


def _resolved(*flags):
    from xvae_fast.train import parse_config
    cfg, _ = parse_config(list(flags))
    return resolve(cfg)


def test_presets_and_models_resolve_their_kl_weight():
    assert _resolved().kl_weight == DEFAULT_KL_WEIGHT
    assert _resolved("--preset", "paper").kl_weight == 1.0
    assert _resolved("--model", "vae").kl_weight == 1.0          # the paper's baseline keeps the ELBO
    assert _resolved("--model", "vae", "--kl-weight", "0.3").kl_weight == 0.3
    assert _resolved("--preset", "paper", "--kl-weight", "0.5").kl_weight == 0.5
    assert "kl_weight" not in _resolved("--model", "vamp").model_options.to_dict()   # not its option


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_bad_kl_weight_exits_2_naming_the_flag(value):
    p = cli("xvae_fast.train", "--kl-weight", value, "--out", "/nonexistent/never")
    assert p.returncode == 2 and "--kl-weight" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("model", ["vamp", "twostage", "uae"])
def test_kl_weight_is_refused_for_a_model_that_does_not_use_it(model):
    p = cli("xvae_fast.train", "--model", model, "--kl-weight", "0.5", "--out", "/nonexistent/never")
    assert p.returncode == 2 and "--kl-weight" in p.stderr and model in p.stderr


def _vae(kl_weight):
    torch.manual_seed(0)
    K = 4
    v = VAE("image", (1, 8, 8), K, "mixture", xf.Plan.preset("matched", K), hidden=(16, 16), kl="tight",
            routing="per-row", kl_weight=kl_weight)
    g = torch.Generator().manual_seed(1)
    v.set_prior(xf.MixturePrior(torch.full((K,), 1 / K), torch.randn(K, K, generator=g),
                                torch.rand(K, K, generator=g) + 0.5))
    return v


def test_the_trained_loss_weights_the_kl_and_the_reported_loss_is_the_elbo():
    x = torch.rand(8, 1, 8, 8)
    plain, weighted = _vae(1.0), _vae(0.25)
    t1 = plain.loss(x, generator=torch.Generator().manual_seed(3))
    tw = weighted.loss(x, generator=torch.Generator().manual_seed(3))
    assert "objective" not in t1                       # beta = 1: the ELBO, unchanged
    torch.testing.assert_close(tw["loss"], t1["loss"])  # same weights, same draw: the same ELBO
    torch.testing.assert_close(tw["objective"], tw["recon"] + 0.25 * tw["kl"])
    # the gradient is that of recon + 0.25 KL
    tw["objective"].backward()
    got = [p.grad.clone() for p in weighted.parameters() if p.grad is not None]
    ref = _vae(0.25)
    t = ref.loss(x, generator=torch.Generator().manual_seed(3))
    (t["recon"] + 0.25 * t["kl"]).backward()
    want = [p.grad for p in ref.parameters() if p.grad is not None]
    assert len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="kl_weight"):
        _vae(0.0)


def test_a_run_records_its_kl_weight_and_reports_the_elbo(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert train(*TINY_DIGITS, "--kl-weight", "1", "--no-outputs", "--out", a) == 0
    assert train(*TINY_DIGITS, "--kl-weight", "0.2", "--no-outputs", "--out", b) == 0
    sa, sb = (json.load(open(os.path.join(r, "summary.json"))) for r in (a, b))
    assert sa["kl_weight"] == 1.0 and sb["kl_weight"] == 0.2
    with open(os.path.join(b, "config.yaml")) as f:
        assert yaml.safe_load(f)["model_options"]["kl_weight"] == 0.2
    # the same stage 1; stage 2 trained a different loss
    assert sa["ae"] == sb["ae"]
    wa, wb = load_ck(a)["models"]["vae"], load_ck(b)["models"]["vae"]
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)
    # the reported objective is the negative ELBO: recon + KL
    assert sb["test"]["loss"] == pytest.approx(sb["test"]["recon"] + sb["test"]["kl"], rel=1e-5)
    # a smaller KL weight buys reconstruction with KL
    assert sb["test"]["kl"] > sa["test"]["kl"]


def test_kl_weight_resumes_exactly_and_cannot_change_on_resume(tmp_path):
    ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
    args = [*TINY_CLUSTERS, "--kl-weight", "0.3", "--no-outputs"]
    assert train(*args, "--out", ref) == 0
    assert train(*args, "--out", run, "--stop-after", "13") == 0     # mid stage 2
    p = cli("xvae_fast.train", "--resume", run, "--kl-weight", "0.5", "--no-progress")
    assert p.returncode == 2 and "kl_weight" in p.stderr.replace("-", "_")
    assert train("--resume", run, "--no-progress") == 0
    a, b = load_ck(ref), load_ck(run)
    assert a["step"] == b["step"]
    for k in a["models"]["vae"]:
        assert torch.equal(a["models"]["vae"][k], b["models"]["vae"][k]), k
    assert b["config"]["model_options"]["kl_weight"] == 0.3


def test_a_run_saved_before_the_option_reads_as_the_elbo():
    d = resolve(TrainConfig()).flat()     # the flat form runs saved before the nested model options
    d.pop("kl_weight")
    assert TrainConfig.from_saved({**d, "model": "xvae"}).kl_weight == 1.0
    assert TrainConfig.from_saved({**d, "model": "vae"}).kl_weight == 1.0
    assert "kl_weight" not in TrainConfig.from_saved({**d, "model": "vamp"}).model_options_dict()
