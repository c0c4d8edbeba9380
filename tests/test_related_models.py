"""The related systems through the shared machinery: the model protocol (models/protocol.py), the
trainer, exact resume (also at the boundary between two stages), sample / evaluate / compare, bad
input, and the paper-scale architectures on random tensors."""
from __future__ import annotations

import json
import os

import pytest
import torch

from xvae_fast.config import MODELS, TrainConfig, resolve
from xvae_fast.data import DataInfo
from xvae_fast.errors import CheckpointError, ConfigError
from xvae_fast.models import RECIPES, build_recipe
from xvae_fast.training import load_run, train
from xvae_fast.training import checkpoint as ckpt

QUICK = dict(limit=200, batch_size=50, progress=False, outputs=False, eval_every=0, threads=1)


def _cfg(tmp_path, name, **kw):
    base = dict(QUICK, out=str(tmp_path / name))
    base.update(kw)
    return TrainConfig(**base)


def _weights(run_dir):
    ck = ckpt.load_checkpoint(run_dir)
    return ck, {f"{m}.{k}": v for m, sd in ck["models"].items() if sd is not None for k, v in sd.items()}


def test_every_model_is_a_registered_recipe():
    assert set(MODELS) == set(RECIPES) and MODELS[0] == "xvae"
    assert {"twostage", "uae"} <= set(MODELS)


def test_options_of_other_models_are_refused():
    for kw, flag in ((dict(uae_variant="utvae"), "--uae-variant"), (dict(pseudo_inputs=7), "--pseudo-inputs"),
                     (dict(plan="full"), "--plan")):
        with pytest.raises(ConfigError, match=f"{flag} is an option of --model .*; --model twostage does not"):
            resolve(TrainConfig(model="twostage", **kw))
    cfg = resolve(TrainConfig(model="twostage"))
    assert cfg.likelihood == "gaussian" and cfg.epochs_stage2 == 2 * cfg.epochs_vae
    assert cfg.stage2_latent == cfg.latent
    u = resolve(TrainConfig(model="uae"))
    assert "stage2_width" not in u.model_options.to_dict() and u.likelihood == "mse"


@pytest.mark.parametrize("kw, match", [
    (dict(model="twostage", epochs_vae=0), "--epochs-vae must be >= 1"),
    (dict(model="twostage", likelihood="bernoulli"), "uses --likelihood gaussian"),
    (dict(model="uae", likelihood="gaussian"), "uses --likelihood mse"),
    (dict(model="uae", uae_variant="bogus"), "--uae-variant must be one of"),
    (dict(model="uae", uae_form="tf"), "--uae-form must be one of"),
    (dict(model="uae", uae_heuristic="random-pairs", uae_points=3), "must be even"),
    (dict(model="uae", uae_heuristic="top-pairs", uae_points=30, latent=10), "only n = 10 axes"),
    (dict(model="uae", uae_kappa=-20.0, latent=10), "--uae-kappa must be a number > -n"),
    (dict(model="uae", uae_beta=-1.0), "--uae-beta must be a finite number >= 0"),
    (dict(model="twostage", stage2_input="median"), "--stage2-input must be one of"),
    (dict(model="twostage", stage2_width=0), "--stage2-width must be an integer >= 1"),
    (dict(model="xvae", arch="paper"), "--arch is an option of --model twostage and uae; --model xvae does not use it"),
])
def test_bad_options_are_refused_with_the_option_named(kw, match):
    with pytest.raises(ConfigError, match=match):
        resolve(TrainConfig(**kw))


@pytest.mark.parametrize("dataset", ["digits", "clusters"])
def test_twostage_trains_both_stages_and_samples(tmp_path, dataset):
    res = train(_cfg(tmp_path, "ts", dataset=dataset, model="twostage", epochs_vae=2, epochs_stage2=2,
                     outputs=True, n_samples=16), verbose=False)
    s = res.summary
    assert res.status == "done" and s["model"] == "twostage"
    assert set(s["stages"]) == {"stage1", "stage2"} and s["test"] == s["stages"]["stage1"]["test"]
    assert all(torch.isfinite(torch.tensor(v)) for v in s["stages"]["stage2"]["test"].values())
    assert s["likelihood_gamma"] > 0 and s["stage2_gamma"] > 0
    assert "mmd_stage1_codes" in s and "mmd_stage2_codes" in s
    ck = ckpt.load_checkpoint(res.run_dir)
    assert ck["stage"] == "done" and set(ck["optimizers"]) == {"stage1", "stage2"}
    n_train = len([r for r in ck["history"] if r["stage"] == "stage1"])
    assert n_train == 2 and ck["codes"]["train"].shape[1] == 2 * s["latent"]
    # the stage-2 rows log stage 2's own variance
    g2 = [r["gamma"] for r in ck["history"] if r["stage"] == "stage2"]
    assert len(g2) == 2 and abs(g2[-1] - s["stage2_gamma"]) < 1e-6
    cfg, info, model, _ = load_run(res.run_dir)
    g = torch.Generator().manual_seed(0)
    x = model.generate(5, generator=g)
    assert x.shape == (5,) + tuple(info.shape) and torch.isfinite(x).all()
    assert os.path.exists(os.path.join(res.run_dir, "samples.png"))


@pytest.mark.parametrize("dataset", ["digits", "clusters"])
def test_uae_trains_fits_the_expost_mixture_and_samples(tmp_path, dataset):
    res = train(_cfg(tmp_path, "u", dataset=dataset, model="uae", epochs_vae=2, outputs=True,
                     n_samples=16, uae_points=4), verbose=False)
    s = res.summary
    assert res.status == "done" and s["uae_variant"] == "uae" and s["uae_form"] == "code"
    assert set(s["test"]) == {"loss", "recon", "reg", "gp"} and s["test"]["gp"] > 0
    assert s["expost_fit"]["kind"] == "gmm-full"
    assert os.path.exists(os.path.join(res.run_dir, "expost_fit.json"))
    cfg, info, model, _ = load_run(res.run_dir)
    assert model.is_expost_fitted
    x = model.generate(6, generator=torch.Generator().manual_seed(1))
    assert x.shape == (6,) + tuple(info.shape) and torch.isfinite(x).all()


def test_uae_cannot_sample_before_its_expost_fit(tmp_path):
    cfg = _cfg(tmp_path, "u", model="uae", epochs_vae=2, stop_after=3)
    res = train(cfg, verbose=False)
    assert res.status == "stopped"
    with pytest.raises(CheckpointError, match="has not reached the stage it samples from"):
        load_run(res.run_dir)


def _resume_matches(tmp_path, stop_at, **kw):
    full = train(_cfg(tmp_path, "full", **kw), verbose=False)
    part = train(_cfg(tmp_path, "part", stop_after=stop_at, **kw), verbose=False)
    assert part.status == "stopped" and part.step == stop_at
    resumed = train(TrainConfig(resume=part.run_dir, progress=False), verbose=False)
    assert resumed.status == "done" and resumed.step == full.step
    ck_a, wa = _weights(full.run_dir)
    ck_b, wb = _weights(resumed.run_dir)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    la = [r["train_loss"] for r in ck_a["history"]]
    lb = [r["train_loss"] for r in ck_b["history"]]
    assert la == lb
    return ck_a, ck_b


@pytest.mark.parametrize("stop_at", [3, 8, 9, 13])
def test_twostage_resumes_exactly_also_at_the_stage_boundary(tmp_path, stop_at):
    # 200 examples at batch 50: 4 steps per epoch; stage 1 is steps 1-8, stage 2 steps 9-16
    ck_a, ck_b = _resume_matches(tmp_path, stop_at, model="twostage", epochs_vae=2, epochs_stage2=2)
    assert torch.equal(ck_a["codes"]["train"], ck_b["codes"]["train"])


@pytest.mark.parametrize("variant", ["uae", "vae", "rae-gp"])
def test_uae_resumes_exactly(tmp_path, variant):
    _resume_matches(tmp_path, 5, model="uae", epochs_vae=2, uae_variant=variant, uae_points=4)


def test_stage2_without_stage1_codes_is_a_clear_error(tmp_path):
    res = train(_cfg(tmp_path, "ts", model="twostage", epochs_vae=1, epochs_stage2=1, stop_after=6),
                verbose=False)
    path = ckpt.checkpoint_path(res.run_dir)
    ck = ckpt.load_checkpoint(res.run_dir)
    assert ck["stage"] == "stage2"
    ck["codes"] = None                      # a damaged run: stage 2 without the stage-1 codes
    ckpt.atomic_save(ck, path)
    with pytest.raises(CheckpointError, match="needs the frozen stage-1 codes"):
        train(TrainConfig(resume=res.run_dir, progress=False), verbose=False)


def test_train_cli_exit_codes(tmp_path, capsys):
    from xvae_fast.train import main
    assert main(["--model", "twostage", "--epochs-vae", "0", "--out", str(tmp_path / "a")]) == 2
    assert "--epochs-vae must be >= 1" in capsys.readouterr().err
    assert main(["--model", "uae", "--uae-heuristic", "top-pairs", "--uae-points", "40",
                 "--out", str(tmp_path / "b")]) == 2
    assert "pairs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--model", "uae", "--uae-variant", "nope"])
    assert exc.value.code == 2


@pytest.mark.parametrize("model, shape, extra", [
    ("twostage", (1, 28, 28), {}),
    ("twostage", (3, 32, 32), {}),
    ("twostage", (3, 64, 64), {}),
    ("uae", (3, 32, 32), dict(uae_variant="uae", uae_points=2)),
    ("uae", (3, 64, 64), dict(uae_variant="utvae-w", uae_points=1)),
])
def test_paper_architectures_run_one_step_on_random_tensors(model, shape, extra):
    kind_name = "mnist" if shape[1] == 28 else "celeba:/nonexistent"
    cfg = TrainConfig(dataset=kind_name, model=model, arch="paper", latent=16, **extra)
    cfg = resolve(cfg)
    info = DataInfo(name="random", kind="image", shape=shape)
    recipe = build_recipe(cfg, info)
    torch.manual_seed(0)
    x = torch.rand(2, *shape)
    for stage in [s for s in recipe.stages() if s.kind == "train"]:
        batch = x if stage.name != "stage2" else torch.randn(2, 2 * cfg.latent)
        opt = recipe.make_optimizer(stage)
        terms = recipe.loss(stage, batch)
        assert torch.isfinite(terms["loss"])
        opt.zero_grad()
        terms["loss"].backward()
        grads = [p.grad for p in recipe.stage_parameters(stage) if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        opt.step()


def test_evaluate_reports_the_twostage_stage1_reference(tmp_path):
    from xvae_fast.evaluate import main
    res = train(_cfg(tmp_path, "ts", model="twostage", epochs_vae=1, epochs_stage2=1), verbose=False)
    rc = main(["--run", res.run_dir, "--metrics", "rec,fd", "--n-fake", "100", "--n-real", "100",
               "--classifier-steps", "30", "--alpha", "1", "--no-figures", "--quiet", "--threads", "1"])
    assert rc == 0
    main_report = json.load(open(os.path.join(res.run_dir, "eval.json")))
    ref = json.load(open(os.path.join(res.run_dir, "eval_stage1.json")))
    assert main_report["model"] == "twostage" and ref["model"] == "stage1"
    a = main_report["metrics"]["fd_lenet"]["samples"]["value"]
    b = ref["metrics"]["fd_lenet"]["samples"]["value"]
    assert a > 0 and b > 0 and a != b                      # two different samplers
    # the reconstructions are stage 1's in both
    assert main_report["metrics"]["rec"]["value"] == pytest.approx(ref["metrics"]["rec"]["value"])


def test_compare_has_the_related_rows(tmp_path):
    from xvae_fast.compare import run_comparison
    rows = run_comparison("digits", 1, str(tmp_path / "cmp"), ["vae", "related"], quick=True, verbose=False)
    by = {r["key"]: r for r in rows}
    from xvae_fast.compare import RELATED_KEYS
    assert list(by) == ["vae"] + RELATED_KEYS
    assert RELATED_KEYS[:6] == ["twostage", "twostage-stage1", "uae", "utvae", "vae-k", "avae"]
    assert by["avae"]["status"] == "trained" and by["avae"]["test_recon"] is not None
    assert by["twostage"]["status"] == "trained" and by["twostage"]["test_objective"] is not None
    assert by["twostage-stage1"]["run"] == by["twostage"]["run"]
    assert by["twostage-stage1"].get("test_objective") is None and by["twostage-stage1"]["status"] == "from twostage"
    for key, variant in (("uae", "uae"), ("utvae", "utvae"), ("vae-k", "vae")):
        assert json.load(open(os.path.join(by[key]["run"], "summary.json")))["uae_variant"] == variant
    with pytest.raises(ConfigError, match="select it too"):
        run_comparison("digits", 1, str(tmp_path / "cmp2"), ["twostage-stage1"], quick=True, verbose=False)


def test_evaluate_uae_reports_interpolations_and_sample_cli(tmp_path):
    from xvae_fast.evaluate import main
    from xvae_fast.sample import main as sample_main
    res = train(_cfg(tmp_path, "u", model="uae", epochs_vae=1, uae_points=2), verbose=False)
    rc = main(["--run", res.run_dir, "--metrics", "rec,fd", "--n-fake", "100", "--n-real", "100",
               "--classifier-steps", "30", "--alpha", "1", "--no-figures", "--quiet", "--threads", "1"])
    assert rc == 0
    rep = json.load(open(os.path.join(res.run_dir, "eval.json")))
    fd = rep["metrics"]["fd_lenet"]
    assert fd["interp"]["value"] > 0 and fd["interp"]["n_interp"] == fd["recon"]["n_real"]
    assert not os.path.exists(os.path.join(res.run_dir, "eval_expost.json"))   # no X-VAE reference
    out = tmp_path / "s.png"
    assert sample_main(["--run", res.run_dir, "--n", "8", "--out", str(out)]) == 0
    assert out.exists()
