package placement

import "github.com/notify-dev/notify/cluster"

// Status is the JSON of GET /cluster: this node, its ring, the members as
// this node sees them, and where a user lives when one was asked for.
type Status struct {
	Node struct {
		Name        string `json:"name"`
		Connections int64  `json:"connections"`
		Relayed     int64  `json:"relayed_connections"`
		Joined      bool   `json:"joined"`
		Draining    bool   `json:"draining"`
	} `json:"node"`
	Ring struct {
		Hash       string   `json:"hash"`
		Partitions int      `json:"partitions"`
		Members    []string `json:"members"`
	} `json:"ring"`
	Members []Member    `json:"members"`
	User    *UserStatus `json:"user,omitempty"`
}

// Member is a cluster member with its share of the ring.
type Member struct {
	cluster.Member
	Partitions int  `json:"partitions"`
	OnRing     bool `json:"on_ring"`
}

// UserStatus says where a user lives.
type UserStatus struct {
	ID        string `json:"id"`
	Owner     string `json:"owner"`
	Partition int    `json:"partition"`
}

// Status returns what placement knows for GET /cluster; the caller fills in
// the node's connections, joined and draining.
func (p *Placement) Status(user string) Status {
	v := p.view.Load()
	var st Status
	st.Node.Name = p.cfg.NodeName
	st.Node.Relayed = p.relayed.Load()
	st.Ring.Hash = v.ring.Config().Hash()
	st.Ring.Partitions = v.ring.Config().Partitions
	st.Ring.Members = v.ring.Members()
	for _, m := range v.members {
		_, on := v.relay[m.Name]
		st.Members = append(st.Members, Member{Member: m, Partitions: v.ring.Owned(m.Name), OnRing: on})
	}
	if user != "" {
		st.User = &UserStatus{ID: user, Owner: v.ring.Locate(user), Partition: v.ring.Partition(user)}
	}
	return st
}
