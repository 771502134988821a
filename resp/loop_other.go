//go:build !linux

package resp

import (
	"errors"
	"net"
)

// hasLoop: the event loop is Linux-only; elsewhere every client gets a
// goroutine.
const hasLoop = false

type evLoop struct{}

type fdReader struct{}

func (s *Server) startLoop() (*evLoop, error)       { return nil, errNoLoop }
func (l *evLoop) add(c *Conn, tc *net.TCPConn) bool { return false }
func (l *evLoop) kill(c *Conn)                      {}
func (l *evLoop) stop()                             {}

var errNoLoop = errors.New("resp: no event loop on this platform")
