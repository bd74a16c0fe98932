#!/usr/bin/env bash
# Kind end-to-end suite: creates a kind cluster (1 control plane + 3 workers), builds the broker,
# operator and e2e images (Dockerfile.*), loads them with `kind load docker-image`, lints and
# installs charts/weir with helm, and runs the e2e tests (crate e2e/kind) inside the cluster as
# a Job. Skips, naming what is missing, where Docker, kind, helm or kubectl are not available.
#
#   e2e/kind/run.sh              # full run; deletes the cluster at the end
#   KEEP_CLUSTER=1 e2e/kind/run.sh   # keep the cluster for inspection
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER=weir-e2e
NS=weir
TAG=e2e

missing=()
command -v docker >/dev/null 2>&1 || missing+=("docker (client)")
if command -v docker >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
  missing+=("a running Docker engine")
fi
command -v kind >/dev/null 2>&1 || missing+=("kind")
command -v helm >/dev/null 2>&1 || missing+=("helm")
command -v kubectl >/dev/null 2>&1 || missing+=("kubectl")
if [ ${#missing[@]} -gt 0 ]; then
  joined=$(printf '%s, ' "${missing[@]}")
  echo "SKIP: kind e2e suite not run; missing: ${joined%, }"
  exit 0
fi

cleanup() {
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

echo "== helm lint / template"
helm lint --strict charts/weir
helm template weir charts/weir --namespace "$NS" >/dev/null

echo "== kind cluster $CLUSTER"
kind get clusters 2>/dev/null | grep -qx "$CLUSTER" || kind create cluster --config e2e/kind/kind-config.yaml --wait 120s
kubectl config use-context "kind-$CLUSTER" >/dev/null

echo "== images"
for img in broker operator e2e; do
  DOCKER_BUILDKIT=1 docker build -q -f "Dockerfile.$img" -t "weir-$img:$TAG" .
  kind load docker-image --name "$CLUSTER" "weir-$img:$TAG"
done

echo "== helm install"
helm upgrade --install weir charts/weir --namespace "$NS" --create-namespace --wait --timeout 10m \
  --set broker.image.tag=$TAG --set broker.image.pullPolicy=Never \
  --set operator.image.tag=$TAG --set operator.image.pullPolicy=Never \
  --set broker.storage.size=1Gi
kubectl -n "$NS" rollout status statefulset/weir --timeout=5m

echo "== e2e tests (Job in namespace $NS)"
kubectl -n "$NS" delete job weir-e2e --ignore-not-found >/dev/null
kubectl -n "$NS" apply -f e2e/kind/e2e-job.yaml
if ! kubectl -n "$NS" wait --for=condition=complete job/weir-e2e --timeout=15m; then
  kubectl -n "$NS" logs job/weir-e2e || true
  kubectl -n "$NS" get pods,topics,queues,exchanges,bindings -o wide || true
  kubectl -n "$NS" logs deploy/weir-operator --tail=200 || true
  echo "FAIL: kind e2e tests"
  exit 1
fi
kubectl -n "$NS" logs job/weir-e2e
echo "PASS: kind e2e tests"
