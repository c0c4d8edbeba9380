"""--compile: the training step's loss under torch.compile (forward and backward through the fused
ops) trains the same model as eager, to float tolerance, and is a runtime option (--resume may add it)."""
import json
import os

import torch

from train_utils import TINY_CLUSTERS, load_ck, train


def test_compiled_training_matches_eager(tmp_path):
    eager, comp = str(tmp_path / "eager"), str(tmp_path / "compiled")
    assert train(*TINY_CLUSTERS, "--no-outputs", "--out", eager) == 0
    # stopped mid-stage 2 without --compile, resumed with it: still the same run
    assert train(*TINY_CLUSTERS, "--no-outputs", "--stop-after", "13", "--out", comp) == 0
    assert train("--resume", comp, "--compile", "--no-progress") == 0
    a, b = load_ck(eager)["models"]["vae"], load_ck(comp)["models"]["vae"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
    sa = json.load(open(os.path.join(eager, "summary.json")))["test"]
    sb = json.load(open(os.path.join(comp, "summary.json")))["test"]
    for k in sa:
        assert abs(sa[k] - sb[k]) <= 1e-4 * max(1.0, abs(sa[k])), k
    cfg = open(os.path.join(comp, "config.yaml")).read()
    assert "compile: false" in cfg   # a runtime option: the run's saved config is unchanged
