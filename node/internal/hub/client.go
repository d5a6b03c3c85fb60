package hub

// Client is one local client as the hub knows it: who it is, where its
// messages go, and (the hub's own bookkeeping) what it is a member of. A
// protocol embeds it in its connection type, sets the exported fields before
// Add and never changes them afterwards.
type Client struct {
	User string // the token's user
	Via  string // the node that relays this client here, "" if it came directly
	Sink Sink   // where messages and closes go

	// The hub's bookkeeping. The position in the user's set (or the
	// lurkers') and the flags are guarded by the user's shard lock; topics
	// by that shard's memberMu, because joins and departures of different
	// topics change it under different shard locks.
	topics  []topicRef
	userPos int32
	inUser  bool // in its user's set, else among the lurkers
	listed  bool // registered (between Add and Remove)
	opened  bool // counted as an open connection (Opened)

	// Transport is the protocol, for the connection metrics. Last, so that
	// it packs with the flags: an idle connection is mostly this struct.
	Transport Transport
}

// topicRef is a joined topic and the client's position in its set (guarded
// by the topic's shard lock).
type topicRef struct {
	name string
	pos  int32
}

// Sink is where one client's messages go: its protocol's encoding, onto its
// connection. The hub calls Deliver with a shard's read lock held for large
// sets, so a Sink must not call back into the hub from Deliver or Close.
type Sink interface {
	// Deliver hands m to the client. direct allows writing on the caller's
	// goroutine (a few recipients); otherwise the write is left to the
	// client's event loop, woken through m.Batch when it is set. It
	// reports whether the client took m.
	Deliver(m *Message, direct bool) bool
	// Close ends the client with a close code and reason: a close frame,
	// the end of a long-poll session. It never blocks.
	Close(code int, reason string)
	// Closed reports whether the client is closing or gone.
	Closed() bool
}

// Transport is the protocol a client speaks (the "transport" label of the
// connection metrics).
type Transport uint8

// The transports, in the order of their metric label values.
const (
	TransportWebSocket Transport = iota // /notify/ws
	TransportSSE                        // /notify/sse
	TransportPhoenix                    // /pubsub/websocket
	TransportLongPoll                   // /pubsub/longpoll
	numTransports
)

var transportNames = [numTransports]string{"websocket", "sse", "phoenix", "longpoll"}

func (t Transport) String() string { return transportNames[t] }
