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
