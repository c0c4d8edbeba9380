"""The measurement commands behind the defaults: `python -m xvae_fast.experiments.clusters` / `.digits`
(setups x seeds, evaluated, tabulated as mean ± std), on a tiny budget."""
import json
import os

from xvae_fast.experiments.sweep import aggregate, setups_for

from train_utils import cli

TINY = ["--limit", "200", "--batch-size", "32", "--hidden", "16,16", "--epochs-ae", "2", "--epochs-vae",
        "2", "--em-n-init", "1", "--n-fake", "200", "--classifier-steps", "30"]


def test_clusters_sweep_tabulates_setups_over_seeds_and_reuses_runs(tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    monkeypatch.setenv("XVAE_FAST_CACHE", str(tmp_path / "cache"))   # the subprocesses' classifier cache
    r = cli("xvae_fast.experiments.clusters", "--out", out, "--seeds", "1,2", "--setups",
            "default,vae,plan-full", "--quiet", *TINY, timeout=900)
    assert r.returncode == 0, r.stderr
    with open(out / "results.json") as f:
        res = json.load(f)
    recs = res["records"]
    assert set(recs) == {f"{s}/{n}" for s in (1, 2) for n in ("default", "vae", "plan-full")}
    # X-VAE runs of one seed share the stage-1 autoencoder of the first X-VAE run
    assert recs["1/plan-full"]["stage1"] == recs["1/default"]["run"] == recs["1/default"]["stage1"]
    assert "expost" in recs["1/default"] and "expost" not in recs["1/plan-full"]
    # mixture X-VAE runs are evaluated with both routings (and the decoder noise); the VAE once
    assert set(recs["1/default"]["routings"]) == {"per-row", "per-coordinate", "noise"}
    assert set(recs["1/vae"]["routings"]) == {"per-row", "noise"}
    for rec in recs.values():
        m = rec["routings"]["per-row"]
        assert 0 <= m["in_modes"] <= 1 and m["fd_samples"] > 0 and 0 <= m["min_mode_share"] <= 1
    rows = {row["setup"]: row for row in res["rows"]}
    assert set(rows) == {"default", "vae", "plan-full", "expost (gaussian)"}
    assert rows["default"]["seeds"] == [1, 2] and len(rows["default"]["per-row"]["in_modes"]) == 2
    md = (out / "results.md").read_text()
    assert "| default |" in md and "±" in md and "in modes (per-row)" in md
    assert (out / "samples_by_setup.png").is_file()
    # a second call trains nothing: every run is reused and the table is the same
    mtime = os.path.getmtime(out / "seed1" / "default" / "checkpoint.pt")
    r2 = cli("xvae_fast.experiments.clusters", "--out", out, "--seeds", "1,2", "--setups",
             "default,vae,plan-full", "--quiet", *TINY, timeout=900)
    assert r2.returncode == 0, r2.stderr
    assert os.path.getmtime(out / "seed1" / "default" / "checkpoint.pt") == mtime
    with open(out / "results.json") as f:
        again = json.load(f)
    assert all(again["records"][k]["status"] == "done" for k in again["records"])
    assert again["rows"] == res["rows"]


def test_sweep_bad_input_exits_2(tmp_path):
    for args, msg in ((["--setups", "default,nope"], "unknown setup"),
                      (["--seeds", "a,b"], "--seeds must be"),
                      (["--seeds", ""], "at least one"),
                      (["--n-fake", "3"], "--n-fake")):
        r = cli("xvae_fast.experiments.digits", "--out", tmp_path / "x", *args)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_setups_change_one_choice_from_the_defaults():
    for data in ("digits", "clusters"):
        table = setups_for(data)
        assert table["default"][1] == [] and table["paper"][1] == ["--preset", "paper"]
        for name, (_, flags) in table.items():
            if name.startswith(("kl-", "init-", "plan-", "lik-")):
                assert len(flags) == 2, name          # one flag and its value
    assert "lik-bernoulli" not in setups_for("digits")   # the default likelihood has no lik- row
    assert aggregate({}, ["default"]) == []


def test_mnist_sweep_runs_on_a_slice_and_refuses_its_own_dataset_flag(tmp_path, monkeypatch, mnist_dir):
    monkeypatch.setenv("XVAE_FAST_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "mnist"
    r = cli("xvae_fast.experiments.mnist", "--data", mnist_dir, "--out", out, "--seeds", "1", "--setups",
            "kl-weight-0.5,vae", "--quiet", *TINY, "--latent", "4", timeout=900)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    assert set(res["records"]) == {"1/kl-weight-0.5", "1/vae"}
    rows = {row["setup"]: row for row in res["rows"]}
    assert set(rows) == {"kl-weight-0.5", "vae", "expost (bernoulli)"}
    cfg = json.loads((out / "seed1" / "kl-weight-0.5" / "summary.json").read_text())
    assert cfg["dataset"] == f"mnist:{mnist_dir}" and cfg["kl_weight"] == 0.5
    assert "FD-LeNet" in (out / "results.md").read_text()
    bad = cli("xvae_fast.experiments.mnist", "--data", mnist_dir, "--out", out, "--dataset", "digits")
    assert bad.returncode == 2 and "--data" in bad.stderr


def test_stage2_trace_follows_stage_2_from_its_autoencoder_start(tmp_path, monkeypatch):
    monkeypatch.setenv("XVAE_FAST_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "trace"
    r = cli("xvae_fast.experiments.stage2_trace", "--out", out, "--epochs", "0,2", "--",
            "--limit", "300", "--latent", "4", "--epochs-ae", "2", "--epochs-vae", "2", "--em-n-init", "1",
            "--batch-size", "32", timeout=900)
    assert r.returncode == 0, r.stderr
    rows = json.loads((out / "trace.json").read_text())["rows"]
    assert [row["epoch"] for row in rows] == [0, 2]
    # --stage2-init ae: every posterior starts as wide as a prior component, then stage 2 moves them
    assert abs(rows[0]["post_var_ratio"] - 1) < 1e-4 and abs(rows[1]["post_var_ratio"] - 1) > 1e-3
    assert rows[0]["fd_expost"] == rows[1]["fd_expost"] > 0
    for row in rows:
        assert all(row[k] > 0 for k in ("fd_recon_mean", "fd_samples", "fd_refit", "latent_fd_draws"))
    assert (out / "trace.md").read_text().count("\n| ") == 3
    for argv, msg in ((["--", "--model", "vae"], "mixture X-VAE"), (["--epochs", "a", "--"], "--epochs")):
        bad = cli("xvae_fast.experiments.stage2_trace", "--out", out, *argv)
        assert bad.returncode == 2 and msg in bad.stderr, bad.stderr
