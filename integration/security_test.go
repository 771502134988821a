package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"concord/cmd/concord/server"
	"concord/resp"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
)

type pki struct {
	dir                 string
	ca, srvCert, srvKey string
	cliCert, cliKey     string
	peerCert, peerKey   string
	caPool              *x509.CertPool
	clientPair          tls.Certificate
}

// newPKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all signed by the CA.
func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "concord test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
		return p
	}
	var issue func(name string, serial int64, usage ...x509.ExtKeyUsage) (string, string)
	issueBoth := func(name string, serial int64) (string, string) {
		return issue(name, serial, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	}
	issue = func(name string, serial int64, usage ...x509.ExtKeyUsage) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage,
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(key)
		return write(name+".crt", "CERTIFICATE", der), write(name+".key", "EC PRIVATE KEY", kb)
	}
	p := &pki{dir: dir, ca: write("ca.crt", "CERTIFICATE", caDER)}
	p.srvCert, p.srvKey = issue("server", 2, x509.ExtKeyUsageServerAuth)
	p.peerCert, p.peerKey = issueBoth("peer", 4)
	p.cliCert, p.cliKey = issue("client", 3, x509.ExtKeyUsageClientAuth)
	p.caPool = x509.NewCertPool()
	p.caPool.AddCert(caCert)
	p.clientPair, _ = tls.LoadX509KeyPair(p.cliCert, p.cliKey)
	return p
}

func TestClientTLS(t *testing.T) {
	p := newPKI(t)
	in := startConcord(t, func(c *server.Config) {
		c.TLSAddr, c.TLSCertFile, c.TLSKeyFile, c.TLSCACertFile = "127.0.0.1:0", p.srvCert, p.srvKey, p.ca
	})
	// go-redis with a client certificate
	c := redis.NewClient(&redis.Options{Addr: in.TLSAddr(), TLSConfig: &tls.Config{RootCAs: p.caPool, Certificates: []tls.Certificate{p.clientPair}}})
	defer c.Close()
	if err := c.Set(ctx, "secure", "yes", 0).Err(); err != nil {
		t.Fatalf("TLS SET: %v", err)
	}
	// without a client certificate the handshake fails
	bad := redis.NewClient(&redis.Options{Addr: in.TLSAddr(), MaxRetries: -1, TLSConfig: &tls.Config{RootCAs: p.caPool}})
	defer bad.Close()
	if err := bad.Ping(ctx).Err(); err == nil {
		t.Fatal("TLS client without a certificate was accepted")
	}
	// redis-cli --tls
	host, port, _ := strings.Cut(in.TLSAddr(), ":")
	out, err := execCombined(need(t, "redis-cli"), "-h", host, "-p", port, "--tls", "--cacert", p.ca, "--cert", p.cliCert, "--key", p.cliKey, "GET", "secure")
	if err != nil || strings.TrimSpace(out) != "yes" {
		t.Fatalf("redis-cli --tls: %v %s", err, out)
	}
	// the plain port still serves
	if v, _ := client(t, in.Addr()).Get(ctx, "secure").Result(); v != "yes" {
		t.Fatalf("plain port: %q", v)
	}
	// --tls-auth-clients optional: a client without a certificate is welcome
	opt := startConcord(t, func(c *server.Config) {
		c.TLSAddr, c.TLSCertFile, c.TLSKeyFile, c.TLSCACertFile, c.TLSAuthClients = "127.0.0.1:0", p.srvCert, p.srvKey, p.ca, "optional"
	})
	anon := redis.NewClient(&redis.Options{Addr: opt.TLSAddr(), TLSConfig: &tls.Config{RootCAs: p.caPool}})
	defer anon.Close()
	if err := anon.Ping(ctx).Err(); err != nil {
		t.Fatalf("optional client certs: %v", err)
	}
}

func TestClientHygiene(t *testing.T) {
	in := startConcord(t, func(c *server.Config) { c.MaxClients = 3 })
	// maxclients, with Redis's error
	var conns []net.Conn
	for i := 0; i < 3; i++ {
		nc, err := net.Dial("tcp", in.Addr())
		if err != nil {
			t.Fatal(err)
		}
		nc.Write([]byte("PING\r\n"))
		conns = append(conns, nc)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	checkFor(t, 2*time.Second, 10*time.Millisecond, func() error {
		if n := in.NumClients(); n != 3 {
			return fmt.Errorf("%d clients", n)
		}
		return nil
	})
	if got := send(t, in.Addr(), "PING\r\n"); !strings.HasPrefix(got, "-ERR max number of clients reached") {
		t.Fatalf("over maxclients: %q (server has %d clients)", got, in.NumClients())
	}
	for _, c := range conns {
		c.Close()
	}
	conns = nil
	checkFor(t, 2*time.Second, 10*time.Millisecond, func() error {
		if n := in.NumClients(); n != 0 {
			return fmt.Errorf("%d clients", n)
		}
		return nil
	})
	admin := client(t, in.Addr())
	if err := admin.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	// a partially sent command is cut off at the deadline (slowloris); a
	// quiet client is left alone while timeout is 0
	admin.ConfigSet(ctx, "command-deadline", "1")
	slow, _ := net.Dial("tcp", in.Addr())
	defer slow.Close()
	quiet, _ := net.Dial("tcp", in.Addr())
	defer quiet.Close()
	slow.Write([]byte("*2\r\n$3\r\nGET\r\n$5\r\nab"))
	start := time.Now()
	slow.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := slow.Read(make([]byte, 10)); err == nil || time.Since(start) > 3*time.Second {
		t.Fatalf("slow command not cut off: %v after %v", err, time.Since(start))
	}
	quiet.Write([]byte("PING\r\n"))
	buf := make([]byte, 7)
	quiet.SetReadDeadline(time.Now().Add(time.Second))
	if n, _ := quiet.Read(buf); string(buf[:n]) != "+PONG\r\n" {
		t.Fatalf("quiet client: %q", buf[:n])
	}
	// idle clients are closed after CONFIG timeout seconds
	admin.ConfigSet(ctx, "timeout", "1")
	idle, _ := net.Dial("tcp", in.Addr())
	defer idle.Close()
	start = time.Now()
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err == nil || time.Since(start) > 3*time.Second || time.Since(start) < 900*time.Millisecond {
		t.Fatalf("idle client: %v after %v", err, time.Since(start))
	}
}

func TestProtectedModeDecision(t *testing.T) {
	if !resp.IsLoopback(&net.TCPAddr{IP: net.ParseIP("127.0.0.1")}) || !resp.IsLoopback(&net.TCPAddr{IP: net.ParseIP("::1")}) {
		t.Fatal("loopback not recognised")
	}
	if resp.IsLoopback(&net.TCPAddr{IP: net.ParseIP("10.1.2.3")}) {
		t.Fatal("10.1.2.3 taken for loopback")
	}
	if !strings.HasPrefix(resp.DeniedMessage, "-DENIED Redis is running in protected mode") {
		t.Fatal(resp.DeniedMessage)
	}
}

// With --peer-token, a region's NATS refuses clients without the token: an
// outsider can neither read nor publish deltas; the regions still replicate.
func TestPeerToken(t *testing.T) {
	aNATS, bNATS := fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := newPKI(t)
	start := func(name, listen, peer, peerAddr string) *server.Instance {
		in, err := server.Start(server.Config{Addr: "127.0.0.1:0", Region: name, Dir: t.TempDir(), LogLevel: "warn",
			PeerListen: listen, Peers: map[string]string{peer: "nats://" + peerAddr}, PeerToken: "s3cret-token",
			PeerTLSCertFile: p.peerCert, PeerTLSKeyFile: p.peerKey, PeerTLSCAFile: p.ca})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { in.Close() })
		return in
	}
	a := start("A", aNATS, "B", bNATS)
	b := start("B", bNATS, "A", aNATS)
	if nc, err := nats.Connect("nats://"+aNATS, nats.MaxReconnects(0), nats.Secure(&tls.Config{RootCAs: p.caPool, Certificates: []tls.Certificate{p.clientPair}})); err == nil {
		nc.Close()
		t.Fatal("a client without the token connected to region A's NATS")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("unexpected error: %v", err)
	}
	if nc, err := nats.Connect("nats://"+aNATS, nats.Token("wrong"), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("a wrong token was accepted")
	}
	// the right token without a certificate the CA signed is refused too
	if nc, err := nats.Connect("nats://"+aNATS, nats.Token("s3cret-token"), nats.MaxReconnects(0),
		nats.Secure(&tls.Config{RootCAs: p.caPool})); err == nil {
		nc.Close()
		t.Fatal("a client without a peer certificate connected")
	}
	client(t, a.Addr()).IncrBy(ctx, "n", 4)
	cb := client(t, b.Addr())
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if v, _ := cb.Get(ctx, "n").Result(); v != "4" {
			return fmt.Errorf("B reads %q", v)
		}
		return nil
	})
}

// send writes raw bytes and returns what the server answers before it goes
// quiet or closes.
func send(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(raw))
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}
