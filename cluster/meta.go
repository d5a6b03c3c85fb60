package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// metaVersion is the first byte of the node metadata: the layout of its
// leading fields. A member that cannot read another's version keeps it off
// the ring rather than guessing, so the byte changes only for a layout older
// readers must not read. Fields added since are appended instead (older
// readers stop after the fields they know, and readers treat a missing one
// as absent), so mixed versions keep seeing each other during a rolling
// upgrade:
//
//	revision 1: relay address, ring hash
//	revision 2: + internal address (INTERNAL_PORT)
const metaVersion = 1

// metaRequired is how many leading fields every revision carries.
const metaRequired = 2

// Meta is what a member tells the others about itself, in at most
// memberlist.MetaMaxSize bytes: version, then length-prefixed fields.
type Meta struct {
	RelayAddr string // host:port of its HTTP listener: where misrouted clients are relayed
	RingHash  string // hash of its ring settings (ring.Config.Hash)
	// InternalAddr is host:port of its internal listener (node-to-node
	// calls); empty when it does not advertise one: peers use RelayAddr.
	InternalAddr string
}

func (m Meta) encode() ([]byte, error) {
	b := []byte{metaVersion}
	fields := []string{m.RelayAddr, m.RingHash}
	if m.InternalAddr != "" {
		fields = append(fields, m.InternalAddr)
	}
	for _, f := range fields {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("node metadata is %d bytes, above memberlist's %d", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

var errMetaVersion = errors.New("unknown metadata version")

// decodeMeta reads the fields it knows; fields a newer member appended
// after them are ignored.
func decodeMeta(b []byte) (Meta, error) {
	if len(b) == 0 || b[0] != metaVersion {
		return Meta{}, errMetaVersion
	}
	b = b[1:]
	var fields [3]string
	for i := range fields {
		if i >= metaRequired && len(b) == 0 {
			break // an older member: the optional fields are absent
		}
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return Meta{}, errors.New("truncated metadata")
		}
		fields[i] = string(b[k : k+int(n)])
		b = b[k+int(n):]
	}
	return Meta{RelayAddr: fields[0], RingHash: fields[1], InternalAddr: fields[2]}, nil
}
