"""AVAE (paper 002, SPEC-related 2): the bandwidth estimator's laws and cache, the objective in both
readings, generation, the per-epoch schedule (KDE subset / SGD set / validation part, centre refreshes,
beta), exact resume inside a refresh interval, the fixed-point law of the encodings, bad input, and
`evaluate` with the N(0, I) reference sampler."""
import json
import math
import os

import numpy as np
import pytest
import torch
import yaml

import xvae_fast
from xvae_fast.models import bandwidth as bw
from xvae_fast.config import TrainConfig, resolve
from xvae_fast.data import load_dataset
from xvae_fast.models.avae import (AVAE, AVAERecipe, floor_log_epsilon, gaussian_fit_kl, parse_beta,
                                   reading)
from xvae_fast.training import checkpoint as ckpt
from xvae_fast.training import load_run, train
from xvae_fast.training.trainer import Trainer

from train_utils import one_thread

QUICK = dict(progress=False, outputs=False, threads=1)


@pytest.fixture(autouse=True, scope="module")
def bandwidth_cache(tmp_path_factory):
    """Every bandwidth this module computes goes to a private cache file, never the user's."""
    path = str(tmp_path_factory.mktemp("bwcache") / "bandwidth.json")
    old = os.environ.get("XVAE_FAST_BANDWIDTH_CACHE")
    os.environ["XVAE_FAST_BANDWIDTH_CACHE"] = path
    bw.clear_memory_cache()
    with one_thread():
        yield path
    bw.clear_memory_cache()
    if old is None:
        os.environ.pop("XVAE_FAST_BANDWIDTH_CACHE", None)
    else:
        os.environ["XVAE_FAST_BANDWIDTH_CACHE"] = old


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# -- the bandwidth: laws (paper Tables I and II, SPEC-related 2.5) ----------------------------------
@pytest.mark.parametrize("latent, m, h_opt", [(10, 10_000, 0.60), (16, 10_000, 0.72), (20, 10_000, 0.78)])
def test_bandwidth_law(latent, m, h_opt):
    value, trials = bw.estimate_h_opt(latent, m)
    assert abs(value - h_opt) < 0.02, (value, trials)
    assert len(trials) == 3 and max(trials) - min(trials) < 0.02        # the trials agree
    if latent == 16:   # the used bandwidth of the MNIST configuration
        assert abs(bw.scaled_bandwidth(value) - 0.585) < 0.01


def test_scaled_bandwidth_is_below_one_and_inverts():
    for h_opt in (0.05, 0.6, 1.0, 1.12, 5.0, 1e3):
        h = bw.scaled_bandwidth(h_opt)
        assert 0 < h < 1 and h == pytest.approx(h_opt / math.sqrt(1 + h_opt ** 2))
        assert bw.unscaled_bandwidth(h) == pytest.approx(h_opt, rel=1e-9)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="h_opt"):
            bw.scaled_bandwidth(bad)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="bandwidth"):
            bw.unscaled_bandwidth(bad)


def test_estimator_minimises_the_kl_of_the_kde_op_and_needs_fresh_targets():
    g = _gen(3)
    points = torch.randn(400, 4, generator=g, dtype=torch.float64)
    targets = bw.normal_targets(512, 4, g)
    s, evals = bw.argmin_log_bandwidth(targets, points)
    h = math.exp(s)
    assert evals <= 12
    # the KL through ops.kde_log_prob (float64) is smallest at h among a fine grid around it
    kl = lambda v: bw.kl_estimate(targets, points, v)   # noqa: E731
    grid = [h * math.exp(d) for d in np.linspace(-0.3, 0.3, 25)]
    best = min(grid, key=kl)
    assert abs(math.log(best / h)) <= 0.3 / 12 + 1e-9, (best, h)
    assert kl(h) < kl(0.9 * h) and kl(h) < kl(1.1 * h)
    # the fused op and the reference agree on the objective
    assert bw.kl_estimate(targets, points, h, ops=xvae_fast) == pytest.approx(kl(h), rel=1e-9, abs=1e-9)
    # the pitfall: scoring the KDE points themselves drives h to the bottom of the bracket
    s_self, _ = bw.argmin_log_bandwidth(points, points)
    assert math.exp(s_self) < 0.02 < h


def test_bandwidth_cache_memory_disk_corrupt_and_unwritable(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "bw.json"
    monkeypatch.setenv("XVAE_FAST_BANDWIDTH_CACHE", str(path))
    bw.clear_memory_cache()
    first = bw.bandwidth_for(3, 200)
    assert first.source == "computed" and path.exists()
    entry = json.load(open(path))["entries"][bw.cache_key(3, 200, bw.TARGETS, bw.TRIALS, bw.SEED)]
    assert entry["h_opt"] == first.h_opt and first.h == bw.scaled_bandwidth(first.h_opt)
    again = bw.bandwidth_for(3, 200)                      # in-process
    assert again.source == "cache" and again.h_opt == first.h_opt
    bw.clear_memory_cache()
    disk = bw.bandwidth_for(3, 200)                       # from the file
    assert disk.source == "cache" and disk.h_opt == first.h_opt and disk.trials == first.trials
    # other estimator settings are another entry
    other = bw.bandwidth_for(3, 200, targets=256)
    assert other.source == "computed" and other.h_opt != first.h_opt
    # a corrupt file is ignored, the value recomputed (identically) and the file repaired
    bw.clear_memory_cache()
    path.write_text("{not json")
    fixed = bw.bandwidth_for(3, 200)
    assert fixed.source == "computed" and fixed.h_opt == first.h_opt
    assert "entries" in json.load(open(path))
    # a damaged entry (not a positive number) is ignored too
    data = json.load(open(path))
    for e in data["entries"].values():
        e["h_opt"] = -1
    path.write_text(json.dumps(data))
    bw.clear_memory_cache()
    assert bw.bandwidth_for(3, 200).source == "computed"
    # an unwritable location never fails: the value is computed every time
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("XVAE_FAST_BANDWIDTH_CACHE", str(blocker / "sub" / "bw.json"))
    bw.clear_memory_cache()
    assert bw.bandwidth_for(3, 200).h_opt == first.h_opt
    # without the explicit variable: $XVAE_FAST_CACHE, then $XDG_CACHE_HOME
    monkeypatch.delenv("XVAE_FAST_BANDWIDTH_CACHE")
    monkeypatch.setenv("XVAE_FAST_CACHE", str(tmp_path / "root"))
    assert bw.cache_path() == str(tmp_path / "root" / "bandwidth.json")
    monkeypatch.delenv("XVAE_FAST_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert bw.cache_path() == str(tmp_path / "xdg" / "xvae_fast" / "bandwidth.json")
    bw.clear_memory_cache()


# -- the objective and generation -------------------------------------------------------------------
def _model(h=0.55, latent=3, floor=None):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        m = AVAE("vector", (5,), latent, hidden=(16,), ops=xvae_fast.ops.reference, kde_floor=floor)
    m.set_bandwidth(bw.unscaled_bandwidth(h), h)
    return m


def test_kl_rows_paper_and_code_readings_against_direct_formulas():
    h, latent = 0.55, 3
    z = torch.randn(7, latent, generator=_gen(0), dtype=torch.float64) * 0.8
    c = torch.randn(11, latent, generator=_gen(1), dtype=torch.float64) * 0.8
    d2 = torch.cdist(z, c).pow(2)
    log_q = torch.logsumexp(-d2 / (2 * h * h), 1) - math.log(11) - latent * math.log(h) \
        - 0.5 * latent * math.log(2 * math.pi)
    log_p = -0.5 * z.pow(2).sum(1) - 0.5 * latent * math.log(2 * math.pi)
    paper = _model(h).double()
    torch.testing.assert_close(paper.kl_rows(z, c), log_q - log_p, rtol=1e-10, atol=1e-10)
    # the code: linear-space sums without (2 pi)^(l/2), floors, log base 10
    max_cdf = 1 - 1e-6
    from scipy.stats import chi2
    eps = math.exp(-chi2.ppf(max_cdf, latent) / 2) * h ** -latent
    assert floor_log_epsilon(latent, h, max_cdf) == pytest.approx(math.log(eps), rel=1e-12)
    q_code = torch.exp(-d2 / (2 * h * h)).sum(1) / (h ** latent * 11)
    p_code = torch.exp(-0.5 * z.pow(2).sum(1))
    code = torch.log10(q_code + eps) - torch.log10(p_code + 1e-30)
    floored = _model(h, floor=max_cdf).double()
    torch.testing.assert_close(floored.kl_rows(z, c), code, rtol=1e-10, atol=1e-10)
    # far from every centre both floors bind: log10(eps) - log10(1e-30)
    far = torch.full((1, latent), 10.0, dtype=torch.float64)
    expect = (math.log(eps) - math.log(1e-30)) / math.log(10)
    assert float(floored.kl_rows(far, c)) == pytest.approx(expect, rel=1e-9)


def test_loss_terms_gradient_and_no_gradient_to_the_centres():
    m = _model()
    x = torch.randn(6, 5, generator=_gen(2))
    c = torch.randn(20, 3, generator=_gen(3), requires_grad=True)
    out = m.loss(x, c, beta=2.5)
    assert set(out) == {"loss", "recon", "kl"}
    z = m.encode(x)
    recon = (m.decode(z) - x).pow(2).sum(1).mean()           # mse: the summed squared error
    torch.testing.assert_close(out["recon"], recon)
    torch.testing.assert_close(out["kl"], m.kl_rows(z, c).mean())
    torch.testing.assert_close(out["loss"], recon + 2.5 * out["kl"])
    out["loss"].backward()
    assert c.grad is None
    assert m.z_head.weight.grad is not None and torch.isfinite(m.z_head.weight.grad).all()
    assert m.encode(x).shape == (6, 3)                      # one head: no variance
    assert not any("logvar" in n or "sd" in n for n, _ in m.named_parameters())


def test_generation_variance_is_one_minus_h_squared():
    for h, alpha in ((0.55, 1.0), (0.3, 1.5)):
        m = _model(h, latent=4)
        z = m.sample_latent(40_000, alpha=alpha, generator=_gen(5)).double()
        var = z.var(0)
        target = (1 - h * h) * alpha ** 2
        assert torch.allclose(var, torch.full_like(var, target), rtol=0.03), (var, target)
        assert float(z.mean(0).abs().max()) < 0.03
    m = _model(0.55)
    with torch.no_grad():
        x = m.generate(5, alpha=0.7, generator=_gen(6))
        torch.testing.assert_close(x, m.decode(m.sample_latent(5, 0.7, _gen(6))))
        ref = m.generate_prior(5, alpha=0.7, generator=_gen(6))
        torch.testing.assert_close(ref, m.decode(0.7 * torch.randn(5, 3, generator=_gen(6))))
    assert not torch.equal(x, ref)
    with pytest.raises(ValueError, match="routing"):
        m.generate(2, routing="bogus")
    with pytest.raises(RuntimeError, match="bandwidth is not set"):
        AVAE("vector", (5,), 3, hidden=(8,)).generate(2)


def test_parse_beta_and_reading():
    assert parse_beta("rule") == ("rule", None) and parse_beta("rms") == ("rms", None)
    assert parse_beta("rms:14.14") == ("rms", 14.14) and parse_beta("const:6.14") == ("const", 6.14)
    for bad in ("", "rules", "const", "const:0", "const:-1", "rule:3", "rms:x", "const:inf", None):
        with pytest.raises(ValueError, match="--avae-beta"):
            parse_beta(bad)
    cfg = TrainConfig(model="avae")
    assert reading(cfg) == "paper"
    assert reading(cfg.replace(avae_beta="const:6.14", avae_kde_floor=0.999999)).startswith("code parity")


def test_gaussian_fit_kl():
    z = torch.randn(20_000, 3, generator=_gen(7), dtype=torch.float64)
    assert gaussian_fit_kl(z) < 1e-3
    s = 0.5
    expect = 0.5 * 3 * (s * s - 1 - math.log(s * s)) + 0.5 * 4.0     # variance 0.25, mean (2, 0, 0)
    shifted = z * s + torch.tensor([2.0, 0, 0], dtype=torch.float64)
    assert gaussian_fit_kl(shifted) == pytest.approx(expect, rel=0.01)


# -- the schedule through the trainer ---------------------------------------------------------------
def _recording_trainer(cfg):
    """A Trainer whose recipe records the epochs' splits, the rows of every step's batch, the refresh
    steps and an independent recomputation of beta (Eq. 9) before epoch 0 and after every epoch."""
    t = Trainer(cfg, verbose=False)
    r, rec = t.recipe, {"splits": [], "batches": [], "refresh": [], "beta_formula": []}
    train_x = t.data.train.get_batch(torch.arange(len(t.data.train)))
    lookup = {tuple(row.tolist()): i for i, row in enumerate(train_x)}
    assert len(lookup) == len(train_x)                       # rows identify themselves

    def formula():
        m = r.generative
        m.eval()
        with torch.no_grad():
            x = train_x[torch.as_tensor(r.val_index)]
            v = float((x - m.decode(m.encode(x))).flatten(1).norm(dim=1).double().mean())
        m.train()
        return v

    begin, end, refresh, loss = r.begin_epoch, r.end_epoch, r.refresh_centres, r.loss

    def begin_epoch(stage, epoch, trainer):
        if epoch == 0:
            rec["beta_formula"].append(formula())
        begin(stage, epoch, trainer)
        rec["splits"].append((epoch, r.kde_index.copy(), np.asarray(r._sgd.indices).copy(),
                              r.val_index.copy()))

    def end_epoch(stage, epoch, trainer):
        rec["beta_formula"].append(formula())
        end(stage, epoch, trainer)

    def refresh_centres(trainer, step):
        refresh(trainer, step)
        rec["refresh"].append(step)
        m = r.generative
        m.eval()
        with torch.no_grad():
            torch.testing.assert_close(r.centres, m.encode(train_x[torch.as_tensor(r.kde_index)]))
        m.train()

    def recipe_loss(stage, batch):
        rec["batches"].append((t.epoch, [lookup[tuple(row.tolist())] for row in batch]))
        return loss(stage, batch)

    r.begin_epoch, r.end_epoch, r.refresh_centres = begin_epoch, end_epoch, refresh_centres
    t._loss = recipe_loss
    return t, rec


def test_schedule_bookkeeping_kde_sgd_validation_refreshes_and_beta(tmp_path):
    # clusters: 600 rows -> 480 training rows, 48 validation, m = 100 centres, 332 SGD rows,
    # batch 50: 7 steps per epoch, k_b = 3
    cfg = TrainConfig(dataset="clusters", limit=600, model="avae", latent=2, hidden=[16, 16], batch_size=50,
                      epochs_vae=3, avae_centres=100, avae_refresh_steps=3, out=str(tmp_path / "run"),
                      **QUICK)
    t, rec = _recording_trainer(cfg)
    res = t.run()
    assert res.status == "done" and res.step == 21
    n = len(t.data.train)
    val = rec["splits"][0][3]
    assert len(val) == math.ceil(0.1 * n) == 48
    kdes = []
    for epoch, kde, sgd, v in rec["splits"]:
        assert np.array_equal(v, val)                               # a fixed validation part
        assert len(kde) == 100 and len(sgd) == n - 48 - 100
        assert not set(kde) & set(sgd) and not (set(kde) | set(sgd)) & set(val)
        assert set(kde) | set(sgd) | set(val) == set(range(n))
        used = [i for e, rows in rec["batches"] if e == epoch for i in rows]
        assert sorted(used) == sorted(sgd.tolist())                # each SGD row once, no KDE row
        kdes.append(set(kde.tolist()))
        # the draw is a function of (seed, epoch): a fresh recipe draws the same
        k2, s2 = AVAERecipe(t.cfg, t.info).split_for(t.data, epoch)
        assert np.array_equal(k2, kde) and np.array_equal(s2, sgd)
    assert kdes[0] != kdes[1] != kdes[2]                            # redrawn every epoch
    other = AVAERecipe(t.cfg.replace(seed=t.cfg.seed + 1), t.info).split_for(t.data, 0)[0]
    assert not np.array_equal(other, rec["splits"][0][1])
    # refreshes: every global step that is a multiple of k_b, and the first step of each epoch
    assert rec["refresh"] == sorted({s for s in range(21) if s % 3 == 0} | {0, 7, 14})
    assert t.recipe.refreshes == len(rec["refresh"])
    # beta: Eq. 9 before epoch 0 and after each epoch, used from the next epoch on
    r = t.recipe
    assert r.beta_history == pytest.approx(rec["beta_formula"][:3], rel=1e-6)
    assert r.beta_next == pytest.approx(rec["beta_formula"][3], rel=1e-6)
    assert len(set(r.beta_history)) == 3
    for row, beta in zip(t.history, r.beta_history):                # the logged loss used that beta
        assert row["beta"] == beta
        assert row["train_loss"] == pytest.approx(row["train_recon"] + beta * row["train_kl"], rel=1e-6)
    ck = ckpt.load_checkpoint(res.run_dir)
    assert np.array_equal(ck["avae"]["kde_index"].numpy(), rec["splits"][-1][1])


def _weights(run_dir):
    ck = ckpt.load_checkpoint(run_dir)
    return ck, {f"{m}.{k}": v for m, sd in ck["models"].items() if sd is not None for k, v in sd.items()}


def test_exact_resume_inside_a_refresh_interval(tmp_path):
    # digits: 400 rows -> 320 training, 32 validation, m = 100, 188 SGD rows = 4 steps of 50 per epoch;
    # k_b = 3: refreshes before steps 0, 3, 4 (epoch 1's subset), 6, 8, 9. Stopping after step 5
    # leaves centres encoded before step 4 by older weights: a resume must use them, not re-encode.
    kw = dict(dataset="digits", limit=400, model="avae", batch_size=50, epochs_vae=3, avae_centres=100,
              avae_refresh_steps=3, avae_lr_plateau=1, **QUICK)
    full = train(TrainConfig(out=str(tmp_path / "full"), **kw), verbose=False)
    part = train(TrainConfig(out=str(tmp_path / "part"), stop_after=5, **kw), verbose=False)
    assert part.status == "stopped" and part.step == 5
    ck_p, w_p = _weights(part.run_dir)
    st = ck_p["avae"]
    assert st["last_refresh_step"] == 4 and st["centres_epoch"] == 1
    # the checkpointed centres are stale: re-encoding with the step-5 weights would change them
    cfg, info, model, _ = load_run(part.run_dir)
    data = load_dataset(resolve(TrainConfig(**kw)))
    with torch.no_grad():
        fresh = model.encode(data.train.get_batch(st["kde_index"]))
    assert not torch.allclose(fresh, st["centres"], atol=1e-6)
    resumed = train(TrainConfig(resume=part.run_dir, progress=False), verbose=False)
    assert resumed.status == "done" and resumed.step == full.step == 12
    ck_a, wa = _weights(full.run_dir)
    ck_b, wb = _weights(resumed.run_dir)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("time_s", "eval_s")} for r in h]   # noqa: E731
    assert strip(ck_a["history"]) == strip(ck_b["history"])
    a, b = ck_a["avae"], ck_b["avae"]
    assert torch.equal(a["centres"], b["centres"]) and a["beta_history"] == b["beta_history"]
    assert a["refreshes"] == b["refreshes"] == 6 and a["beta_next"] == b["beta_next"]
    assert ck_a["schedulers"]["vae"] == ck_b["schedulers"]["vae"]
    assert ck_a["schedulers"]["vae"]["num_bad_epochs"] is not None     # the plateau state is stored


# -- the fixed point (paper III-B3): encodings -> N(0, (1 - h^2) I) -----------------------------------
def _gaussian_2d(path, n=3000):
    g = np.random.default_rng(0)
    x = g.standard_normal((n, 2)) * [2.0, 0.5]
    rot = np.array([[0.8, -0.6], [0.6, 0.8]])
    np.save(path, (x @ rot.T).astype(np.float32))
    return str(path)


def _fixed_point_run(tmp_path, name, dataset, epochs, **kw):
    cfg = TrainConfig(dataset=dataset, model="avae", latent=2, hidden=[64, 64], batch_size=100,
                      epochs_vae=epochs, lr=3e-3, lr_schedule="cosine", avae_beta="const:1", eval_every=0,
                      seed=1, out=str(tmp_path / name), **QUICK, **kw)
    s = train(cfg, verbose=False).summary
    d = s["latent_diagnostics"]
    ev = torch.tensor(d["train"]["cov_eigenvalues"])
    return s, ev / d["target_variance"], torch.tensor(d["train"]["mean"])


def test_fixed_point_law_on_2d_data(tmp_path):
    """Short version: a 2-D Gaussian cloud (the encoder has no modes to spread), l = 2, m = 1,000
    centres, beta = 1 (the law is the KL term's, III-B3): 960 steps reach the fixed point both for
    the estimated h and for h = 0.7, so the level follows 1 - h^2 and is not just "unit variance"."""
    data = "npy:" + _gaussian_2d(tmp_path / "g.npy")
    s, ratio, mean = _fixed_point_run(tmp_path, "est", data, 80)
    assert s["avae_centres_used"] == 1000 and s["bandwidth_source"] in ("computed", "cache")
    assert s["sample_variance"] == pytest.approx(1 - s["bandwidth_h"] ** 2)
    assert bool(((ratio - 1).abs() < 0.15).all()), ratio
    assert float(mean.norm()) < 0.1
    s7, ratio7, mean7 = _fixed_point_run(tmp_path, "h07", data, 80, avae_bandwidth=0.7)
    assert s7["bandwidth_source"] == "flag" and s7["sample_variance"] == pytest.approx(0.51)
    assert bool(((ratio7 - 1).abs() < 0.15).all()), ratio7
    assert float(mean7.norm()) < 0.1
    # the two levels differ by the bandwidth's bias: 0.88 against 0.51
    assert float((ratio * s["sample_variance"]).min()) > float((ratio7 * 0.51).max())


def test_fixed_point_law_on_the_clusters(tmp_path):
    """On three separated modes (the clusters, 2-D): 3,600 steps. (8gaussians, whose
    modes have a std of 0.014, stays at about 0.35 of the target after 8,000 steps: the encoder cannot
    stretch such tight modes over the latent space in that budget.)"""
    _, ratio, mean = _fixed_point_run(tmp_path, "cl", "clusters", 300)
    assert bool(((ratio - 1).abs() < 0.15).all()), ratio
    assert float(mean.norm()) < 0.1


# -- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, needle", [
    (["--avae-centres", "1"], "--avae-centres"),
    (["--avae-centres", "5000"], "--avae-centres 5000 leaves no rows"),
    (["--avae-val-fraction", "0"], "--avae-val-fraction"),
    (["--avae-val-fraction", "1.5"], "--avae-val-fraction"),
    (["--avae-refresh-steps", "0"], "--avae-refresh-steps"),
    (["--avae-beta", "bogus"], "--avae-beta"),
    (["--avae-beta", "const"], "--avae-beta"),
    (["--avae-beta", "const:-2"], "--avae-beta"),
    (["--avae-beta", "rms:abc"], "--avae-beta"),
    (["--avae-bandwidth", "1.2"], "--avae-bandwidth"),
    (["--avae-bandwidth", "0"], "--avae-bandwidth"),
    (["--avae-kde-floor", "1"], "--avae-kde-floor"),
    (["--avae-kde-floor", "-0.5"], "--avae-kde-floor"),
    (["--avae-lr-plateau", "-1"], "--avae-lr-plateau"),
    (["--avae-lr-plateau", "3", "--lr-schedule", "cosine"], "choose one"),
    (["--likelihood", "gaussian"], "--likelihood"),
    (["--epochs-vae", "0"], "--epochs-vae"),
])
def test_bad_flags_exit_2_naming_the_flag(tmp_path, capsys, args, needle):
    from xvae_fast.train import main
    out = tmp_path / "run"
    with one_thread():
        rc = main(["--model", "avae", "--limit", "300", "--no-progress", "--out", str(out)] + args)
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "Traceback" not in err, err
    assert not out.exists()                                  # no empty run folder left behind


def test_unparsable_flag_values_are_argparse_errors(capsys):
    from xvae_fast.train import main
    for flag in ("--avae-centres", "--avae-refresh-steps", "--avae-bandwidth", "--avae-kde-floor",
                 "--avae-lr-plateau", "--avae-val-fraction"):
        with pytest.raises(SystemExit) as exc:
            main(["--model", "avae", flag, "many"])
        assert exc.value.code == 2 and flag in capsys.readouterr().err


# -- the run folder, the readings, evaluate ---------------------------------------------------------
def test_code_parity_reading_is_recorded_and_trains(tmp_path):
    cfg = TrainConfig(dataset="digits", limit=300, model="avae", batch_size=60, epochs_vae=2,
                      avae_beta="rms:14.14", avae_kde_floor=0.999999, out=str(tmp_path / "code"), **QUICK)
    res = train(cfg, verbose=False)
    s = res.summary
    assert s["avae_reading"].startswith("code parity") and s["avae_kde_floor"] == 0.999999
    assert s["beta_history"][0] == 14.14 and s["beta_history"][1] != 14.14       # rms after epoch 0
    assert all(math.isfinite(v) for v in s["test"].values())
    saved = yaml.safe_load(open(os.path.join(res.run_dir, "config.yaml")))
    assert saved["model_options"]["avae_beta"] == "rms:14.14" and saved["model_options"]["avae_kde_floor"] == 0.999999
    assert saved["model_options"]["avae_lr_plateau"] == 0 and saved["model_options"]["avae_centres"] is None      # digits: no plateau
    assert "log10" in s["objective_units"]


def test_evaluate_reports_the_model_and_the_normal_reference(tmp_path):
    from xvae_fast.evaluate import main
    from xvae_fast.sample import main as sample_main
    cfg = TrainConfig(dataset="digits", limit=300, model="avae", batch_size=60, epochs_vae=2,
                      avae_centres=60, out=str(tmp_path / "run"), progress=False, threads=1, n_samples=16,
                      alphas=[1.0])
    res = train(cfg, verbose=False)
    s = res.summary
    assert s["avae_reading"] == "paper" and s["bandwidth_source"] in ("computed", "cache")
    assert 0 < s["bandwidth_h"] < 1 and s["bandwidth_h_opt"] > s["bandwidth_h"]
    d = s["latent_diagnostics"]
    assert len(d["train"]["cov_eigenvalues"]) == 8 and d["test"]["gaussian_entropy"] == 4.0
    assert math.isfinite(d["test"]["gaussian_fit_kl"]) and math.isfinite(d["test"]["whitened_entropy"])
    assert os.path.exists(os.path.join(res.run_dir, "latent_stats.json"))
    assert os.path.exists(os.path.join(res.run_dir, "samples.png"))
    with one_thread():
        rc = main(["--run", res.run_dir, "--metrics", "rec,fd", "--n-fake", "100", "--n-real", "100",
                   "--classifier-steps", "30", "--alpha", "1", "--no-figures", "--quiet", "--threads", "1"])
    assert rc == 0
    rep = json.load(open(os.path.join(res.run_dir, "eval.json")))
    ref = json.load(open(os.path.join(res.run_dir, "eval_normal.json")))
    assert rep["model"] == "avae" and ref["model"] == "normal"
    a, b = rep["metrics"]["fd_lenet"]["samples"]["value"], ref["metrics"]["fd_lenet"]["samples"]["value"]
    assert a > 0 and b > 0 and a != b                       # two different samplers
    assert rep["metrics"]["rec"]["value"] == pytest.approx(ref["metrics"]["rec"]["value"])
    assert rep["metrics"]["fd_lenet"]["interp"]["value"] > 0
    out = tmp_path / "s.png"
    assert sample_main(["--run", res.run_dir, "--n", "8", "--out", str(out)]) == 0 and out.exists()
