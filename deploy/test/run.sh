#!/usr/bin/env bash
# Checks the deployment assets without a cluster or a Docker engine:
#   1. go test in this module: the helm chart rendered with Helm's packages
#      for every values file in testdata/, the kustomize manifests, both
#      decoded strictly into Kubernetes types and checked for the invariants
#      (headless gossip Service, NOTIFY_JOIN, probes, grace period, secrets
#      only by reference, selectors, schema rejections, ...), the Dockerfile,
#      .dockerignore and docker-compose.yml, the alert rules and dashboard
#      against the metrics and settings of the node built from this repository;
#   2. helm lint --strict, on the defaults and on each values file;
#   3. promtool check rules and promtool test rules.
# Every step runs; the exit status is non-zero when any failed.
#
#   deploy/test/run.sh           (from anywhere; make helm-test)
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
GO="${GO:-go}"
HELM_VERSION=v3.16.4
# The oldest Kubernetes the chart supports (preStop sleep action).
KUBE_VERSION=1.30.0

passed=0
failed=0
failures=()
step() {
	local name="$1"
	shift
	echo "--- $name"
	local start=$SECONDS
	if "$@"; then
		passed=$((passed + 1))
		echo "--- ok: $name ($((SECONDS - start))s)"
	else
		failed=$((failed + 1))
		failures+=("$name")
		echo "--- FAILED: $name ($((SECONDS - start))s)"
	fi
}

# promtool comes with Debian's prometheus package.
if ! command -v promtool >/dev/null 2>&1; then
	if command -v apt-get >/dev/null 2>&1; then
		sudo=""
		[ "$(id -u)" = 0 ] || sudo=sudo
		echo "installing promtool (Debian package prometheus)"
		$sudo apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
	else
		echo "promtool missing and no apt-get here: the promtool steps fail"
	fi
fi

# Meanwhile compile the node's packages as the Dockerfile does (static,
# -trimpath), on the core the test build leaves idle: the test's own build of
# the node then mostly links from the cache.
(cd "$root" && CGO_ENABLED=0 "$GO" build -trimpath -o /dev/null ./cmd/notify) >/dev/null 2>&1 &
prebuild=$!

# go test first: it compiles the Helm and Kubernetes packages that go run
# helm@$HELM_VERSION below then finds in the build cache (same versions).
step "go test (deploy/test)" bash -c "cd '$here' && '$GO' test -count=1 -timeout 10m ./..."
wait "$prebuild" || true

helm() { (cd "$root" && "$GO" run "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "$@"); }
step "helm lint (defaults)" helm lint --strict --kube-version "$KUBE_VERSION" helm/notify
for f in "$here"/testdata/*.yaml; do
	step "helm lint -f ${f#"$root"/}" helm lint --strict --kube-version "$KUBE_VERSION" -f "$f" helm/notify
done

step "promtool check rules" promtool check rules "$root/deploy/prometheus/rules.yaml"
step "promtool test rules" bash -c "cd '$root/deploy/prometheus' && promtool test rules rules_test.yaml"

echo
if [ "$failed" -gt 0 ]; then
	printf 'failed: %s\n' "${failures[@]}"
fi
echo "deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
