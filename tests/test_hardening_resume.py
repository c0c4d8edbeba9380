"""Issue 26, the checkpoint and run-folder items: checkpoints that prove their integrity (a digest
checked on every load), one writer per run folder (an OS lock), a checkpoint from another run refused
on resume, config.yaml repaired from the checkpoint, a finished run's deleted outputs written again, a
full disk as one line with no temporary file left, NaN-stop advice that a resume accepts, --out /
--overwrite / --stop-after on resume, stale temporary files removed, --auto-resume named for a folder
without a checkpoint, and checkpoint permissions like every other output's."""
import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np
import pytest
import torch
import yaml

import xvae_fast
from xvae_fast import evaluate, sample
from xvae_fast.config import TrainConfig
from xvae_fast.errors import CheckpointError
from xvae_fast.training import checkpoint as ckpt

from train_utils import TINY_CLUSTERS, load_ck, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(xvae_fast.__file__)))
LOCK_FILE = ".train.lock"      # xvae_fast.training.run_lock.LOCK_FILE
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished run with its outputs, and a run stopped at step 7 (stage 1, epoch 2), to copy."""
    root = tmp_path_factory.mktemp("hardening_resume")
    runs = {"done": str(root / "done"), "stopped": str(root / "stopped")}
    assert train(*TINY_CLUSTERS, "--out", runs["done"]) == 0
    assert train(*TINY_CLUSTERS, "--no-outputs", "--stop-after", "7", "--out", runs["stopped"]) == 0
    return runs


def _copy(src, tmp_path, name="run"):
    dst = str(tmp_path / name)
    shutil.copytree(src, dst)
    return dst


def _bytes(path):
    with open(path, "rb") as f:
        return f.read()


def _temp_files(folder):
    return [f for f in os.listdir(folder) if ".tmp" in f or f.endswith(".part")]


def _data_records(path):
    """(start, end) byte ranges of the tensor records (`.../data/N`) inside a checkpoint's zip."""
    out = []
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if "/data/" in info.filename and info.file_size:
                with open(path, "rb") as f:
                    f.seek(info.header_offset)
                    head = f.read(30)
                start = info.header_offset + 30 + int.from_bytes(head[26:28], "little") \
                    + int.from_bytes(head[28:30], "little")
                out.append((start, start + info.compress_size))
    return out


# -- 1. integrity ------------------------------------------------------------------------------------

def test_overwritten_tensor_bytes_are_refused_by_every_command(base, tmp_path, capsys):
    run = _copy(base["done"], tmp_path)
    path = os.path.join(run, "checkpoint.pt")
    data = bytearray(_bytes(path))
    ck = load_ck(run)
    key, weight = next((k, v) for k, v in ck["models"]["vae"].items() if v.numel() * 4 >= 1000)
    at = data.find(weight.numpy().tobytes())
    assert at > 0
    # 400 bytes of the weight's record become finite floats: the zip CRC breaks, torch.load does not care
    data[at + 200:at + 600] = np.full(100, 0.5, np.float32).tobytes()
    with open(path, "wb") as f:
        f.write(data)
    raw = torch.load(path, weights_only=True)["models"]["vae"][key]
    assert torch.isfinite(raw).all() and not torch.equal(raw, weight)      # a real, silent corruption

    with pytest.raises(CheckpointError, match="does not match the sha256 digest") as info:
        ckpt.load_checkpoint(run)
    assert repr(path) in str(info.value)
    assert train("--resume", run) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {path!r} is corrupt" in err and "Traceback" not in err
    assert sample.main(["--run", run, "--n", "8", "--out", str(tmp_path / "s.npy")]) == 2
    assert f"checkpoint {path!r} is corrupt" in capsys.readouterr().err
    assert not (tmp_path / "s.npy").exists()
    assert evaluate.main(["--run", run, "--quiet", "--out", str(tmp_path / "ev")]) == 2
    assert f"checkpoint {path!r} is corrupt" in capsys.readouterr().err
    # compare (and the sweeps) decide reuse from the checkpoint: the same error
    from xvae_fast.training.runs import run_status
    with pytest.raises(CheckpointError, match="corrupt"):
        run_status(run, TrainConfig.from_saved(ck["config"]))


@pytest.mark.parametrize("seed", range(4))
def test_random_byte_flips_in_tensor_records_are_caught(base, tmp_path, seed):
    src = os.path.join(base["done"], "checkpoint.pt")
    data = bytearray(_bytes(src))
    records = _data_records(src)
    positions = np.concatenate([np.arange(a, b) for a, b in records])
    rng = np.random.default_rng(seed)
    for p in rng.choice(positions, 20, replace=False):
        data[p] ^= int(rng.integers(1, 256))
    path = str(tmp_path / "checkpoint.pt")
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(CheckpointError) as info:
        ckpt.load_checkpoint(path)
    assert repr(path) in str(info.value) and "corrupt" in str(info.value)


def test_checkpoint_without_a_digest_still_loads_and_its_crcs_are_checked(base, tmp_path, capsys):
    run = _copy(base["done"], tmp_path)
    path = os.path.join(run, "checkpoint.pt")
    ck = load_ck(run)
    assert ck["version"] == 1
    ck.pop("digest", None)                   # what xvae_fast wrote before the digest
    torch.save(ck, path)
    assert ckpt.load_checkpoint(run)["step"] == ck["step"]
    assert sample.main(["--run", run, "--n", "8", "--out", str(tmp_path / "s.npy")]) == 0
    capsys.readouterr()
    start, end = max(_data_records(path), key=lambda r: r[1] - r[0])
    data = bytearray(_bytes(path))
    data[start + 8] ^= 0x40
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(CheckpointError, match="fails the zip CRC check"):
        ckpt.load_checkpoint(run)


def test_a_rewritten_checkpoint_gets_a_new_digest(base, tmp_path):
    """atomic_save seals what it writes, so an edited checkpoint saved through it loads."""
    ck = load_ck(base["stopped"])
    ck["history"].append({"stage": "ae", "epoch": 99})
    path = str(tmp_path / "checkpoint.pt")
    torch.save(ck, path)                     # the old digest no longer matches
    with pytest.raises(CheckpointError, match="digest"):
        ckpt.load_checkpoint(path)
    ckpt.atomic_save(ck, path)
    assert ckpt.load_checkpoint(path)["history"][-1]["epoch"] == 99


# -- 3. one writer per run folder --------------------------------------------------------------------

def _wait(cond, timeout=120, proc=None):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


def _stage(run):
    try:
        return ckpt.load_checkpoint(run)["stage"]
    except CheckpointError:
        return None


def test_a_second_training_on_a_folder_in_use_is_refused_naming_the_holder(tmp_path, capsys):
    run = str(tmp_path / "run")
    args = list(TINY_CLUSTERS)
    args[args.index("--epochs-vae") + 1] = "100000"
    holder = subprocess.Popen([sys.executable, "-m", "xvae_fast.train", *args, "--no-outputs", "--out", run],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, env=ENV)
    try:
        assert _wait(lambda: _stage(run) == "vae", proc=holder), holder.stderr.read().decode()[-2000:]
        for extra in ([*TINY_CLUSTERS, "--out", run], [*TINY_CLUSTERS, "--out", run, "--overwrite"],
                      ["--resume", run], ["--auto-resume", *TINY_CLUSTERS, "--out", run]):
            assert train(*extra) == 2
            err = capsys.readouterr().err
            assert f"is being written by another training (pid {holder.pid}" in err, err
        with open(os.path.join(run, LOCK_FILE)) as f:
            assert f"pid={holder.pid}" in f.read()
        assert os.path.isfile(os.path.join(run, "checkpoint.pt"))      # --overwrite deleted nothing
        # readers keep working during the training
        assert sample.main(["--run", run, "--n", "16", "--out", str(tmp_path / "s.npy")]) == 0
        assert np.load(tmp_path / "s.npy").shape == (16, 2)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    # a killed holder leaves its lock file but no lock: the run resumes
    assert os.path.isfile(os.path.join(run, LOCK_FILE))
    step = ckpt.load_checkpoint(run)["step"]
    assert train("--resume", run, "--stop-after", step + 1) == 0
    assert load_ck(run)["step"] == step + 1
    assert not os.path.exists(os.path.join(run, LOCK_FILE))     # let go, and removed, at the end


def test_run_lock_in_one_process(tmp_path):
    from xvae_fast.training.run_lock import RunLock, RunLockedError
    first = RunLock.acquire(str(tmp_path))
    try:
        with pytest.raises(RunLockedError, match=rf"pid {os.getpid()} \(this process\)"):
            RunLock.acquire(str(tmp_path))
    finally:
        first.release()
    second = RunLock.acquire(str(tmp_path))      # free again
    second.release()
    assert os.listdir(tmp_path) == []


# -- 4 and 5. the checkpoint against the folder's config.yaml ----------------------------------------

@pytest.mark.parametrize("other, differs", [
    (["--latent", "4"], "latent (config.yaml: 3, checkpoint: 4)"),
    (["--model", "vae"], "model (config.yaml: 'xvae', checkpoint: 'vae')"),
])
def test_a_checkpoint_of_another_run_is_refused(base, tmp_path, capsys, other, differs):
    donor = str(tmp_path / "donor")
    assert train(*TINY_CLUSTERS, *other, "--no-outputs", "--stop-after", "2", "--out", donor) == 0
    run = _copy(base["stopped"], tmp_path)
    shutil.copy(os.path.join(donor, "checkpoint.pt"), os.path.join(run, "checkpoint.pt"))
    before = sorted(os.listdir(run))
    capsys.readouterr()
    assert train("--resume", run) == 2
    err = capsys.readouterr().err
    assert "does not belong to the run in" in err and differs in err, err
    assert sorted(os.listdir(run)) == before and load_ck(run)["step"] == 2     # nothing trained


@pytest.mark.parametrize("damage", ["binary", "banana", "deleted", "not a mapping"])
def test_a_damaged_config_yaml_is_rewritten_from_the_checkpoint(base, tmp_path, capsys, damage):
    run = _copy(base["stopped"], tmp_path)
    config = os.path.join(run, "config.yaml")
    with open(config, encoding="utf-8") as f:
        original = yaml.safe_load(f)
    if damage == "deleted":
        os.unlink(config)
    else:
        with open(config, "wb") as f:
            f.write({"binary": b"\x89PNG\r\n\x1a\n\x00\xff\xfe\xfd", "banana": b"model: banana\n",
                     "not a mapping": b"- 1\n- 2\n"}[damage])
    assert train("--resume", run, "--stop-after", "9") == 0
    assert "config.yaml was" in capsys.readouterr().err
    with open(os.path.join(run, "train.log"), encoding="utf-8") as f:
        assert "rewrote it from the checkpoint" in f.read()
    with open(config, encoding="utf-8") as f:
        repaired = yaml.safe_load(f)
    # the same options as the config.yaml the run started with: --config config.yaml repeats the run
    assert {k: v for k, v in repaired.items() if k != "out"} == {k: v for k, v in original.items() if k != "out"}
    assert repaired["out"] == run
    assert load_ck(run)["step"] == 9


# -- 6. a finished run whose outputs were deleted ----------------------------------------------------

def test_resume_of_a_finished_run_writes_its_deleted_outputs_again(base, tmp_path, capsys):
    run = _copy(base["done"], tmp_path)
    samples = _bytes(os.path.join(run, "samples.npy"))
    summary = json.load(open(os.path.join(run, "summary.json")))
    ck_before = _bytes(os.path.join(run, "checkpoint.pt"))
    for name in ("samples.png", "samples.npy", "curves.png", "metrics.csv"):
        os.unlink(os.path.join(run, name))
    assert train("--resume", run) == 0
    assert "missing: writing its outputs again" in capsys.readouterr().err
    for name in ("samples.png", "samples.npy", "curves.png", "metrics.csv"):
        assert os.path.isfile(os.path.join(run, name)), name
    assert _bytes(os.path.join(run, "samples.npy")) == samples     # the same samples (fixed seeds)
    assert _bytes(os.path.join(run, "checkpoint.pt")) == ck_before
    os.unlink(os.path.join(run, "summary.json"))
    assert train("--resume", run) == 0
    again = json.load(open(os.path.join(run, "summary.json")))
    assert again["test"] == summary["test"] and again["files"] == summary["files"]
    capsys.readouterr()
    assert train("--resume", run) == 0                   # nothing missing: nothing written
    assert "this run is already complete\n" in capsys.readouterr().err
    assert not glob.glob(os.path.join(run, ".*"))        # no lock file or temporary file is left


# -- 7. a full disk ----------------------------------------------------------------------------------

FSIZE = r'''
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit then fails with EFBIG
lim = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (lim, lim))
sys.argv = [sys.argv[2]] + sys.argv[3:]
runpy.run_module(sys.argv[0], run_name="__main__")
'''


def _capped(limit, module, *args):
    return subprocess.run([sys.executable, "-c", FSIZE, str(limit), module, *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=300)


def _error_lines(stderr):
    return [ln for ln in stderr.splitlines() if not ln.startswith("[xvae_fast]")]


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(base, tmp_path):
    run = _copy(base["stopped"], tmp_path)
    before = _bytes(os.path.join(run, "checkpoint.pt"))
    assert len(before) > 30_000
    r = _capped(30_000, "xvae_fast.train", "--resume", run)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = _error_lines(r.stderr)
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert lines[0].startswith(f"error: cannot write 'checkpoint.pt' in {run!r}: the file size limit")
    assert "needs about" in lines[0] and f"--resume {run}" in lines[0]
    assert _temp_files(run) == []
    assert _bytes(os.path.join(run, "checkpoint.pt")) == before       # the last checkpoint is kept

    # the file size limit reached in a plain append (train.log): one line naming the run folder
    log = os.path.getsize(os.path.join(run, "train.log"))
    r = _capped(log + 20, "xvae_fast.train", "--resume", run)
    assert r.returncode == 2, r.stderr[-3000:]
    assert _error_lines(r.stderr) == [f"error: cannot write in {run!r}: the file size limit (ulimit -f) is "
                                      "reached (needs more room)"], r.stderr[-3000:]
    assert _temp_files(run) == [] and _bytes(os.path.join(run, "checkpoint.pt")) == before

    out = tmp_path / "out"
    out.mkdir()
    r = _capped(100_000, "xvae_fast.sample", "--run", base["done"], "--n", "100000", "--out", out / "s.npy")
    assert r.returncode == 2, r.stderr[-3000:]
    assert r.stderr.strip().splitlines() == [
        f"error: cannot write 's.npy' in {str(out)!r}: the file size limit (ulimit -f) is reached "
        "(needs more than the 97.7 KB written)"], r.stderr[-3000:]
    assert os.listdir(out) == []
    # the .png grid too: one line, and no half-written picture left
    r = _capped(2_000, "xvae_fast.sample", "--run", base["done"], "--n", "64", "--out", out / "s.png")
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: cannot write 's.png' in {str(out)!r}: the file size limit (ulimit -f) is reached"), lines
    assert os.listdir(out) == []


# -- 15. the NaN stop's advice works ------------------------------------------------------------------

def test_resume_may_lower_the_lr_and_set_a_grad_clip(base, tmp_path, capsys):
    run = _copy(base["stopped"], tmp_path)
    assert train("--resume", run, "--lr", "1e-4", "--grad-clip", "0.5", "--stop-after", "9") == 0
    ck = load_ck(run)
    assert ck["step"] == 9 and ck["config"]["lr"] == 1e-4 and ck["config"]["grad_clip"] == 0.5
    assert ck["optimizers"]["ae"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    assert ck["optimizers"]["vae"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    assert ck["changes"] == [{"step": 7, "option": "lr", "from": 1e-3, "to": 1e-4},
                             {"step": 7, "option": "grad_clip", "from": 0.0, "to": 0.5}]
    assert "--lr changed on resume from 0.001 to 0.0001 at step 7" in capsys.readouterr().err
    # the changed values carry on; config.yaml (the run's start) does not make the next resume refuse
    assert train("--resume", run, "--stop-after", "10") == 0
    ck = load_ck(run)
    assert ck["config"]["lr"] == 1e-4 and len(ck["changes"]) == 2
    assert ck["optimizers"]["ae"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    # the model and data options are still refused
    assert train("--resume", run, "--latent", "5") == 2
    assert "latent (checkpoint: 3, given: 5)" in capsys.readouterr().err


def test_an_overflowed_adam_state_written_by_the_trainer_resumes(base, tmp_path):
    """A huge gradient makes Adam's exp_avg_sq inf while the weights stay finite (seen at --lr 100):
    the trainer writes that checkpoint, so it must load, and the resume continues from it."""
    run = _copy(base["stopped"], tmp_path)
    path = os.path.join(run, "checkpoint.pt")
    ck = load_ck(run)
    ck["optimizers"]["ae"]["state"][0]["exp_avg_sq"][0] = float("inf")
    ckpt.atomic_save(ck, path)
    assert train("--resume", run, "--stop-after", "9") == 0
    ck = load_ck(run)
    assert ck["step"] == 9 and all(torch.isfinite(v).all() for v in ck["models"]["ae"].values())
    # without a digest, a non-finite optimizer state may be damage: still refused, named
    ck.pop("digest")
    torch.save(ck, path)
    with pytest.raises(CheckpointError, match="optimizers.ae.state.0.exp_avg_sq.*NaN or inf"):
        ckpt.load_checkpoint(run)


def test_the_nan_stop_advises_a_resume_that_is_accepted(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)
    x[150] = 1e20  # its squared error overflows float32 to inf
    np.save(tmp_path / "x.npy", x)
    run = str(tmp_path / "run")
    assert train("--dataset", f"npy:{tmp_path / 'x.npy'}", "--no-standardize", "--limit", "200", "--batch-size",
                 "32", "--hidden", "8", "--latent", "3", "--epochs-ae", "3", "--epochs-vae", "1",
                 "--checkpoint-every", "1", "--no-progress", "--out", run) == 1
    err = capsys.readouterr().err
    m = re.search(r"python -m xvae_fast\.train (--resume .*?); or check", err)
    assert m, err
    args = shlex.split(m.group(1))
    assert args[:2] == ["--resume", run] and "--lr" in args and "--grad-clip" in args
    assert train(*args) == 1          # the data still overflows, but the resume itself is accepted
    err = capsys.readouterr().err
    assert "cannot resume" not in err and "non-finite loss" in err
    with open(os.path.join(run, "train.log"), encoding="utf-8") as f:
        log = f.read()
    assert "--lr changed on resume from 0.001 to 0.0001" in log and "--grad-clip changed on resume" in log


# -- 16. --out, --overwrite and --stop-after on resume -----------------------------------------------

def test_resume_refuses_out_and_overwrite_and_an_earlier_stop(base, tmp_path, capsys):
    run = _copy(base["stopped"], tmp_path)
    before = _bytes(os.path.join(run, "checkpoint.pt"))
    other = str(tmp_path / "other")
    assert train("--resume", run, "--out", other) == 2
    assert f"--out {other!r} differs from --resume" in capsys.readouterr().err
    assert not os.path.exists(other)
    assert train("--resume", run, "--overwrite") == 2
    assert "--overwrite and --resume contradict each other" in capsys.readouterr().err
    assert train("--resume", run, "--stop-after", "5") == 2
    assert "--stop-after 5: the run in" in capsys.readouterr().err
    assert _bytes(os.path.join(run, "checkpoint.pt")) == before
    # --out naming the run's own folder is no contradiction; --stop-after at the run's step trains nothing
    assert train("--resume", run, "--out", run, "--stop-after", "7") == 0
    assert "already at step 7 (--stop-after 7): nothing to train" in capsys.readouterr().err
    assert _bytes(os.path.join(run, "checkpoint.pt")) == before


# -- 17. temporary files of killed writes, a folder without a checkpoint, permissions ------------------

KILLED_WRITE = r'''
import os, signal, sys
from xvae_fast.atomic_file import atomic_open
with atomic_open(sys.argv[1], "wb", prefix=sys.argv[2] or None, suffix=sys.argv[3]) as f:
    f.write(b"x" * 4096)
    f.flush()
    if sys.argv[4] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    print("writing", flush=True)
    sys.stdin.read()
'''


def test_temporary_files_of_killed_writes_are_removed_on_resume(base, tmp_path, capsys):
    run = _copy(base["stopped"], tmp_path)
    killed = subprocess.Popen([sys.executable, "-c", KILLED_WRITE, os.path.join(run, "checkpoint.pt"), "", ".tmp",
                               "kill"], cwd=ROOT, env=ENV)
    assert killed.wait(timeout=120) == -signal.SIGKILL
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, env=ENV)
    old_style = os.path.join(run, f"metrics.json.tmp-{int(dead.stdout)}")     # older writers' names
    with open(old_style, "w") as f:
        f.write("{")
    fd, older = tempfile.mkstemp(prefix=".checkpoint.pt.", suffix=".tmp", dir=run)    # before the pid
    os.close(fd)
    live = subprocess.Popen([sys.executable, "-c", KILLED_WRITE, os.path.join(run, "more.npy"), ".samples-",
                             ".npy.part", "live"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
                            env=ENV, text=True)
    try:
        assert live.stdout.readline().strip() == "writing"
        stale = sorted(f for f in _temp_files(run) if ".samples-" not in f)
        assert len(stale) == 3 and any(f.startswith(f".checkpoint.pt.{killed.pid}-") for f in stale), stale
        assert train("--resume", run, "--stop-after", "8") == 0
        left = _temp_files(run)
        assert len(left) == 1 and left[0].startswith(f".samples-{live.pid}-")   # a live writer's is kept
        assert f"removed 3 temporary file(s) that interrupted writes left: {', '.join(stale)}" in \
            capsys.readouterr().err
    finally:
        live.communicate("", timeout=60)
    assert live.returncode == 0 and _temp_files(run) == [] and os.path.isfile(os.path.join(run, "more.npy"))


def test_resume_of_a_folder_killed_before_its_first_checkpoint_names_auto_resume(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(200_000, 2)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    run = str(tmp_path / "run")
    p = subprocess.Popen([sys.executable, "-m", "xvae_fast.train", "--dataset", f"npy:{tmp_path / 'x.npy'}",
                          "--hidden", "8", "--latent", "2", "--batch-size", "8", "--epochs-ae", "1",
                          "--epochs-vae", "1", "--em-n-init", "1", "--no-progress", "--no-outputs", "--out", run],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, env=ENV)
    try:
        assert _wait(lambda: os.path.isfile(os.path.join(run, "config.yaml")), proc=p)
    finally:
        p.kill()
        p.wait()
    assert not os.path.exists(os.path.join(run, "checkpoint.pt"))
    assert train("--resume", run) == 2
    err = capsys.readouterr().err
    m = re.search(r"Start it again with python -m xvae_fast\.train (.*?): --auto-resume", err)
    assert m and "nothing to resume" in err, err
    args = shlex.split(m.group(1))
    assert args == ["--config", os.path.join(run, "config.yaml"), "--auto-resume"]
    assert train(*args, "--stop-after", "3") == 0          # the advised command starts it ...
    assert load_ck(run)["step"] == 3
    assert train(*args, "--stop-after", "5") == 0          # ... and continues it
    assert load_ck(run)["step"] == 5


def test_checkpoints_get_the_permissions_of_every_other_output(base, tmp_path):
    old = os.umask(0o027)
    try:
        run = str(tmp_path / "run")
        assert train(*TINY_CLUSTERS, "--no-outputs", "--stop-after", "6", "--out", run) == 0
        modes = {n: os.stat(os.path.join(run, n)).st_mode & 0o777
                 for n in ("checkpoint.pt", "config.yaml", "metrics.json", "train.log")}
        assert set(modes.values()) == {0o640}, modes
        os.chmod(os.path.join(run, "checkpoint.pt"), 0o600)      # a mode chosen by the user is kept
        assert train("--resume", run, "--stop-after", "8") == 0
        assert os.stat(os.path.join(run, "checkpoint.pt")).st_mode & 0o777 == 0o600
        assert sample.main(["--run", base["done"], "--n", "8", "--out", str(tmp_path / "s.npy")]) == 0
        assert os.stat(tmp_path / "s.npy").st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
