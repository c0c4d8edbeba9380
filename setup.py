"""Build of xvae_fast's compiled extension (xvae_fast._C).

Environment switches:
  XVAE_FAST_CUDA=auto|1|0   build the CUDA kernels: auto (default) when torch has CUDA, a toolkit is
                            found and a GPU is visible or TORCH_CUDA_ARCH_LIST names the targets (a
                            GPU-less machine with PyPI's CUDA torch then builds CPU only, in a
                            minute, instead of every architecture); 1 forces them (error on a
                            CPU-only torch); 0 builds CPU only.
  XVAE_FAST_CPU_AVX2=auto|1|0  compile the CPU kernels for AVX2+FMA (auto: when this machine has it).
  XVAE_FAST_DEBUG=1         -O0 -g.
"""
import glob
import os
import platform
import sys

from setuptools import find_packages, setup

import torch
from torch.utils import cpp_extension
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))


def _switch(name, default="auto"):
    value = os.environ.get(name, default).strip().lower()
    if value not in ("auto", "0", "1"):
        raise SystemExit(f"{name} must be auto, 0 or 1, got {value!r}")
    return value


def _want_cuda():
    mode = _switch("XVAE_FAST_CUDA")
    if mode == "0":
        return False
    has_torch_cuda = torch.version.cuda is not None
    if mode == "1":
        if not has_torch_cuda:
            raise SystemExit(
                "XVAE_FAST_CUDA=1, but the installed torch is a CPU-only build "
                f"({torch.__version__}); install a CUDA build of torch or unset XVAE_FAST_CUDA.")
        if CUDA_HOME is None:
            raise SystemExit("XVAE_FAST_CUDA=1, but no CUDA toolkit was found (set CUDA_HOME).")
        return True
    if not has_torch_cuda or CUDA_HOME is None:
        return False
    if os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip():
        return True
    try:
        return torch.cuda.is_available()
    except Exception:  # a driver problem: no GPU to build for
        return False


def _cpu_has_avx2():
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return all(f" {f}" in flags for f in ("avx2", "fma", "f16c"))


def _want_avx2():
    mode = _switch("XVAE_FAST_CPU_AVX2")
    return _cpu_has_avx2() if mode == "auto" else mode == "1"


def _system_includes():
    """torch's include directories again, as -isystem: BuildExtension passes them with -I, so the
    compiler reports the warnings of torch's own headers as ours (gcc, torch 2.13: 182 "ignoring
    #pragma unroll" warnings in a clean CPU build). A directory given with both -I and -isystem is
    searched as a system directory, whose warnings are not shown; the warnings of csrc/ are kept."""
    if sys.platform == "win32":  # MSVC has no -isystem
        return []
    flags = []
    for d in cpp_extension.include_paths():
        flags += ["-isystem", d]
    return flags


def _limited_api():
    """(the -D flags, the wheel's tag): torch >= 2.6 defines Py_LIMITED_API itself for a
    py_limited_api extension (Python 3.10's, in torch 2.13), after our flags; a second definition
    made gcc warn "Py_LIMITED_API redefined" on every file. Older torch: ours, Python 3.9's."""
    value = getattr(cpp_extension, "min_supported_cpython", None)
    if value:
        return [], "cp3%d" % ((int(value, 16) >> 16) & 0xFF)
    return ["-DPy_LIMITED_API=0x03090000"], "cp39"


def _cuda_arch_text():
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "").strip()
    if archs:
        return f"TORCH_CUDA_ARCH_LIST={archs}"
    try:
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
    except Exception:  # a driver problem
        caps = []
    if not caps:
        return "torch's default architectures"
    return "the visible GPUs' " + ", ".join(f"sm_{a}{b}" for a, b in caps)


def _announce(use_cuda, avx2, debug):
    """One line saying what this build compiles, printed by the commands that compile (pip shows it
    with -v, and install.py always)."""
    building = {"build", "build_ext", "bdist_wheel", "develop", "editable_wheel", "install"}
    if not building.intersection(sys.argv[1:]):
        return
    n_cpp = len(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    cpu = f"the CPU kernels ({n_cpp} files, {'AVX2+FMA' if avx2 else 'no AVX2'})"
    cuda = (f" and the CUDA kernels ({len(glob.glob('csrc/cuda/*.cu'))} files, "
            f"for {_cuda_arch_text()}; nvcc from {CUDA_HOME})") if use_cuda else ""
    reason = "" if use_cuda else f" (no CUDA kernels: {_no_cuda_reason()})"
    print(f"xvae_fast: building {cpu}{cuda}{reason}{', debug' if debug else ''}, "
          f"torch {torch.__version__}", flush=True)


def _no_cuda_reason():
    if _switch("XVAE_FAST_CUDA") == "0":
        return "XVAE_FAST_CUDA=0"
    if torch.version.cuda is None:
        return "torch is a CPU build"
    if CUDA_HOME is None:
        return "no CUDA toolkit found"
    return "no GPU visible and TORCH_CUDA_ARCH_LIST unset"


LIMITED_API_FLAGS, WHEEL_ABI_TAG = _limited_api()


def extensions():
    debug = os.environ.get("XVAE_FAST_DEBUG") == "1"
    use_cuda = _want_cuda()
    avx2 = _want_avx2()
    _announce(use_cuda, avx2, debug)
    # BuildExtension puts Python's own CFLAGS first, and those often carry -g (pyenv, distro Pythons):
    # full DWARF for the ATen templates these sources instantiate was over half of the compile time.
    # -g1 (line tables only: backtraces and profilers still map to source lines) overrides it, as
    # these flags come after. Debug info never changes the generated code.
    cxx = ["-O0", "-g"] if debug else ["-O3", "-g1"]
    cxx += ["-fopenmp"] + LIMITED_API_FLAGS + _system_includes()
    if avx2:
        # ATen's Vectorized<T> selects its AVX2 implementation (with Sleef from libtorch) from these.
        cxx += ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    sources = sorted(glob.glob("csrc/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp"))
    kwargs = dict(extra_link_args=["-fopenmp"], py_limited_api=True)
    if use_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        nvcc = ["-O3", "-lineinfo", "-DXVAE_WITH_CUDA"] + _system_includes()
        return [CUDAExtension("xvae_fast._C", sources,
                              extra_compile_args={"cxx": cxx + ["-DXVAE_WITH_CUDA"], "nvcc": nvcc},
                              **kwargs)]
    return [CppExtension("xvae_fast._C", sources, extra_compile_args={"cxx": cxx}, **kwargs)]


setup(
    packages=find_packages(include=["xvae_fast", "xvae_fast.*"]),
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": WHEEL_ABI_TAG}},
)
