#!/usr/bin/env bash
# `make demo`: a local etcd + kube-apiserver, the CRD, the rotor operator, and the
# random sample rotating — first at creation, then on request. Ctrl-C stops it all.
# DEMO_SECONDS=N exits by itself N seconds after the second rotation.
set -euo pipefail
cd "$(dirname "$0")/.."
ASSETS="$(hack/envtest.sh)"
ROTOR="${CARGO_TARGET_DIR:-target}/debug/rotor"
DIR="$(mktemp -d /tmp/rotor-demo.XXXXXX)"
NS=demo
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
PIDS=()
cleanup() {
  trap - EXIT INT TERM
  say "stopping"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

ETCD_PORT=$(free_port); PEER_PORT=$(free_port); API_PORT=$(free_port)
say "starting etcd and kube-apiserver (Kubernetes 1.20) on 127.0.0.1:$API_PORT"
"$ASSETS/etcd" --data-dir "$DIR/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" --listen-peer-urls "http://127.0.0.1:$PEER_PORT" \
  >"$DIR/etcd.log" 2>&1 &
PIDS+=($!)
openssl genrsa -out "$DIR/sa.key" 2048 2>/dev/null
openssl rsa -in "$DIR/sa.key" -pubout -out "$DIR/sa.pub" 2>/dev/null
TOKEN="demo-$(openssl rand -hex 12)"
echo "$TOKEN,admin,admin,\"system:masters\"" >"$DIR/tokens.csv"
"$ASSETS/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" --secure-port="$API_PORT" \
  --bind-address=127.0.0.1 --cert-dir="$DIR/certs" --token-auth-file="$DIR/tokens.csv" \
  --authorization-mode=RBAC --service-account-issuer=https://kubernetes.default.svc \
  --service-account-key-file="$DIR/sa.pub" --service-account-signing-key-file="$DIR/sa.key" \
  --service-cluster-ip-range=10.0.0.0/24 --disable-admission-plugins=ServiceAccount \
  >"$DIR/kube-apiserver.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 120); do
  [[ "$(curl -sk -m 2 -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$API_PORT/readyz")" == ok ]] && break
  sleep 0.5
done
export KUBECONFIG="$DIR/kubeconfig"
kubectl config set-cluster demo --server="https://127.0.0.1:$API_PORT" --insecure-skip-tls-verify=true >/dev/null
kubectl config set-credentials admin --token="$TOKEN" >/dev/null
kubectl config set-context demo --cluster=demo --user=admin --namespace=$NS >/dev/null
kubectl config use-context demo >/dev/null

say "kubectl apply -f crds/"
kubectl apply -f crds/
for _ in $(seq 1 60); do
  kubectl get crd secretrotations.rotor.dev -o jsonpath='{.status.conditions[?(@.type=="Established")].status}' | grep -q True && break
  sleep 0.5
done
kubectl create namespace $NS

say "rotor run --namespace $NS   (logs: $DIR/rotor.log)"
POD_NAMESPACE=$NS "$ROTOR" run --namespace $NS --metrics-address 127.0.0.1:0 >"$DIR/rotor.log" 2>&1 &
PIDS+=($!)

say "kubectl apply -f config/samples/random.yaml"
cat config/samples/random.yaml
kubectl apply -f config/samples/random.yaml
kubectl get srot -w &
PIDS+=($!)

count() { kubectl get srot session-key -o jsonpath='{.status.rotationCount}' 2>/dev/null || true; }
wait_count() { for _ in $(seq 1 120); do [[ "$(count)" == "$1" ]] && return 0; sleep 0.5; done; echo "timed out" >&2; return 1; }
show() {
  say "the Secret (values shown as fingerprints: HMAC-SHA256 under rotor's key in rotor-kek, as status shows them)"
  # The fingerprint key rotor keeps beside its KEKs (in the operator namespace, here $NS).
  hexkey=$(kubectl get secret rotor-kek -o jsonpath='{.data.fingerprint}' | base64 -d | od -An -v -tx1 | tr -d ' \n')
  for key in SESSION_SECRET SESSION_SECRET_PREVIOUS; do
    v=$(kubectl get secret app-session-key -o "jsonpath={.data.$key}" | base64 -d)
    [[ -n "$v" ]] && printf '  %-24s hmac-sha256:%s\n' "$key" \
      "$(printf %s "$v" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hexkey" -r | cut -c1-8)"
  done
  say "status"
  kubectl get srot session-key -o jsonpath='{range .status.slots[*]}  slot {.index}: {.state} {.fingerprint} id={.id}{"\n"}{end}'
  kubectl get srot session-key -o jsonpath='  message: {.status.lastRotationMessage}{"\n"}  next rotation: {.status.nextRotationAt}{"\n"}'
}
wait_count 1
sleep 1
show

sleep 3
say "rotor rotate session-key   (sets the rotor.dev/rotate annotation)"
"$ROTOR" rotate session-key -n $NS
wait_count 2
sleep 1
show

say "kubectl delete secret app-session-key   (rotor writes it back from the escrow: the same credentials, no rotation)"
kubectl delete secret app-session-key
for _ in $(seq 1 60); do kubectl get secret app-session-key >/dev/null 2>&1 && break; sleep 0.5; done
sleep 1
show
say "Events"
kubectl get events.events.k8s.io --field-selector regarding.name=session-key -o custom-columns=TYPE:.type,REASON:.reason,NOTE:.note 2>/dev/null \
  || kubectl get events --field-selector involvedObject.name=session-key

say "rotor audit session-key   (every step, fingerprints only)"
"$ROTOR" audit session-key -n $NS

if [[ -n "${DEMO_SECONDS:-}" ]]; then
  sleep "$DEMO_SECONDS"
else
  say "watching; Ctrl-C stops the operator and the API server"
  wait
fi
