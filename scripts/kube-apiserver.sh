#!/usr/bin/env bash
# Makes a real Kubernetes API server and etcd available to the Kubernetes tests and prints the
# API server's path. No registry ships kube-apiserver, so it is built once from Debian's
# `kubernetes` source package (offline, about 11 minutes on two cores) and cached outside the
# checkout; later runs find the cached binary and return at once. etcd is Debian's.
set -euo pipefail
cache="${PROTO_KUBE_CACHE:-}"
if [[ -z "$cache" ]]; then
  if [[ $(id -u) -eq 0 ]]; then cache=/var/cache/proto-kube; else cache="$HOME/.cache/proto-kube"; fi
fi
bin="$cache/kube-apiserver"
if [[ -x "$bin" ]] && command -v etcd >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi

packages=(golang-go rsync etcd-server golang-github-modern-go-reflect2-dev dpkg-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing Debian packages: ${missing[*]} (run as root, or install them)" >&2
    exit 1
  fi
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
fi
[[ -x "$bin" ]] && { echo "$bin"; exit 0; }

mkdir -p "$cache"
work="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cd "$work"
# The source package through a private apt configuration derived from the machine's own
# Debian sources, so that /etc/apt is left untouched.
mkdir -p srcparts lists/partial cache/archives/partial
if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > srcparts/debian-src.sources
else
  sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > srcparts/debian-src.list
fi
O=(-o Dir::Etc::sourcelist=/dev/null -o "Dir::Etc::sourceparts=$PWD/srcparts"
  -o "Dir::State::Lists=$PWD/lists" -o "Dir::Cache=$PWD/cache")
apt-get "${O[@]}" update -qq >&2
apt-get "${O[@]}" source --download-only kubernetes >&2
tar xzf kubernetes_*.orig.tar.gz
cd kubernetes-*/
# The vendored reflect2 1.0.1 crashes under Go >= 1.18; Debian's 1.0.2 replaces it.
rm -f vendor/github.com/modern-go/reflect2/*.go vendor/github.com/modern-go/reflect2/*.s
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go /usr/share/gocode/src/github.com/modern-go/reflect2/*.s \
  vendor/github.com/modern-go/reflect2/
mkdir -p .go/src/k8s.io && ln -sfn ../../.. .go/src/k8s.io/kubernetes
echo "building kube-apiserver once (about 11 minutes); cached in $cache" >&2
GOPATH="$PWD/.go" GOCACHE="$work/gocache" CGO_ENABLED=0 GOPROXY=off GOFLAGS=-mod=vendor \
  make WHAT=cmd/kube-apiserver >&2
install -m 0755 _output/bin/kube-apiserver "$bin.tmp"
mv "$bin.tmp" "$bin"
echo "$bin"
