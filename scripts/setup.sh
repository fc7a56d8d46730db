#!/usr/bin/env bash
# Installs everything imexdepth needs on a Debian-like machine, idempotently:
# system packages, the Python training venv (pinned), the ONNX Runtime library (from PyPI's
# wheel), real test photographs (from scikit-image's bundled data), and a release build.
#
# Usage: scripts/setup.sh [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
log() { printf '[setup] %s\n' "$*" >&2; }

APT_PACKAGES=(build-essential pkg-config clang libclang-dev xvfb x11-apps imagemagick ffmpeg
              libx11-dev libxkbcommon-dev)

install_apt() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then log "system packages present"; return; fi
  if ! command -v apt-get >/dev/null; then
    log "missing system packages ${missing[*]} and no apt-get: install them by hand"; exit 1
  fi
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  log "installing system packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

install_python() {
  local py=${PYTHON:-python3}
  if [ ! -x .venv/bin/python ]; then
    log "creating .venv with $($py --version)"
    "$py" -m venv .venv
  fi
  local stamp=.venv/.requirements.sha256
  local want; want=$(sha256sum training/requirements.txt | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then log "python venv up to date"; return; fi
  log "installing python packages (torch brings ~5 GB of CUDA libraries; runs on the CPU)"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r training/requirements.txt
  .venv/bin/pip install -q --no-deps -e training
  echo "$want" > "$stamp"
}

real_images() {
  if [ -f assets/real/.done ]; then log "real photographs present in assets/real"; return; fi
  log "writing real photographs from scikit-image's bundled data to assets/real"
  .venv/bin/python scripts/real_images.py assets/real
  touch assets/real/.done
}

main() {
  install_apt
  install_python
  bash scripts/setup-ort.sh
  real_images
  if [ "${1:-}" != "--no-build" ]; then
    log "building (release)"
    cargo build --release --locked 2>&1 | tail -n 20 >&2
  fi
  log "done"
}
main "$@"
