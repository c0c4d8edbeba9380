"""`xvae_fast.load`: a trained model of every family as a Python object (xvae_fast/trained.py), the
`sample --reference` option, and the README's Python API example, run as a user would."""
import importlib
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import xvae_fast
from xvae_fast.errors import CheckpointError, ConfigError
from xvae_fast.evaluation.nll import NLLUndefinedError, importance_sampled_nll
from xvae_fast.models.uae import UnscentedAE
from xvae_fast.training import load_recipe, load_reference

from train_utils import FAMILY_RUNS, one_thread

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = list(FAMILY_RUNS)
REFERENCES = {"xvae": ("expost",), "xvae-std": ("expost",), "twostage": ("stage1",), "avae": ("normal",)}
DETERMINISTIC_ENCODER = {"avae"}
NO_DENSITY = {"twostage", "uae", "avae", "introprior"}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _examples(model, n, seed):
    """n data-unit examples: images in [0, 1], vectors around the data (not the model space)."""
    g = _gen(seed)
    if model.info.kind == "image":
        return torch.rand((n,) + model.shape, generator=g)
    return torch.randn((n,) + model.shape, generator=g) * 2 + 3


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.mark.parametrize("key", FAMILIES)
def test_load_samples_encodes_decodes_every_family(family_runs, key):
    model = xvae_fast.load(family_runs[key])
    assert model.name == FAMILY_RUNS[key][FAMILY_RUNS[key].index("--model") + 1]
    assert model.stage in ("done", "outputs") and model.device == torch.device("cpu")
    assert not any(m.training for m in model.network.modules())          # eval() by default
    K, shape = model.latent, model.shape

    x = model.sample(6, generator=_gen(1))
    assert x.shape == (6,) + shape and x.dtype == torch.float32 and torch.isfinite(x).all()
    if model.info.kind == "image":
        assert x.min() >= 0 and x.max() <= 1
    assert torch.equal(model.sample(6, generator=_gen(1)), x)             # repeatable
    assert not torch.equal(model.sample(6, generator=_gen(2)), x)

    # the data-unit boundary against the network in model space
    info, net = model.info, model.network
    xs = _examples(model, 5, 3)
    post = model.encode(xs)
    out = net.encode(info.to_model_space(xs))
    mean, logvar = (out, None) if key in DETERMINISTIC_ENCODER else out[1:]
    assert post.mean.shape == (5, K) and torch.equal(post.mean, mean)
    if key in DETERMINISTIC_ENCODER:
        assert post.logvar is None
    else:
        assert post.logvar.shape == (5, K) and torch.equal(post.logvar, logvar)
    z = torch.randn(4, K, generator=_gen(4))
    assert torch.equal(model.decode(z), info.to_data_space(net.decode(z)))

    # round trip: the posterior mean decoded, and the model's own reconstruction (as evaluate's)
    rec = model.reconstruct(xs, mean=True)
    assert rec.shape == xs.shape and torch.equal(rec, model.decode(post.mean))
    r1 = model.reconstruct(xs, generator=_gen(5))
    assert torch.equal(r1, model.reconstruct(xs, generator=_gen(5)))
    assert torch.equal(r1, info.to_data_space(net(info.to_model_space(xs), _gen(5))["xhat"]))


def test_vector_data_goes_through_the_standardisation(family_runs):
    model = xvae_fast.load(family_runs["xvae-std"])
    assert model.info.mean is not None and not torch.allclose(model.info.std, torch.ones(2))
    xs = _examples(model, 4, 0)
    raw = model.network.encode(xs)[1]                     # what forgetting the transform would give
    assert not torch.allclose(model.encode(xs).mean, raw)
    assert torch.equal(model.encode(xs).mean, model.network.encode((xs - model.info.mean) / model.info.std)[1])


@pytest.mark.parametrize("key", FAMILIES)
def test_interpolation_starts_and_ends_at_the_inputs_codes(family_runs, key):
    model = xvae_fast.load(family_runs[key])
    x0, x1 = _examples(model, 3, 10), _examples(model, 3, 11)
    x, codes = model.interpolate(x0, x1, steps=5, return_codes=True)
    a, b = model.encode(x0).mean, model.encode(x1).mean
    assert x.shape == (3, 5) + model.shape and codes.shape == (3, 5, model.latent)
    assert torch.equal(codes[:, 0], a) and torch.equal(codes[:, -1], b)
    assert torch.allclose(x[:, 0], model.decode(a), atol=1e-6) and torch.allclose(x[:, -1], model.decode(b), atol=1e-6)
    assert model.interpolation == ("slerp" if key == "uae" else "linear")
    mid = codes[:, 2]
    if key == "uae":   # spherical: the midpoint's norm is not the chord's
        assert torch.allclose(mid, UnscentedAE.slerp(a, b, 0.5), atol=1e-6)
        assert not torch.allclose(mid, (a + b) / 2, atol=1e-4)
        # the UAE's own interpolation, which evaluate measures
        own = model.network.interpolate(model.info.to_model_space(x0), model.info.to_model_space(x1), 0.5)
        assert torch.allclose(x[:, 2], model.info.to_data_space(own), atol=1e-5)
    else:
        assert torch.allclose(mid, (a + b) / 2, atol=1e-6)
    # the other method when asked for
    other = "linear" if key == "uae" else "slerp"
    _, c2 = model.interpolate(x0, x1, steps=5, method=other, return_codes=True)
    want = (a + b) / 2 if other == "linear" else UnscentedAE.slerp(a, b, 0.5)
    assert torch.equal(c2[:, 0], a) and torch.equal(c2[:, -1], b) and torch.allclose(c2[:, 2], want, atol=1e-6)


@pytest.mark.parametrize("key", FAMILIES)
def test_reference_samplers_by_name(family_runs, key):
    model = xvae_fast.load(family_runs[key])
    assert model.references == REFERENCES.get(key, ())
    for name in model.references:
        r = model.sample(7, reference=name, generator=_gen(3))
        assert r.shape == (7,) + model.shape and torch.isfinite(r).all()
        assert not torch.equal(r, model.sample(7, generator=_gen(3)))    # another sampler
    with pytest.raises(ConfigError, match=r"reference 'nope': a \w+ model has no such reference sampler") as e:
        model.sample(3, reference="nope")
    assert f"it has: {', '.join(model.references) or 'none'}" in str(e.value)


def test_expost_reference_is_load_reference(family_runs):
    """The ex-post reference by name is the one evaluate and compare use (load_reference)."""
    run = family_runs["xvae-std"]
    _, info, expost, _ = load_reference(run, "expost")
    want = info.to_data_space(expost.generate(9, generator=_gen(6)))
    assert torch.equal(xvae_fast.load(run).sample(9, reference="expost", generator=_gen(6)), want)
    _, info, recipe, _ = load_recipe(family_runs["twostage"])
    want = info.to_data_space(recipe.generative.generate_stage1_only(5, generator=_gen(2)))
    assert torch.equal(xvae_fast.load(family_runs["twostage"]).sample(5, reference="stage1", generator=_gen(2)), want)


def test_sample_cli_reference_option(family_runs, tmp_path, capsys):
    from xvae_fast.sample import main
    run = family_runs["xvae"]
    out = str(tmp_path / "e.npy")
    assert main(["--run", run, "--reference", "expost", "--n", "5", "--seed", "4", "--out", out]) == 0
    want = xvae_fast.load(run).sample(5, reference="expost", generator=_gen(4))
    assert np.array_equal(np.load(out), want.numpy())
    assert main(["--run", run, "--n", "5", "--seed", "4", "--out", out]) == 0
    assert not np.array_equal(np.load(out), want.numpy())                # the model's own samples
    capsys.readouterr()
    assert main(["--run", run, "--reference", "stage1", "--n", "5", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "reference 'stage1'" in err and "it has: expost" in err and "Traceback" not in err
    assert main(["--run", family_runs["vae"], "--reference", "normal", "--out", out]) == 2
    assert "it has: none" in capsys.readouterr().err


def test_log_likelihood_is_the_evaluate_estimator(family_runs):
    model = xvae_fast.load(family_runs["xvae-std"])
    xs = _examples(model, 4, 8)
    ll = model.log_likelihood(xs, k=20, generator=_gen(0))
    assert ll.shape == (4,) and ll.dtype == torch.float64 and torch.isfinite(ll).all()
    nll = importance_sampled_nll(model.network, model.info.to_model_space(xs), 20, generator=_gen(0))
    # in data units: the standardised density times the Jacobian 1 / prod(std)
    assert torch.equal(ll, -nll - torch.log(model.info.std.double()).sum())
    digits = xvae_fast.load(family_runs["xvae"])
    assert torch.isfinite(digits.log_likelihood(_examples(digits, 2, 0).round(), k=10)).all()


@pytest.mark.parametrize("key", sorted(NO_DENSITY))
def test_log_likelihood_refused_as_evaluate_refuses(family_runs, key, capsys):
    from xvae_fast.evaluate import main as evaluate
    model = xvae_fast.load(family_runs[key])
    with pytest.raises(NLLUndefinedError) as e:
        model.log_likelihood(_examples(model, 2, 0), k=5)
    assert evaluate(["--run", family_runs[key], "--nll", "--no-expost", "--quiet"]) == 2
    assert str(e.value) in capsys.readouterr().err


def test_bad_arguments_are_named(family_runs, tmp_path):
    model = xvae_fast.load(family_runs["xvae"])
    K = model.latent
    cases = [
        (lambda: model.encode(torch.rand(3, 2, 8, 8)), r"x must have shape \(N, 1, 8, 8\).*got \(3, 2, 8, 8\)"),
        (lambda: model.encode([[1.0]]), "x must be a tensor or array"),
        (lambda: model.encode(torch.full((1, 1, 8, 8), float("nan"))), "x contains NaN"),
        (lambda: model.decode(torch.zeros(2, K + 1)), rf"z must be codes of shape \(N, {K}\)"),
        (lambda: model.sample(0), "n must be an integer >= 1"),
        (lambda: model.sample(2, alpha=-1.0), "alpha must be a positive finite number"),
        (lambda: model.sample(2, routing="sideways"), "routing must be one of"),
        (lambda: model.sample(2, generator=0), "generator must be a torch.Generator"),
        (lambda: model.interpolate(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8), steps=1), "steps must be"),
        (lambda: model.interpolate(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8), method="cubic"), "method must be"),
        (lambda: model.interpolate(torch.rand(2, 1, 8, 8), torch.rand(3, 1, 8, 8)), "as many examples"),
        (lambda: model.log_likelihood(torch.rand(2, 1, 8, 8), k=0), "k must be an integer"),
        (lambda: xvae_fast.load(42), "path must be a run folder or an export folder"),
    ]
    for call, match in cases:
        with pytest.raises(ConfigError, match=match):
            call()
    with pytest.raises(CheckpointError, match="no checkpoint.pt .* and no config.json"):
        xvae_fast.load(str(tmp_path))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        xvae_fast.load(str(tmp_path / "missing"))


def _section(title):
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    return text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_readme_python_api_example_runs(family_runs, tmp_path, monkeypatch):
    """The README's example (in a fresh interpreter) and its shell commands, verbatim, each in a
    fresh folder holding a tiny digits X-VAE run at the path they name."""
    section = _section("Python API")
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    commands = re.findall(r"```bash\n(.*?)```", section, re.S)[0].strip().splitlines()
    run_path = re.search(r'xvae_fast\.load\("([^"]+)"\)', code).group(1)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    py, sh = tmp_path / "python", tmp_path / "shell"
    for where in (py, sh):
        shutil.copytree(family_runs["xvae"], where / run_path)
    r = subprocess.run([sys.executable, "-c", code], cwd=py, capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "X-VAE" in r.stdout and "('expost',)" in r.stdout
    export = re.search(r'model\.save\("([^"]+)"\)', code).group(1)
    assert sorted(os.listdir(py / export)) == ["config.json", "model.safetensors"]
    monkeypatch.chdir(sh)
    for cmd in commands:      # in this process: each command's main() is what `python -m` runs
        args = cmd.split("#")[0].split()
        assert args[:2] == ["python", "-m"], cmd
        assert importlib.import_module(args[2]).main(args[3:]) == 0, cmd
        assert os.path.exists(sh / args[args.index("--out") + 1]), cmd
