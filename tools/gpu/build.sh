#!/usr/bin/env bash
# Builds the `--features cuda` binaries for tools/gpu/check.sh on a machine with no GPU and no
# system CUDA, and leaves them xz-compressed in .gpubin/ (git-ignored) to carry to the GPU.
#
#   tools/gpu/build.sh            # toolchain into .cuda13/, build into target/cuda/
#
# The CUDA 13.0 toolchain comes from PyPI wheels pinned to the versions torch cu130 pins, so the
# PTX (ISA 9.0) and the library sonames match a driver-580 / CUDA 13.0 machine; PyPI's newest
# nvcc would emit PTX that driver cannot load. libcuda.so is the driver's own library and no
# wheel ships it, so the link uses a generated stub exporting every cu* symbol cudarc declares
# (each returns CUDA_ERROR_STUB_LIBRARY); the stub is never shipped. Not part of .ci/run (CPU only).
# A cold build takes about 20 minutes on 2 cores; later builds only recompile spec_vla.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
prefix=${CUDA_PREFIX:-$root/.cuda13}
wheels=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cublas==13.1.0.3
    nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88)
examples=(libero cost_model parity)

command -v python3 >/dev/null || { echo "error: python3 (with pip) is needed for the CUDA wheels" >&2; exit 1; }
command -v gcc >/dev/null || { echo "error: gcc is needed for nvcc and the libcuda stub" >&2; exit 1; }
cu13=$prefix/pip/nvidia/cu13
if [ ! -x "$cu13/bin/nvcc" ] || [ ! -e "$cu13/lib/libcublas.so.13" ]; then
    python3 -m pip install --quiet --no-deps --target "$prefix/pip" "${wheels[@]}"
fi
mkdir -p "$prefix/lib64/stubs"
ln -sfn "$cu13/bin" "$prefix/bin"
ln -sfn "$cu13/include" "$prefix/include"
ln -sfn "$cu13/nvvm" "$prefix/nvvm"
# The wheels ship versioned files only; the linker's -lfoo needs libfoo.so.
for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
    ln -sf "$cu13/lib/$lib" "$prefix/lib64/${lib%.so.*}.so"
done
cargo fetch --quiet
driver_api=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs | tail -n1)
grep -oE '^\s+fn cu[A-Za-z0-9_]+\(' "$driver_api" | sed -E 's/^\s+fn //; s/\($//' | sort -u \
    | awk '{print "int " $1 "(void){return 34;}"}' > "$prefix/libcuda_stub.c"
gcc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$prefix/lib64/stubs/libcuda.so" "$prefix/libcuda_stub.c"

export PATH=$prefix/bin:$PATH   # cudarc runs `nvcc --version`; candle-kernels finds nvcc here
export CUDA_ROOT=$prefix        # link search paths: lib64 and lib64/stubs
export CUDA_COMPUTE_CAP=90      # H100/H200 (built as sm_90a); there is no nvidia-smi here
# Compressed fatbins: binaries of about 20 MB instead of 47 (driver 580+ loads them).
export NVCC_APPEND_FLAGS=--compress-mode=size
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
start=$(date +%s)
CARGO_TARGET_DIR=$root/target/cuda cargo build --release --features cuda \
    $(printf -- '--example %s ' "${examples[@]}")
echo "cuda build: $(( $(date +%s) - start )) s"

mkdir -p .gpubin
for name in "${examples[@]}"; do
    cp "target/cuda/release/examples/$name" ".gpubin/$name"
    strip ".gpubin/$name"
    xz -T0 -6 -f ".gpubin/$name"
done
ls -l .gpubin

# The binaries start here only with the stub standing in for the driver; then the CPU path must
# work and asking for CUDA must say that no driver was found.
mkdir -p "$prefix/runtime"
ln -sf "$prefix/lib64/stubs/libcuda.so" "$prefix/runtime/libcuda.so.1"
export LD_LIBRARY_PATH=$prefix/runtime:$cu13/lib
bin=target/cuda/release/examples/libero
"$bin" --limit 4 --policy strict --quiet | grep SUMMARY
if "$bin" --device cuda --limit 1 --quiet > "$prefix/cuda_attempt.log" 2>&1; then
    echo "error: --device cuda succeeded against the stub driver" >&2
    exit 1
fi
echo "against the stub, --device cuda says: $(head -n1 "$prefix/cuda_attempt.log")"
echo "ready: carry .gpubin and run tools/gpu/check.sh on the GPU machine"
