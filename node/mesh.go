package node

import (
	"context"
	"fmt"
	"time"

	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/broker/mesh"
)

// The broker a node runs on (NOTIFY_BROKER).
const (
	brokerRedis   = "redis"   // Redis pub/sub and state (PUBSUB_REDIS_ADDR, REDIS_URL, ...)
	brokerCluster = "cluster" // no Redis: the nodes carry publishes to each other (broker/mesh)
	brokerMemory  = "memory"  // no Redis, one node: the embedded broker reaches this node only
)

// meshLeaveTimeout bounds the state hand-over of a leaving node.
const meshLeaveTimeout = 5 * time.Second

// brokerKind is NOTIFY_BROKER, or when it is empty: redis when a Redis is
// configured, else cluster when the node joins others, else memory.
func (c *Config) brokerKind() string {
	switch {
	case c.Broker != "":
		return c.Broker
	case c.Redis.Enabled():
		return brokerRedis
	case len(c.Join) > 0:
		return brokerCluster
	}
	return brokerMemory
}

// validateBroker refuses NOTIFY_BROKER values and the combinations a
// broker cannot serve, saying what to change.
func (c *Config) validateBroker(v *validation) {
	switch c.Broker {
	case "", brokerRedis, brokerCluster, brokerMemory:
	default:
		v.bad("NOTIFY_BROKER", c.Broker, `want "redis", "cluster" or "memory" (empty: redis when Redis is configured, else cluster when NOTIFY_JOIN is set, else memory)`)
		return
	}
	kind := c.brokerKind()
	switch mode, err := broker.ParseSubscribeMode(c.SubscribeMode); {
	case err != nil:
		v.bad("NOTIFY_SUBSCRIBE_MODE", c.SubscribeMode, `want "pattern", "user" or "sharded"`)
	case mode.PerChannel() && kind != brokerRedis:
		v.bad("NOTIFY_SUBSCRIBE_MODE", c.SubscribeMode, "subscribes on Redis: it needs a Redis (NOTIFY_BROKER="+kind+" has none; the cluster broker sends each user's messages to its owner already)")
	case mode == broker.SubscribeSharded && len(c.Redis.ClusterAddrs) == 0:
		v.bad("NOTIFY_SUBSCRIBE_MODE", c.SubscribeMode, "uses the sharded pub/sub of a Redis Cluster: it needs REDIS_CLUSTER_ADDRS (on one server or Sentinel, use \"user\")")
	}
	setting := "NOTIFY_BROKER=" + kind
	if c.Broker == "" {
		setting += " (the default: NOTIFY_JOIN is set and no Redis is configured)"
	}
	switch {
	case kind == brokerRedis && !c.Redis.Enabled():
		v.bad("NOTIFY_BROKER", kind, "needs a Redis: set PUBSUB_REDIS_ADDR, REDIS_URL, REDIS_SENTINEL_ADDRS or REDIS_CLUSTER_ADDRS")
	case kind != brokerRedis && c.Redis.Enabled():
		v.bad("NOTIFY_BROKER", kind, "runs without Redis, but a Redis is configured: unset it, or set NOTIFY_BROKER=redis")
	case kind != brokerCluster:
	case c.History.Enabled():
		v.err(fmt.Errorf("%s keeps no history yet: set NOTIFY_HISTORY_SIZE=0 (no cursors, no resume), or run on Redis for history", setting))
	case c.ClusterSecret == "" && c.GossipKey == "":
		v.err(fmt.Errorf("%s needs NOTIFY_CLUSTER_SECRET (or NOTIFY_GOSSIP_KEY, which it is derived from): nodes authenticate their links with it", setting))
	}
}

// newMesh builds the cluster broker (NOTIFY_BROKER=cluster), once
// placement exists: it routes by placement's ring and reaches the members
// placement lists.
func (n *Node) newMesh() error {
	if n.cfg.brokerKind() != brokerCluster {
		return nil
	}
	m, err := mesh.New(mesh.Config{
		NodeName: n.cfg.NodeName, Ring: n.place, Directory: n.place, Auth: n.peerAuth,
		MaxPayload: n.cfg.MaxPublishSize, RetryFor: n.cfg.MeshRetry, ReadyGrace: n.cfg.MeshReadyGrace,
		Registerer: n.reg, Logger: n.log,
	})
	if err != nil {
		return fmt.Errorf("cluster broker: %w", err)
	}
	n.mesh, n.broker, n.state = m, m, m
	n.log.Info("no Redis: on the cluster broker (NOTIFY_BROKER=cluster), nodes carry publishes to each other and keep their users' state in memory; "+
		"history is off, and a node that crashes loses its users' state", "setting", "NOTIFY_BROKER")
	return nil
}

// meshLeave hands the state this node holds to the users' new owners, as
// it leaves the cluster (cluster broker only).
func (n *Node) meshLeave(ctx context.Context) {
	if n.mesh == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, meshLeaveTimeout)
	defer cancel()
	n.mesh.Leave(ctx)
}
