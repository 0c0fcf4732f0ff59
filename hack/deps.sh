#!/usr/bin/env bash
# Installs what rotor's tests and demo need on a Debian machine, and nothing that is
# already there: curl and openssl (test harness), kubectl (demo), PostgreSQL (SQL
# provider tests), MariaDB and Redis (the mysql and redis providers' tests), Python +
# helm-python-sdk (chart tests) and moto's server (the awsIam provider's tests),
# lua5.1 + lua-cjson (Argo CD health check tests), promtool (the alert rules). The Kubernetes control plane comes
# from hack/envtest.sh.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"

if ! command -v cargo >/dev/null; then
  echo "deps: no Rust toolchain: install one with rustup (https://rustup.rs), Rust >= 1.89" >&2
  exit 1
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done

missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need curl curl
need openssl openssl
need kubectl kubernetes-client
need runuser util-linux
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
[[ -x /usr/sbin/mariadbd ]] || missing+=(mariadb-server)
need redis-server redis-server
need lua5.1 lua5.1
need promtool prometheus
[[ -e /usr/lib/x86_64-linux-gnu/lua/5.1/cjson.so ]] || compgen -G "/usr/lib/*/lua/5.1/cjson.so" >/dev/null || missing+=(lua-cjson)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "deps: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The real Helm v4 library for the chart tests (there is no helm binary here).
VENV="${ROTOR_CACHE:-$HOME/.cache/rotor}/venv"
if ! "$VENV/bin/python" -c 'import helm_python' 2>/dev/null; then
  echo "deps: installing helm-python-sdk into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check helm-python-sdk==0.2.2
fi
# moto's server: an independent implementation of the AWS APIs (IAM, STS) for the
# awsIam provider's tests.
if [[ ! -x "$VENV/bin/moto_server" ]]; then
  echo "deps: installing moto[server] into $VENV" >&2
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==5.2.5"
fi
