import os
import subprocess
import sys
import textwrap

import pytest

import xvae_fast

# The folder holding the xvae_fast under test (installed, or a built source tree).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(xvae_fast.__file__)))


def _python_ok(code, cwd):
    """Run `python -c code` in `cwd` with ROOT on the path; assert it printed 'ok'."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_import_without_compiled_extension_gives_clear_message(tmp_path):
    # Simulate a checkout whose extension was never built: importing xvae_fast._C fails.
    code = textwrap.dedent("""
        import sys, warnings
        sys.modules["xvae_fast._C"] = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import xvae_fast as xf
        assert not xf.extension_available()
        assert any("could not be loaded" in str(w.message) for w in caught), caught
        import torch
        prior = xf.MixturePrior(torch.ones(2) / 2, torch.zeros(2, 2), torch.ones(2, 2))
        x = torch.zeros(3, 2)
        try:
            xf.mixture_kl(x, x, x, prior)
        except RuntimeError as e:
            assert "compiled extension is missing" in str(e) and "pip install" in str(e), e
        else:
            raise AssertionError("no error")
        # The reference still works without the build.
        assert xf.reference.mixture_kl(x, x, x, prior)[0].shape == ()
        print("ok")
    """)
    _python_ok(code, tmp_path)


def test_extension_loads_on_a_bare_import(tmp_path):
    # `import xvae_fast` first thing in a fresh interpreter (as `python -m xvae_fast.train` does)
    # must load the compiled ops, not fall back silently.
    # Run from a neutral folder (`python -c` puts the cwd first on sys.path), importing the same
    # xvae_fast as this test session.
    code = ("import warnings; warnings.simplefilter('error'); import xvae_fast as xf; "
            f"assert xf.__file__.startswith({ROOT!r}), xf.__file__; "
            "assert xf.extension_available(); print('ok')")
    _python_ok(code, tmp_path)


def test_source_checkout_in_cwd_uses_the_installed_build(tmp_path):
    # `pip install . && python -m xvae_fast.train` from the repository root: the unbuilt source
    # package in the working directory shadows the installed one, and must still get its kernels.
    import shutil
    checkout = tmp_path / "checkout"
    shutil.copytree(os.path.join(ROOT, "xvae_fast"), checkout / "xvae_fast",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    code = ("import xvae_fast as xf; "
            f"assert xf.__file__.startswith({str(checkout)!r}), xf.__file__; "
            "assert xf.extension_available(); print('ok')")
    _python_ok(code, checkout)


def test_setup_builds_cuda_kernels_only_for_a_visible_gpu_or_named_targets(monkeypatch):
    """setup.py's XVAE_FAST_CUDA=auto: a CUDA torch and a toolkit are not enough on a GPU-less machine
    (it would compile every architecture); a visible GPU or TORCH_CUDA_ARCH_LIST is."""
    import os
    import types

    import setuptools
    import torch
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.setattr(setuptools, "setup", lambda **kw: None)
    ns = {"__file__": os.path.join(root, "setup.py"), "__name__": "setup_under_test"}
    src = open(os.path.join(root, "setup.py")).read()
    exec(compile(src, "setup.py", "exec"), ns)
    want = ns["_want_cuda"]
    monkeypatch.setitem(ns, "CUDA_HOME", "/usr/local/cuda")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    for env, gpu, expected in ((None, False, False), (None, True, True), ("9.0", False, True)):
        monkeypatch.delenv("XVAE_FAST_CUDA", raising=False)
        if env is None:
            monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
        else:
            monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", env)
        monkeypatch.setattr(torch.cuda, "is_available", lambda g=gpu: g)
        assert want() is expected, (env, gpu)
    monkeypatch.setenv("XVAE_FAST_CUDA", "0")
    assert want() is False
    monkeypatch.setitem(ns, "CUDA_HOME", None)
    monkeypatch.setenv("XVAE_FAST_CUDA", "auto")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert want() is False   # no toolkit
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setenv("XVAE_FAST_CUDA", "1")
    with pytest.raises(SystemExit, match="CPU-only build"):
        want()
