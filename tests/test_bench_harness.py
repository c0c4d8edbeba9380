"""The benchmark harness runs and writes its report (no timing assertions: speed lives in bench/)."""
import json
import pathlib
import subprocess
import sys

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench" / "run.py"


def test_bench_writes_json_and_markdown(tmp_path):
    out = subprocess.run(
        [sys.executable, str(BENCH), "--ops", "mixture_kl", "routed_transport:k1-pq-nq",
         "sample_prior:per-row", "mixture_log_prob:5", "--B", "64", "--K", "3", "--dtypes", "float32",
         "--repeats", "2", "--no-compile", "--no-mixture-cases", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "full-cpu.json").read_text())
    rows = report["results"]
    assert {(r["op"], r["pass_"]) for r in rows} == {
        ("mixture_kl", "fwd"), ("mixture_kl", "fwd+bwd"), ("routed_transport:k1-pq-nq", "fwd"),
        ("routed_transport:k1-pq-nq", "fwd+bwd"), ("sample_prior:per-row", "fwd"),
        ("mixture_log_prob:5", "fwd"), ("mixture_log_prob:5", "fwd+bwd")}
    for r in rows:
        assert r["fused_ms"] > 0 and r["eager_ms"] > 0 and r["bytes_moved"] > 0
        assert r["fused_peak_bytes"] >= 0 and 0 < r["bandwidth_fraction"]
    assert report["copy_bandwidth_GBps"] > 0
    md = (tmp_path / "full-cpu.md").read_text()
    assert "| mixture_kl | float32 | 64 | 3 | fwd+bwd |" in md and "Command:" in md
    e2e = report["end_to_end"]
    assert [r["setup"] for r in e2e] == ["clusters MLP, K=3", "MNIST-shaped conv, K=64"]
    assert all(r["fused_ms"] > 0 and r["reference_ms"] > 0 for r in e2e)
    assert "| clusters MLP, K=3 |" in md


def test_bench_compile_peer_over_several_latent_sizes(tmp_path):
    out = subprocess.run(
        [sys.executable, str(BENCH), "--ops", "gaussian_kl", "--B", "16", "32", "--K", "3", "4",
         "--dtypes", "float32", "--repeats", "1", "--no-e2e", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "full-cpu.json").read_text())
    assert len(report["results"]) == 8
    assert all(r["speedup_vs_compile"] > 0 for r in report["results"])
    assert len(report["compile_seconds"]) == 4  # (fwd, fwd+bwd) x (K = 3, 4); B is dynamic


def test_lean_peers_compute_the_ops():
    # The bench's lean peers (bench/peers.py) must time the same math as the fused ops.
    import torch

    import xvae_fast as xf
    sys.path.insert(0, str(BENCH.parent))
    import peers
    torch.manual_seed(0)
    B, K = 64, 6
    w = torch.rand(K, dtype=torch.float64) + 0.1
    prior = xf.MixturePrior(w / w.sum(), torch.randn(K, K, dtype=torch.float64),
                            torch.rand(K, K, dtype=torch.float64) + 0.5)
    wt, logw, M, S, m, s = prior.tensors_for(torch.float64, "cpu")
    l, mu, lv = (torch.randn(B, K, dtype=torch.float64) * 0.5 for _ in range(3))
    torch.testing.assert_close(peers.mixture_kl(l, mu, lv, logw, m, s), xf.mixture_kl(l, mu, lv, prior)[0])
    torch.testing.assert_close(peers.gaussian_kl(mu, lv, m, s), xf.gaussian_kl(mu, lv, m, s, "mean"))
    lw = torch.log_softmax(torch.randn(5, dtype=torch.float64), 0)
    means, lvs = torch.randn(5, K, dtype=torch.float64), torch.randn(5, K, dtype=torch.float64) * 0.3
    torch.testing.assert_close(peers.mixture_log_prob(mu, lw, means, lvs), xf.mixture_log_prob(mu, lw, means, lvs))
    # the KDE's matrix-product form: equal in float64, and to float32 rounding at the benchmarked
    # inputs (N(0, I) points and centres, AVAE's bandwidths), gradients to z included
    centres = torch.randn(300, K, dtype=torch.float64)
    for dtype, tol in ((torch.float64, dict(rtol=1e-12, atol=1e-12)), (torch.float32, dict(rtol=1e-5, atol=1e-5))):
        for h in (0.584, 0.746):
            za, zb = (mu.to(dtype).clone().requires_grad_() for _ in range(2))
            a, b = peers.kde_log_prob(za, centres.to(dtype), h), xf.kde_log_prob(zb, centres.to(dtype), h)
            torch.testing.assert_close(a, b, **tol)
            torch.testing.assert_close(torch.autograd.grad(a.sum(), za)[0], torch.autograd.grad(b.sum(), zb)[0], **tol)
            # bench/kde.py's other peer: the KDE as a mixture_log_prob wrapper
            import kde
            torch.testing.assert_close(kde.kde_wrapper(zb.detach(), centres.to(dtype), h), b.detach(), **tol)
    # the random ones agree in distribution: moments of many draws
    n = 200000
    big_mu, big_lv = torch.zeros(n, K, dtype=torch.float64), torch.zeros(n, K, dtype=torch.float64)
    z_lean = peers.routed_transport_full(big_mu, big_lv, wt, M, S, m, s)
    z_fused = xf.routed_transport(big_mu, big_lv, prior, "full")
    torch.testing.assert_close(z_lean.mean(0), z_fused.mean(0), atol=0.03, rtol=0)
    torch.testing.assert_close(z_lean.std(0), z_fused.std(0), atol=0.03, rtol=0)
    zm = peers.routed_transport_matched(big_mu, big_lv)
    torch.testing.assert_close(zm.std(0), xf.routed_transport(big_mu, big_lv, prior, "matched").std(0),
                               atol=0.02, rtol=0)
    for routing in ("per-coordinate", "per-row"):
        a, b = peers.sample_prior(wt, M, S, n, routing), xf.sample_prior(prior, n, 1.0, routing)
        torch.testing.assert_close(a.mean(0), b.mean(0), atol=0.03, rtol=0)
        torch.testing.assert_close(a.std(0), b.std(0), atol=0.03, rtol=0)


def test_kde_bench_writes_its_tables(tmp_path):
    # bench/kde.py end to end on its skip-gradient table (the KDE and mixture tables time the paper
    # sizes: minutes, not a test); its peers are checked against the ops above.
    script = BENCH.parent / "kde.py"
    out = subprocess.run([sys.executable, str(script), "--only", "skip", "--repeats", "1", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "kde-cpu-skip.json").read_text())
    rows = report["rows"]
    assert [(r["N"], r["C"], r["d"]) for r in rows] == [(12800, 100, 32), (3200, 100, 128), (51200, 64, 2),
                                                       (100, 10000, 16)]
    assert all(r["all_ms"] > 0 and r["z_ms"] > 0 for r in rows)
    md = (tmp_path / "kde-cpu-skip.md").read_text()
    assert "| 12800 | 100 | 32 |" in md and "Command:" in md


def test_paper_scale_bench_times_every_phase_on_a_slice(tmp_path, mnist_dir):
    """bench/paper_scale.py on 1,280 MNIST images, 1 + 1 epochs: the phase table, the lean peer (the
    same network: the parameter counts are checked inside), both EM fits, the ratios."""
    bench = BENCH.parent / "paper_scale.py"
    out = subprocess.run(
        [sys.executable, str(bench), "--data", mnist_dir, "--epochs-ae", "1", "--epochs-vae", "1",
         "--limit", "1280", "--threads", "1", "--step-repeats", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads((tmp_path / "paper-scale-cpu.json").read_text())
    assert r["n_train"] == 1280 and r["epochs"] == [1, 1] and r["precision"] == "fp32"
    assert all(v >= 0 for v in r["phases"].values()) and r["phases"]["stage-1 epochs (sum)"] > 0
    assert abs(sum(r["phases"].values()) - r["wall_seconds"]) < 1e-6
    assert r["lean_epoch_seconds"]["fp32"] > 0 and r["lean_step_ms"]["bf16"] > 0
    em = r["em"]
    assert em["backend"] == "torch" and em["torch_seconds"] > 0 and em["sklearn_seconds"] > 0
    assert em["torch_log_likelihood"] >= em["sklearn_log_likelihood"] - 1.0
    md = (tmp_path / "paper-scale-cpu.md").read_text()
    assert "| prior fit (encode + EM) |" in md and "lean fp32 epoch / library stage-1 epoch" in md
