// Package deploytest checks notify's deployment assets without a cluster:
// the helm chart (rendered with Helm's own packages for several values
// files), the kustomize manifests, the Dockerfile and docker-compose file,
// the Prometheus rules and the Grafana dashboard, against the objects'
// real Kubernetes types and against the notify binary built from this
// repository.
//
// It is a module of its own so the main module carries no Kubernetes
// dependency. Run it with deploy/test/run.sh (or go test ./... here).
package deploytest
