//go:build !linux

package broker

import "net"

// rawReader: elsewhere the subscription is read through conn.Read.
func rawReader(net.Conn) func(p []byte) (int, error) { return nil }
