#!/usr/bin/env bash
# End-to-end on kind (needs Docker, kind, kubectl and helm on PATH, and `make install` done):
#   1. create a kind cluster,
#   2. build the image from the repository's Dockerfile and load it into the cluster,
#   3. install the chart with a fresh ledger key and publisher key, wait until the ledger and
#      the operator really run, and check the ledger answers with a checkpoint signed by the
#      key the policy pins,
#   4. uninstall in the documented order,
#   5. run the e2e suite (`make test-e2e`) against the same cluster via KUBECONFIG.
#
# Not runnable on the project's development machines (no Docker there); written for users
# and CI runners that have Docker.
#
#   hack/e2e-kind.sh                 # everything, then delete the cluster
#   KEEP_CLUSTER=1 hack/e2e-kind.sh  # leave the cluster for poking around
set -euo pipefail

CLUSTER_NAME="${CLUSTER_NAME:-modeltrust-e2e}"
IMAGE="${IMAGE:-modeltrust:e2e}"
NAMESPACE="${NAMESPACE:-modeltrust-system}"
RELEASE="${RELEASE:-modeltrust}"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
modeltrust="${repo}/.venv/bin/modeltrust"
work="$(mktemp -d)"
KUBECONFIG="${work}/kubeconfig"
export KUBECONFIG

log() { printf '\n=== %s\n' "$*" >&2; }
die() { printf 'e2e-kind: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl helm; do
  command -v "${tool}" >/dev/null || die "${tool} is not on PATH"
done
[[ -x "${modeltrust}" ]] || die "${modeltrust} is missing: run 'make install' first"

cleanup() {
  local status=$?
  if [[ "${status}" -ne 0 ]]; then
    kubectl -n "${NAMESPACE}" get all,pvc 2>/dev/null || true
    kubectl -n "${NAMESPACE}" logs "statefulset/${RELEASE}-ledger" --tail=50 2>/dev/null || true
    kubectl -n "${NAMESPACE}" logs "deployment/${RELEASE}-operator" --tail=50 2>/dev/null || true
  fi
  if [[ "${KEEP_CLUSTER}" == "1" ]]; then
    printf 'cluster kept: export KUBECONFIG=%s\n' "${KUBECONFIG}" >&2
  else
    kind delete cluster --name "${CLUSTER_NAME}" >/dev/null 2>&1 || true
    rm -rf "${work}"
  fi
  exit "${status}"
}
trap cleanup EXIT

log "kind cluster ${CLUSTER_NAME}"
kind create cluster --name "${CLUSTER_NAME}" --kubeconfig "${KUBECONFIG}" --wait 180s

log "image ${IMAGE}"
docker build --tag "${IMAGE}" "${repo}"
kind load docker-image "${IMAGE}" --name "${CLUSTER_NAME}"

log "ledger key and publisher key"
kubectl create namespace "${NAMESPACE}"
kubectl label namespace "${NAMESPACE}" pod-security.kubernetes.io/enforce=restricted
origin="${RELEASE}-ledger.${NAMESPACE}.kind.local"
verifier_key="$("${modeltrust}" ledger keygen --origin "${origin}" --out "${work}/ledger.key" | tail -n 1)"
kubectl -n "${NAMESPACE}" create secret generic modeltrust-ledger-key \
  --from-file=signing-key="${work}/ledger.key"
"${modeltrust}" keygen --out "${work}/publisher" >/dev/null

log "helm install ${RELEASE}"
image_repository="${IMAGE%:*}"
image_tag="${IMAGE##*:}"
helm install "${RELEASE}" "${repo}/charts/modeltrust" --namespace "${NAMESPACE}" \
  --set fullnameOverride="${RELEASE}" \
  --set image.repository="${image_repository}" --set image.tag="${image_tag}" \
  --set ledger.signingKey.existingSecret=modeltrust-ledger-key \
  --set-string ledger.verifierKey="${verifier_key}" \
  --set policy.publishers[0].name=e2e-publisher \
  --set-file policy.publishers[0].publicKey="${work}/publisher.pub" \
  --set operator.watchNamespaces[0]="${NAMESPACE}" \
  --wait --timeout 300s
kubectl -n "${NAMESPACE}" rollout status "statefulset/${RELEASE}-ledger" --timeout=120s
kubectl -n "${NAMESPACE}" rollout status "deployment/${RELEASE}-operator" --timeout=120s

log "the ledger signs with the pinned key"
kubectl -n "${NAMESPACE}" port-forward "svc/${RELEASE}-ledger" 18080:8080 >/dev/null 2>&1 &
forward=$!
sleep 3
checkpoint="$(curl --fail --silent --show-error http://127.0.0.1:18080/v1/checkpoint)"
kill "${forward}"
printf '%s\n' "${checkpoint}" | head -n 1 | grep -qxF "${origin}" \
  || die "the checkpoint's origin is not ${origin}: ${checkpoint}"
printf '%s\n' "${checkpoint}" | grep -q "^— ${origin} " \
  || die "the checkpoint carries no signature by ${origin}"

log "uninstall in the documented order"
kubectl delete modeldeployments --all --all-namespaces --wait --timeout=120s
helm uninstall "${RELEASE}" --namespace "${NAMESPACE}" --wait --timeout 120s
kubectl delete crd modeldeployments.modeltrust.dev modeltrustpolicies.modeltrust.dev --wait --timeout=60s

log "make test-e2e (KUBECONFIG=${KUBECONFIG})"
MODELTRUST_E2E_IMAGE="${IMAGE}" make -C "${repo}" test-e2e
