#!/usr/bin/env bash
# The whole test run, from a fresh Debian machine: installs what the tests need (idempotent,
# quick when already there), then checks formatting, lints and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the build and the tests use (libssl-dev: git2 and reqwest link OpenSSL; util-linux: prlimit, the memory bound of tests/hostile.rs; openssh-client: ssh-keygen, the signing key of the signed-merge approval test; chromium: the dashboard's browser test in tests/api.rs). Installed only when missing; apt-get update runs once.
packages=(git python3 pkg-config gcc libssl-dev openssl util-linux openssh-client openssh-server chromium)
# python3-venv: the virtual environment holding Helm's SDK for tests/chart.rs (Debian's python3
# refuses installs into the system's Python).
packages+=(python3-venv)
# The desktop feature and its tests: libxkbcommon-dev (enigo's key names), and a headless X
# server with an xterm to drive (xvfb, xterm; xdotool and x11-utils find its window and
# wait for the server).
packages+=(libxkbcommon-dev xvfb xterm xdotool x11-utils)
# Node.js runs the real MCP servers the MCP client is tested against; any node on PATH will do.
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
  fi
fi

# From npm, kept under target/ and installed only when missing: the MCP servers of
# tests/mcp.rs; for tests/api.rs, GitHub's example webhook payloads (signed and delivered
# by the tests) and playwright-core, which drives Debian's chromium (it downloads no browser).
npm_prefix="$PWD/target/npm"
npm_packages=(@modelcontextprotocol/server-filesystem @modelcontextprotocol/server-everything
  @octokit/webhooks-examples playwright-core)
npm_missing=()
for p in "${npm_packages[@]}"; do
  [[ -d "$npm_prefix/node_modules/$p" ]] || npm_missing+=("$p")
done
if ((${#npm_missing[@]})); then
  npm install --prefix "$npm_prefix" --no-audit --no-fund --loglevel=error "${npm_missing[@]}"
fi
export PROTO_TEST_NPM="$npm_prefix"

# From PyPI, into a virtual environment under target/ and installed only when missing:
# helm-python-sdk, Helm v4's own Go SDK as a library (lint and render with no helm binary),
# with which tests/chart.rs checks charts/proto.
helm_venv="$PWD/target/helm-venv"
if ! "$helm_venv/bin/python" -c 'import helm_python' >/dev/null 2>&1; then
  rm -rf "$helm_venv"
  python3 -m venv "$helm_venv"
  "$helm_venv/bin/pip" install --quiet --disable-pip-version-check helm-python-sdk
fi
export PROTO_TEST_HELM="$helm_venv"

# A real Kubernetes API server on Debian's etcd for the Kubernetes tests: built once from
# Debian's source (about 11 minutes on a new machine), cached outside the checkout, found at
# once afterwards. openssl makes the service-account signing key of each test cluster.
PROTO_KUBE_APISERVER="$(scripts/kube-apiserver.sh)"
export PROTO_KUBE_APISERVER

# A clean build of every test target writes about 6 GB under target/: a disk short of that
# is said up front, not found out from a linker killed halfway (SIGBUS on a full disk).
free_kib=$(df -Pk . | awk 'NR == 2 {print $4}')
if [[ $free_kib =~ ^[0-9]+$ ]] && ((free_kib < 8 * 1024 * 1024)); then
  echo "warning: $((free_kib / 1024)) MiB free where target/ is; a clean test build needs about 6 GB" >&2
fi

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --all-targets --locked
