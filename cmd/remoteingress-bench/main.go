// Command remoteingress-bench measures the remoteingress tunnel the way it is
// deployed — a hub process and an edge process of the built binary, driven
// over the management dialect on stdin/stdout, PROXY headers on — beside two
// baselines it runs in the same pass on loopback:
//
//   - direct: client → target, no tunnel;
//   - relay: client → relay-in → TLS 1.3 → relay-out → target, one new TLS
//     connection per client connection (the bench re-executes itself with the
//     hidden subcommands relay-in and relay-out).
//
// The memory row's idle connections are held by a third re-execution, the
// hidden subcommand hold.
//
// It prints a table on stdout and writes every number to a JSON file.
// With -metrics-ab it measures instead the tunnel with metricsListen off
// against on (metricsab.go).
//
//	go run ./cmd/remoteingress-bench [-bin dist_bin/remoteingress-bin] [-json bench.json] [-quick]
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case relayInCmd, relayOutCmd:
			os.Exit(relayMain(os.Args[1], os.Args[2:]))
		case holdCmd:
			os.Exit(holdMain(os.Args[2:]))
		case udpRelayCmd:
			os.Exit(udpRelayMain(os.Args[2:]))
		}
	}
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "remoteingress-bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, cfg)
	stop()
	os.Exit(code)
}

// run is the whole benchmark; it returns the exit code. Every child process
// is stopped and waited for before it returns, also after an error or a
// signal.
func run(ctx context.Context, cfg config) (code int) {
	kids := newChildren()
	defer func() {
		if r := recover(); r != nil {
			kids.stopAll()
			panic(r)
		}
	}()
	if cfg.MetricsAB {
		return runMetricsAB(ctx, cfg, kids)
	}
	b := newBench(ctx, cfg, kids)
	err := b.runAll()
	b.stopSetups()
	b.close()
	b.finish(kids.stopAll(), err)
	if werr := b.writeJSON(); werr != nil {
		fmt.Fprintln(os.Stderr, "remoteingress-bench: writing JSON:", werr)
		code = 1
	}
	b.printTable(os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "remoteingress-bench:", err)
		if ctx.Err() != nil {
			return 130
		}
		return 1
	}
	return code
}
