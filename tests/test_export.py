"""The portable export (xvae_fast/export_format.py): `python -m xvae_fast.export` and `model.save`
write config.json + model.safetensors, which `xvae_fast.load` reads in another process with the run's
exact samples; no pickle anywhere; damaged, mixed or foreign files are refused naming the file."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

import xvae_fast
from xvae_fast.errors import ConfigError, ExportError
from xvae_fast.export import main as export_main
from xvae_fast.sample import main as sample_main

from train_utils import FAMILY_RUNS, load_ck, one_thread

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="module")
def exports(family_runs, tmp_path_factory):
    """Every family's tiny run exported with the command."""
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for key, run in family_runs.items():
        out[key] = str(root / key)
        with one_thread():
            assert export_main(["--run", run, "--out", out[key]]) == 0, key
    return out


# What a fresh process must reproduce from an export alone: samples, reference samples, codes and
# decodings. One text, run here on the runs and in a new interpreter on the exports.
OUTPUTS = """
import numpy as np, torch

def outputs(model, n=7, seed=5):
    g = torch.Generator().manual_seed(seed)
    out = {"samples": model.sample(n, generator=g)}
    for name in model.references:
        out["ref_" + name] = model.sample(n, reference=name, generator=g)
    out["mean"] = model.encode(out["samples"][:3]).mean
    out["decoded"] = model.decode(out["mean"])
    return {k: v.numpy() for k, v in out.items()}
"""
FRESH = OUTPUTS + """
import sys, xvae_fast
torch.set_num_threads(1)
for key, folder in zip(sys.argv[2::2], sys.argv[3::2]):
    np.savez(f"{sys.argv[1]}/{key}.npz", **outputs(xvae_fast.load(folder)))
"""


def test_export_then_load_in_a_fresh_process_gives_identical_samples(family_runs, exports, tmp_path):
    ns = {}
    exec(OUTPUTS, ns)
    pairs = [a for key in exports for a in (key, exports[key])]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", FRESH, str(tmp_path), *pairs], capture_output=True, text=True,
                       env=env, timeout=300, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    for key, run in family_runs.items():
        want = ns["outputs"](xvae_fast.load(run))
        got = dict(np.load(tmp_path / f"{key}.npz"))
        assert sorted(got) == sorted(want) and "samples" in got, key
        for name in want:
            assert np.array_equal(got[name], want[name]), (key, name)     # bit for bit


def test_sample_cli_reads_an_export(family_runs, exports, tmp_path):
    out = str(tmp_path / "s.npy")
    assert sample_main(["--run", exports["xvae-std"], "--n", "5", "--seed", "2", "--out", out]) == 0
    want = xvae_fast.load(family_runs["xvae-std"]).sample(5, generator=torch.Generator().manual_seed(2))
    assert np.array_equal(np.load(out), want.numpy())


def test_export_holds_weights_and_plain_json_only(family_runs, exports):
    for key, folder in exports.items():
        assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors"], key
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                head = f.read(2)
            # a torch.save file is a zip (or a bare pickle, protocol opcode 0x80)
            assert not zipfile.is_zipfile(path) and head[:1] != b"\x80", (key, name)
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        assert cfg["format"] == "xvae_fast.export" and cfg["version"] == 1 and cfg["model"] == \
            FAMILY_RUNS[key][FAMILY_RUNS[key].index("--model") + 1]
        # the weights are exactly the checkpoint's modules: nothing more (no optimizer, no codes)
        from safetensors.torch import load_file
        tensors = load_file(os.path.join(folder, "model.safetensors"))
        ck = load_ck(family_runs[key])
        want = {f"{m}.{k}": v for m, sd in ck["models"].items() if sd is not None for k, v in sd.items()}
        assert sorted(tensors) == sorted(want), key
        for k, v in want.items():
            assert torch.equal(tensors[k], v) and tensors[k].dtype == v.dtype, (key, k)
        assert cfg["weights"]["sha256"] == hashlib.sha256(
            open(os.path.join(folder, "model.safetensors"), "rb").read()).hexdigest()
        # the prior, readable and exact
        if ck.get("prior") is None:
            assert cfg["prior"] is None, key
        else:
            for k in ("weights", "means", "stds"):
                p = cfg["prior"][k]
                assert p["dtype"] == "float32" and torch.equal(torch.tensor(p["values"], dtype=torch.float32),
                                                                ck["prior"][k]), (key, k)
    std = json.load(open(os.path.join(exports["xvae-std"], "config.json")))["data"]
    ck = load_ck(family_runs["xvae-std"])
    assert std["kind"] == "vector" and std["shape"] == [2]
    assert torch.equal(torch.tensor(std["std"]["values"], dtype=torch.float32), ck["data_info"]["std"])
    assert torch.equal(torch.tensor(std["mean"]["values"], dtype=torch.float32), ck["data_info"]["mean"])


def test_save_and_reload(family_runs, tmp_path):
    model = xvae_fast.load(family_runs["avae"])
    folder = model.save(str(tmp_path / "a"))
    again = xvae_fast.load(os.path.join(folder, "config.json"))       # the folder or its config.json
    assert again.source["kind"] == "export" and again.source["from"]["path"] == os.path.abspath(family_runs["avae"])
    g = lambda: torch.Generator().manual_seed(0)                                   # noqa: E731
    assert torch.equal(again.sample(4, generator=g()), model.sample(4, generator=g()))
    assert torch.equal(again.sample(4, reference="normal", generator=g()),
                       model.sample(4, reference="normal", generator=g()))
    with pytest.raises(ConfigError, match="already holds an export; pass overwrite=True"):
        model.save(folder)
    assert model.save(folder, overwrite=True) == folder
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not empty .*notes.txt"):
        model.save(str(tmp_path / "b"))
    # an export of an export keeps where the weights came from
    copy = again.save(str(tmp_path / "c"))
    src = json.load(open(os.path.join(copy, "config.json")))["source"]
    assert src["path"] == os.path.abspath(family_runs["avae"]) and src["reexported_from"] == folder


def _copy(exports, key, tmp_path, name="x"):
    dst = tmp_path / name
    shutil.copytree(exports[key], dst)
    return dst


def _edit_config(folder, change):
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    change(cfg)
    path.write_text(json.dumps(cfg))


def _rehash(folder):
    blob = (folder / "model.safetensors").read_bytes()
    _edit_config(folder, lambda c: c["weights"].update(sha256=hashlib.sha256(blob).hexdigest()))


def test_damaged_or_mismatched_files_are_refused_naming_the_file(exports, tmp_path):
    cases = []

    d = _copy(exports, "xvae", tmp_path, "flipped")             # one byte of a weight changed on disk
    blob = bytearray((d / "model.safetensors").read_bytes())
    blob[-5] ^= 0x10
    (d / "model.safetensors").write_bytes(bytes(blob))
    cases.append((d, "model.safetensors' is corrupt .* SHA-256 does not match"))

    d = _copy(exports, "xvae", tmp_path, "truncated")            # a malformed file, even with its hash
    (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:100])
    _rehash(d)
    cases.append((d, "model.safetensors' is not a readable safetensors file"))

    d = _copy(exports, "xvae", tmp_path, "no-weights")
    os.remove(d / "model.safetensors")
    cases.append((d, "has no model.safetensors"))

    d = _copy(exports, "xvae", tmp_path, "no-config")
    os.remove(d / "config.json")
    cases.append((d, "has no config.json"))

    d = _copy(exports, "xvae", tmp_path, "bad-json")
    (d / "config.json").write_text("{not json")
    cases.append((d, "config.json' is corrupt or unreadable"))

    d = _copy(exports, "xvae", tmp_path, "foreign")
    _edit_config(d, lambda c: c.update(format="someone.else"))
    cases.append((d, "config.json' is not an xvae_fast export .*'someone.else'"))

    d = _copy(exports, "xvae", tmp_path, "future")
    _edit_config(d, lambda c: c.update(version=99))
    cases.append((d, "config.json' has export format version 99; this xvae_fast reads version 1"))

    d = _copy(exports, "xvae", tmp_path, "other-weights")        # another model's weights
    shutil.copy(os.path.join(exports["vae"], "model.safetensors"), d / "model.safetensors")
    _rehash(d)
    cases.append((d, r"model.safetensors' holds \d+ tensors of module '\w+'; config.json lists \d+"))

    d = _copy(exports, "mog", tmp_path, "other-shape")           # same family and keys, other sizes
    _edit_config(d, lambda c: c["config"].update(latent=5))
    cases.append((d, r"model.safetensors' does not match the model its config.json describes "
                     r"\(mismatched: vae\.\S+ float32\(\d+"))

    d = _copy(exports, "xvae", tmp_path, "prior-edited")
    _edit_config(d, lambda c: c["prior"]["means"]["values"][0].__setitem__(0, 1.5))
    cases.append((d, "config.json' and .*model.safetensors' disagree about the prior"))

    d = _copy(exports, "xvae", tmp_path, "prior-of-another-kind")   # one Gaussian for a C = K mixture
    _edit_config(d, lambda c: c["prior"].update({k: dict(v, shape=[1] + v["shape"][1:], values=v["values"][:1])
                                                 for k, v in c["prior"].items()}))
    _edit_config(d, lambda c: c["prior"]["weights"].update(values=[1.0]))
    cases.append((d, "config.json' holds an unusable prior: .*C = K mixture prior"))

    d = _copy(exports, "xvae", tmp_path, "bad-option")
    _edit_config(d, lambda c: c["config"].update(wobble=1))
    cases.append((d, "config.json': its configuration does not read in this xvae_fast: unknown config "
                     "option 'wobble'"))

    for folder, match in cases:
        with pytest.raises(ExportError, match=match):
            xvae_fast.load(str(folder))


def test_cli_errors_exit_2_without_traceback(family_runs, exports, tmp_path, capsys):
    run = family_runs["vae"]
    assert export_main(["--run", run, "--out", exports["vae"]]) == 2
    assert "already holds an export; pass --overwrite" in capsys.readouterr().err
    assert export_main(["--run", run, "--out", run]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert export_main(["--run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "e")]) == 2
    assert "no checkpoint" in capsys.readouterr().err and not os.path.exists(tmp_path / "e")
    d = _copy(exports, "vae", tmp_path)
    (d / "model.safetensors").write_bytes(b"\0" * 64)
    assert sample_main(["--run", str(d), "--out", str(tmp_path / "s.npy")]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors' is corrupt" in err and "Traceback" not in err
    assert export_main(["--run", run, "--out", str(tmp_path / "again"), "--overwrite"]) == 0
    assert export_main(["--run", run, "--out", str(tmp_path / "again"), "--overwrite"]) == 0
