"""Every run's comparable headline (FD-data in summary.json and the summary line), the closing lines
that say what to open and run next, and the run's provenance."""
import json
import math
import os
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xvae_fast.evaluation.frechet import frechet_distance_from_features
from xvae_fast.training.headline import MAX_VALUES, N_HEADLINE, pooled, real_subset

from xvae_fast.train import applicable_flags

from train_utils import TINY_DIGITS, train


def _summary(run):
    with open(os.path.join(run, "summary.json"), encoding="utf-8") as f:
        return json.load(f)


def test_pooled_features_keep_small_images_and_pool_large_ones():
    g = torch.Generator().manual_seed(0)
    mnist = torch.rand(5, 1, 28, 28, generator=g)
    assert np.array_equal(pooled(mnist), mnist.reshape(5, -1).double().numpy())     # 784 <= 1024
    rgb = torch.rand(3, 3, 64, 64, generator=g)
    f = pooled(rgb)
    # factor 2 leaves 3 * 32 * 32 = 3072 values, 3 leaves 3 * 22 * 22 = 1452, 4 leaves 768
    assert f.shape == (3, 768) and f.shape[1] <= MAX_VALUES
    assert np.allclose(f, F.avg_pool2d(rgb, 4).reshape(3, -1).double().numpy())
    vec = torch.rand(7, 3000, generator=g)          # vectors are never pooled
    assert pooled(vec).shape == (7, 3000)


def test_real_subset_is_fixed_and_bounded():
    class Split:
        def __len__(self):
            return 5000
    a, b = real_subset(Split()), real_subset(Split())
    assert torch.equal(a, b) and len(a) == N_HEADLINE and len(set(a.tolist())) == N_HEADLINE
    assert a.min() >= 0 and a.max() < 5000 and not torch.equal(a, torch.arange(N_HEADLINE))

    class Small:
        def __len__(self):
            return 40
    assert torch.equal(real_subset(Small()), torch.arange(40))


def test_headline_tracks_sample_quality_and_closes_with_next_steps(tmp_path):
    """A trained VAE's FD-data is well below the same model untrained (0 stage-2 epochs); an X-VAE run
    also scores its ex-post reference; both go to summary.json and the summary line, followed by what
    to open and what to run next."""
    base = [a for a in TINY_DIGITS if a not in ("--limit", "160")]
    base = [*base, "--limit", "600"]
    vae = applicable_flags([*base, "--model", "vae"])      # base holds X-VAE's stage-1 flags
    untrained, trained, xvae = (str(tmp_path / n) for n in ("untrained", "trained", "xvae"))
    assert train(*vae, "--epochs-vae", "0", "--no-outputs", "--out", untrained) == 0
    assert train(*vae, "--epochs-vae", "8", "--no-outputs", "--out", trained) == 0
    h0, h1 = _summary(untrained)["headline"], _summary(trained)["headline"]
    assert h0["metric"] == h1["metric"] == "fd_data" and h0["n_samples"] == N_HEADLINE
    assert h0["n_real"] == h1["n_real"] > 0 and h0["dims"] == 64       # 8x8 digits: every pixel
    assert "expost" not in h1                                          # a VAE has no ex-post reference
    assert math.isfinite(h1["value"]) and h1["value"] < 0.5 * h0["value"], (h0["value"], h1["value"])

    assert train(*base, "--out", xvae) == 0
    s = _summary(xvae)
    h = s["headline"]
    assert math.isfinite(h["value"]) and math.isfinite(h["expost"]) and h["routing"] == "per-row"
    with open(os.path.join(xvae, "train.log"), encoding="utf-8") as f:
        text = f.read()
    line = next(ln for ln in text.splitlines() if "FD-data" in ln)
    assert f"FD-data {h['value']:.4g}" in line and f"ex-post reference {h['expost']:.4g}" in line
    # the closing lines: the pictures (samples.png first) and the commands that exist
    look = next(ln for ln in text.splitlines() if "look at:" in ln)
    assert re.search(r"look at: samples\.png, ", look) and "reconstructions.png" in look
    assert all(os.path.isfile(os.path.join(xvae, p.strip())) for p in
               look.split("look at:")[1].split(" in ")[0].split(","))
    assert f"python -m xvae_fast.evaluate --run {xvae}" in text
    assert f"python -m xvae_fast.sample --run {xvae}" in text and f"run folder: {xvae}" in text


def test_headline_is_the_frechet_distance_it_says(tmp_path):
    """Recompute the headline from its definition: the run's samples (seeded) against the fixed test
    subset, through the library's Fréchet distance (pytorch-fid's formula)."""
    from xvae_fast.training.headline import SEED_OFFSET
    from xvae_fast.run_loading import load_run
    run = str(tmp_path / "vae")
    assert train(*TINY_DIGITS, "--model", "vae", "--no-outputs", "--seed", "3", "--out", run) == 0
    h = _summary(run)["headline"]
    from xvae_fast.data import load_dataset
    cfg, info, vae, _ = load_run(run)
    data = load_dataset(cfg)
    vae.eval()
    idx = real_subset(data.test)
    real = info.to_data_space(data.test.get_batch(idx)).reshape(len(idx), -1).double().numpy()
    g = torch.Generator().manual_seed(3 + SEED_OFFSET)
    with torch.no_grad():
        fake = info.to_data_space(vae.generate(N_HEADLINE, 1.0, "per-row", generator=g))
    fake = fake.reshape(N_HEADLINE, -1).double().numpy()
    assert h["value"] == pytest.approx(frechet_distance_from_features(real, fake), rel=1e-9)


def test_provenance_records_how_the_run_ran(tmp_path):
    run = str(tmp_path / "r")
    assert train(*TINY_DIGITS, "--model", "vae", "--no-outputs", "--threads", "1", "--out", run) == 0
    p = _summary(run)["provenance"]
    import xvae_fast
    assert p["world_size"] == 1 and p["backend"] is None and p["device"] == "cpu"
    assert p["threads"] == 1 and p["precision"] == "fp32"
    assert p["torch"] == torch.__version__ and p["xvae_fast"] == xvae_fast.__version__
    rev = p["source_revision"]
    assert rev is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", rev)
