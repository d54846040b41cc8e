#!/usr/bin/env bash
# Installs the Debian packages Voxanne needs, only those missing:
#   build:   cmake, clang, libclang-dev, g++ (whisper.cpp is built from source by whisper-rs)
#   run:     espeak-ng (phonemes for Piper, run as a separate process: GPL-3)
#            festival + festvox-us-slt-hts (the permissive fallback voice)
#   tests:   postgresql (server binaries for throwaway test clusters),
#            chromium + chromium-driver (the dashboard's browser test)
# Usage: scripts/deps.sh [run|test]   (default run)
set -euo pipefail

want=(cmake clang libclang-dev g++ espeak-ng festival festvox-us-slt-hts)
[ "${1:-run}" = test ] && want+=(postgresql chromium chromium-driver)

missing=()
for pkg in "${want[@]}"; do
    case "$pkg" in
        postgresql) compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=("$pkg") ;;
        chromium) [ -x /usr/bin/chromium ] || missing+=("$pkg") ;;
        chromium-driver) [ -x /usr/bin/chromedriver ] || missing+=("$pkg") ;;
        *) dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg") ;;
    esac
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
