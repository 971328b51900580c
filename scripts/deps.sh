#!/usr/bin/env bash
# Installs, with apt-get, the Debian packages llmesh needs to build, run and
# test (and, with npm, the llama.cpp reference checks' packages). Does nothing
# when they are all present. Needs root (or sudo) for apt-get.
set -euo pipefail

packages=(
  build-essential cmake pkg-config clang
  libngtcp2-dev libngtcp2-crypto-gnutls-dev libgnutls28-dev
  libevent-dev libpcre2-dev libcjson-dev
  libcurl4-gnutls-dev         # model downloads (src/models/download.c): the GnuTLS flavour, as we link GnuTLS
  curl jq iproute2 procps python3 nftables iptables
  python3-prometheus-client   # tests/integration/metrics.sh parses /metrics with its parser
  chromium                    # tests/integration/console.sh: the console in a headless browser
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm run the end-to-end checks (tests/e2e: llama.cpp through
# node-llama-cpp, the official openai client, playwright-core driving
# chromium for the console). Any node >= 18 will do; take
# Debian's only when none is on the PATH (the machine may have a newer one).
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
# npm packages: the llama.cpp reference of tests/integration/llamacpp_reference.sh
# (node-llama-cpp's prebuilt CPU binary, npm registry only). A failure is
# reported, not fatal: that test then says it skipped.
install_npm() {
  "$(dirname "$0")/../tests/e2e/reference/install.sh" \
    || echo "deps: the llama.cpp reference could not be installed (llamacpp_reference.sh will skip)"
  # playwright-core, as locked, for console.sh (which also installs it when missing). It drives
  # Debian's chromium: playwright's own browser download is never used.
  local console="$(dirname "$0")/../tests/e2e/console"
  [ -d "$console/node_modules/playwright-core" ] ||
    (cd "$console" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 timeout 300 npm ci --no-audit --no-fund --loglevel=error) ||
    echo "deps: playwright-core could not be installed (console.sh will fail)"
  # @anthropic-ai/sdk, as locked, for anthropic_client.sh (which also installs it when missing).
  local anthropic="$(dirname "$0")/../tests/e2e/anthropic"
  [ -d "$anthropic/node_modules/@anthropic-ai/sdk" ] ||
    (cd "$anthropic" && timeout 300 npm ci --no-audit --no-fund --loglevel=error) ||
    echo "deps: @anthropic-ai/sdk could not be installed (anthropic_client.sh will fail)"
}

if [ ${#missing[@]} -eq 0 ]; then install_npm; exit 0; fi

echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
install_npm
