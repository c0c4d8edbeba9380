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
