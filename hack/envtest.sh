#!/usr/bin/env bash
# Provides a real Kubernetes control plane for rotor's tests: kube-apiserver and
# kube-controller-manager 1.20.2 built from Debian bookworm's `kubernetes` source
# package, plus Debian's etcd 3.4. Upstream envtest tarballs cannot be downloaded on
# every machine, Debian's source archive can.
#
# Prints the directory holding the three binaries (the KUBEBUILDER_ASSETS layout).
#  - KUBEBUILDER_ASSETS set and complete: that directory is used as it is.
#  - otherwise: built once into ${ROTOR_CACHE:-~/.cache/rotor}/envtest/bin (about
#    10 minutes on 2 cores), instant afterwards.
# Needs root for apt-get on the first build. Progress goes to stderr.
set -euo pipefail

have_all() { [[ -x "$1/kube-apiserver" && -x "$1/kube-controller-manager" && -x "$1/etcd" ]]; }

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  if have_all "$KUBEBUILDER_ASSETS"; then echo "$KUBEBUILDER_ASSETS"; exit 0; fi
  echo "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks kube-apiserver, kube-controller-manager or etcd" >&2
  exit 1
fi

DEST="${ROTOR_CACHE:-$HOME/.cache/rotor}/envtest/bin"
if have_all "$DEST"; then echo "$DEST"; exit 0; fi
mkdir -p "$DEST"

K8S_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
K8S_ORIG="kubernetes_1.20.5+really1.20.2.orig.tar.gz"

export DEBIAN_FRONTEND=noninteractive
SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
if ! grep -rqs "^Types: deb-src" /etc/apt/sources.list.d/ && ! grep -qs "^deb-src" /etc/apt/sources.list; then
  echo "envtest: enabling Debian bookworm source packages" >&2
  $SUDO tee /etc/apt/sources.list.d/rotor-bookworm-src.sources >/dev/null <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
echo "envtest: installing build dependencies (go, etcd)" >&2
$SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq golang-go etcd-server rsync \
  golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev >&2

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
echo "envtest: fetching kubernetes $K8S_VERSION source" >&2
apt-get source -qq --download-only "kubernetes=$K8S_VERSION" >&2
tar xf "$K8S_ORIG"
SRC_DIR="$(find . -maxdepth 1 -type d -name 'kubernetes*' | head -1)"
cd "$SRC_DIR"
# The vendored reflect2 and json-iterator crash at start on Go >= 1.18; Debian carries fixed copies.
for p in github.com/modern-go/reflect2 github.com/json-iterator/go; do
  rm -rf "vendor/$p" && cp -r "/usr/share/gocode/src/$p" "vendor/$p"
done
mkdir -p .go/src/k8s.io && ln -s ../../.. .go/src/k8s.io/kubernetes
echo "envtest: building kube-apiserver and kube-controller-manager (about 10 minutes)" >&2
GOPATH="$PWD/.go" GOFLAGS=-mod=vendor CGO_ENABLED=0 GOPROXY=off \
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >&2
for b in kube-apiserver kube-controller-manager; do
  cp "_output/local/bin/linux/amd64/$b" "$DEST/" 2>/dev/null || cp "_output/bin/$b" "$DEST/"
done
ln -sf "$(command -v etcd || echo /usr/bin/etcd)" "$DEST/etcd"
echo "$DEST"
