package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/serve-zone/remoteingress/internal/benchrelay"
)

// The hidden subcommands the bench re-executes itself with for the TLS
// relay baseline.
const (
	relayInCmd  = "relay-in"  // plain TCP in, TLS 1.3 out
	relayOutCmd = "relay-out" // TLS 1.3 in, plain TCP out
)

// relayMain runs a relay process: it prints "listening <addr>" on stdout
// and serves until its stdin closes or it gets SIGTERM/SIGINT.
func relayMain(which string, args []string) int {
	fs := flag.NewFlagSet(which, flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.3:0", "address to listen on")
	next := fs.String("next", "", "address to relay to (relay-out for relay-in, the target for relay-out)")
	pin := fs.String("pin", "", "relay-in: SHA-256 (hex) of relay-out's certificate")
	certFile := fs.String("cert", "", "relay-out: certificate PEM file")
	keyFile := fs.String("key", "", "relay-out: key PEM file")
	if err := fs.Parse(args); err != nil || *next == "" {
		fmt.Fprintf(os.Stderr, "%s: bad arguments %q\n", which, args)
		return 2
	}
	ctx, stop := childContext()
	defer stop()

	ln, err := net.Listen("tcp4", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", which, err)
		return 1
	}
	fmt.Printf("listening %s\n", ln.Addr())
	var serveErr error
	switch which {
	case relayInCmd:
		conf, err := benchrelay.ClientConfig(*pin)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", which, err)
			return 1
		}
		serveErr = benchrelay.ServeIn(ctx, ln, *next, conf)
	case relayOutCmd:
		certPEM, err1 := os.ReadFile(*certFile)
		keyPEM, err2 := os.ReadFile(*keyFile)
		if err1 != nil || err2 != nil {
			fmt.Fprintf(os.Stderr, "%s: reading the certificate: %v %v\n", which, err1, err2)
			return 1
		}
		conf, err := benchrelay.ServerConfig(certPEM, keyPEM)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", which, err)
			return 1
		}
		serveErr = benchrelay.ServeOut(ctx, tls.NewListener(ln, conf), *next)
	}
	if serveErr != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", which, serveErr)
		return 1
	}
	return 0
}

// childContext is the context of a re-executed child of the bench (the
// relays): it ends on SIGTERM or SIGINT, and when stdin closes, that is when
// the parent went away. stop releases it.
func childContext() (ctx context.Context, stop func()) {
	ctx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	return ctx, func() { cancel(); stopSignals() }
}
