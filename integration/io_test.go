package integration

import (
	"bufio"
	"io"
)

func io_ReadFull(r *bufio.Reader, b []byte) (int, error) { return io.ReadFull(r, b) }
