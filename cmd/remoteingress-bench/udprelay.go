package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"
)

// udpRelayCmd is the hidden subcommand of the UDP relay baseline: a naive
// UDP proxy. Each client address gets a socket of its own connected to
// -next and a goroutine that carries that socket's replies back to the
// client; no encryption, no framing. The bench chains two of them, as a
// tunnel's edge and hub would be.
const udpRelayCmd = "udp-relay"

// udpRelayMain runs one UDP relay: it prints "listening <addr>" on stdout
// and serves until its stdin closes or it gets SIGTERM/SIGINT.
func udpRelayMain(args []string) int {
	fs := flag.NewFlagSet(udpRelayCmd, flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.3:0", "UDP address to listen on")
	next := fs.String("next", "", "UDP address to relay to")
	if err := fs.Parse(args); err != nil || *next == "" {
		fmt.Fprintf(os.Stderr, "%s: bad arguments %q\n", udpRelayCmd, args)
		return 2
	}
	ctx, stop := childContext()
	defer stop()
	laddr, err := net.ResolveUDPAddr("udp4", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", udpRelayCmd, err)
		return 1
	}
	raddr, err := net.ResolveUDPAddr("udp4", *next)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", udpRelayCmd, err)
		return 1
	}
	ln, err := net.ListenUDP("udp4", laddr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", udpRelayCmd, err)
		return 1
	}
	ln.SetReadBuffer(4 << 20)
	fmt.Printf("listening %s\n", ln.LocalAddr())

	var mu sync.Mutex
	flows := map[netip.AddrPort]*net.UDPConn{}
	var wg sync.WaitGroup
	go func() {
		<-ctx.Done()
		ln.Close()
		mu.Lock()
		for _, c := range flows {
			c.Close()
		}
		mu.Unlock()
	}()
	buf := make([]byte, 65536)
	for {
		n, from, err := ln.ReadFromUDPAddrPort(buf)
		if err != nil {
			break
		}
		mu.Lock()
		c := flows[from]
		if c == nil && ctx.Err() == nil {
			c, err = net.DialUDP("udp4", nil, raddr)
			if err != nil {
				mu.Unlock()
				fmt.Fprintf(os.Stderr, "%s: %v\n", udpRelayCmd, err)
				continue
			}
			c.SetReadBuffer(1 << 20)
			flows[from] = c
			wg.Add(1)
			go func() { // the replies of this flow
				defer wg.Done()
				rb := make([]byte, 65536)
				for {
					n, err := c.Read(rb)
					if errors.Is(err, net.ErrClosed) {
						return
					}
					if err != nil {
						continue // ECONNREFUSED from an ICMP error, say
					}
					ln.WriteToUDPAddrPort(rb[:n], from)
				}
			}()
		}
		mu.Unlock()
		if c != nil {
			c.Write(buf[:n]) // a full buffer drops it, as any UDP proxy would
		}
	}
	wg.Wait()
	return 0
}

// startUDPRelay starts one udp-relay process and reads the address it
// listens on.
func startUDPRelay(kids *children, name, listen, next string) (*child, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	addrc := make(chan string, 1)
	c, err := kids.start(name, func(r io.Reader) {
		line, _ := bufio.NewReader(r).ReadString('\n')
		addrc <- strings.TrimSpace(strings.TrimPrefix(line, "listening "))
		io.Copy(io.Discard, r)
	}, self, udpRelayCmd, "-listen", listen, "-next", next)
	if err != nil {
		return nil, "", err
	}
	select {
	case addr := <-addrc:
		if _, _, err := net.SplitHostPort(addr); err != nil {
			c.stop()
			return nil, "", fmt.Errorf("%s did not start: %q; stderr: %q", name, addr, c.stderr.notableLines())
		}
		return c, addr, nil
	case <-time.After(10 * time.Second):
		c.stop()
		return nil, "", fmt.Errorf("%s did not report its address within 10 s", name)
	}
}

// setupUDPRelay chains two udp-relay processes in front of the UDP target
// at next: clients → udp-relay-in (127.0.0.3) → udp-relay-out (127.0.0.4) → next.
func setupUDPRelay(kids *children, next string) (*mode, error) {
	out, outAddr, err := startUDPRelay(kids, "udp-relay-out", "127.0.0.4:0", next)
	if err != nil {
		return nil, err
	}
	in, inAddr, err := startUDPRelay(kids, "udp-relay-in", "127.0.0.3:0", outAddr)
	if err != nil {
		out.stop()
		return nil, err
	}
	return &mode{name: modeRelay, addr: inAddr, procs: []*child{in, out},
		info: map[string]any{"udpRelayIn": inAddr, "udpRelayOut": outAddr, "target": next,
			"udpRelayInPid": in.pid(), "udpRelayOutPid": out.pid()}}, nil
}
