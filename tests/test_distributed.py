"""Data-parallel training under torchrun (gloo on CPU): N ranks at B/N rows each compute what one
process computes at batch B (per step and in the final weights, for every model), resume exactly,
share one run folder, and stop together when one rank fails."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import xvae_fast
from xvae_fast import shard as sharding

from train_utils import load_ck

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(xvae_fast.__file__)))
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dist_worker.py")
sys.path.insert(0, os.path.dirname(WORKER))
from dist_worker import SETUPS  # noqa: E402

# the CLI runs: 160 training rows at batch 36 (shards of 18), 5 steps per epoch, 4 epochs in all
CLI_RUN = ["--dataset", "clusters", "--limit", "200", "--batch-size", "36", "--hidden", "16,16",
           "--epochs-ae", "2", "--epochs-vae", "2", "--em-n-init", "1", "--no-progress", "--device",
           "cpu", "--n-samples", "16", "--alphas", "0.5,1"]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def torchrun(args, nproc=2, timeout=240, **kw):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env=_env(), cwd=ROOT, **kw)


def python(args, timeout=240):
    return subprocess.run([sys.executable] + [str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, env=_env(), cwd=ROOT)


def _ok(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


# -- the shard helpers, in one process ------------------------------------------------------------
def test_split_sizes_are_contiguous_and_cover_the_batch():
    assert sharding.split_sizes(37, 2) == (19, 18)
    assert sharding.split_sizes(12, 3) == (4, 4, 4)
    assert sharding.split_sizes(5, 4) == (2, 1, 1, 1)
    s = sharding.Shard(rank=2, sizes=(2, 1, 1, 1))
    assert (s.start, s.rows, s.total, s.world) == (3, 1, 5, 4)
    assert s.loss_scale == pytest.approx(4 * 1 / 5)


def test_row_draws_give_each_rank_the_rows_one_process_draws():
    torch.manual_seed(3)
    whole = torch.randn(7, 4, 2)
    uniform = torch.rand(7, 5)
    for rank, (start, rows) in enumerate([(0, 4), (4, 3)]):
        torch.manual_seed(3)
        with sharding.active(sharding.Shard(rank, (4, 3))):
            part = sharding.randn_rows((rows, 4, 2))
            upart = sharding.rand_rows((rows, 5))
        assert torch.equal(part, whole[start:start + rows])
        assert torch.equal(upart, uniform[start:start + rows])
    with sharding.active(sharding.Shard(1, (4, 3))):
        with pytest.raises(ValueError, match="needs 3 rows"):
            sharding.randn_rows((4, 2))
    # no shard (or one rank): the plain draw
    torch.manual_seed(5)
    a = sharding.randn_rows((3, 2))
    torch.manual_seed(5)
    assert torch.equal(a, torch.randn(3, 2))


def test_global_term_keeps_the_value_and_undoes_the_rank_scale():
    t = torch.tensor(2.0, requires_grad=True)
    with sharding.active(sharding.Shard(0, (3, 1))):     # loss scale 2 * 3 / 4 = 1.5
        y = sharding.global_term(t * 3)
    y.backward()
    assert float(y.detach()) == 6.0 and float(t.grad) == pytest.approx(3 / 1.5)
    t.grad = None
    (sharding.global_term(t * 3)).backward()              # no shard: the identity
    assert float(t.grad) == 3.0


# -- two ranks against one process ---------------------------------------------------------------
@pytest.fixture(scope="module")
def worker_runs(tmp_path_factory):
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    _ok(python([WORKER, one]))
    _ok(torchrun([WORKER, two]))
    load = lambda p: torch.load(p, weights_only=False)  # noqa: E731
    return load(one / "rank0.pt"), load(two / "rank0.pt"), load(two / "rank1.pt")


@pytest.mark.parametrize("setup", list(SETUPS))
def test_two_ranks_match_one_process_per_step_and_in_the_weights(worker_runs, setup):
    single, r0, r1 = (w[setup] for w in worker_runs)
    steps = single["steps"]
    assert steps.numel() >= 40 and torch.isfinite(steps).all()
    # the logged terms are global on every rank, and equal one process's to float32 round-off
    assert torch.equal(r0["steps"], r1["steps"])
    torch.testing.assert_close(r0["steps"], steps, rtol=2e-5, atol=2e-5)
    for module, state in single["weights"].items():
        for key, v in state.items():
            torch.testing.assert_close(r0["weights"][module][key], v, rtol=1e-4, atol=1e-5,
                                       msg=lambda m: f"{setup}: {module}.{key}: {m}")
    # DDP keeps the ranks' parameters identical (buffers may hold the last schedule value)
    for module, state in r0["weights"].items():
        for key, v in state.items():
            if "tau" not in key:
                assert torch.equal(v, r1["weights"][module][key]), f"{setup}: {module}.{key}"


# -- the command line: same run folder, exact resume ---------------------------------------------
def test_torchrun_writes_the_single_process_run_folder_and_resumes_exactly(tmp_path):
    single, full, part = tmp_path / "single", tmp_path / "full", tmp_path / "part"
    _ok(python(["-m", "xvae_fast.train"] + CLI_RUN + ["--out", single]))
    out = _ok(torchrun(["-m", "xvae_fast.train"] + CLI_RUN + ["--out", full]))
    assert out.stdout.count("done:") == 1                       # rank 0 reports
    assert "x 2 ranks (global batch 36)" in (full / "train.log").read_text()
    assert sorted(os.listdir(single)) == sorted(os.listdir(full))
    a, b = load_ck(single), load_ck(full)
    assert a["step"] == b["step"] == 20 and b["stage"] == "done"
    for part_name in ("ae", "vae"):
        for k, v in a["models"][part_name].items():
            torch.testing.assert_close(b["models"][part_name][k], v, rtol=1e-4, atol=1e-5)
    # kill-and-resume: stop at step 7 (mid-epoch), continue on two ranks, land on the same weights
    stopped = _ok(torchrun(["-m", "xvae_fast.train"] + CLI_RUN + ["--out", part, "--stop-after", "7"]))
    assert "stopped at step 7" in stopped.stdout and load_ck(part)["step"] == 7
    _ok(torchrun(["-m", "xvae_fast.train", "--resume", part]))
    c = load_ck(part)
    assert c["step"] == 20 and c["stage"] == "done"
    for part_name in ("ae", "vae"):
        for k, v in b["models"][part_name].items():
            assert torch.equal(c["models"][part_name][k], v), f"{part_name}.{k}"
    assert torch.equal(c["rng"]["torch"], b["rng"]["torch"])
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("time_s", "eval_s")} for r in h]  # noqa: E731
    assert strip(c["history"]) == strip(b["history"])


# -- errors ----------------------------------------------------------------------------------------
def test_a_batch_smaller_than_the_ranks_is_refused_on_every_rank(tmp_path):
    # 160 rows at batch 53: the last batch has 1 row for 2 ranks
    args = CLI_RUN[:4] + ["--batch-size", "53", "--no-progress", "--device", "cpu"]
    proc = torchrun(["-m", "xvae_fast.train"] + args + ["--out", tmp_path / "run"], timeout=120)
    assert proc.returncode != 0
    assert "leaves a batch of 1 row(s), fewer than the 2 ranks" in proc.stderr
    # torchrun reports the failed workers with its own traceback; the workers print no traceback
    assert "xvae_fast/training" not in proc.stderr and "xvae_fast/train.py" not in proc.stderr
    assert "exitcode  : 2" in proc.stderr                     # our command-line error code
    assert not (tmp_path / "run").exists()


def test_an_unwritable_out_is_reported_by_every_rank_without_a_hang(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = torchrun(["-m", "xvae_fast.train"] + CLI_RUN + ["--out", blocker / "run"], timeout=120)
    assert proc.returncode != 0
    assert "error: --out" in proc.stderr and "[rank 1] error:" in proc.stderr


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _launch(args, max_restarts=0):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           f"--max-restarts={max_restarts}"]
    return subprocess.Popen(cmd + [str(a) for a in args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT,
                            start_new_session=True)


def _kill_a_worker_after(proc, log, marker):
    """Wait for `marker` in the run's train.log, then SIGKILL one of torchrun's two workers."""
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and marker in log.read_text()):
        time.sleep(0.1)
    assert log.exists() and marker in log.read_text(), "the run did not start"
    workers = _children(proc.pid)
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGKILL)          # a rank dies mid-training
    return workers


def test_a_failing_rank_stops_the_others(tmp_path):
    run = tmp_path / "run"
    proc = _launch(["-m", "xvae_fast.train"] + CLI_RUN + ["--epochs-ae", "400", "--out", run])
    try:
        workers = _kill_a_worker_after(proc, run / "train.log", "AE epoch 2/")
        t0 = time.time()
        _, err = proc.communicate(timeout=90)
        waited = time.time() - t0
    finally:
        if proc.poll() is None:     # kill torchrun and its workers, whose pipes would keep us waiting
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert waited < 90
    assert "Signal 9 (SIGKILL)" in err
    assert all(not os.path.exists(f"/proc/{w}") or _is_zombie(w) for w in workers)
    # the run is resumable from rank 0's last checkpoint
    ck = load_ck(run)
    assert ck["stage"] == "ae" and ck["step"] >= 10


def test_auto_resume_starts_then_resumes_and_refuses_overwrite(tmp_path):
    from xvae_fast.errors import ConfigError
    from train_utils import TINY_CLUSTERS, train
    run = tmp_path / "run"
    assert train(*TINY_CLUSTERS, "--no-outputs", "--out", run, "--auto-resume", "--stop-after", "7") == 0
    assert load_ck(run)["step"] == 7
    assert train(*TINY_CLUSTERS, "--no-outputs", "--out", run, "--auto-resume") == 0
    assert load_ck(run)["step"] == 20 and "resumed" in (run / "train.log").read_text()
    ref = tmp_path / "ref"
    assert train(*TINY_CLUSTERS, "--no-outputs", "--out", ref) == 0
    for k, v in load_ck(ref)["models"]["vae"].items():
        assert torch.equal(load_ck(run)["models"]["vae"][k], v)
    from xvae_fast.train import parse_config
    from xvae_fast.training.trainer import Trainer
    cfg, explicit = parse_config(TINY_CLUSTERS + ["--out", str(run), "--auto-resume", "--overwrite"])
    with pytest.raises(ConfigError, match="--auto-resume and --overwrite"):
        Trainer(cfg, explicit=explicit)


def _is_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] == "Z"
    except OSError:
        return True
