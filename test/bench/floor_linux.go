//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The one-write-per-delivery floor: what a process does at the least to
// deliver a 100-byte message to one of N loopback sockets, one write(2)
// per message, round robin. A child process (os.Args[1] == "floor") dials
// N connections to a sink in the driver, which reads and discards, and
// writes from one goroutine locked to its thread; the child's CPU time
// while it writes is the figure, counted as a node's is (the whole
// process): it includes the loopback's receive path that runs in the
// writer's system call, as a node's writes do, and none of the sink's
// reading.

// floorResult is what the floor writer reports on stdout.
type floorResult struct {
	PacedWrites   int     `json:"paced_writes"`
	PacedCPU      float64 `json:"paced_cpu"`
	UnpacedWrites int     `json:"unpaced_writes"`
	UnpacedCPU    float64 `json:"unpaced_cpu"`
	Err           string  `json:"err,omitempty"`
}

// floorRun measures the floor over conns sockets at rate writes/s, then
// unpaced, each for d, and prints its figures. It returns the paced
// writes per CPU-second.
func floorRun(conns, rate int, d time.Duration) (float64, error) {
	r, err := floorMeasure(conns, rate, d, true)
	if err != nil {
		return 0, err
	}
	paced := float64(r.PacedWrites) / r.PacedCPU
	info("floor: %d writes over %d sockets at %d/s took %.3f s of the writer's CPU; unpaced %d in %.3f s",
		r.PacedWrites, conns, rate, r.PacedCPU, r.UnpacedWrites, r.UnpacedCPU)
	figure(fmt.Sprintf("floor_writes_per_cpu_second_%dk", rate/1000), paced, "writes/cpu-s")
	figure("floor_writes_per_cpu_second_unpaced", float64(r.UnpacedWrites)/r.UnpacedCPU, "writes/cpu-s")
	return paced, nil
}

// floorPaced measures the paced floor alone, for d, and returns its
// writes per CPU-second: the per-user run's floor, taken next to it.
func floorPaced(conns, rate int, d time.Duration) (float64, error) {
	r, err := floorMeasure(conns, rate, d, false)
	if err != nil {
		return 0, err
	}
	return float64(r.PacedWrites) / r.PacedCPU, nil
}

// floorMeasure runs the floor writer against a sink in this process: paced
// at rate for d, then, with unpaced, as fast as it can for d.
func floorMeasure(conns, rate int, d time.Duration, unpaced bool) (floorResult, error) {
	var r floorResult
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return r, err
	}
	defer ln.Close()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var accepted []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted = append(accepted, c)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(io.Discard, c) })
		}
	})
	defer func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range accepted {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	self, err := os.Executable()
	if err != nil {
		return r, err
	}
	cmd := exec.Command(self, "floor", ln.Addr().String(), strconv.Itoa(conns), strconv.Itoa(rate), d.String(), strconv.FormatBool(unpaced))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return r, fmt.Errorf("floor writer: %w", err)
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("floor writer said %q: %w", out, err)
	}
	if r.Err != "" {
		return r, errors.New("floor writer: " + r.Err)
	}
	return r, nil
}

// runFloorWriter is the child: floor <addr> <conns> <rate> <duration> <unpaced>.
func runFloorWriter(args []string) {
	var r floorResult
	if err := floorWrite(args, &r); err != nil {
		r.Err = err.Error()
	}
	_ = json.NewEncoder(os.Stdout).Encode(r)
}

func floorWrite(args []string, r *floorResult) error {
	if len(args) != 5 {
		return errors.New("usage: floor <addr> <conns> <rate> <duration> <unpaced>")
	}
	n, err1 := strconv.Atoi(args[1])
	rate, err2 := strconv.Atoi(args[2])
	d, err3 := time.ParseDuration(args[3])
	unpaced, err4 := strconv.ParseBool(args[4])
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return err
	}
	raiseFileLimit()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	fds := make([]int, 0, n)
	for range n {
		c, err := net.Dial("tcp", args[0])
		if err != nil {
			return err
		}
		conns = append(conns, c)
		sc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			return err
		}
		_ = sc.Control(func(fd uintptr) { fds = append(fds, int(fd)) })
	}
	time.Sleep(200 * time.Millisecond) // the sink has accepted them all
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	msg := make([]byte, 100)
	var err error
	if r.PacedWrites, r.PacedCPU, err = floorLoop(fds, msg, rate, d); err != nil || !unpaced {
		return err
	}
	r.UnpacedWrites, r.UnpacedCPU, err = floorLoop(fds, msg, 0, d)
	return err
}

// floorLoop writes msg round robin over fds, rate per second (0: as fast
// as it can), for d; it returns the writes and this thread's CPU seconds.
func floorLoop(fds []int, msg []byte, rate int, d time.Duration) (int, float64, error) {
	cpu0 := processCPU()
	start := time.Now()
	sent := 0
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		elapsed := time.Since(start)
		if elapsed >= d {
			break
		}
		due := sent + 1000
		if rate > 0 {
			<-tick.C
			due = int(float64(rate) * time.Since(start).Seconds())
		}
		for ; sent < due; sent++ {
			fd := fds[sent%len(fds)]
			for {
				_, err := unix.Write(fd, msg)
				if err == nil {
					break
				}
				if err != syscall.EINTR && err != syscall.EAGAIN {
					return sent, 0, fmt.Errorf("write: %w", err)
				}
			}
		}
	}
	return sent, processCPU() - cpu0, nil
}

// raiseFileLimit lifts the soft limit of open files to the hard one.
func raiseFileLimit() {
	var l unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &l)
	}
}

// processCPU is this process's user and system CPU time in seconds: the
// writes, and the runtime around them (the pacing timer's wake-ups), as a
// node's CPU is counted.
func processCPU() float64 {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}
