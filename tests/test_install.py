"""install.py: the torch it picks for each kind of machine (without running pip), the filter that
turns the build's `pip -v` output into progress lines, and its command line."""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("xvae_install", os.path.join(ROOT, "install.py"))
install = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(install)

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TOOLS = ["install", "setuptools>=64", "wheel", "ninja"]
BUILD = ["install", "-v", "--no-build-isolation", "."]


def _never(*_):
    raise AssertionError("this probe must not run for this decision")


# ------------------------------------------------------------------------------------------------
# decide(): one case per kind of machine
# ------------------------------------------------------------------------------------------------

def test_linux_with_a_gpu_gets_pypi_torch_without_probing_the_cpu_index():
    d = install.decide("linux", "GPU 0: NVIDIA H100 80GB HBM3", None, _never, _never)
    assert d.error is None
    assert d.commands == [["install", "torch"], TOOLS, BUILD]
    assert "NVIDIA GPU is seen (GPU 0: NVIDIA H100" in d.notes[0] and "CUDA" in d.notes[0]


def test_linux_without_a_gpu_gets_the_cpu_index():
    d = install.decide("linux", None, None, (True, "HTTP 200"), _never)
    assert d.commands[0] == ["install", "torch", "--index-url", CPU_INDEX]
    assert d.commands[1:] == [TOOLS, BUILD]
    assert d.expect == "cpu" and d.error is None
    assert "no NVIDIA GPU is seen" in d.notes[0]


def test_unreachable_cpu_index_falls_back_to_a_cpu_build_in_pips_sources():
    d = install.decide("linux", None, None, lambda: (False, "URLError: Name or service not known"),
                       lambda: ["2.13.0+cpu", "2.12.0+cpu"])
    assert d.commands[0] == ["install", "torch==2.13.0+cpu"]
    assert d.expect == "cpu"
    assert "unreachable (URLError: Name or service not known)" in d.notes[0]
    assert "found torch 2.13.0+cpu" in d.notes[1]


def test_no_cpu_build_anywhere_stops_instead_of_installing_cuda_wheels():
    for builds in ([], ["2.3.1+cpu"]):  # too old for xvae_fast counts as none
        d = install.decide("linux", None, None, (False, "timed out"), builds)
        assert d.commands == [] and d.error
        assert "--torch cuda" in d.error and "several GB" in d.error


def test_macos_and_windows_get_pypi_torch():
    for system, name in (("darwin", "macOS"), ("win32", "Windows")):
        d = install.decide(system, None, None, _never, _never)
        assert d.commands == [["install", "torch"], TOOLS, BUILD]
        assert name in d.notes[0] and d.expect is None


def test_an_installed_cpu_torch_is_kept():
    d = install.decide("linux", None, ("2.13.0+cpu", None), _never, _never)
    assert d.commands == [TOOLS, BUILD]
    assert d.notes == ["torch: keeping the installed torch 2.13.0+cpu (a CPU build)"]


def test_an_installed_cuda_torch_is_kept_and_the_missing_gpu_is_said():
    d = install.decide("linux", None, ("2.8.0+cu128", "12.8"), _never, _never)
    assert d.commands == [TOOLS, BUILD]
    assert "keeping the installed torch 2.8.0+cu128 (a CUDA 12.8 build)" in d.notes[0]
    assert "no NVIDIA GPU is seen" in d.notes[0]
    d = install.decide("linux", "GPU 0: A100", ("2.8.0+cu128", "12.8"), _never, _never)
    assert "no NVIDIA GPU" not in d.notes[0]


def test_a_torch_older_than_2_4_is_replaced():
    d = install.decide("linux", None, ("2.3.1+cpu", None), (True, "HTTP 200"), _never)
    assert "older than 2.4" in d.notes[0]
    assert d.commands[0] == ["install", "torch>=2.4", "--index-url", CPU_INDEX]


def test_the_torch_flag_overrides_the_machine():
    d = install.decide("linux", "GPU 0: H100", None, (True, "HTTP 200"), _never, want="cpu")
    assert d.commands[0] == ["install", "torch", "--index-url", CPU_INDEX]
    assert "--torch cpu" in d.notes[0]
    d = install.decide("linux", None, None, _never, _never, want="cuda")
    assert d.commands[0] == ["install", "torch"] and d.expect is None
    d = install.decide("linux", None, ("2.8.0+cu128", "12.8"), _never, _never, want="cpu")
    assert d.commands == [] and "pip uninstall torch" in d.error


def test_test_extras_change_only_the_build_step():
    d = install.decide("linux", None, ("2.13.0+cpu", None), _never, _never, test=True)
    assert d.commands == [TOOLS, ["install", "-v", "--no-build-isolation", ".[test]"]]


def test_version_tuple():
    assert install.version_tuple("2.13.0+cpu") == (2, 13, 0)
    assert install.version_tuple("2.5.0a0+git1234") == (2, 5, 0)
    assert install.version_tuple("2.4") == (2, 4, 0)
    assert install.version_tuple("2.3.1") < install.MIN_TORCH <= install.version_tuple("2.4.0")


# ------------------------------------------------------------------------------------------------
# BuildFilter on real-looking `pip install -v` lines
# ------------------------------------------------------------------------------------------------

class _Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def _filter(root="/src/xvae_fast"):
    clock = _Clock()
    return install.BuildFilter(root=root, clock=clock), clock


def test_filter_shortens_ninja_compile_lines_and_times_them():
    f, clock = _filter()
    clock.t += 5
    assert f.feed("  Building wheel for xvae_fast (pyproject.toml): started") == [
        "  Building wheel for xvae_fast (pyproject.toml): started"]
    clock.t += 16.4
    gcc = ("  [3/8] c++ -MMD -MF /src/xvae_fast/build/temp.linux-x86_64-cpython-311/csrc/cpu/"
           "mixture_kl.o.d -Wsign-compare -DNDEBUG -g -fwrapv -O3 -Wall -fPIC "
           "-I/venv/lib/python3.11/site-packages/torch/include -c -c "
           "/src/xvae_fast/csrc/cpu/mixture_kl.cpp -o /src/xvae_fast/build/temp.linux-x86_64-"
           "cpython-311/csrc/cpu/mixture_kl.o -O3 -g1 -fopenmp -isystem /venv/torch/include "
           "-DTORCH_API_INCLUDE_EXTENSION_H -std=c++20\n")
    assert f.feed(gcc) == ["  [3/8] compiled csrc/cpu/mixture_kl.cpp (21 s)"]
    nvcc = ("[9/9] /usr/local/cuda/bin/nvcc --generate-dependencies-with-compile --dependency-output "
            "/b/csrc/cuda/gaussian_kl.o.d -I/t/include -c /elsewhere/csrc/cuda/gaussian_kl.cu -o "
            "/b/csrc/cuda/gaussian_kl.o -O3 -lineinfo")
    assert f.feed(nvcc) == ["  [9/9] compiled csrc/cuda/gaussian_kl.cu (21 s)"]
    assert f.compiled == 2
    link = ("g++ -Wsign-compare -shared /b/csrc/cpu/mixture_kl.o -L/t/lib -lc10 -ltorch -o "
            "build/lib.linux-x86_64-cpython-311/xvae_fast/_C.abi3.so -fopenmp")
    assert f.feed(link) == ["  linking _C.abi3.so (21 s)"]
    assert f.build_end - f.build_start == pytest.approx(16.4)  # the compile span, from the wheel's start


def test_filter_shows_warnings_and_errors_once_and_counts_all():
    f, _ = _filter()
    ours = ("/src/xvae_fast/csrc/cpu/component_kl.cpp:379:25: warning: 'wsum' may be used "
            "uninitialized [-Wmaybe-uninitialized]")
    assert f.feed(ours) == ["  " + ours]
    assert f.feed(ours) == []  # the same line from another template instantiation
    cmdline = '<command-line>: warning: "Py_LIMITED_API" redefined'
    assert f.feed(cmdline) == ["  " + cmdline]
    nv = '/src/xvae_fast/csrc/cuda/kde.cu(12): warning #177-D: variable "x" was declared'
    assert f.feed(nv) == ["  " + nv]
    err = "/src/xvae_fast/csrc/ops.cpp:10:3: error: 'foo' was not declared in this scope"
    assert f.feed(err) == ["  " + err]
    assert (f.warnings, f.errors) == (4, 1)
    for noise in ("In file included from /t/include/ATen/Dispatch.h:10,",
                  "                 from /src/xvae_fast/csrc/cpu/cpu_common.h:6,",
                  "/src/xvae_fast/csrc/cpu/component_kl.cpp:373:11: note: 'wsum' declared here",
                  "  379 |   posterior_grad_block(t, mu, lv, g, wsum, K, dmu, dlv);",
                  "      |   ~~~~~~~~~~~~~~~~~~~~^~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~",
                  "  copying xvae_fast/train.py -> build/lib.linux-x86_64-cpython-311/xvae_fast",
                  "  running build_ext",
                  "  warning: build_py: byte-compiling is disabled, skipping.",
                  "  Requirement already satisfied: numpy in ./venv/lib/python3.11/site-packages"):
        assert f.feed(noise) == [], noise
    assert (f.warnings, f.errors) == (4, 1)


def test_filter_keeps_pips_results_and_setups_announcement():
    f, _ = _filter()
    kept = ["xvae_fast: building the CPU kernels (8 files, AVX2+FMA) (no CUDA kernels: torch is a "
            "CPU build), torch 2.13.0+cpu",
            "Collecting numpy (from xvae_fast==0.1.0)",
            "Successfully installed xvae_fast-0.1.0",
            "ERROR: Failed building wheel for xvae_fast",
            "FAILED: /b/csrc/ops.o",
            "ninja: build stopped: subcommand failed.",
            "ninja: warning: build log version is too old; starting over"]
    for line in kept:
        assert f.feed("  " + line + "\n") == ["  " + line]
    assert f.feed("  " + kept[0]) == []  # announced once
    assert (f.warnings, f.errors) == (0, 0)  # pip's and ninja's lines are not compiler diagnostics


# ------------------------------------------------------------------------------------------------
# The build step's runner and the command line
# ------------------------------------------------------------------------------------------------

def test_run_build_prints_progress_and_on_failure_the_logs_tail(capsys):
    script = ("import sys\n"
              "print('[1/2] c++ -c /x/csrc/cpu/a.cpp -o a.o')\n"
              "print('/x/csrc/cpu/a.cpp:3:1: error: expected ; before }')\n"
              "print('the last words of the log')\n"
              "sys.exit(3)\n")
    assert install.run_build([sys.executable, "-c", script]) == 3
    out = capsys.readouterr().out
    assert "[1/2] compiled csrc/cpu/a.cpp" in out
    assert "a.cpp:3:1: error: expected ; before }" in out
    assert "the last words of the log" in out  # only in the tail: the filter drops it
    assert "the build FAILED (pip exit status 3)" in out
    log = out.rsplit("the whole log: ", 1)[1].split()[0]
    try:
        assert "the last words of the log" in open(log).read()
    finally:
        os.remove(log)


def test_run_build_reports_time_on_success(capsys):
    script = "print('[1/1] c++ -c /x/csrc/ops.cpp -o o')"
    assert install.run_build([sys.executable, "-c", script]) == 0
    out = capsys.readouterr().out
    assert "built and installed in" in out
    assert "(the extension: 1 files compiled, 0 compiler warnings)" in out
    os.remove(out.rsplit("the whole log: ", 1)[1].split()[0])


def _cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "install.py"), *args],
                          capture_output=True, text=True, timeout=300)


def test_help_and_bad_flags():
    r = _cli("--help")
    assert r.returncode == 0 and "--test" in r.stdout and "--torch" in r.stdout
    r = _cli("--bogus")
    assert r.returncode == 2 and "unrecognized arguments: --bogus" in r.stderr
    r = _cli("--torch", "gpu")
    assert r.returncode == 2 and "invalid choice: 'gpu'" in r.stderr


def test_dry_run_keeps_this_environments_torch_and_runs_nothing():
    r = _cli("--dry-run", "--test")
    assert r.returncode == 0, r.stdout + r.stderr
    kind = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU build"
    assert f"torch: keeping the installed torch {torch.__version__} ({kind})" in r.stdout
    assert "would run: " in r.stdout and "--no-build-isolation '.[test]'" in r.stdout
    assert "running:" not in r.stdout
