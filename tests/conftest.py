import pytest
import torch

import xvae_fast as xf

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() and xf.cuda_kernels_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


def make_prior(K, device="cpu", dtype=torch.float64, seed=0, C=None):
    """A random valid mixture prior with C (default K) components."""
    g = torch.Generator().manual_seed(seed)
    C = K if C is None else C
    w = torch.rand(C, generator=g, dtype=torch.float64) + 0.2
    w = w / w.sum()
    M = torch.randn(C, K, generator=g, dtype=torch.float64)
    S = torch.rand(C, K, generator=g, dtype=torch.float64) + 0.5
    return xf.MixturePrior(w.to(dtype), M.to(dtype), S.to(dtype)).to(device)


def make_inputs(B, K, device="cpu", dtype=torch.float64, seed=1, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    l = torch.randn(B, K, generator=g, dtype=torch.float64) * 2
    mu = torch.randn(B, K, generator=g, dtype=torch.float64)
    lv = torch.randn(B, K, generator=g, dtype=torch.float64) * 0.5
    return tuple(t.to(device=device, dtype=dtype).requires_grad_(requires_grad) for t in (l, mu, lv))


# Tolerances vs a float64 reference of the same (rounded) inputs. float32 accumulates in float32
# over B*K terms; the half types round every input and output to 8 (bf16) or 11 (fp16) bits.
TOLS = {
    torch.float64: dict(rtol=1e-10, atol=1e-12),
    torch.float32: dict(rtol=1e-4, atol=1e-5),
    torch.float16: dict(rtol=5e-3, atol=5e-3),
    torch.bfloat16: dict(rtol=3e-2, atol=3e-2),
}


def _mnist_candidates():
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = os.environ.get("XVAE_FAST_MNIST")
    return [p for p in (env, os.path.join(root, "..", "shared", "data", "mnist"), "/work/shared/data/mnist")
            if p]


@pytest.fixture(scope="session")
def mnist_dir():
    """The real MNIST IDX files shared beside the project (never copied into it): $XVAE_FAST_MNIST,
    ../shared/data/mnist or /work/shared/data/mnist. Missing data is a failure, not a skip."""
    import os
    for p in _mnist_candidates():
        if os.path.isfile(os.path.join(p, "train-images-idx3-ubyte.gz")):
            return os.path.abspath(p)
    pytest.fail(f"the shared MNIST files are not found in any of {_mnist_candidates()}; set "
                "XVAE_FAST_MNIST to the folder holding the four gzipped IDX files")


@pytest.fixture(scope="session")
def family_runs(tmp_path_factory):
    """{key: run folder} of one tiny trained run per model family (train_utils.FAMILY_RUNS), trained
    once per session and shared by the API and export tests."""
    from train_utils import FAMILY_RUNS, train
    root = tmp_path_factory.mktemp("family_runs")
    runs = {}
    for key, args in FAMILY_RUNS.items():
        runs[key] = str(root / key)
        assert train(*args, "--no-outputs", "--out", runs[key]) == 0, key
    return runs
