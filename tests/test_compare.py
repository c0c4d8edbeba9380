"""`python -m xvae_fast.compare`: every baseline and X-VAE configuration on one dataset and seed, the
Markdown and CSV tables (paper Tables 1/9 and 4), and continuing an interrupted comparison."""
import csv
import math
import os

import pytest

from xvae_fast.compare import KEYS, XVAE_KEYS, PAPER_KEYS, EvalSettings, _argv, _run_dir, main, run_comparison
from xvae_fast.errors import ConfigError

from train_utils import load_ck, one_thread, train

NUMBERS = ["train_objective", "test_objective", "test_recon", "test_kl", "train_recon", "train_kl"]


def _rows(out):
    with open(os.path.join(out, "comparison.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_compare_writes_every_row_and_continues_an_interrupted_comparison(tmp_path):
    out = str(tmp_path / "cmp")
    # an interrupted run already in the folder (stopped mid-epoch): the comparison resumes it
    vamp_dir = _run_dir(out, "vamp")
    assert train(*_argv("clusters", 0, "vamp", None, None, True, [], vamp_dir), "--stop-after", "1") == 0
    assert load_ck(vamp_dir)["step"] == 1
    with one_thread():
        assert main(["--data", "clusters", "--seed", "0", "--quick", "--out", out, "--quiet"]) == 0

    rows = _rows(out)
    # 5 baselines, single + 8 paper presets + matched, and the ex-post reference
    assert [r["key"] for r in rows] == PAPER_KEYS and len(rows) == 5 + 10 + 1
    by = {r["key"]: r for r in rows}
    expost = by.pop("expost")
    # the ex-post reference samples the mixture prior: the first routed row's (its EM fit on stage 1)
    assert expost["status"] == "from stage 1" and expost["run"] == by["interleaved"]["run"]
    assert expost["test_objective"] == "" and int(expost["params_total"]) == int(by["full"]["stage1_params"])
    # every row, the ex-post reference included, carries its run's comparable headline (FD-data)
    assert math.isfinite(float(expost["fd_data"])) and float(expost["fd_data"]) >= 0
    rows = [r for r in rows if r["key"] != "expost"]
    for r in rows:
        assert r["status"] == "trained", r
        for k in NUMBERS + ["fd_data"]:
            assert math.isfinite(float(r[k])), (r["key"], k)
        assert float(r["test_objective"]) == pytest.approx(float(r["test_recon"]) + float(r["test_kl"]),
                                                           rel=1e-5)
        # --quick: 192 training examples, batch 64, one epoch per stage; the first X-VAE row also
        # trains the shared stage-1 autoencoder
        assert int(r["steps"]) == (6 if r["key"] == "single" else 3)
    # the vamp run was continued, not restarted: its log shows the resume
    with open(os.path.join(vamp_dir, "train.log")) as f:
        assert "resumed" in f.read()
    # parameter counts (paper Table 4): clusters D = 2, K = 3; 10 pseudo-inputs, 3 components/clusters
    total = {k: int(by[k]["params_total"]) for k in by}
    prior = {k: int(by[k]["params_prior"]) for k in by}
    assert prior["vae"] == 0 and all(prior[k] == 0 for k in XVAE_KEYS)  # X-VAE's prior is frozen
    assert prior["vamp"] == 10 * 2 and total["vamp"] == total["vae"] + 20
    assert prior["mog"] == 3 * (2 * 3 + 1) and total["mog"] == total["vae"] + 21
    assert prior["gmvae"] == 2 * 3 * 3 and prior["hierarchical"] > 0
    # the default tight KL needs no logits head: every X-VAE row has the standard VAE's size; the
    # paper's Eq. 18 adds the logits head (64 * 3 + 3 on the clusters' MLP)
    assert all(total[k] == total["vae"] for k in XVAE_KEYS)
    assert all(r["likelihood"] == "gaussian" for r in rows)
    # the X-VAE rows share one stage-1 autoencoder
    assert len({by[k]["stage1_params"] for k in XVAE_KEYS}) == 1 and int(by["full"]["stage1_params"]) > 0
    assert load_ck(by["full"]["run"])["config"]["model_options"]["stage1_from"] == by["single"]["run"]

    with open(os.path.join(out, "comparison.md")) as f:
        md = f.read()
    assert "| Model | train | test | recon | KL | FD-data | params total | params prior |" in md
    for name in ("Standard VAE", "VampPrior VAE", "Hierarchical VAE", "Standard MoG VAE", "GM-VAE",
                 "X-VAE single-Gaussian", "X-VAE transport K (full)", "X-VAE (K-1)+1 (pi^q, N^q)"):
        assert f"| {name} |" in md, name
    assert "| Ex-post reference (X-VAE stage 1 + fitted prior) |" in md
    assert "Table 2" not in md                      # only with --evaluate
    assert "How the runs ran: 1 process on cpu, 1 threads, fp32; torch " in md   # the runs' provenance
    assert md.count("\n| ") == 1 + 16 and md.count("**") == 2  # header and 16 rows; one best

    # run again: every finished run is reused (nothing retrained), with the same numbers
    mtime = os.path.getmtime(os.path.join(by["gmvae"]["run"], "checkpoint.pt"))
    with one_thread():
        again = run_comparison("clusters", 0, out, quick=True, verbose=False)
    assert [r["status"] for r in again] == ["reused"] * 15 + ["from stage 1"]
    assert os.path.getmtime(os.path.join(by["gmvae"]["run"], "checkpoint.pt")) == mtime
    assert [float(r["test_objective"]) for r in rows] == pytest.approx([r["test_objective"] for r in again[:15]])
    # a different budget in the same folder is refused rather than mixed into the table
    with one_thread(), pytest.raises(ConfigError, match="other options.*epochs_vae"):
        run_comparison("clusters", 0, out, models=["vae"], epochs=2, quick=True, verbose=False)
    with pytest.raises(ConfigError, match="unknown model"):
        run_comparison("clusters", 0, out, models=["vq-vae"], verbose=False)


def test_compare_evaluate_adds_table_2_with_the_expost_row(tmp_path):
    out = str(tmp_path / "cmp")
    settings = EvalSettings(n_real=40, n_fake=100, classifier_steps=30)
    with one_thread():
        rows = run_comparison("clusters", 0, out, models=["vae", "matched", "expost"], quick=True,
                              verbose=False, evaluate=settings)
    assert [r["key"] for r in rows] == ["vae", "matched", "expost"]
    for r in rows:
        for k in ("rec", "fd_samples", "fd_recon", "precision", "recall", "in_modes"):
            assert math.isfinite(r[k]), (r["key"], k)
        assert len(r["mode_shares"]) == 3 and sum(r["mode_shares"]) <= 1 + 1e-9
        assert r["fd_name"] == "fd_mlp"
    # the ex-post row is the stage-1 autoencoder: its Rec is the AE's reconstruction error, not the VAE's
    assert rows[2]["run"] == rows[1]["run"] and rows[2]["rec"] != rows[1]["rec"]
    assert os.path.isfile(os.path.join(rows[1]["run"], "compare_eval_expost.json"))
    with open(os.path.join(out, "comparison.md")) as f:
        md = f.read()
    assert "## Table 2" in md and "| in modes↑ | per-mode shares |" in md
    assert md.count("| Ex-post reference (X-VAE stage 1 + fitted prior) |") == 2   # Tables 1 and 2
    csv_rows = _rows(out)
    assert csv_rows[2]["fd_samples"] and "/" in csv_rows[2]["mode_shares"]
    # a second evaluation reuses the cached reports (same numbers, no new files)
    with one_thread():
        again = run_comparison("clusters", 0, out, models=["vae", "matched", "expost"], quick=True,
                               verbose=False, evaluate=settings)
    assert [r["fd_samples"] for r in again] == [r["fd_samples"] for r in rows]
    with pytest.raises(ConfigError, match="ex-post reference row"):
        run_comparison("clusters", 0, out, models=["vae", "expost"], quick=True, verbose=False)


def test_compare_evaluate_on_a_2d_set_tabulates_the_histogram_metrics(tmp_path):
    out = str(tmp_path / "cmp2d")
    settings = EvalSettings(n_real=200, n_fake=200, classifier_steps=30)
    with one_thread():
        rows = run_comparison("8gaussians", 0, out, models=["vae"], quick=True, verbose=False,
                              evaluate=settings, extra=["--limit", "1000"])
    (r,) = rows
    for k in ("hist_kl", "jsd_sintro", "jsd", "in_modes"):
        assert math.isfinite(r[k]), k
    assert 0 <= r["jsd"] <= math.log(2) + 1e-9 and 0 <= r["modes_covered"] <= 8
    with open(os.path.join(out, "comparison.md")) as f:
        md = f.read()
    assert "| hist KL↓ | JSD (S-IntroVAE)↓ | JSD↓ | modes covered↑ | in modes↑ |" in md
    csv_row = _rows(out)[0]
    assert float(csv_row["hist_kl"]) == pytest.approx(r["hist_kl"]) and csv_row["modes_covered"] != ""


def test_compare_nll_column_for_the_models_with_a_density(tmp_path, capsys):
    """--nll: the rows with a density (VAE, X-VAE matched) get an NLL with its standard error and k;
    the ex-post reference (no encoder density) and the mse row (not a density) get none, with the
    reason kept in the row; the table says k and the binarisation. The NLL options need --evaluate
    and --nll."""
    from xvae_fast.compare import main
    from xvae_fast.evaluation.nll import NLLOptions
    out = str(tmp_path / "cmp")
    settings = EvalSettings(n_real=40, n_fake=100, classifier_steps=30,
                            nll=NLLOptions(k=4, n=24, binarize=True))
    with one_thread():
        rows = run_comparison("digits", 0, out, models=["vae", "matched", "expost"], quick=True,
                              verbose=False, evaluate=settings)
        mse = run_comparison("digits", 0, str(tmp_path / "mse"), models=["vae"], quick=True,
                             extra=["--likelihood", "mse"], verbose=False, evaluate=settings)
    by = {r["key"]: r for r in rows}
    for key in ("vae", "matched"):
        assert math.isfinite(by[key]["nll"]) and by[key]["nll"] > 0 and by[key]["nll_se"] > 0
        assert by[key]["nll_k"] == 4 and by[key]["nll_binarized"] is True
    assert by["expost"].get("nll") is None
    assert mse[0].get("nll") is None and "not a density" in mse[0]["nll_note"]
    with open(os.path.join(out, "comparison.md")) as f:
        md = f.read()
    assert "NLL↓ (nats)" in md and "k = 4" in md and "binarised once" in md
    for argv in (["--nll"], ["--evaluate", "--nll-k", "5"], ["--evaluate", "--nll", "--nll-k", "0"]):
        assert main(["--quick", "--models", "vae", "--out", str(tmp_path / "bad"), *argv]) == 2
    err = capsys.readouterr().err
    assert "--nll is for --evaluate" in err and "add --nll" in err


def test_the_papers_numbers_stand_beside_ours_on_mnist_only():
    """On MNIST (and CelebA) the tables gain a 'Beside the paper' section with the paper's Tables 4, 8
    and 9 for the rows it reports (not the library's `matched` nor the ex-post reference); units and
    feature spaces that differ from the paper's are said."""
    from xvae_fast.compare import to_markdown
    from xvae_fast.paper_results import paper_row
    rows = [
        {"key": "vae", "name": "Standard VAE", "status": "trained", "model": "vae", "test_objective": 101.5,
         "train_objective": 102.0, "test_recon": 80.0, "test_kl": 21.5, "params_total": 609729,
         "params_prior": 0, "likelihood": "bernoulli", "rec": 17.9, "fd_name": "fd_lenet", "fd_samples": 239.4},
        {"key": "k1-pq-nq", "name": "X-VAE (K-1)+1 (pi^q, N^q)", "status": "trained", "model": "xvae",
         "test_objective": 99.0, "train_objective": 99.5, "test_recon": 80.0, "test_kl": 19.0,
         "params_total": 740865, "params_prior": 0, "likelihood": "bernoulli", "rec": 16.0,
         "fd_name": "fd_lenet", "fd_samples": 120.0},
        {"key": "matched", "name": "X-VAE matched (library default)", "status": "trained", "model": "xvae",
         "test_objective": 98.0, "train_objective": 98.5, "test_recon": 79.0, "test_kl": 19.0,
         "params_total": 609729, "params_prior": 0, "likelihood": "bernoulli", "rec": 15.0,
         "fd_name": "fd_lenet", "fd_samples": 40.0},
    ]
    md = to_markdown(rows, "mnist:../shared/data/mnist", 42)
    section = md.split("## Beside the paper")[1]
    assert "| Standard VAE | 101.5 | 28.85 | 21.5 | 12.29 | 17.9 | 11.24 | 239.4 | 49.67 | 0.61 | 0.58 |" in section
    # the routed rows share the paper's "X-VAE MoG" count (0.71 M); FID 47.21 (Table 8)
    assert "| X-VAE (K-1)+1 (pi^q, N^q) | 99 | 28.56 | 19 | 12.04 | 16 | 11.6 | 120 | 47.21 | 0.74 | 0.71 |" in section
    assert "X-VAE matched" not in section                       # the paper has no such row
    assert "other units" in section and "offline FD-LeNet" in section
    assert paper_row("mnist", "split-1/3")["fid"] == 46.01 and paper_row("celeba", "k1-pq-np")["fid"] == 80.40
    # datasets the paper does not report get no such section
    assert paper_row("digits", "vae") is None
    assert "Beside the paper" not in to_markdown(rows, "digits", 42)
