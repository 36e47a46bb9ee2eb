#!/usr/bin/env bash
# The prepared GPU check, run on the lent H200 (no Rust there) with the binaries tools/gpu/build.sh
# left in .gpubin/ (about 20 MB xz-compressed, carried along):
#
#   run(carry=[".gpubin"], command="bash tools/gpu/check.sh", timeout_s=540)
#
# In at most 8 minutes it measures, on CUDA:
#  (a) parity: the embedded model's f32 greedy tokens against the PyTorch reference tokens of the
#      committed held-out frames (must be equal, near-ties reported), f32 prefill logits against
#      the CPU's, bf16 token agreement and largest logit difference against f32;
#  (b) plain vs strict vs relaxed r=9 speculative decoding of the embedded model, f32 and bf16,
#      on the GPU defaults (tree 8x5x50, no cut-off): time per action and decode speed-up;
#  (c) the cost model at OpenVLA-7B's shape in bf16: prefill, decode step, verification of 7,
#      16, 32 and 50 tree nodes, draft step, and the predicted whole-action speed-up.
# Everything printed is also written under $OUT/gpu (the device tool brings it back).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-target/gpu-check}/gpu
mkdir -p "$out"
exec > >(tee "$out/check.log") 2>&1

for packed in .gpubin/*.xz; do
    bin=${packed%.xz}
    [ -x "$bin" ] || python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$packed" "$bin"
    chmod +x "$bin"
done
# cuBLAS, cuRAND and the CUDA runtime come with the machine's torch (cu130); libcuda.so.1 is the
# driver's own.
site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
export LD_LIBRARY_PATH=$site/nvidia/cu13/lib:/usr/local/nvidia/lib64:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
ldd .gpubin/libero | grep -E "cuda|cublas|curand|not found" || true

status=0
step() {
    local limit=$1 name=$2
    shift 2
    echo "== $name"
    local start=$SECONDS
    timeout "$limit" "$@" || { echo "!! $name failed (rc=$?)"; status=1; }
    echo "== $name took $((SECONDS - start)) s"
}
step 90 "parity" .gpubin/parity --device cuda
for dtype in f32 bf16; do
    step 90 "decoders $dtype" .gpubin/libero --device cuda --dtype "$dtype" --policy all --r 9 --quiet
done
step 210 "cost model (OpenVLA-7B shape, bf16)" .gpubin/cost_model --device cuda --dtype bf16 \
    --layers 4 --nodes 1,7,16,32,50 --trees 1x6x7,4x6x24,8x5x50 --accept 2.0,2.5,3.0,3.5,4.0,4.5,5.0
exit $status
