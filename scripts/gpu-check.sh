#!/usr/bin/env bash
# GPU check for the ONNX Runtime engine, to run where an NVIDIA GPU is present: records CUDA (and,
# where the library has it, TensorRT fp32/fp16) parity against the native engine and latency, for
# every shipped model and test fixture.
#
# Usage: scripts/gpu-check.sh [--ort-lib PATH] [--out DIR] [--repeat N]
#   --ort-lib  a GPU build of libonnxruntime.so (onnxruntime-gpu wheel's capi/ folder, or NVIDIA's
#              Jetson wheel); default: ORT_DYLIB_PATH, then the usual search (the project-local
#              copy from scripts/setup-ort.sh is a CPU build and cannot pass this check).
#   --out      where results go (default: $OUT if set, else gpu-check-results/).
#   --repeat   timed runs per input and engine (default 20).
# Writes info.json, one <model>-<ep>.jsonl per run (a line per input, then a summary line) and
# summary.txt. Exits non-zero if any run fails its tolerance or cannot start.
set -uo pipefail
cd "$(dirname "$0")/.."
log() { printf '[gpu-check] %s\n' "$*" >&2; }

ORT_LIB=${ORT_DYLIB_PATH:-}
OUT_DIR=${OUT:-gpu-check-results}
REPEAT=20
while [ $# -gt 0 ]; do
  case $1 in
    --ort-lib) ORT_LIB=$2; shift 2;;
    --out) OUT_DIR=$2; shift 2;;
    --repeat) REPEAT=$2; shift 2;;
    *) log "unknown argument $1"; exit 2;;
  esac
done
mkdir -p "$OUT_DIR"

BIN=target/release/imexdepth
if [ ! -x "$BIN" ]; then
  log "building $BIN"
  cargo build --release --locked >&2 || { log "build failed"; exit 1; }
fi
LIB_ARGS=()
[ -n "$ORT_LIB" ] && LIB_ARGS=(--ort-lib "$ORT_LIB")

if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv \
    | tee "$OUT_DIR/nvidia-smi.csv" >&2
else
  log "no nvidia-smi: is there a GPU here?"
fi
"$BIN" info --json "${LIB_ARGS[@]}" > "$OUT_DIR/info.json" || { log "info failed"; exit 1; }
providers=$(python3 -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["onnxruntime"]["providers"]))' "$OUT_DIR/info.json" 2>/dev/null || echo "")
log "ONNX Runtime providers: ${providers:-none}"
case " $providers " in
  *" cuda "*) ;;
  *) log "the ONNX Runtime library has no CUDA provider; pass --ort-lib with a GPU build"; exit 1;;
esac

models=(models/*.onnx tests/fixtures/*/model.onnx)
runs=("--ep cuda")
case " $providers " in *" tensorrt "*) runs+=("--ep tensorrt" "--ep tensorrt --fp16");; esac

failed=0
: > "$OUT_DIR/summary.txt"
for model in "${models[@]}"; do
  [ -f "$model" ] || continue
  name=$(echo "$model" | sed 's#^models/##; s#^tests/fixtures/##; s#/model.onnx$##; s#\.onnx$##')
  for run in "${runs[@]}"; do
    tag=$(echo "$run" | sed 's/--ep //; s/ --/-/g; s/ /-/g')
    file="$OUT_DIR/$name-$tag.jsonl"
    log "$name: $run"
    # shellcheck disable=SC2086
    if ! "$BIN" validate --engine ort $run --json --repeat "$REPEAT" --model "$model" \
        "${LIB_ARGS[@]}" --trt-cache "$OUT_DIR/trt-cache" > "$file" 2> "$file.log"; then
      failed=$((failed + 1))
      log "FAILED: $name $run (see $file.log)"
    fi
    tail -n 1 "$file" >> "$OUT_DIR/summary.txt"
  done
done
log "results in $OUT_DIR; $failed failed run(s)"
cat "$OUT_DIR/summary.txt"
[ "$failed" -eq 0 ]
