//go:build !linux

package main

import (
	"errors"
	"net"
)

// serveLoop needs epoll.
func serveLoop(ln net.Listener) error { return errors.New("the event-loop baseline needs Linux") }
