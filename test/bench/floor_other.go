//go:build !linux

package main

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// The floor writer needs Linux (raw writes, a thread's CPU clock).

func floorRun(int, int, time.Duration) (float64, error) {
	return 0, errors.New("the one-write floor is measured on Linux only")
}

func floorPaced(int, int, time.Duration) (float64, error) {
	return 0, errors.New("the one-write floor is measured on Linux only")
}

func runFloorWriter([]string) {
	fmt.Fprintln(os.Stderr, "floor: Linux only")
	os.Exit(2)
}
