#!/usr/bin/env bash
# Builds the local control plane from official Go modules (no binary downloads are
# possible here) and caches the binaries by version, outside the work tree.
#
#   tests/cluster/build-tools.sh              build whatever is missing, print the bin dir
#   tests/cluster/build-tools.sh --real-node  also what only the real-node cluster needs:
#                                             CoreDNS and the local images' tiny binaries
#   tests/cluster/build-tools.sh --cosign     only cosign (tests/cli/test_cosign_real.py)
#
# Each tool gets its own throwaway wrapper module so minimal version selection never
# mixes their dependency graphs. Only the first run pays; later runs just check files.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

export GOTOOLCHAIN=local          # never fetch a toolchain named by a go.mod line
export CGO_ENABLED=0
export GOFLAGS=-mod=mod
tools=${MODELTRUST_TOOLS:-$HOME/.cache/modeltrust/tools}
bin="$tools/bin"
mkdir -p "$bin"

real_node=0 cosign_only=0
case ${1:-} in
  --print-bin-dir) echo "$bin"; exit 0 ;;
  --real-node) real_node=1 ;;
  --cosign) cosign_only=1 ;;
  "") ;;
  *) echo "usage: $0 [--real-node | --cosign | --print-bin-dir]" >&2; exit 2 ;;
esac

# One build at a time per cache: a second run (a test's tools_bin() while `make tools`
# builds) waits here instead of breaking the first one's go build.
exec 9>"$tools/.build.lock"
flock 9

# kubelet and kube-proxy are only used by the real-node cluster, but they come from the
# same module, version and wrapper as the control plane, so they share one build.
KUBE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)

log() { printf '[build-tools] %s\n' "$*" >&2; }

# build_in_module DIR: run go mod tidy in a scratch module dir
new_module() {
  local dir=$1 name=$2
  rm -rf "$dir"; mkdir -p "$dir"
  (cd "$dir" && go mod init "modeltrust.local/$name" >/dev/null 2>&1)
}

build_kubernetes() {
  local v=$KUBERNETES_VERSION
  local dest="$tools/kubernetes-$v"
  local b missing=0
  for b in "${KUBE_BINARIES[@]}"; do [[ -x $dest/$b ]] || missing=1; done
  ((missing)) || return 0
  log "building Kubernetes $v (first run only; 15-35 min on 2 cores)"
  local work="$tools/src/kubernetes-$v"
  new_module "$work" kubernetes
  local minor=${v#v1.}; minor=${minor%%.*}
  local staging_version="v0.${v#v1.}"
  local gomod
  gomod=$(cd "$work" && go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  # The upstream go.mod pins staging modules at v0.0.0 and replaces them with ./staging
  # paths; point every one at its published module of the same patch release instead.
  local go_line godebug_line
  go_line=$(awk '$1=="go"{print $2; exit}' "$gomod")
  godebug_line=$(grep -E '^godebug ' "$gomod" || true)
  (
    cd "$work"
    go mod edit -go="$go_line" -require="k8s.io/kubernetes@$v"
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod" | while read -r m; do
      go mod edit -replace="$m=$m@$staging_version"
    done
    [[ -n $godebug_line ]] && printf '\n%s\n' "$godebug_line" >> go.mod
    cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
    go mod tidy -e >/dev/null 2>&1 || true
    go mod download
    local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    local ld="-s -w"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor"
      ld+=" -X $p.gitCommit=modeltrust-local-build -X $p.gitTreeState=clean -X $p.buildDate=$date"
    done
    mkdir -p "$dest.tmp"
    go build -trimpath -ldflags "$ld" -o "$dest.tmp/" "${KUBE_BINARIES[@]/#/k8s.io/kubernetes/cmd/}"
  )
  rm -rf "$dest"; mv "$dest.tmp" "$dest"
}

build_etcd() {
  local v=$ETCD_VERSION
  local dest="$tools/etcd-$v"
  [[ -x $dest/etcd ]] && return
  log "building etcd $v"
  local work="$tools/src/etcd-$v"
  new_module "$work" etcd
  (
    cd "$work"
    go mod edit -require="go.etcd.io/etcd/server/v3@$v"
    printf 'package tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
    go mod tidy -e >/dev/null 2>&1 || true
    mkdir -p "$dest.tmp"
    go build -trimpath -ldflags "-s -w" -o "$dest.tmp/etcd" go.etcd.io/etcd/server/v3
  )
  rm -rf "$dest"; mv "$dest.tmp" "$dest"
}

build_go_install() {  # NAME VERSION PKG[@VERSION]...: modules without replace directives
  local name=$1 v=$2; shift 2
  local dest="$tools/$name-$v"
  [[ -d $dest ]] && return
  log "building $name $v"
  rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
  local pkg
  for pkg in "$@"; do
    [[ $pkg == *@* ]] || pkg="$pkg@$v"
    GOBIN="$dest.tmp" go install -trimpath -ldflags "-s -w" "$pkg"
  done
  rm -rf "$dest"; mv "$dest.tmp" "$dest"
}

# helm with the ldflags of its own Makefile: a plain `go install` reports version "v3.19" and,
# worse, assumes Kubernetes v1.20.0 for `helm template`/`lint`, so a chart with a kubeVersion
# constraint fails without --kube-version. The Kubernetes version is the one its Makefile derives
# from the k8s.io/client-go it builds with (v0.N -> 1.N). The directory name says "stamped" so a
# cached unstamped helm is not reused.
build_helm() {
  local v=$HELM_VERSION
  local dest="$tools/helm-$v-stamped"
  [[ -x $dest/helm ]] && return
  log "building helm $v (version stamped)"
  local gomod client_go major minor
  gomod=$(cd "$tools" && go mod download -json "helm.sh/helm/v3@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  client_go=$(awk '$1=="k8s.io/client-go"{print $2; exit}' "$gomod")
  [[ $client_go =~ ^v([0-9]+)\.([0-9]+)\. ]] || { log "no k8s.io/client-go version in $gomod"; return 1; }
  major=$((BASH_REMATCH[1] + 1)) minor=${BASH_REMATCH[2]}
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$v"
  ld+=" -X helm.sh/helm/v3/internal/version.gitCommit=modeltrust-local-build"
  ld+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  local p
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ld+=" -X $p.k8sVersionMajor=$major -X $p.k8sVersionMinor=$minor"
  done
  mkdir -p "$dest.tmp"
  GOBIN="$dest.tmp" go install -trimpath -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@$v"
  rm -rf "$dest"; mv "$dest.tmp" "$dest"
}

# The real-node cluster's extras (tests/harness/real_node.py). CoreDNS has no replace
# directives, so `go install` works. The pause and netcheck images' binaries come from
# tests/cluster/images and are cached by a hash of their sources.
build_real_node() {
  build_go_install coredns "$COREDNS_VERSION" "github.com/coredns/coredns@$COREDNS_VERSION"
  local src="$here/images" hash
  hash=$(cd "$src" && find . -type f \( -name '*.go' -o -name go.mod \) -print0 | sort -z \
    | xargs -0 sha256sum | sha256sum | cut -c1-12)
  local dest="$tools/images-$hash"
  if [[ ! -x $dest/pause || ! -x $dest/netcheck ]]; then
    log "building the local images' binaries ($hash)"
    rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
    (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$dest.tmp/" ./pause ./netcheck)
    rm -rf "$dest"; mv "$dest.tmp" "$dest"
  fi
  ln -sfn "$dest" "$tools/images"
  ln -sf "$tools/coredns-$COREDNS_VERSION/coredns" "$bin/coredns"
}

# cosign v3 (~6 min of CPU on 2 cores, plus ~1 GB of modules on a fresh machine).
build_go_install cosign "$COSIGN_VERSION" "github.com/sigstore/cosign/v3/cmd/cosign@$COSIGN_VERSION"
ln -sf "$tools/cosign-$COSIGN_VERSION/cosign" "$bin/cosign"
if ((cosign_only)); then echo "$bin"; exit 0; fi

build_etcd
build_go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl
build_helm
build_go_install promtool "$PROMTOOL_VERSION" github.com/prometheus/prometheus/cmd/promtool
build_go_install registry "$DISTRIBUTION_VERSION" \
  "github.com/distribution/distribution/v3/cmd/registry@$DISTRIBUTION_VERSION"
build_go_install oras "$ORAS_VERSION" "oras.land/oras/cmd/oras@$ORAS_VERSION"
build_go_install versitygw "$VERSITYGW_VERSION" \
  "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
build_kubernetes

# One bin dir of symlinks, so PATH and kwokctl need a single prefix.
ln -sf "$tools/kubernetes-$KUBERNETES_VERSION"/* "$bin/"
ln -sf "$tools/etcd-$ETCD_VERSION/etcd" "$bin/etcd"
ln -sf "$tools/kwok-$KWOK_VERSION"/* "$bin/"
ln -sf "$tools/helm-$HELM_VERSION-stamped/helm" "$bin/helm"
ln -sf "$tools/promtool-$PROMTOOL_VERSION/promtool" "$bin/promtool"
ln -sf "$tools/registry-$DISTRIBUTION_VERSION/registry" "$bin/registry"
ln -sf "$tools/oras-$ORAS_VERSION/oras" "$bin/oras"
ln -sf "$tools/versitygw-$VERSITYGW_VERSION/versitygw" "$bin/versitygw"
if ((real_node)); then build_real_node; fi
echo "$bin"
