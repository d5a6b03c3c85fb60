//go:build !unix

package redistest

// Pause would freeze the server process, which needs SIGSTOP: this system
// has none, so the test that asks is skipped.
func (s *Server) Pause() {
	s.t.Helper()
	s.t.Skip("redistest: pausing redis-server needs SIGSTOP, which this system lacks")
}

// Resume continues a paused server; Pause never pauses one here.
func (s *Server) Resume() {}
