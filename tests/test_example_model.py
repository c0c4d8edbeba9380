"""The checklist of docs/models.md, proved: a model family added by one module (here, this test file)
and nothing else. It declares its options, registers its recipe, and gets the trainer, its flags and
help, the run folder, resume, `sample` and `evaluate` with no edit anywhere in the library. It is
registered only while these tests run (not in the public registry)."""
import dataclasses
import json
import os
from typing import Optional

import pytest
import torch

from xvae_fast.config import MODELS, TrainConfig, resolve
from xvae_fast.models.protocol import ModelRecipe, register, unregister
from xvae_fast.models.vae import VAE
from xvae_fast.options import ModelOptions, option
from xvae_fast.ops.prior import MixturePrior
from xvae_fast.train import main

from train_utils import TINY_CLUSTERS, load_ck, train


# -- the example model family: its options and its recipe --------------------------------------------
@dataclasses.dataclass
class ScaledPriorOptions(ModelOptions):
    prior_scale: Optional[float] = option(None, "s, the standard deviation of the N(0, s^2 I) prior",
                                          type="float", metavar="S", above=0,
                                          per_dataset={"clusters": 2.0, "*": 1.0})


class ScaledPriorRecipe(ModelRecipe):
    """A VAE with a fixed N(0, s^2 I) prior, trained end to end."""
    name = "example-scaled"
    title = "VAE with an N(0, s^2 I) prior (test example)"
    Options = ScaledPriorOptions

    def build(self):
        i, c, s = self.info, self.cfg, self.opts.prior_scale
        vae = VAE(i.kind, i.shape, c.latent, "standard", None, hidden=self.hidden, ops=self.ops,
                  likelihood=self.likelihood(), routing="per-row")
        vae.set_prior(MixturePrior.single(torch.zeros(c.latent), torch.full((c.latent,), float(s))))
        return {"ae": None, "vae": vae}

    def summary(self):
        return {"prior_scale": self.opts.prior_scale}


@pytest.fixture
def example_model():
    register(ScaledPriorRecipe)
    try:
        yield ScaledPriorRecipe.name
    finally:
        unregister(ScaledPriorRecipe.name)


def test_the_example_model_trains_resumes_samples_and_evaluates(tmp_path, example_model, capsys):
    name = example_model
    assert resolve(TrainConfig(model=name, dataset="clusters")).model_options.prior_scale == 2.0
    assert resolve(TrainConfig(model=name, dataset="digits")).model_options.prior_scale == 1.0
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    args = [*TINY_CLUSTERS, "--model", name, "--prior-scale", "0.5"]
    assert train(*args, "--out", full) == 0
    ck = load_ck(full)
    assert ck["config"]["model_options"] == {"prior_scale": 0.5}
    assert torch.allclose(ck["prior"]["stds"], torch.full_like(ck["prior"]["stds"], 0.5))
    with open(os.path.join(full, "summary.json")) as f:
        s = json.load(f)
    assert s["model"] == name and s["prior_scale"] == 0.5 and s["test"]["loss"] > 0
    assert os.path.isfile(os.path.join(full, "samples.png"))
    # resume is exact
    assert train(*args, "--no-outputs", "--out", part, "--stop-after", "6") == 0
    assert train("--resume", part) == 0
    wa, wb = ck["models"]["vae"], load_ck(part)["models"]["vae"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    from xvae_fast.sample import main as sample_main
    assert sample_main(["--run", full, "--n", "16", "--out", str(tmp_path / "s.png")]) == 0
    from xvae_fast.evaluate import main as evaluate_main
    assert evaluate_main(["--run", full, "--n-fake", "200", "--out", str(tmp_path / "eval")]) == 0


def test_the_example_models_flags_help_and_refusals(tmp_path, example_model, capsys):
    name = example_model
    with pytest.raises(SystemExit):
        main(["--model", name, "--help"])
    out = capsys.readouterr().out
    assert "--prior-scale S" in out and "clusters 2" in out and "--pseudo-inputs" not in out.split("examples:")[0]
    assert main(["--model", "vae", "--prior-scale", "2", "--out", str(tmp_path / "r")]) == 2
    assert f"--prior-scale is an option of --model {name}; --model vae does not use it" in capsys.readouterr().err
    assert main(["--list-models"]) == 0 and capsys.readouterr().out.count(name) >= 1


def test_the_example_model_is_not_in_the_public_registry(tmp_path, capsys):
    assert ScaledPriorRecipe.name not in MODELS
    with pytest.raises(SystemExit) as exc:
        main(["--model", ScaledPriorRecipe.name, "--out", str(tmp_path / "r")])
    assert exc.value.code == 2 and "invalid choice: 'example-scaled'" in capsys.readouterr().err
