package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/serve-zone/remoteingress/internal/benchrelay"
)

// setupDirect points clients straight at the plain target.
func setupDirect(plain *target) *mode {
	return &mode{name: modeDirect, addr: plain.ln.Addr().String(), tgt: plain,
		info: map[string]any{"target": plain.ln.Addr().String()}}
}

// setupRelay starts relay-out (TLS in, plain out to the target) and relay-in
// (plain in, TLS out) as re-executions of this program.
func setupRelay(kids *children, dir string, plain *target) (*mode, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cert, err := benchrelay.NewCert()
	if err != nil {
		return nil, err
	}
	certFile, keyFile := filepath.Join(dir, "relay-cert.pem"), filepath.Join(dir, "relay-key.pem")
	if err := os.WriteFile(certFile, cert.CertPEM, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyFile, cert.KeyPEM, 0o600); err != nil {
		return nil, err
	}
	out, outAddr, err := startRelay(kids, self, relayOutCmd, "-listen", "127.0.0.4:0",
		"-next", plain.ln.Addr().String(), "-cert", certFile, "-key", keyFile)
	if err != nil {
		return nil, err
	}
	in, inAddr, err := startRelay(kids, self, relayInCmd, "-listen", "127.0.0.3:0",
		"-next", outAddr, "-pin", cert.SHA256)
	if err != nil {
		return nil, err
	}
	return &mode{name: modeRelay, addr: inAddr, tgt: plain, procs: []*child{in, out},
		info: map[string]any{
			"relayIn": inAddr, "relayOut": outAddr, "target": plain.ln.Addr().String(),
			"relayInPid": in.pid(), "relayOutPid": out.pid(),
			"tls": "TLS 1.3 only, ECDSA P-256 self-signed (pinned), session resumption on, Go default key exchange",
		}}, nil
}

// startRelay starts one relay process and reads the address it listens on.
func startRelay(kids *children, self, which string, args ...string) (*child, string, error) {
	addrc := make(chan string, 1)
	c, err := kids.start(which, func(r io.Reader) {
		line, _ := bufio.NewReader(r).ReadString('\n')
		addrc <- strings.TrimSpace(strings.TrimPrefix(line, "listening "))
		io.Copy(io.Discard, r)
	}, self, append([]string{which}, args...)...)
	if err != nil {
		return nil, "", err
	}
	select {
	case addr := <-addrc:
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, "", fmt.Errorf("%s did not start: %q; stderr: %q", which, addr, c.stderr.notableLines())
		}
		return c, addr, nil
	case <-time.After(10 * time.Second):
		return nil, "", fmt.Errorf("%s did not report its address within 10 s", which)
	}
}
