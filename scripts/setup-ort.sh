#!/usr/bin/env bash
# Extracts the ONNX Runtime shared library (CPU build) from PyPI's `onnxruntime` wheel into
# third_party/onnxruntime/, idempotently. The version is the one pinned for the training venv.
# The Rust engine loads it at run time (ort `load-dynamic`); nothing is downloaded at build time.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[setup-ort] %s\n' "$*" >&2; }

VERSION=$(sed -n 's/^onnxruntime==\([0-9.]*\).*/\1/p' training/requirements.txt)
DEST=third_party/onnxruntime
if [ -f "$DEST/.version" ] && [ "$(cat "$DEST/.version")" = "$VERSION" ] \
    && ls "$DEST"/libonnxruntime.so* >/dev/null 2>&1; then
  log "ONNX Runtime $VERSION present in $DEST"; exit 0
fi
PY=${PYTHON:-python3}; [ -x .venv/bin/python ] && PY=.venv/bin/python
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
log "fetching onnxruntime==$VERSION wheel from PyPI"
"$PY" -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "onnxruntime==$VERSION"
wheel=$(ls "$tmp"/onnxruntime-*.whl)
mkdir -p "$DEST"
"$PY" - "$wheel" "$DEST" <<'PY'
import sys, zipfile, pathlib
wheel, dest = sys.argv[1], pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    libs = [n for n in z.namelist() if "/capi/libonnxruntime.so" in n]
    if not libs:
        sys.exit(f"{wheel}: no capi/libonnxruntime.so* inside the wheel")
    for n in libs:
        (dest / pathlib.Path(n).name).write_bytes(z.read(n))
PY
lib=$(ls "$DEST"/libonnxruntime.so.* | head -n1)
ln -sf "$(basename "$lib")" "$DEST/libonnxruntime.so"
echo "$VERSION" > "$DEST/.version"
log "ONNX Runtime $VERSION -> $lib"
