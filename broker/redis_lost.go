package broker

import (
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"
)

// Why a working subscription was lost: the reason label of
// notify_broker_subscription_lost_total.
const (
	// lostClosedWhileBehind: Redis closed the connection while the reader
	// was behind (behindLimit). Redis cuts a pub/sub client whose unsent
	// replies exceed client-output-buffer-limit pubsub (32mb, or 8mb for
	// 60s, by default), and a reader that is behind is how they pile up;
	// Redis logs it, the client only sees the connection end.
	lostClosedWhileBehind = "closed_while_behind"
	// lostClosedByServer: any other end of the connection from the server
	// side (EOF, reset): a restart, a failover, CLIENT KILL, a proxy.
	lostClosedByServer = "closed_by_server"
	// lostTimeout: nothing, not even a probe, arrived for the probe
	// timeout (a half-dead connection or a frozen server).
	lostTimeout = "timeout"
	// lostError: any other failure of the read.
	lostError = "error"
)

// lostReasons are all the reason label values.
var lostReasons = []string{lostClosedWhileBehind, lostClosedByServer, lostTimeout, lostError}

// lossReason classifies err, which ended a working subscription whose reader
// was behind by behind, against the limit of what counts as behind.
func lossReason(err error, behind, limit time.Duration) string {
	switch {
	case errors.Is(err, errSilent):
		return lostTimeout
	case !closedByPeer(err):
		return lostError
	case behind > limit:
		return lostClosedWhileBehind
	default:
		return lostClosedByServer
	}
}

// closedByPeer tells whether err means the other end closed the connection:
// an orderly close (EOF, or EOF within a reply: Redis does not finish a
// reply it cuts) or a reset.
func closedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// behindLimit is how far behind the reader must be for a close to count as
// closed_while_behind: a reader that keeps up has seen a probe at most about
// one interval old, so two intervals (and at least half the probe timeout,
// for a loaded machine's slow publishes) is well beyond that.
func (r *Redis) behindLimit() time.Duration { return max(2*r.interval, r.timeout/2) }

// describeLoss is the error Ready reports for a lost subscription.
func describeLoss(reason string, behind time.Duration, err error) error {
	switch reason {
	case lostClosedWhileBehind:
		return fmt.Errorf("redis closed the subscription while this node was %s behind (client-output-buffer-limit pubsub exceeded?): %w",
			behind.Round(time.Millisecond), err)
	case lostClosedByServer:
		return fmt.Errorf("redis closed the subscription: %w", err)
	case lostTimeout:
		return err // says so itself
	default:
		return fmt.Errorf("subscription lost: %w", err)
	}
}

// logLost logs the loss of a working subscription, once per loss.
func (r *Redis) logLost(reason string, behind time.Duration, err error) {
	if reason != lostClosedWhileBehind {
		r.log.Warn("redis pub/sub connection lost", "reason", reason, "err", err)
		return
	}
	// Messages published from the cut until the resubscribe never reach
	// this node: raw clients miss them, clients with history resume.
	r.log.Warn("redis closed the pub/sub connection while this node was behind: "+
		"most likely its client-output-buffer-limit pubsub was exceeded; "+
		"messages published until the resubscribe are lost",
		"reason", reason, "behind", behind.Round(time.Millisecond), "err", err)
}
