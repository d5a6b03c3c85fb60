// Package fault is notify's fault-injection suite (issue 14): three nodes,
// redis-server and haproxy on hosts that are Linux network namespaces the
// suite creates, real WebSocket clients and a steady publish load through
// Redis, while the network between them is cut, slowed and lossy, Redis
// stops and restarts, and nodes are killed and restarted.
//
// Its tests carry the build tag "fault" (they need root and `ip netns`, and
// run without the race detector: the load generator must be cheap): `make
// fault` runs every scenario at the issue's load, `make test` a short
// subset. NOTIFY_FAULT picks scenarios by number or name ("1,4",
// "partition-redis", "short" for make test's subset, "all").
package fault
