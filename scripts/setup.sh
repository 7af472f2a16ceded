#!/usr/bin/env bash
# One-step set-up for `make demo`, `make test` and `make bench` on Debian or Raspberry Pi OS:
# the system packages (when run as root or with sudo), a virtual environment, and the package itself.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(mosquitto espeak-ng ffmpeg libportaudio2 pulseaudio libasound2-plugins fonts-wqy-microhei shellcheck postgresql chromium poppler-utils xorriso)
python3 -c 'import ensurepip, venv' 2>/dev/null || packages+=(python3-venv)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=(sudo)
  else
    echo "setup: missing system packages: ${missing[*]}" >&2
    echo "setup: run as root or with sudo, or install them: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing the package and its tools into .venv"
  log=.venv/pip-install.log
  if ! { .venv/bin/pip install --upgrade pip && .venv/bin/pip install -e '.[device,central,dev]'; } >"$log" 2>&1; then
    tail -20 "$log" >&2
    echo "setup: pip install failed; the whole log is in $log" >&2
    exit 1
  fi
  touch "$stamp"
fi
