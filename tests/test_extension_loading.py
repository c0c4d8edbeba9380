import os
import subprocess
import sys
import textwrap

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
