#!/usr/bin/env bash
# The main job on bundled real input: live depth on the real photographs written by the set-up,
# in a window where a display exists, headless otherwise; records MP4 and raw 16-bit depth.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/demo}
mkdir -p "$OUT"
window=()
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ]; then
  echo "[demo] no display: running headless (set DISPLAY for the live window)" >&2
  window=(--no-window)
fi
exec target/release/imexdepth live \
  --model models/imexnet-depth-240x320.onnx \
  --source 'assets/real/*.png' --fps 2 \
  --record "$OUT/live.mp4" --record-raw "$OUT/raw" \
  --duration "${DURATION:-10}" "${window[@]}" "$@"
