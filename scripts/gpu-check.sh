#!/usr/bin/env bash
# GPU readiness (issue 13): builds with `--features cuda`, runs the generic parity suite and the
# layer and whole-model benches on the GPU, and prints one summary table. Needs an NVIDIA GPU
# with its driver and the CUDA toolkit; sized to finish in under 8 minutes on one GPU.
#
#   scripts/gpu-check.sh [OUT_DIR]        # logs and the summary go to OUT_DIR (default target/gpu-check)
#
# The dispatch reads expert ids to the host once per layer and level (README, design notes):
# the layer bench's hybrid/dense ratio on the GPU is the figure that shows what that costs.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/gpu-check}"
mkdir -p "$out"
export CARGO_TERM_COLOR=never MOE_BENCH_TORCH=0
summary="$out/summary.md"
echo "| step | status | seconds |" > "$summary"
echo "|---|---|---:|" >> "$summary"

step() {
    local name="$1"; shift
    local log="$out/$name.log" t0=$(date +%s)
    echo "== $name: $*"
    "$@" > "$log" 2>&1
    local rc=$? t1=$(date +%s)
    local status="ok"
    [ $rc -eq 0 ] || status="FAILED (exit $rc, see $log)"
    echo "| $name | $status | $((t1 - t0)) |" >> "$summary"
    tail -n 3 "$log"
    return 0
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" 2>&1 || true
step build cargo build --release --features cuda --benches --tests
step parity cargo test --release --features cuda --test it -- moe_reference:: model:: \
    backend_parity:: qwen_import:: qwen_config:: llama_import:: generate::
step layer-bench cargo bench --features cuda --bench moe_layer
step model-bench cargo bench --features cuda --bench model

echo
echo "GPU: $(cat "$out/gpu.txt")"
cat "$summary"
echo
echo "-- parity"; grep -E "^test result" "$out/parity.log" || true
echo "-- layer bench"; grep -E "^\|" "$out/layer-bench.log" || tail -n 20 "$out/layer-bench.log"
echo "-- model bench"; grep -E "^\|" "$out/model-bench.log" || tail -n 20 "$out/model-bench.log"
