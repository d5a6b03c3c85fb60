package node

import (
	"net/http"

	"github.com/notify-dev/notify/node/internal/respond"
)

// serveHealth is GET /healthz: the process runs.
func (n *Node) serveHealth(w http.ResponseWriter, _ *http.Request) {
	respond.JSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// serveLegacyHealth is GET /api/healthz, the Elixir service's probe path:
// the plain text OK its Kubernetes probes may match on.
func serveLegacyHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("OK"))
}

// readiness is the JSON body of /readyz.
type readiness struct {
	Status  string   `json:"status"`
	Reasons []string `json:"reasons,omitempty"`
	// Warnings are settings an operator should know about; they do not
	// make the node unready.
	Warnings []string `json:"warnings,omitempty"`
}

// apiAuthOffWarning is logged at start and shown by /readyz.
const apiAuthOffWarning = "NOTIFY_API_AUTH=off: the server API (Twirp and gRPC) takes every call without a key; anyone who can reach it can publish, read state and disconnect users"

// warnings lists what /readyz shows besides its status.
func (n *Node) warnings() []string {
	var w []string
	if n.cfg.apiAuthOff() {
		w = append(w, apiAuthOffWarning)
	}
	return w
}

// serveReady is GET /readyz: 200 only while the broker delivers (a probe made
// the round trip recently), the node has joined its cluster, and it is not
// draining; else 503 with the reasons.
func (n *Node) serveReady(w http.ResponseWriter, _ *http.Request) {
	if reasons := n.notReady(); len(reasons) > 0 {
		respond.JSON(w, http.StatusServiceUnavailable, readiness{Status: "not ready", Reasons: reasons, Warnings: n.warnings()})
		return
	}
	respond.JSON(w, http.StatusOK, readiness{Status: "ready", Warnings: n.warnings()})
}

func (n *Node) notReady() []string {
	var reasons []string
	if n.draining() {
		reasons = append(reasons, "draining")
	}
	if err := n.broker.Ready(); err != nil {
		reasons = append(reasons, "broker: "+err.Error())
	}
	if n.cluster == nil {
		reasons = append(reasons, "cluster: not started")
	} else if err := n.cluster.Joined(); err != nil {
		reasons = append(reasons, "cluster: not joined: "+err.Error())
	}
	return reasons
}

// serveCluster is GET /cluster: the members, the ring and this node's
// connections; ?user=ID also names the user's owner.
func (n *Node) serveCluster(w http.ResponseWriter, r *http.Request) {
	st := n.place.Status(r.URL.Query().Get("user"))
	st.Node.Connections = n.hub.Open()
	st.Node.Joined = n.cluster != nil && n.cluster.Joined() == nil
	st.Node.Draining = n.draining()
	respond.JSON(w, http.StatusOK, st)
}
