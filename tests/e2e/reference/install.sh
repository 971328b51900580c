#!/usr/bin/env bash
# install.sh: installs the llama.cpp reference's npm packages, as locked in
# package-lock.json, into tests/e2e/reference/node_modules. Called by
# scripts/deps.sh and, when they are missing, by
# tests/integration/llamacpp_reference.sh.
#
# Only the npm registry is used: node-llama-cpp's install script (which could
# try to download or build llama.cpp) is not run; the prebuilt CPU binary is
# the @node-llama-cpp/linux-x64 package; the optional GPU/other-platform
# packages are left out. `npm install --no-save` with the lock file rather
# than `npm ci`: the registry reachable here has no 3.22.1 builds of some of
# node-llama-cpp's optional platform packages (mac, win, riscv), so the lock
# cannot list them and `npm ci` refuses it as out of sync.
# Does nothing when the installed tree was made from this lock file. Exits
# non-zero with a message when node/npm are missing or the install fails.
set -euo pipefail
cd "$(dirname "$0")"
stamp=node_modules/.llmesh-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -d node_modules/@node-llama-cpp/linux-x64 ]; then
  exit 0
fi
command -v node >/dev/null && command -v npm >/dev/null || { echo "install.sh: node and npm are needed" >&2; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || { echo "install.sh: node-llama-cpp needs Node.js >= 20 (have $(node --version))" >&2; exit 1; }
echo "installing the llama.cpp reference (node-llama-cpp) into tests/e2e/reference/node_modules"
NODE_LLAMA_CPP_SKIP_DOWNLOAD=true timeout 300 \
  npm install --no-save --ignore-scripts --omit=optional --no-audit --no-fund --loglevel=error
echo "$want" >"$stamp"
