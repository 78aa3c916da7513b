// Command remoteingress-bin is the remoteingress engine driven over stdin and
// stdout: --management speaks the dialect of @push.rocks/smartrust's
// RustBridge, --jsonrpc plain JSON-RPC 2.0 (one object per line). stdout
// carries protocol lines only; logs go to stderr, one line each.
//
// The process stops the hub and the edge and exits 0 when stdin ends or on
// SIGTERM or SIGINT.
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

// usage is printed on stderr for missing or unknown arguments.
const usage = `usage: remoteingress-bin --management | --jsonrpc | --version

  --management  serve the RustBridge management dialect on stdin/stdout
  --jsonrpc     serve plain JSON-RPC 2.0 (one object per line) on stdin/stdout
  --version     print the version and exit
`

func main() {
	// RustBridge destroys the pipes right after SIGTERM: a write to them must
	// fail with EPIPE, not kill the process.
	signal.Ignore(syscall.SIGPIPE)
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
