//go:build !linux

package node

import "net"

// listenConfig binds the node's listeners: Go sets keep-alive on each
// accepted connection.
func listenConfig() net.ListenConfig { return net.ListenConfig{} }
