#!/usr/bin/env bash
# Installs every Debian 12 package GANPO Workbench needs to build, test and run.
# Idempotent: packages already present are left alone. Run as root (or with sudo).
set -euo pipefail

packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libopenblas0-pthread   # without OpenBLAS, LibTorch uses the reference BLAS (~15x slower)
  libgloo-dev                         # headers c10d's ProcessGroupGloo includes (data parallelism on CPU)
  libsqlite3-dev sqlite3
  nlohmann-json3-dev libtomlplusplus-dev libcli11-dev
  libpcre2-dev libutf8proc-dev libsentencepiece-dev   # tokenizer.json regexes, NFC; tokenizer.model (-DGANPO_WITH_SENTENCEPIECE=ON)
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev            # the fuzz preset: libFuzzer, ASan + UBSan (tests/fuzz)
  qt6-base-dev qt6-svg-dev libqcustomplot-dev libqcustomplot2.1-qt6
  xvfb xauth imagemagick fonts-dejavu-core
  help2man lintian desktop-file-utils  # man pages; checks of the Debian package (packaging/check-deb.sh)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
