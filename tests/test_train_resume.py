"""Checkpoints: exact resume, atomic writes, clear errors for corrupt or mismatched checkpoints, and
the non-finite loss stop that keeps the last good checkpoint."""
import glob
import os

import numpy as np
import pytest
import torch

from xvae_fast.errors import CheckpointError, NonFiniteLossError
from xvae_fast.training import atomic_save, load_checkpoint
from xvae_fast.training.trainer import Trainer
from xvae_fast.config import TrainConfig

from train_utils import TINY_CLUSTERS, cli, load_ck, one_thread, train

# 2 AE epochs + 2 VAE epochs of 5 steps = 20 steps in all.
UNINTERRUPTED = {}


def _assert_same_run(a, b):
    assert a["stage"] == b["stage"] == "done" and a["step"] == b["step"]
    for part in ("ae", "vae"):
        if a["models"][part] is None:
            assert b["models"][part] is None
            continue
        for k, v in a["models"][part].items():
            assert torch.equal(v, b["models"][part][k]), f"{part}.{k} differs"
    for stage, opt in a["optimizers"].items():
        for pid, st in opt["state"].items():
            for k, v in st.items():
                assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["optimizers"][stage]["state"][pid][k]))
    for k in ("weights", "means", "stds"):
        assert torch.equal(a["prior"][k], b["prior"][k])
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("time_s", "eval_s")} for r in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert a["schedulers"] == b["schedulers"]


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory):
    """Uninterrupted runs, one per model/plan, to compare the resumed ones with."""
    root = tmp_path_factory.mktemp("uninterrupted")
    runs = {}
    for name, extra in (("full", ["--plan", "full"]),
                        ("interleaved", ["--plan", "interleaved", "--lr-schedule", "cosine"]),
                        ("vae", ["--model", "vae"])):
        run = str(root / name)
        assert train(*TINY_CLUSTERS, *extra, "--no-outputs", "--out", run) == 0
        runs[name] = (run, extra)
    return runs


@pytest.mark.parametrize("name,stop", [("full", 3), ("full", 10), ("full", 13), ("interleaved", 17),
                                       ("vae", 7)])
def test_resume_gives_the_same_weights(reference_runs, tmp_path, name, stop):
    """Stop after `stop` steps (mid-epoch in stage 1, at the stage boundary, mid-epoch in stage 2),
    resume, and end with exactly the weights of the uninterrupted run."""
    ref, extra = reference_runs[name]
    run = str(tmp_path / "run")
    assert train(*TINY_CLUSTERS, *extra, "--no-outputs", "--out", run, "--stop-after", stop) == 0
    mid = load_ck(run)
    assert mid["step"] == stop and mid["stage"] != "done"
    assert train("--resume", run, "--no-progress") == 0
    _assert_same_run(load_ck(ref), load_ck(run))


def test_resume_of_a_checkpoint_every_n_steps_copy(reference_runs, tmp_path):
    """A checkpoint written by --checkpoint-every (not the last one) is a valid resume point."""
    ref, extra = reference_runs["full"]
    run = str(tmp_path / "run")
    assert train(*TINY_CLUSTERS, *extra, "--no-outputs", "--out", run, "--checkpoint-every", "2",
                 "--stop-after", "14") == 0
    assert load_ck(run)["step"] == 14 and load_ck(run)["batch"] == 4
    assert train("--resume", run, "--no-progress") == 0
    _assert_same_run(load_ck(ref), load_ck(run))


def test_resume_rejects_changed_options(reference_runs, tmp_path):
    ref, extra = reference_runs["full"]
    run = str(tmp_path / "run")
    assert train(*TINY_CLUSTERS, *extra, "--no-outputs", "--out", run, "--stop-after", "3") == 0
    with one_thread(), pytest.raises(CheckpointError, match=r"latent \(checkpoint: 3, given: 5\)"):
        Trainer(TrainConfig(resume=run, latent=5), explicit={"resume", "latent"}, verbose=False)
    with one_thread(), pytest.raises(CheckpointError, match="plan"):
        Trainer(TrainConfig(resume=run, plan="split-1/3"), explicit={"resume", "plan"}, verbose=False)
    # runtime options may change
    assert train("--resume", run, "--no-progress", "--device", "cpu") == 0


def test_atomic_save_leaves_the_old_file_on_failure(tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    atomic_save({"a": torch.arange(5)}, path)
    before = open(path, "rb").read()

    class Bomb:
        def __reduce__(self):
            raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError, match="crash while writing"):
        atomic_save({"big": torch.zeros(100_000), "bomb": Bomb()}, path)
    assert open(path, "rb").read() == before
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(5))
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temporary file left behind


def test_atomic_open_text_mode_replaces_whole_or_not_at_all(tmp_path):
    from xvae_fast.atomic_file import atomic_open
    path = tmp_path / "sub" / "cache.json"                  # the folder is created
    with atomic_open(str(path), "w", prefix=".cache-") as f:
        f.write('{"a": 1}')
    assert path.read_text(encoding="utf-8") == '{"a": 1}'
    with pytest.raises(KeyError):
        with atomic_open(str(path), "w", prefix=".cache-") as f:
            f.write('{"a": 2, "tor')
            raise KeyError("interrupted")
    assert path.read_text(encoding="utf-8") == '{"a": 1}'  # the old file, untouched
    assert os.listdir(tmp_path / "sub") == ["cache.json"]
    with pytest.raises(ValueError, match="mode 'rb'"):
        with atomic_open(str(path), "rb"):
            pass


def test_run_folder_has_no_temporary_files(reference_runs):
    run, _ = reference_runs["full"]
    assert not glob.glob(os.path.join(run, ".*tmp*")) and not glob.glob(os.path.join(run, "*.tmp*"))


def test_corrupt_checkpoint_is_a_clear_error(reference_runs, tmp_path):
    ref, _ = reference_runs["vae"]
    data = open(os.path.join(ref, "checkpoint.pt"), "rb").read()
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load_checkpoint(str(run))
    r = cli("xvae_fast.train", "--resume", run)
    assert r.returncode == 2 and "corrupt or unreadable" in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(CheckpointError, match="has no checkpoint.pt"):
        load_checkpoint(str(tmp_path))
    torch.save({"weights": torch.ones(2)}, str(run / "checkpoint.pt"))
    with pytest.raises(CheckpointError, match="not an xvae_fast trainer checkpoint"):
        load_checkpoint(str(run))


def test_nan_in_a_checkpoint_is_named(reference_runs, tmp_path):
    ref, _ = reference_runs["full"]
    ck = load_ck(ref)
    key = next(k for k in ck["models"]["vae"] if k.endswith("weight"))
    ck["models"]["vae"][key][0] = float("nan")
    path = str(tmp_path / "checkpoint.pt")
    torch.save(ck, path)
    with pytest.raises(CheckpointError, match=f"models.vae.{key}.*NaN or inf"):
        load_checkpoint(path)


def test_mismatched_checkpoint_weights_are_a_clear_error(reference_runs, tmp_path):
    ref, _ = reference_runs["full"]
    ck = load_ck(ref)
    ck["stage"], ck["step"] = "vae", 15
    ck["models"]["vae"] = {k: v for k, v in ck["models"]["vae"].items() if "mu_head" not in k}
    run = tmp_path / "run"
    run.mkdir()
    atomic_save(ck, str(run / "checkpoint.pt"))     # sealed with a digest of what it now holds
    with one_thread(), pytest.raises(CheckpointError, match="does not match the VAE"):
        Trainer(TrainConfig(resume=str(run)), explicit={"resume"}, verbose=False)


def test_non_finite_loss_stops_with_a_diagnostic(tmp_path):
    x = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)
    x[150] = 1e20  # its squared error overflows float32 to inf
    np.save(tmp_path / "x.npy", x)
    run = str(tmp_path / "run")
    with one_thread(), pytest.raises(NonFiniteLossError) as info:
        Trainer(TrainConfig(dataset=f"npy:{tmp_path / 'x.npy'}", standardize=False, limit=200, batch_size=32,
                            hidden=[8], latent=3, epochs_ae=3, epochs_vae=1, checkpoint_every=1,
                            progress=False, out=run), verbose=False).run()
    d = info.value.diagnostic
    assert d["stage"] == "ae" and "recon" in d["non_finite"] and "loss" in d["non_finite"]
    assert f"step {d['step']}" in str(info.value) and "recon" in str(info.value)
    assert d["step"] > 1
    # the last good checkpoint is the step before, and loads cleanly
    good = load_checkpoint(run)
    assert good["step"] == d["step"] - 1 == d["last_checkpoint_step"]
    assert os.path.isfile(os.path.join(run, "error.json"))
    r = cli("xvae_fast.train", "--dataset", f"npy:{tmp_path / 'x.npy'}", "--no-standardize", "--hidden", "8",
            "--latent", "3", "--epochs-ae", "3", "--batch-size", "32", "--out", tmp_path / "run2",
            "--no-progress")
    assert r.returncode == 1 and "non-finite loss" in r.stderr and "Traceback" not in r.stderr

