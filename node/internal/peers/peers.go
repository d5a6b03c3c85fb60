// Package peers is what nodes ask of each other: commands to every node over
// the broker's control channel (disconnect a user, deliver an evented
// message, close what a draining node relays), and connection counts asked
// of each member over HTTP, signed with the cluster secret.
package peers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/notify-dev/notify/broker"
	"github.com/notify-dev/notify/cluster"
	"github.com/notify-dev/notify/node/internal/hub"
	"github.com/notify-dev/notify/transport"
)

// Directory lists the members to ask and who owns a user (placement
// implements it).
type Directory interface {
	Peers() []cluster.Member
	// Owner names the member that owns user, "" when this node does.
	Owner(user string) (name, addr string)
}

// Relays closes the clients a draining node relays here (placement).
type Relays interface {
	CloseRelayedVia(node string)
}

// Config of Peers.
type Config struct {
	NodeName  string
	Broker    broker.Broker // carries the commands
	Hub       *hub.Hub
	Directory Directory
	Relays    Relays
	Auth      *cluster.PeerAuth // signs and checks presence calls
	Logger    *slog.Logger
}

// Peers sends and runs node-to-node commands.
type Peers struct {
	cfg    Config
	log    *slog.Logger
	client *http.Client // presence calls to other members
}

// New returns Peers; Run closes its connections when the node stops.
func New(cfg Config) (*Peers, error) {
	if cfg.Broker == nil || cfg.Hub == nil || cfg.Directory == nil || cfg.Relays == nil || cfg.Auth == nil {
		return nil, errors.New("peers: broker, hub, directory, relays and auth are required")
	}
	p := &Peers{cfg: cfg, log: cfg.Logger, client: &http.Client{Timeout: 3 * time.Second}}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	return p, nil
}

// Run waits for ctx to end, then closes the idle connections to peers.
func (p *Peers) Run(ctx context.Context) error {
	<-ctx.Done()
	p.client.CloseIdleConnections()
	return nil
}

// command is a message on broker.ControlChannel, to every node. JSON: rare
// and small, and readable with redis-cli MONITOR.
type command struct {
	Op      string   `json:"op"`
	User    string   `json:"user,omitempty"`
	Node    string   `json:"node,omitempty"`
	Users   []string `json:"users,omitempty"`
	Topics  []string `json:"topics,omitempty"`
	Event   string   `json:"event,omitempty"`
	Message string   `json:"message,omitempty"`
}

const (
	opDisconnect = "disconnect"
	opDrainVia   = "drain-via" // a draining node asks owners to close what it relays
	// opEvent carries a message with a Phoenix event name
	// (BroadcastTextMessage). Why here and not on notify:<id>: that channel
	// carries bytes verbatim, for /notify/ws clients and for applications
	// that publish with redis-cli, so an envelope there would break both;
	// and a channel of its own would be one more subscription per node. The
	// control channel reaches every node in the same ordered stream as the
	// rest, and one envelope serves every target of the call.
	opEvent = "event"
)

func (p *Peers) send(ctx context.Context, c command) error {
	msg, _ := json.Marshal(c)
	if err := p.cfg.Broker.Publish(ctx, broker.ControlChannel, msg); err != nil {
		return fmt.Errorf("%s: %w", c.Op, err)
	}
	return nil
}

// Disconnect closes every connection of user on every node with 4003.
func (p *Peers) Disconnect(ctx context.Context, user string) error {
	return p.send(ctx, command{Op: opDisconnect, User: user})
}

// PublishEvent sends message to users and topics with a Phoenix event name,
// as one command for every node.
func (p *Peers) PublishEvent(ctx context.Context, users, topics []string, event, message string) error {
	return p.send(ctx, command{Op: opEvent, Users: users, Topics: topics, Event: event, Message: message})
}

// AnnounceDrain asks the owners of the clients this node relays to close
// them: their close frames pass through the relay, so the clients learn to
// reconnect elsewhere.
func (p *Peers) AnnounceDrain(ctx context.Context) error {
	return p.send(ctx, command{Op: opDrainVia, Node: p.cfg.NodeName})
}

// Control runs a command from the broker (broker.Handler).
func (p *Peers) Control(payload string) {
	var c command
	if err := json.Unmarshal([]byte(payload), &c); err != nil {
		p.log.Warn("malformed control message ignored", "err", err)
		return
	}
	switch c.Op {
	case opDisconnect:
		p.disconnect(c.User)
	case opEvent:
		event := c.Event
		if event == "" {
			event = "message"
		}
		for _, u := range c.Users {
			p.cfg.Hub.DeliverEvent(broker.Target{Name: u}, c.Message, event)
		}
		for _, t := range c.Topics {
			p.cfg.Hub.DeliverEvent(broker.Target{Topic: true, Name: t}, c.Message, event)
		}
	case opDrainVia:
		if c.Node != p.cfg.NodeName {
			p.cfg.Relays.CloseRelayedVia(c.Node)
		}
	default:
		// A newer node's command: ignore it rather than fail.
		p.log.Debug("unknown control message ignored", "op", c.Op)
	}
}

func (p *Peers) disconnect(user string) {
	clients := p.cfg.Hub.UserClients(user)
	for _, c := range clients {
		c.Sink.Close(transport.CloseDisconnected, "disconnected")
	}
	if len(clients) > 0 {
		p.log.Info("user disconnected by the API", "user", user, "connections", len(clients))
	}
}
