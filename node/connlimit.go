package node

import "math"

// The reserve of descriptors NOTIFY_MAX_CONNECTIONS leaves, by default, for
// the node's own: the Redis pool (10 per CPU) and its subscription, peers
// and relays being dialled, API and metrics requests, the listeners, the
// event loops' epoll descriptors, log files. 5% of the open files limit,
// at least fileReserveMin (a limit of 1024 keeps 64), at most
// fileReserveMax (a limit of a million keeps 1024, not 50,000).
const (
	fileReserveMin = 64
	fileReserveMax = 1024
)

// defaultMaxConnections is NOTIFY_MAX_CONNECTIONS when it is 0: the open
// files soft limit less the reserve; half the limit when the limit is too
// small for a reserve (a test's, not a server's).
func defaultMaxConnections(softLimit uint64) int {
	if softLimit > math.MaxInt32 {
		softLimit = math.MaxInt32 // RLIM_INFINITY: no client gets near it anyway
	}
	reserve := min(max(softLimit/20, fileReserveMin), fileReserveMax)
	if softLimit <= 2*reserve {
		return int(softLimit / 2)
	}
	return int(softLimit - reserve)
}

// maxConnections resolves NOTIFY_MAX_CONNECTIONS, and logs the limit in
// force. A positive setting is the limit as given: above what the open
// files limit allows it is warned about, as the node would then run out of
// descriptors before it refuses clients (the listeners then wait, see
// guardedListener). 0 derives the limit from the open files limit, read
// after the command raised it (cmd/notify raiseFileLimit); where there is
// none to read, there is no limit.
func (n *Node) maxConnections() int {
	soft, known := fileLimit()
	switch {
	case n.cfg.MaxConnections > 0:
		if known && n.cfg.MaxConnections > defaultMaxConnections(soft) {
			n.log.Warn("NOTIFY_MAX_CONNECTIONS is above what the open files limit leaves for clients: the node may run out of descriptors before it refuses any",
				"setting", "NOTIFY_MAX_CONNECTIONS", "max_connections", n.cfg.MaxConnections, "open_files_limit", soft)
		}
		return n.cfg.MaxConnections
	case !known:
		n.log.Info("no open files limit to derive NOTIFY_MAX_CONNECTIONS from: no connection limit", "setting", "NOTIFY_MAX_CONNECTIONS")
		return 0
	}
	limit := defaultMaxConnections(soft)
	n.log.Info("connection limit", "setting", "NOTIFY_MAX_CONNECTIONS", "max_connections", limit, "open_files_limit", soft)
	return limit
}
