// Command remoteingress-bin is the remoteingress engine, driven over stdin
// and stdout by a parent process or run standalone from a config file.
//
// --management speaks the dialect of @push.rocks/smartrust's RustBridge,
// --jsonrpc plain JSON-RPC 2.0 (one object per line). stdout carries
// protocol lines only; logs go to stderr, one line each. The process stops
// the hub and the edge and exits 0 when stdin ends or on SIGTERM or SIGINT.
//
// The subcommands hub, edge, check and token run without a parent
// (standalone.go).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/serve-zone/remoteingress/bridge"
)

// version is stamped at build time: -ldflags "-X main.version=1.2.3".
var version = "dev"

// usage is printed on stderr for missing or unknown arguments, and by help.
const usage = `usage: remoteingress-bin --management | --jsonrpc | --version
       remoteingress-bin hub --config FILE
       remoteingress-bin edge (--config FILE | --token-file FILE) [--listen-ports LIST]
       remoteingress-bin check --config FILE
       remoteingress-bin token --hub HOST:PORT --edge-id ID --secret-file FILE [--hub-cert-sha256 HEX]
       remoteingress-bin help [SUBCOMMAND]

Driven by a parent process (stdin/stdout):
  --management  serve the RustBridge management dialect on stdin/stdout
  --jsonrpc     serve plain JSON-RPC 2.0 (one object per line) on stdin/stdout
  --version     print the version and exit

Standalone (a config file, no parent):
  hub           run a hub from a YAML (or JSON) config file
  edge          run an edge from a config file and/or a connection token
  check         validate a hub or edge config file (exit 0, or 1 naming the key and line)
  token         print a connection token for an edge

SIGHUP reloads a standalone config; SIGTERM/SIGINT drains open streams for
gracePeriodSecs (default 10) and exits 0; a second signal stops at once.
Secrets come only from files or the environment (REMOTEINGRESS_SECRET,
REMOTEINGRESS_TOKEN), never from the command line.
Run "remoteingress-bin <subcommand> --help" for its flags.
`

func main() {
	// RustBridge destroys the pipes right after SIGTERM: a write to them must
	// fail with EPIPE, not kill the process.
	signal.Ignore(syscall.SIGPIPE)
	if len(os.Args) > 1 {
		if sub := subcommand(os.Args[1]); sub != nil {
			os.Exit(sub(os.Args[2:], os.Stdout, os.Stderr))
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is the whole program; it returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("remoteingress-bin", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	management := fs.Bool("management", false, "")
	jsonrpc := fs.Bool("jsonrpc", false, "")
	showVersion := fs.Bool("version", false, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, usage)
			return 0
		}
		fmt.Fprintf(stderr, "remoteingress-bin: %v\n%s", err, usage)
		return 2
	}
	chosen := 0
	for _, b := range []bool{*management, *jsonrpc, *showVersion} {
		if b {
			chosen++
		}
	}
	if fs.NArg() > 0 || chosen != 1 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, version)
		return 0
	}

	dialect := bridge.Management
	if *jsonrpc {
		dialect = bridge.JSONRPC
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	logger.Info("remoteingress-bin starting", "version", version, "dialect", dialect.String(), "pid", os.Getpid())
	stopProfile := startProfile(logger)
	defer stopProfile()
	err := bridge.Run(ctx, stdin, stdout, bridge.Options{Dialect: dialect, Version: version, Logger: logger})
	if err != nil {
		// The shutdown was still graceful: report, and exit 0 as promised.
		logger.Error("shutdown finished with errors", "error", err)
	}
	logger.Info("remoteingress-bin stopped")
	return 0
}
