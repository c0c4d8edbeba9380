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

from setuptools import find_packages, setup

import torch
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


def extensions():
    debug = os.environ.get("XVAE_FAST_DEBUG") == "1"
    use_cuda = _want_cuda()
    # BuildExtension puts Python's own CFLAGS first, and those often carry -g (pyenv, distro Pythons):
    # full DWARF for the ATen templates these sources instantiate was over half of the compile time.
    # -g1 (line tables only: backtraces and profilers still map to source lines) overrides it, as
    # these flags come after. Debug info never changes the generated code.
    cxx = ["-O0", "-g"] if debug else ["-O3", "-g1"]
    cxx += ["-fopenmp", "-DPy_LIMITED_API=0x03090000"]
    if _want_avx2():
        # ATen's Vectorized<T> selects its AVX2 implementation (with Sleef from libtorch) from these.
        cxx += ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]
    sources = sorted(glob.glob("csrc/*.cpp")) + sorted(glob.glob("csrc/cpu/*.cpp"))
    kwargs = dict(extra_link_args=["-fopenmp"], py_limited_api=True)
    if use_cuda:
        sources += sorted(glob.glob("csrc/cuda/*.cu"))
        nvcc = ["-O3", "-lineinfo", "-DXVAE_WITH_CUDA"]
        return [CUDAExtension("xvae_fast._C", sources,
                              extra_compile_args={"cxx": cxx + ["-DXVAE_WITH_CUDA"], "nvcc": nvcc},
                              **kwargs)]
    return [CppExtension("xvae_fast._C", sources, extra_compile_args={"cxx": cxx}, **kwargs)]


setup(
    packages=find_packages(include=["xvae_fast", "xvae_fast.*"]),
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
