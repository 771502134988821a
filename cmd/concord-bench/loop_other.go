//go:build !linux

package main

import "errors"

// serveLoop needs epoll.
func serveLoop(addr string) error { return errors.New("the event-loop baseline needs Linux") }
