#!/usr/bin/env bash
# A real Kubernetes control plane as a test rig, built from published Go modules: etcd, kube-apiserver and
# kube-controller-manager (and kubectl) from k8s.io/kubernetes and go.etcd.io/etcd/server/v3 at the versions
# bin/go.mod pins, everything on loopback. No kubelet: the tests stand in for it (tests/it/support/k8s_rig.rs).
#
#   tests/k8s/rig.sh build        # build or reuse the binaries; prints ETCD=… KUBE_APISERVER=… KUBECTL=… …
#   tests/k8s/rig.sh crds         # fetch the CRDs the tests install; prints CRD_DIR=…
#   tests/k8s/rig.sh start        # build, then etcd + kube-apiserver + kube-controller-manager; KEY=VALUE lines
#   tests/k8s/rig.sh kill-apiserver [DIR]    # SIGKILL the API server (etcd, the controllers and the data stay)
#   tests/k8s/rig.sh start-apiserver [DIR]   # start it again with the same flags and port; waits for /readyz
#   tests/k8s/rig.sh stop [DIR]   # tear down the rig started in DIR (default: $K8S_RIG_DIR), by PID
#
# Environment: K8S_BIN_DIR (binary cache, default <repo>/target/k8s-bin), K8S_MACHINE_CACHE (a second copy outside
# the clone, which a fresh clone on the same machine reuses; default ~/.cache/trialtail/k8s-bin, hard links where
# possible), K8S_RIG_DIR (where start puts the certificates, data, logs and the env file; default a new
# /tmp/k8s-rig.XXXXXX), K8S_RIG_OWNER (a PID: the rig stops itself, by PID, once that process is gone – the test
# process that started it). Go builds use GOTOOLCHAIN=local and -mod=readonly: the committed bin/go.sum is the only
# source of truth, nothing is upgraded.
#
# `start` prints, and writes to $K8S_RIG_DIR/env:
#   K8S_RIG_DIR=…  KUBECONFIG=… (cluster-admin, client certificate)  K8S_API=https://127.0.0.1:PORT
#   K8S_CA=… (the cluster CA, PEM)  K8S_CA_KEY=…  WATCHDOG_PID=…
#   ETCD_PID=…  KUBE_APISERVER_PID=…  KUBE_CONTROLLER_MANAGER_PID=…
#   KUBELET_CLIENT_CERT=… KUBELET_CLIENT_CA=… (what the API server presents to kubelets, and the CA of it)
#   KUBELET_SERVING_CERT=… KUBELET_SERVING_KEY=… (a serving certificate for 127.0.0.1 the API server trusts)
#   CRD_DIR=…  plus the binaries of `build`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../rig-common.sh
. "$HERE/../rig-common.sh"
REPO="$(cd "$HERE/../.." && pwd)"
K8S_VERSION="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2}' "$HERE/bin/go.mod")"
ETCD_VERSION="$(awk '$1 == "go.etcd.io/etcd/server/v3" && $2 ~ /^v/ {print $2}' "$HERE/bin/go.mod")"

log() { echo "rig: $*" >&2; }
die() { log "$*"; exit 1; }

# ------------------------------------------------------------------------------------------------------ build
cache_key() {
  # Kubernetes' version, the Go toolchain, and every file that decides the binaries.
  local go_version sum
  go_version="$(GOTOOLCHAIN=local go env GOVERSION)"
  sum="$(cd "$HERE" && cat bin/go.mod bin/go.sum | sha256sum | cut -c1-12)"
  echo "k8s-${K8S_VERSION}-${go_version}-${sum}"
}

complete() {
  [[ -x "$1/etcd" && -x "$1/kube-apiserver" && -x "$1/kube-controller-manager" && -x "$1/kubectl" ]]
}

# Keeps only DIR among the k8s-* directories beside it (binaries of an older Kubernetes, Go or go.sum are stale).
prune() {
  local keep="$1" old
  for old in "$(dirname "$keep")"/k8s-*; do
    if [[ -d "$old" && "$old" != "$keep" ]]; then rm -rf "$old"; fi
  done
}

build() {
  command -v go >/dev/null || die "go is not installed"
  local cache machine key dir
  cache="${K8S_BIN_DIR:-$REPO/target/k8s-bin}"
  # A copy outside the clone, so that a fresh clone on the same machine (CI) does not build again.
  machine="${K8S_MACHINE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/trialtail/k8s-bin}"
  key="$(cache_key)"
  dir="$cache/$key"
  if complete "$dir"; then
    log "reusing $dir"
  elif [[ "$machine" != "$cache" ]] && complete "$machine/$key"; then
    rm -rf "$dir.tmp" && mkdir -p "$cache"
    cp -al "$machine/$key" "$dir.tmp" 2>/dev/null || cp -a "$machine/$key" "$dir.tmp"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    log "reusing $machine/$key"
    prune "$dir"
  else
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp"
    local start=$SECONDS
    export GOTOOLCHAIN=local GOFLAGS=-mod=readonly
    # The version the binaries report (/version, kubectl version), as Kubernetes' own build sets it
    # (hack/lib/version.sh, kube::version::ldflags); the build date is the release's, for a reproducible build.
    local minor ldflags="-s -w" name value
    minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
    for kv in "gitVersion=$K8S_VERSION" gitMajor=1 "gitMinor=$minor" gitTreeState=clean \
      "buildDate=$(cd "$HERE/bin" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)"; do
      name="${kv%%=*}" value="${kv#*=}"
      ldflags+=" -X k8s.io/client-go/pkg/version.$name=$value -X k8s.io/component-base/version.$name=$value"
    done
    # One go build for the four main packages (the tool directives in bin/go.mod name them): the compiler's
    # parallelism spans all of them. The etcd binary is named after its module's last element ("server").
    (cd "$HERE/bin" && go build -trimpath -ldflags "$ldflags" -o "$dir.tmp/" \
      go.etcd.io/etcd/server/v3 k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl)
    mv "$dir.tmp/server" "$dir.tmp/etcd"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    log "built $dir in $((SECONDS - start)) s"
    prune "$dir"
    if [[ "$machine" != "$cache" ]] && mkdir -p "$machine" 2>/dev/null; then
      rm -rf "$machine/$key.tmp"
      if { cp -al "$dir" "$machine/$key.tmp" 2>/dev/null || cp -a "$dir" "$machine/$key.tmp"; } &&
        rm -rf "$machine/$key" && mv "$machine/$key.tmp" "$machine/$key"; then
        prune "$machine/$key"
      else
        log "could not keep a copy in $machine (only $cache has the binaries)"
      fi
    fi
  fi
  ETCD="$dir/etcd" KUBE_APISERVER="$dir/kube-apiserver" KUBE_CONTROLLER_MANAGER="$dir/kube-controller-manager"
  KUBECTL="$dir/kubectl"
}

print_bins() {
  echo "ETCD=$ETCD"
  echo "KUBE_APISERVER=$KUBE_APISERVER"
  echo "KUBE_CONTROLLER_MANAGER=$KUBE_CONTROLLER_MANAGER"
  echo "KUBECTL=$KUBECTL"
  echo "K8S_VERSION=$K8S_VERSION"
  echo "ETCD_VERSION=$ETCD_VERSION"
}


# ------------------------------------------------------------------------------------------------------- crds
# The CRDs the tests install, each from its project's published Go module (fetched through the Go module proxy,
# checked against the module hash pinned here, copied unedited):
#   Katib's Trial and Experiment: github.com/kubeflow/katib, manifests/v1beta1/components/crd/
#   cert-manager's Issuer and Certificate: github.com/cert-manager/cert-manager, deploy/crds/
#   the Prometheus Operator's PodMonitor and PrometheusRule: github.com/prometheus-operator/prometheus-operator,
#     example/prometheus-operator-crd/
CRD_SOURCES=(
  "github.com/kubeflow/katib v0.19.0 h1:uexj303nRkGtTFtTkY4McCt6J0TCtnerX3i3E7TRA5M= manifests/v1beta1/components/crd/trial.yaml manifests/v1beta1/components/crd/experiment.yaml"
  "github.com/cert-manager/cert-manager v1.21.2 h1:UWgoYM+KLNtRlqmoWOKjKBOBUPVHeepQ6/ac3ERJW68= deploy/crds/cert-manager.io_issuers.yaml deploy/crds/cert-manager.io_certificates.yaml"
  "github.com/prometheus-operator/prometheus-operator v0.85.0 h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s= example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml"
)

crds() {
  local cache dir key
  cache="${K8S_BIN_DIR:-$REPO/target/k8s-bin}"
  key="$(printf '%s\n' "${CRD_SOURCES[@]}" | sha256sum | cut -c1-12)"
  dir="$cache/crds-$key"
  if [[ -f "$dir/complete" ]]; then
    CRD_DIR="$dir"
    return
  fi
  rm -rf "$dir.tmp"
  mkdir -p "$dir.tmp"
  local entry module version sum files json mod_dir got file empty
  empty="$(mktemp -d)"
  for entry in "${CRD_SOURCES[@]}"; do
    read -r module version sum files <<<"$entry"
    # From an empty directory, outside any module, so only this module is resolved; GOFLAGS is cleared because
    # -mod=readonly means nothing there.
    json="$(cd "$empty" && GOFLAGS= GOTOOLCHAIN=local go mod download -json "$module@$version")" ||
      die "go mod download $module@$version failed"
    mod_dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p' <<<"$json")"
    got="$(sed -n 's/^[[:space:]]*"Sum": "\(.*\)",*$/\1/p' <<<"$json")"
    [[ "$got" == "$sum" ]] || die "$module@$version: hash $got, expected $sum"
    for file in $files; do
      [[ -f "$mod_dir/$file" ]] || die "$module@$version has no $file"
      cp "$mod_dir/$file" "$dir.tmp/"
    done
  done
  rmdir "$empty"
  chmod u+w "$dir.tmp"/*
  touch "$dir.tmp/complete"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  local old
  for old in "$cache"/crds-*; do
    if [[ -d "$old" && "$old" != "$dir" ]]; then rm -rf "$old"; fi
  done
  CRD_DIR="$dir"
}

# ------------------------------------------------------------------------------------------------------ start
# certificate NAME SUBJECT EXTENSIONS: an ECDSA P-256 key and a certificate the rig's CA signed (3 days).
certificate() {
  local name="$1" subject="$2" ext="$3" pki="$RIG/pki"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$pki/$name.key" \
    -subj "$subject" -out "$pki/$name.csr" 2>/dev/null
  printf '%s\n' "$ext" >"$pki/$name.ext"
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 3 \
    -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$pki/$name.csr" "$pki/$name.ext"
}

pki() {
  local pki="$RIG/pki"
  mkdir -p "$pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$pki/ca.key" \
    -out "$pki/ca.crt" -days 3 -subj "/CN=trialtail test cluster CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  local server="keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth"
  local client="keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  # The API server's serving certificate: loopback, plus the in-cluster names of the kubernetes Service.
  certificate apiserver "/CN=kube-apiserver" "$server
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  # Clients: the tests as cluster-admin (group system:masters), the controller manager as the user the RBAC
  # bootstrap policy binds (system:kube-controller-manager), and the API server towards kubelets.
  certificate admin "/O=system:masters/CN=trialtail-test-admin" "$client"
  certificate controller-manager "/CN=system:kube-controller-manager" "$client"
  certificate kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
  # The kubelet stand-in's serving certificate (the API server verifies it: --kubelet-certificate-authority).
  certificate kubelet "/O=system:nodes/CN=system:node:trialtail-node" "$server
subjectAltName=IP:127.0.0.1"
  # The service-account token signing key.
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>/dev/null
  openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
}

kubeconfig() {
  local user="$1" port="$2"
  printf '%s\n' "apiVersion: v1" "kind: Config" "clusters:" "- name: rig" "  cluster:" \
    "    server: https://127.0.0.1:$port" "    certificate-authority: $RIG/pki/ca.crt" "users:" "- name: $user" \
    "  user:" "    client-certificate: $RIG/pki/$user.crt" "    client-key: $RIG/pki/$user.key" "contexts:" \
    "- name: rig" "  context:" "    cluster: rig" "    user: $user" "current-context: rig"
}

env_get() { sed -n "s/^$1=//p" "$RIG/env" | tail -1; }

env_set() {
  local key="$1" value="$2"
  grep -v "^$key=" "$RIG/env" >"$RIG/env.tmp" || true
  echo "$key=$value" >>"$RIG/env.tmp"
  mv "$RIG/env.tmp" "$RIG/env"
}

# Waits until a GET of PATH as cluster-admin answers 200, or fails after LIMIT seconds or when PID exits.
wait_api() {
  local path="$1" limit="$2" pid="$3" deadline=$((SECONDS + $2))
  until curl -sf -o /dev/null --max-time 5 --cacert "$RIG/pki/ca.crt" --cert "$RIG/pki/admin.crt" \
    --key "$RIG/pki/admin.key" "https://127.0.0.1:$(env_get K8S_API_PORT)$path"; do
    kill -0 "$pid" 2>/dev/null || { tail -30 "$RIG/kube-apiserver.log" >&2; die "kube-apiserver exited"; }
    ((SECONDS < deadline)) || { tail -30 "$RIG/kube-apiserver.log" >&2; die "no 200 from $path after $limit s"; }
    sleep 0.25
  done
}

# Starts kube-apiserver with the flags in $RIG/kube-apiserver.args (one a line) and waits for /readyz.
start_apiserver() {
  local args=()
  mapfile -t args <"$RIG/kube-apiserver.args"
  setsid "$KUBE_APISERVER" "${args[@]}" </dev/null >>"$RIG/kube-apiserver.log" 2>&1 &
  local pid=$!
  env_set KUBE_APISERVER_PID "$pid"
  local start=$SECONDS
  wait_api /readyz 120 "$pid"
  log "kube-apiserver ready in $((SECONDS - start)) s"
}

start() {
  build
  crds
  command -v openssl >/dev/null || die "openssl is not installed"
  command -v curl >/dev/null || die "curl is not installed"
  RIG="${K8S_RIG_DIR:-}"
  if [[ -z "$RIG" ]]; then RIG="$(mktemp -d /tmp/k8s-rig.XXXXXX)"; fi
  mkdir -p "$RIG"
  : >"$RIG/env"
  # On any failure from here on, stop what was started (by PID) and keep the logs. (The trap runs after this
  # function returned: it reads a global.)
  trap 'status=$?; if ((status != 0)); then
    log "start failed: see the logs in $RIG"; stop "$RIG" keep >/dev/null 2>&1 || true; fi' EXIT
  local begin=$SECONDS
  pki

  # etcd: one member, plain HTTP on loopback, fsync off (a throwaway store).
  local etcd_port peer_port
  etcd_port="$(free_port)" peer_port="$(free_port)"
  setsid "$ETCD" --name rig --data-dir "$RIG/etcd" --log-level warn --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "rig=http://127.0.0.1:$peer_port" </dev/null >"$RIG/etcd.log" 2>&1 &
  local etcd_pid=$!
  env_set ETCD_PID "$etcd_pid"
  local deadline=$((SECONDS + 60))
  until curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$etcd_port/health"; do
    kill -0 "$etcd_pid" 2>/dev/null || { cat "$RIG/etcd.log" >&2; die "etcd exited"; }
    ((SECONDS < deadline)) || die "etcd not healthy after 60 s"
    sleep 0.2
  done

  # kube-apiserver: loopback only, client certificates (and service-account tokens), RBAC only. It reaches a
  # kubelet at its Node's InternalIP and status.daemonEndpoints.kubeletEndpoint.Port, and verifies it against the
  # rig's CA (pkg/kubelet/client/kubelet_client.go: NodeConnectionInfoGetter.GetConnectionInfo, and
  # transportConfig, which skips verification when --kubelet-certificate-authority is not given).
  local api_port pki="$RIG/pki"
  api_port="$(free_port)"
  env_set K8S_API_PORT "$api_port"
  printf '%s\n' "--etcd-servers=http://127.0.0.1:$etcd_port" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
    "--secure-port=$api_port" "--tls-cert-file=$pki/apiserver.crt" "--tls-private-key-file=$pki/apiserver.key" \
    "--client-ca-file=$pki/ca.crt" --authorization-mode=RBAC --endpoint-reconciler-type=none \
    --service-cluster-ip-range=10.96.0.0/16 --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    "--service-account-key-file=$pki/sa.pub" "--service-account-signing-key-file=$pki/sa.key" \
    --kubelet-preferred-address-types=InternalIP "--kubelet-certificate-authority=$pki/ca.crt" \
    "--kubelet-client-certificate=$pki/kubelet-client.crt" "--kubelet-client-key=$pki/kubelet-client.key" \
    --profiling=false --v=1 >"$RIG/kube-apiserver.args"
  start_apiserver

  kubeconfig admin "$api_port" >"$RIG/admin.kubeconfig"
  kubeconfig controller-manager "$api_port" >"$RIG/controller-manager.kubeconfig"

  # kube-controller-manager: only the controllers the tests rely on, each with its own service account's
  # credentials as in a real cluster; no serving port.
  local controllers=serviceaccount-controller,namespace-controller,garbage-collector-controller
  controllers+=,root-ca-certificate-publisher-controller
  setsid "$KUBE_CONTROLLER_MANAGER" "--kubeconfig=$RIG/controller-manager.kubeconfig" --secure-port=0 \
    "--controllers=$controllers" \
    --use-service-account-credentials "--root-ca-file=$pki/ca.crt" --leader-elect=false --v=1 \
    </dev/null >"$RIG/kube-controller-manager.log" 2>&1 &
  local kcm_pid=$!
  env_set KUBE_CONTROLLER_MANAGER_PID "$kcm_pid"
  # The controllers work once namespace default has its service account and the cluster CA's ConfigMap.
  deadline=$((SECONDS + 120))
  until "$KUBECTL" "--kubeconfig=$RIG/admin.kubeconfig" -n default get serviceaccount/default \
    configmap/kube-root-ca.crt >/dev/null 2>&1; do
    if ! kill -0 "$kcm_pid" 2>/dev/null; then
      tail -30 "$RIG/kube-controller-manager.log" >&2
      die "kube-controller-manager exited"
    fi
    ((SECONDS < deadline)) || die "kube-controller-manager: no default service account after 120 s"
    sleep 0.25
  done

  # Stop the rig when its owner (the test process) is gone, however it ended.
  if [[ -n "${K8S_RIG_OWNER:-}" ]]; then
    setsid bash -c 'while kill -0 "$1" 2>/dev/null && [[ -f "$2/env" ]]; do sleep 1; done
      if [[ -f "$2/env" ]]; then exec bash "$3" stop "$2"; fi' _ "$K8S_RIG_OWNER" "$RIG" "$HERE/rig.sh" \
      </dev/null >/dev/null 2>&1 &
    env_set WATCHDOG_PID "$!"
  fi
  trap - EXIT

  {
    echo "K8S_RIG_DIR=$RIG"
    echo "K8S_API=https://127.0.0.1:$api_port"
    echo "KUBECONFIG=$RIG/admin.kubeconfig"
    echo "K8S_CA=$pki/ca.crt"
    echo "K8S_CA_KEY=$pki/ca.key"
    echo "KUBELET_CLIENT_CERT=$pki/kubelet-client.crt"
    echo "KUBELET_CLIENT_CA=$pki/ca.crt"
    echo "KUBELET_SERVING_CERT=$pki/kubelet.crt"
    echo "KUBELET_SERVING_KEY=$pki/kubelet.key"
    echo "CRD_DIR=$CRD_DIR"
    print_bins
  } >>"$RIG/env"
  log "started in $((SECONDS - begin)) s"
  cat "$RIG/env"
}

# ------------------------------------------------------------------------------------------------------- stop
rig_dir() {
  RIG="${1:-${K8S_RIG_DIR:-}}"
  [[ -n "$RIG" && -f "$RIG/env" ]] || die "no rig at '${RIG}' (give its directory or set K8S_RIG_DIR)"
}

kill_apiserver() {
  local pid
  pid="$(env_get KUBE_APISERVER_PID)"
  [[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null || true
  while [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  log "kube-apiserver ($pid) killed"
}

stop() {
  rig_dir "${1:-}"
  local watchdog
  watchdog="$(env_get WATCHDOG_PID)"
  # The watchdog runs this very script (exec) when the owner is gone: it does not end itself.
  if [[ -n "$watchdog" && "$watchdog" != "$$" ]]; then end_pid "$watchdog"; fi
  end_pid "$(env_get KUBE_CONTROLLER_MANAGER_PID)"
  end_pid "$(env_get KUBE_APISERVER_PID)"
  end_pid "$(env_get ETCD_PID)"
  case "$RIG" in
    /tmp/k8s-rig.*) if [[ "${2:-}" == keep ]]; then rm -f "$RIG/env"; else rm -rf "$RIG"; fi ;;
    *) rm -f "$RIG/env"; log "left $RIG in place (not created by this script)" ;;
  esac
  log "stopped"
}

case "${1:-}" in
  build)
    build
    print_bins
    ;;
  crds)
    crds
    echo "CRD_DIR=$CRD_DIR"
    ;;
  start) start ;;
  kill-apiserver)
    rig_dir "${2:-}"
    kill_apiserver
    ;;
  start-apiserver)
    rig_dir "${2:-}"
    build
    start_apiserver
    echo "KUBE_APISERVER_PID=$(env_get KUBE_APISERVER_PID)"
    ;;
  stop) stop "${2:-}" "${3:-}" ;;
  *) die "usage: rig.sh build|crds|start|kill-apiserver|start-apiserver|stop [DIR]" ;;
esac
