package peering

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"concord/crdt"
)

// Messages and answers larger than the transport carries. A NATS server
// refuses a message above its max_payload (64 MiB on the embedded server,
// 1 MiB by default on an external one), and a value may be up to
// proto-max-bulk-len (512 MB): without the two mechanisms below one such
// write stalled the region's publisher for good (every later write of the
// region unreplicated), and anti-entropy could not repair the key.
//
//   - Answers in parts: Fetch sends a request wrapped (reqWrapped + the
//     request); the peer answers ansWhole + the answer when it fits a
//     message, or ansParts + token + total length + the first part, and the
//     requester reads the rest with reqPart + token + offset, a message at a
//     time. A peer of an older build answers nothing to a wrapped request:
//     the request goes again as it is.
//   - References: an outbox entry too large for a message is published as
//     refMessage + a batch naming its keys (empty states); a peer that
//     receives one asks the origin for those keys' full states (ReqStates,
//     in parts) and applies them in the entry's place. A key's full state
//     includes what the entry carried (and maybe later writes: merging
//     them early is harmless), and the peer acknowledges the message only
//     once they are durable, as for any message.

// Request kinds Node handles itself (the server's are letters), and
// ReqStates, the server's request for full states, which references use.
const (
	reqWrapped = 0x00
	reqPart    = 0x01
	// ReqStates + a batch of keys (crdt.AppendBatch, empty states) asks a
	// peer for those keys' full states, tombstones included (a batch).
	ReqStates = 'F'
)

// The first byte of an answer to a wrapped request.
const (
	ansWhole = 0
	ansParts = 1
)

// refMessage starts a stream message that names keys instead of carrying
// their deltas (crdt's messages start with 1, 2 or 3).
const refMessage = 'R'

// Bounds of the parts protocol: an answer's parts are kept until read to
// the end or unread for partsTTL, at most maxHeldAnswers at once (the
// oldest goes first); an answer claiming more than maxAnswer bytes is
// refused.
const (
	partsTTL       = time.Minute
	maxHeldAnswers = 8
	maxAnswer      = 1 << 33
	// payloadSlack is what a message's headers and framing may take
	// besides its payload.
	payloadSlack = 4 << 10
)

// Unresolved is what an Applier returns when deltas of a batch extend a
// value the region does not hold (crdt.ResolveExtend: an APPEND's delta
// whose base a concurrent write of another region overwrote here, or
// that never arrived): it applied the rest and logged the message but
// not the watermark. The node then fetches those keys' full states from
// the origin (as for a reference, large.go) and applies them in the
// deltas' place; the watermark goes with them.
type Unresolved struct {
	Keys []crdt.KeyDelta
}

func (u *Unresolved) Error() string {
	return fmt.Sprintf("peering: %d deltas extend values not held here", len(u.Keys))
}

var errAnswer = errors.New("peering: bad or expired answer in parts")

// heldAnswers keeps the answers being read in parts.
type heldAnswers struct {
	mu   sync.Mutex
	next uint64
	m    map[uint64]*heldAnswer
}

type heldAnswer struct {
	b    []byte
	used time.Time
}

// wrap frames ans for a wrapped request: whole, or its first part (and
// keeps the rest) when it exceeds part bytes.
func (h *heldAnswers) wrap(ans []byte, part int, now time.Time) []byte {
	if len(ans) <= part {
		return append([]byte{ansWhole}, ans...)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[uint64]*heldAnswer{}
	}
	var oldest uint64
	for tok, a := range h.m {
		if now.Sub(a.used) > partsTTL {
			delete(h.m, tok)
		} else if oldest == 0 || a.used.Before(h.m[oldest].used) {
			oldest = tok
		}
	}
	if len(h.m) >= maxHeldAnswers {
		delete(h.m, oldest)
	}
	h.next++
	h.m[h.next] = &heldAnswer{b: ans, used: now}
	out := binary.AppendUvarint(binary.AppendUvarint([]byte{ansParts}, h.next), uint64(len(ans)))
	return append(out, ans[:part]...)
}

// read answers reqPart (its body: token, offset): the next part, nothing
// if the answer is unknown (expired) or the offset is past its end. The
// answer is dropped once its last part is read.
func (h *heldAnswers) read(body []byte, part int, now time.Time) []byte {
	tok, n := binary.Uvarint(body)
	off, m := binary.Uvarint(body[max(n, 0):])
	if n <= 0 || m <= 0 {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	a := h.m[tok]
	if a == nil || off >= uint64(len(a.b)) {
		return nil
	}
	end := min(off+uint64(part), uint64(len(a.b)))
	if end == uint64(len(a.b)) {
		delete(h.m, tok)
	}
	a.used = now
	return a.b[off:end]
}

// partSize is the most payload a message carries (an answer's part, a
// stream message): the server's max payload, or NATS's default 1 MiB while
// the connection is not up (an external server down at start).
func (n *Node) partSize() int {
	p := n.t.MaxPayload()
	if p <= 0 {
		p = 1 << 20
	}
	return max(p-payloadSlack, 1<<10)
}

// ServeFetch answers peers' requests with fn (full key states, anti-entropy
// digests), in parts when an answer is larger than a message.
func (n *Node) ServeFetch(fn func(req []byte) []byte) error {
	return n.t.ServeFetch(func(req []byte) []byte {
		if len(req) > 0 {
			switch req[0] {
			case reqWrapped:
				return n.held.wrap(fn(req[1:]), n.partSize(), time.Now())
			case reqPart:
				return n.held.read(req[1:], n.partSize(), time.Now())
			}
		}
		return fn(req)
	})
}

// Fetch sends req to peer's fetch handler (see ServeFetch) and returns its
// whole answer, read in parts if it is larger than a message.
func (n *Node) Fetch(ctx context.Context, peer string, req []byte) ([]byte, error) {
	resp, err := n.t.Fetch(ctx, peer, append([]byte{reqWrapped}, req...))
	if err != nil {
		return nil, err
	}
	if len(resp) == 0 { // a peer of an older build
		return n.t.Fetch(ctx, peer, req)
	}
	switch resp[0] {
	case ansWhole:
		return resp[1:], nil
	case ansParts:
	default:
		return nil, errAnswer
	}
	tok, i := binary.Uvarint(resp[1:])
	total, j := binary.Uvarint(resp[1+max(i, 0):])
	if i <= 0 || j <= 0 || total > maxAnswer {
		return nil, errAnswer
	}
	first := resp[1+i+j:]
	out := make([]byte, 0, min(total, 64<<20))
	out = append(out, first...)
	for uint64(len(out)) < total {
		part, err := n.t.Fetch(ctx, peer, binary.AppendUvarint(binary.AppendUvarint([]byte{reqPart}, tok), uint64(len(out))))
		if err != nil {
			return nil, err
		}
		if len(part) == 0 || uint64(len(out)+len(part)) > total {
			return nil, errAnswer
		}
		out = append(out, part...)
	}
	return out, nil
}

// reference returns the message that stands for an outbox entry too large
// to publish: the names of its keys.
func reference(entry []byte) ([]byte, error) {
	kds, err := crdt.DecodeBatch(entry)
	if err != nil {
		return nil, fmt.Errorf("outbox entry of %d bytes: %w", len(entry), err)
	}
	for i := range kds {
		kds[i].Delta, kds[i].Ext = &crdt.State{}, nil
	}
	return crdt.AppendBatch([]byte{refMessage}, kds), nil
}

// referencedStates fetches from origin the full states of the keys a
// reference names (the message after refMessage).
func (n *Node) referencedStates(origin string, names []byte) ([]byte, error) {
	return n.statesWithin(origin, names, time.Minute)
}

// statesWithin is referencedStates given up after d.
func (n *Node) statesWithin(origin string, names []byte, d time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(n.ctx, d)
	defer cancel()
	return n.Fetch(ctx, origin, append([]byte{ReqStates}, names...))
}
