#!/usr/bin/env bash
# Installs the Debian packages the real-node cluster mode needs (MODELTRUST_CLUSTER=real):
# containerd and runc (the container runtime), the CNI plugins (Debian puts them in
# /usr/lib/cni), nftables (kube-proxy's mode), iptables (the CNI bridge plugin's
# masquerade rules), conntrack, iproute2 and util-linux (nsenter); and what `make image`
# needs where no Docker engine answers: buildah (the daemonless builder) and mmdebstrap
# (the stand-in base image); and postgresql, whose server binaries (initdb, postgres) the
# ledger's storage tests run in a temporary directory of their own (tests/harness/postgres.py;
# the system service is not used). Idempotent: it only
# calls apt-get when something is missing. Needs root.
#
#   tests/cluster/install-node-deps.sh          install what is missing
#   tests/cluster/install-node-deps.sh --check  exit 1, naming what is missing
set -euo pipefail

packages=(containerd runc containernetworking-plugins nftables iptables conntrack iproute2 util-linux
  buildah mmdebstrap postgresql)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "real-node packages: all installed (${packages[*]})"
  exit 0
fi
if [[ ${1:-} == --check ]]; then
  echo "real-node packages missing: ${missing[*]}" >&2
  exit 1
fi
if [[ $(id -u) != 0 ]]; then
  echo "installing ${missing[*]} needs root (apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "real-node packages: installed ${missing[*]}"
