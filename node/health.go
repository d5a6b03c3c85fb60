package node

import (
	"net/http"
)

// serveHealth is GET /healthz: the process runs.
func (n *Node) serveHealth(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readiness is the JSON body of /readyz.
type readiness struct {
	Status  string   `json:"status"`
	Reasons []string `json:"reasons,omitempty"`
}

// serveReady is GET /readyz: 200 only while the broker delivers (a probe made
// the round trip recently) and the node is not draining.
func (n *Node) serveReady(w http.ResponseWriter, _ *http.Request) {
	if reasons := n.notReady(); len(reasons) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, readiness{Status: "not ready", Reasons: reasons})
		return
	}
	writeJSON(w, http.StatusOK, readiness{Status: "ready"})
}

func (n *Node) notReady() []string {
	var reasons []string
	if n.draining.Load() {
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
