// Package codecheck holds checks of the source code itself, run by go test:
// rules a reviewer would otherwise enforce by hand.
package codecheck
