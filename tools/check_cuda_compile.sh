#!/usr/bin/env bash
# GPU-less compile check of xvae_fast's sources (CMakeLists.txt at the repository root):
# csrc/cuda/*.cu for sm_80 and sm_90 with nvcc, and csrc/*.cpp + csrc/cpu/*.cpp with setup.py's flags,
# into object libraries (nothing is linked, so a CPU-only torch wheel is enough). No GPU is needed.
#
# Usage: tools/check_cuda_compile.sh [--cuda-only] [-- extra cmake -D options]
# Environment:
#   PYTHON                 Python with torch installed (default: python3, else python)
#   XVAE_CHECK_BUILD_DIR   build directory to use and keep (default: a temporary one, removed)
#   XVAE_CHECK_JOBS        parallel compile jobs (default 2)
#
# Exit status: 0 when everything compiled, or when no nvcc is found (the check is skipped, with a
# message saying so); non-zero when any file fails to compile or the configuration fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CMAKE_ARGS=()
CHECK_CPU=ON
while [ $# -gt 0 ]; do
  case "$1" in
    --cuda-only) CHECK_CPU=OFF ;;
    --) shift; CMAKE_ARGS+=("$@"); break ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "check_cuda_compile: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# nvcc: from PATH, else $CUDA_HOME/bin, else /usr/local/cuda/bin.
NVCC=""
if command -v nvcc >/dev/null 2>&1; then
  NVCC="$(command -v nvcc)"
elif [ -n "${CUDA_HOME:-}" ] && [ -x "${CUDA_HOME}/bin/nvcc" ]; then
  NVCC="${CUDA_HOME}/bin/nvcc"
elif [ -x /usr/local/cuda/bin/nvcc ]; then
  NVCC=/usr/local/cuda/bin/nvcc
fi
if [ -z "$NVCC" ]; then
  echo "check_cuda_compile: nvcc not found (PATH, \$CUDA_HOME/bin, /usr/local/cuda/bin):" \
       "skipping the CUDA compile check."
  exit 0
fi

if ! command -v cmake >/dev/null 2>&1; then
  echo "check_cuda_compile: cmake not found; it is needed for the compile check." >&2
  exit 1
fi

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  PYTHON="$(command -v python3 || command -v python || true)"
fi
if [ -z "$PYTHON" ] || ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  echo "check_cuda_compile: no Python with torch found (set PYTHON)." >&2
  exit 1
fi
PYTHON="$(command -v "$PYTHON")"
TORCH_INCLUDES="$("$PYTHON" -c "from torch.utils.cpp_extension import include_paths; print(';'.join(include_paths()))")"

if [ -n "${XVAE_CHECK_BUILD_DIR:-}" ]; then
  BUILD="$XVAE_CHECK_BUILD_DIR"
  mkdir -p "$BUILD"
else
  BUILD="$(mktemp -d "${TMPDIR:-/tmp}/xvae_cuda_check.XXXXXX")"
  trap 'rm -rf "$BUILD"' EXIT
fi

GENERATOR=()
KEEP_GOING=()
if command -v ninja >/dev/null 2>&1; then
  GENERATOR=(-G Ninja)
  KEEP_GOING=(-- -k 0)
else
  KEEP_GOING=(-- -k)
fi

echo "check_cuda_compile: nvcc = $NVCC ($("$NVCC" --version | tail -n 1))"
echo "check_cuda_compile: python = $PYTHON (torch $("$PYTHON" -c 'import torch; print(torch.__version__)'))"
echo "check_cuda_compile: build dir = $BUILD"

START=$SECONDS
cmake -S "$ROOT" -B "$BUILD" "${GENERATOR[@]}" \
  -DCMAKE_CUDA_COMPILER="$NVCC" \
  -DPython3_EXECUTABLE="$PYTHON" \
  -DTORCH_INCLUDE_DIRS="$TORCH_INCLUDES" \
  -DXVAE_FAST_CHECK_CUDA=ON \
  -DXVAE_FAST_CHECK_CPU="$CHECK_CPU" \
  "${CMAKE_ARGS[@]}"

status=0
cmake --build "$BUILD" -j"${XVAE_CHECK_JOBS:-2}" "${KEEP_GOING[@]}" || status=$?
ELAPSED=$((SECONDS - START))

if [ "$status" -ne 0 ]; then
  echo "check_cuda_compile: FAILED: some sources did not compile (see above); ${ELAPSED}s." >&2
  exit "$status"
fi
echo "check_cuda_compile: OK: all sources compiled (CUDA archs sm_80, sm_90; C++ sources: $CHECK_CPU) in ${ELAPSED}s."
