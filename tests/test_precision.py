"""`--precision` and `--channels-last`: bf16 autocast for the networks with the fused ops, KL and
likelihood sums kept float32; exact resume under each; the resolved choices recorded; bad values
refused with exit 2."""
import json
import os

import pytest
import torch

import xvae_fast as xf
from xvae_fast.config import TrainConfig
from xvae_fast.errors import ConfigError
from xvae_fast.models import get_ops
from xvae_fast.models.likelihood import build_likelihood
from xvae_fast.models.vae import VAE
from xvae_fast.ops.plans import Plan
from xvae_fast.train import main as train_main
from xvae_fast.training.precision import native_bf16, resolve_channels_last, resolve_precision

from train_utils import TINY_DIGITS, load_ck, train
from test_train_resume import _assert_same_run


def _summary(run):
    with open(os.path.join(run, "summary.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("precision,layout", [("bf16", "off"), ("fp32", "on")])
def test_runs_resume_exactly_under_each_precision_and_layout(tmp_path, precision, layout):
    """A bf16 run (or a channels-last one), stopped mid-stage-2 and resumed, ends with exactly the
    weights, optimizer state, prior and history of the uninterrupted run; summary.json records the
    resolved choices."""
    flags = [*TINY_DIGITS, "--precision", precision, "--channels-last", layout, "--no-outputs"]
    ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
    assert train(*flags, "--out", ref) == 0
    assert train(*flags, "--out", run, "--stop-after", "8") == 0
    assert load_ck(run)["step"] == 8 and load_ck(run)["stage"] == "vae"
    assert train("--resume", run, "--no-progress") == 0
    _assert_same_run(load_ck(ref), load_ck(run))
    s = _summary(run)
    assert s["precision"] == precision and s["channels_last"] is (layout == "on")


def test_bf16_and_channels_last_change_rounding_only(tmp_path):
    """The same seed under fp32 / bf16 / channels-last: bf16 changes the numbers (it did run in bf16)
    but stays within bf16's rounding of the fp32 run; channels-last differs from the contiguous run in
    float32 rounding only."""
    objective = {}
    for name, flags in (("fp32", ["--precision", "fp32", "--channels-last", "off"]),
                        ("bf16", ["--precision", "bf16", "--channels-last", "off"]),
                        ("cl", ["--precision", "fp32", "--channels-last", "on"])):
        run = str(tmp_path / name)
        # at the ELBO (--kl-weight 1): the tolerance below was calibrated there; the default weight
        # 0.25 lets 4 epochs on 160 digits amplify rounding differences (7% apart, measured)
        assert train(*TINY_DIGITS, *flags, "--kl-weight", "1", "--no-outputs", "--out", run) == 0
        objective[name] = _summary(run)["test"]["loss"]
        ck = load_ck(run)
        objective[name + "_w"] = ck["models"]["vae"]["decoder.fc.0.weight"]
    assert objective["bf16"] != objective["fp32"]
    assert objective["bf16"] == pytest.approx(objective["fp32"], rel=0.05)
    assert objective["cl"] == pytest.approx(objective["fp32"], rel=1e-4)
    torch.testing.assert_close(objective["cl_w"], objective["fp32_w"], rtol=1e-3, atol=1e-4)


def _mnist_shaped_vae():
    torch.manual_seed(0)
    K = 16
    model = VAE("image", (1, 28, 28), K, "mixture", Plan.preset("matched", K), ops=get_ops(),
                kl="tight", likelihood=build_likelihood("bernoulli", "image"))
    g = torch.Generator().manual_seed(1)
    w = torch.rand(K, generator=g) + 0.1
    model.set_prior(xf.MixturePrior(w / w.sum(), torch.randn(K, K, generator=g),
                                    torch.rand(K, K, generator=g) + 0.5))
    return model


def test_under_bf16_autocast_the_fused_ops_and_sums_stay_float32():
    """The networks run in bf16 (their activations are bf16), but the heads hand float32 to the fused
    KL and transport ops and the likelihood sums in float32: every loss term is float32 and within
    bf16's rounding of the float32 loss; gradients reach every parameter in float32."""
    model = _mnist_shaped_vae()
    x = torch.rand(32, 1, 28, 28).round()
    seen = {}

    def record(module, inputs, output):
        seen.setdefault("dtype", output.dtype)
    hook = model.decoder.net[0].register_forward_hook(record)
    gen = torch.Generator().manual_seed(3)
    ref = model.loss(x, generator=gen)
    assert seen.pop("dtype") == torch.float32
    gen = torch.Generator().manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, mu, logvar = model.encode(x)
        assert mu.dtype == logvar.dtype == torch.float32
        terms = model.loss(x, generator=gen)
    hook.remove()
    assert seen["dtype"] == torch.bfloat16          # the decoder did run in bf16
    for k, v in terms.items():
        assert v.dtype == torch.float32, k
    assert float(terms["loss"].detach()) == pytest.approx(float(ref["loss"].detach()), rel=0.02)
    assert float(terms["kl"].detach()) == pytest.approx(float(ref["kl"].detach()), rel=0.05)
    terms["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name


def test_auto_resolves_to_what_the_hardware_does_natively():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    conv, mlp = _mnist_shaped_vae(), torch.nn.Sequential(torch.nn.Linear(2, 2))
    assert resolve_channels_last("auto", cpu, "fp32", [conv]) is True
    assert resolve_channels_last("auto", cpu, "fp32", [mlp]) is False     # nothing to reorder
    assert resolve_channels_last("on", cpu, "fp32", [mlp]) is False
    assert resolve_channels_last("off", cpu, "fp32", [conv]) is False
    assert resolve_channels_last("auto", torch.device("cuda"), "fp32", [conv]) is False
    assert resolve_channels_last("auto", torch.device("cuda"), "bf16", [conv]) is True
    with pytest.raises(ValueError, match="--precision"):
        resolve_precision("fp16", cpu)


def test_bad_precision_values_exit_2(tmp_path, capsys):
    for flags in (["--precision", "fp16"], ["--precision", "BF16"], ["--channels-last", "yes"],
                  ["--amp", "fp32"], ["--amp", "bf16", "--precision", "fp32"]):
        try:
            code = train_main([*TINY_DIGITS, *flags, "--out", str(tmp_path / "x")])
        except SystemExit as e:      # argparse's own refusal
            code = e.code
        assert code == 2, flags
    err = capsys.readouterr().err
    assert "--precision" in err and "--channels-last" in err and "old name of --precision" in err
    assert not os.path.exists(tmp_path / "x")
    with pytest.raises(ConfigError, match="--precision must be one of"):
        from xvae_fast.config import resolve
        resolve(TrainConfig(precision="half"))


def test_the_old_amp_option_still_reads():
    """A config file or checkpoint written with `amp` (before --precision) keeps its meaning."""
    assert TrainConfig.from_dict({"amp": "bf16"}).precision == "bf16"
    assert TrainConfig.from_dict({"amp": "none"}).precision == "fp32"
    assert TrainConfig.from_saved({"amp": "none", "dataset": "digits"}).precision == "fp32"
    # a checkpoint from before both options trained in fp32, contiguous: it resumes that way
    old = TrainConfig.from_saved({"dataset": "digits"})
    assert old.precision == "fp32" and old.channels_last == "off"


def test_a_busy_machine_is_named_with_the_thread_count_to_use():
    from xvae_fast.training.threads import oversubscription_warning as warn
    assert warn(0.1, 2, 2) is None                       # quiet
    assert warn(0.3, 2, 1) is None                       # one thread never waits on another
    msg = warn(1.0, 2, 2)
    assert msg and "--threads 1" in msg and "1.00 on 2 CPU cores" in msg
    assert "--threads 1" in warn(3.5, 2, 2)              # fully busy: at least one thread
    assert warn(1.0, 8, 4) is None                       # enough free cores
    assert "--threads 6" in warn(2.0, 8, 8)
