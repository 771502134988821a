//go:build linux

package main

import (
	"net"
	"runtime"
	"sync"
	"syscall"

	"github.com/tidwall/redcon"
)

// serveLoop serves the same SET/GET map as serveBare, Redis's way: one
// epoll loop on one locked thread owns every connection, reads each ready
// client, runs its commands and writes its replies, with no goroutine per
// connection (the -serve-loop process also runs with GOMAXPROCS 1). It
// measures what the event-loop shape buys on this machine. (Two loops on
// two cores shared with redis-benchmark measured worse at P=1: 46k vs
// 60-66k rps.)
func serveLoop(ln net.Listener) error {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	l := &evLoop{epfd: epfd, conns: make(map[int]*evConn), store: &bareMap{m: make(map[string][]byte)}}
	go func() { runtime.LockOSThread(); l.run() }()
	for {
		nc, err := ln.Accept()
		if err != nil {
			return err
		}
		nc.(*net.TCPConn).SetNoDelay(true)
		f, err := nc.(*net.TCPConn).File() // a dup the loop owns (blocking mode)
		nc.Close()
		if err != nil {
			continue
		}
		fd, err := syscall.Dup(int(f.Fd())) // f's own fd closes with f
		f.Close()
		if err != nil {
			continue
		}
		syscall.SetNonblock(fd, true)
		l.add(fd)
	}
}

type evConn struct {
	fd      int
	in, out []byte
	wantOut bool
}

type evLoop struct {
	epfd  int
	mu    sync.Mutex
	conns map[int]*evConn
	store *bareMap
}

func (l *evLoop) add(fd int) {
	l.mu.Lock()
	l.conns[fd] = &evConn{fd: fd}
	l.mu.Unlock()
	syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)})
}

func (l *evLoop) close(c *evConn) {
	syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, c.fd, nil)
	syscall.Close(c.fd)
	l.mu.Lock()
	delete(l.conns, c.fd)
	l.mu.Unlock()
}

func (l *evLoop) run() {
	events := make([]syscall.EpollEvent, 256)
	buf := make([]byte, 64<<10)
	var argsbuf [][]byte
	for {
		n, err := syscall.EpollWait(l.epfd, events, -1)
		if err != nil && err != syscall.EINTR {
			return
		}
		for i := 0; i < n; i++ {
			l.mu.Lock()
			c := l.conns[int(events[i].Fd)]
			l.mu.Unlock()
			if c == nil {
				continue
			}
			if events[i].Events&syscall.EPOLLIN != 0 {
				m, err := syscall.Read(c.fd, buf)
				if m <= 0 {
					if err != syscall.EAGAIN {
						l.close(c)
					}
					continue
				}
				data := buf[:m]
				if len(c.in) > 0 {
					c.in = append(c.in, data...)
					data = c.in
				}
				for {
					complete, args, _, left, err := redcon.ReadNextCommand(data, argsbuf)
					if err != nil {
						l.close(c)
						break
					}
					if !complete {
						c.in = append(c.in[:0], left...)
						break
					}
					argsbuf = args[:0]
					c.out = l.store.serve(c.out, args)
					data = left
				}
			}
			if len(c.out) > 0 {
				w, err := syscall.Write(c.fd, c.out)
				if w < 0 && err != syscall.EAGAIN {
					l.close(c)
					continue
				}
				if w > 0 {
					c.out = append(c.out[:0], c.out[w:]...)
				}
			}
			if want := len(c.out) > 0; want != c.wantOut { // a short write: wait until writable
				c.wantOut = want
				ev := uint32(syscall.EPOLLIN)
				if want {
					ev |= syscall.EPOLLOUT
				}
				syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_MOD, c.fd, &syscall.EpollEvent{Events: ev, Fd: int32(c.fd)})
			}
		}
	}
}
