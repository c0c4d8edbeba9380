"""tools/gpu_check.sh, the one-command GPU check: its CPU-side logic (arguments, the plan, the
no-GPU exit, the summary's format). The check itself needs a CUDA device."""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tools", "gpu_check.sh")


def run(*args, env=None):
    e = dict(os.environ, **(env or {}))
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, env=e, timeout=120)


def test_help_and_bad_arguments():
    r = run("--help")
    assert r.returncode == 0 and "Usage: tools/gpu_check.sh" in r.stdout
    for args, msg in ((["--frobnicate"], "unknown argument '--frobnicate'"),
                      (["--budget", "soon"], "--budget must be a positive number of seconds"),
                      (["--budget", "0"], "--budget must be a positive number"),
                      (["--skip", "lint"], "--skip: unknown step 'lint'"),
                      (["--out"], "--out needs a folder")):
        r = run(*args)
        assert r.returncode == 2, args
        assert msg in r.stderr, (args, r.stderr)


def test_dry_run_prints_every_step_and_honours_skip():
    r = run("--dry-run", "--skip", "bench", "--out", "/tmp/gc")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("TORCH_CUDA_ARCH_LIST=")
    steps = dict(line.split(": ", 1) for line in lines[1:])
    assert list(steps) == ["build", "tests", "bench", "train"]
    assert "XVAE_FAST_CUDA=1" in steps["build"] and "build_ext --inplace" in steps["build"]
    assert "-m pytest tests" in steps["tests"]
    assert steps["bench"] == "skipped"
    assert "--device cuda" in steps["train"] and "/tmp/gc/run" in steps["train"]


def test_no_cuda_device_exits_3_and_runs_nothing(tmp_path):
    out = tmp_path / "gc"
    r = run("--out", str(out), env={"CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 3
    assert "no usable CUDA device" in r.stderr
    assert not list(out.glob("*.log"))


@pytest.mark.parametrize("failed", [False, True])
def test_summary_format(tmp_path, failed):
    (tmp_path / "env.txt").write_text("torch 2.11.0 (CUDA 13.0), NVIDIA H200\n")
    (tmp_path / "build.status").write_text("ok 95 \n")
    (tmp_path / "tests.status").write_text(("FAILED" if failed else "ok") + " 210 1104 passed, 3 failed in 200s\n")
    (tmp_path / "bench.status").write_text("skipped 0 (40s of the budget left, needs 60)\n")
    r = run("--report", str(tmp_path))
    assert r.returncode == (1 if failed else 0)
    lines = r.stdout.splitlines()
    assert lines[0] == "== xvae_fast GPU check summary =="
    assert lines[1] == "  torch 2.11.0 (CUDA 13.0), NVIDIA H200"
    rows = {ln.split()[0]: ln.split() for ln in lines[2:6]}
    assert rows["build"][1:3] == ["ok", "95s"]
    assert rows["tests"][1] == ("FAILED" if failed else "ok") and rows["tests"][2] == "210s"
    assert rows["bench"][1] == "skipped" and "needs 60" in lines[4]
    assert rows["train"][1] == "not-run"
    assert ("FAILED (logs in" in lines[-1]) == failed
    assert run("--report", str(tmp_path / "missing")).returncode == 2
