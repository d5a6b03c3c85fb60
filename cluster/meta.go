package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// metaVersion is the first byte of the node metadata. A member that cannot
// read another's version keeps it off the ring rather than guessing.
const metaVersion = 1

// Meta is what a member tells the others about itself, in at most
// memberlist.MetaMaxSize bytes: version, then length-prefixed fields.
type Meta struct {
	RelayAddr string // host:port of its HTTP listener: where misrouted clients are relayed
	RingHash  string // hash of its ring settings (ring.Config.Hash)
}

func (m Meta) encode() ([]byte, error) {
	b := []byte{metaVersion}
	for _, f := range []string{m.RelayAddr, m.RingHash} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("node metadata is %d bytes, above memberlist's %d", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

var errMetaVersion = errors.New("unknown metadata version")

func decodeMeta(b []byte) (Meta, error) {
	if len(b) == 0 || b[0] != metaVersion {
		return Meta{}, errMetaVersion
	}
	b = b[1:]
	var fields [2]string
	for i := range fields {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return Meta{}, errors.New("truncated metadata")
		}
		fields[i] = string(b[k : k+int(n)])
		b = b[k+int(n):]
	}
	return Meta{RelayAddr: fields[0], RingHash: fields[1]}, nil
}
