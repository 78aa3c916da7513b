package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/serve-zone/remoteingress/internal/sdnotify"
	"github.com/serve-zone/remoteingress/internal/standalone"
	"github.com/serve-zone/remoteingress/internal/token"
	"github.com/serve-zone/remoteingress/tunnel"
)

// A subcommand gets the arguments after its name and returns the exit code.
type subcommandFunc func(args []string, stdout, stderr io.Writer) int

// subcommand returns the subcommand called name, or nil.
func subcommand(name string) subcommandFunc {
	switch name {
	case "hub":
		return hubCmd
	case "edge":
		return edgeCmd
	case "check":
		return checkCmd
	case "token":
		return tokenCmd
	case "help":
		return helpCmd
	}
	return nil
}

// serviceNotifier is where the process tells its service manager that it is
// ready, reloading or stopping: systemd's sd_notify ($NOTIFY_SOCKET; nothing without it).
func serviceNotifier() standalone.Notifier { return sdnotify.Service{} }

// standaloneOptions subscribes the signals of a standalone run.
func standaloneOptions(stderr io.Writer) (standalone.Options, func()) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	return standalone.Options{Stderr: stderr, Signals: sigs, Notify: serviceNotifier(), Version: version},
		func() { signal.Stop(sigs) }
}

// newFlags returns a quiet flag set: parseFlags prints the usage.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("remoteingress-bin "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parseFlags parses args; done is true when the subcommand is over (help
// was asked for, or the arguments are wrong) with code.
func parseFlags(fs *flag.FlagSet, usage string, args []string, stdout, stderr io.Writer) (code int, done bool) {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return 0, true
	case err != nil:
		fmt.Fprintf(stderr, "%s: %v\n%s", fs.Name(), err, usage)
		return 2, true
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n%s", fs.Name(), fs.Arg(0), usage)
		return 2, true
	}
	return 0, false
}

const hubUsage = `usage: remoteingress-bin hub --config FILE

Runs a hub from a YAML (or JSON) config file: its keys are the params of
startHub, plus allowedEdges or allowedEdgesFile, tlsCertFile/tlsKeyFile,
gracePeriodSecs, logFormat and logLevel (README, "Run it standalone").

  --config FILE  the hub's config file

SIGHUP re-reads the file (the allowed list and logLevel apply at once);
changes of allowedEdgesFile apply by themselves within seconds. SIGTERM or
SIGINT: stop accepting, let open streams finish for gracePeriodSecs, exit 0.
`

func hubCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("hub")
	config := fs.String("config", "", "")
	if code, done := parseFlags(fs, hubUsage, args, stdout, stderr); done {
		return code
	}
	if *config == "" {
		return missingFlag(stderr, "hub", "--config is required", hubUsage)
	}
	o, stop := standaloneOptions(stderr)
	defer stop()
	return standalone.RunHub(*config, o)
}

const edgeUsage = `usage: remoteingress-bin edge [--config FILE] [--token-file FILE] [--listen-ports LIST]

Runs an edge from a YAML (or JSON) config file whose keys are the params of
startEdge, plus secretFile or tokenFile, gracePeriodSecs, logFormat and
logLevel; or from a connection token alone.

  --config FILE        the edge's config file (optional with a token)
  --token-file FILE    a file holding a connection token (hub, edge id, secret,
                       certificate pin); takes the place of tokenFile
  --listen-ports LIST  the public ports, comma-separated (80,443); takes the
                       place of listenPorts

The secret comes from secretFile, the token, or the environment variable
REMOTEINGRESS_SECRET; the token may also come from REMOTEINGRESS_TOKEN.
SIGTERM or SIGINT: close the listeners, let open streams finish for
gracePeriodSecs, exit 0.
`

func edgeCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("edge")
	config := fs.String("config", "", "")
	tokenFile := fs.String("token-file", "", "")
	ports := fs.String("listen-ports", "", "")
	if code, done := parseFlags(fs, edgeUsage, args, stdout, stderr); done {
		return code
	}
	src := standalone.EdgeSources{TokenFile: *tokenFile}
	if *ports != "" {
		list, err := parsePorts(*ports)
		if err != nil {
			fmt.Fprintf(stderr, "remoteingress-bin edge: --listen-ports %v\n", err)
			return 2
		}
		src.ListenPorts = list
	}
	if *config == "" && *tokenFile == "" && os.Getenv(standalone.EnvToken) == "" {
		return missingFlag(stderr, "edge", "give --config, --token-file or "+standalone.EnvToken, edgeUsage)
	}
	o, stop := standaloneOptions(stderr)
	defer stop()
	return standalone.RunEdge(*config, src, o)
}

// parsePorts parses "80,443".
func parsePorts(s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil {
			return nil, fmt.Errorf("%q is not a port", part)
		}
		out = append(out, n)
	}
	return out, nil
}

const checkUsage = `usage: remoteingress-bin check --config FILE

Validates a hub or an edge config file (told apart by its keys), or an
allowedEdgesFile (a sequence), as hub or edge would at start, reading the
files it names, without binding anything.
Exit 0 when it is valid; 1 with the problem (file, line, key) on stderr.

  --config FILE  the config file to check
`

func checkCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check")
	config := fs.String("config", "", "")
	if code, done := parseFlags(fs, checkUsage, args, stdout, stderr); done {
		return code
	}
	if *config == "" {
		return missingFlag(stderr, "check", "--config is required", checkUsage)
	}
	kind, err := standalone.Detect(*config)
	if err == nil {
		switch kind {
		case standalone.KindHub:
			var f *standalone.HubFile
			if f, err = standalone.LoadHub(*config); err == nil {
				fmt.Fprintf(stdout, "%s: valid hub config (tunnelPort %d, %d allowed edges)\n", *config, f.Hub.TunnelPort, len(f.Allowed))
			}
		case standalone.KindAllowedEdges:
			var list []tunnel.EdgeCredential
			if list, err = standalone.LoadAllowedEdges(*config); err == nil {
				fmt.Fprintf(stdout, "%s: valid allowed edges file (%d edges)\n", *config, len(list))
			}
		case standalone.KindEdge:
			var f *standalone.EdgeFile
			if f, err = standalone.LoadEdge(*config, standalone.EdgeSources{}); err == nil {
				hubs := "hub " + strings.Join(f.Edge.HubAddrs(), "")
				if len(f.Edge.Hubs) > 0 {
					mode := f.Edge.HubMode
					if mode == "" {
						mode = tunnel.HubSpread
					}
					hubs = "hubs " + strings.Join(f.Edge.HubAddrs(), ", ") + " (" + mode + ")"
				}
				fmt.Fprintf(stdout, "%s: valid edge config (edge %s, %s, listenPorts %v)\n", *config, f.Edge.EdgeID, hubs, f.Edge.ListenPorts)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "remoteingress-bin check: %v\n", err)
		return 1
	}
	return 0
}

const tokenUsage = `usage: remoteingress-bin token --hub HOST:PORT --edge-id ID --secret-file FILE [--hub-cert-sha256 HEX]

Prints a connection token: the base64url of {"h","p","e","s"[,"f"]}.
The token holds the secret: keep it like one.

  --hub HOST:PORT          the hub's address as the edge dials it (port default 8443)
  --edge-id ID             the edge's id
  --secret-file FILE       a file holding the edge's secret (or set REMOTEINGRESS_SECRET)
  --hub-cert-sha256 HEX    pin the hub's certificate (its certSha256)
`

func tokenCmd(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("token")
	hub := fs.String("hub", "", "")
	edgeID := fs.String("edge-id", "", "")
	secretFile := fs.String("secret-file", "", "")
	pin := fs.String("hub-cert-sha256", "", "")
	if code, done := parseFlags(fs, tokenUsage, args, stdout, stderr); done {
		return code
	}
	if *hub == "" || *edgeID == "" {
		return missingFlag(stderr, "token", "--hub and --edge-id are required", tokenUsage)
	}
	host, port, err := splitHub(*hub)
	if err != nil {
		fmt.Fprintf(stderr, "remoteingress-bin token: --hub %v\n", err)
		return 2
	}
	var secret string
	switch {
	case *secretFile != "":
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			fmt.Fprintf(stderr, "remoteingress-bin token: --secret-file: %v\n", err)
			return 1
		}
		secret = strings.TrimSpace(string(b))
	case os.Getenv(standalone.EnvSecret) != "":
		secret = os.Getenv(standalone.EnvSecret)
	default:
		return missingFlag(stderr, "token", "give --secret-file or set "+standalone.EnvSecret, tokenUsage)
	}
	tok, err := token.Encode(token.Token{HubHost: host, HubPort: port, EdgeID: *edgeID, Secret: secret, HubCertSHA256: *pin})
	if err != nil {
		fmt.Fprintf(stderr, "remoteingress-bin token: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

// splitHub splits HOST:PORT; a bare host takes the default tunnel port.
func splitHub(s string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		if strings.Contains(err.Error(), "missing port") {
			return strings.Trim(s, "[]"), tunnel.DefaultTunnelPort, nil
		}
		return "", 0, fmt.Errorf("%q is not HOST:PORT", s)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("%q: the port must be an integer 1-65535", s)
	}
	if host == "" {
		return "", 0, fmt.Errorf("%q has no host", s)
	}
	return host, port, nil
}

// missingFlag reports a flag that is missing: usage error, exit code 2.
func missingFlag(stderr io.Writer, sub, msg, usage string) int {
	fmt.Fprintf(stderr, "remoteingress-bin %s: %s\n%s", sub, msg, usage)
	return 2
}

// helpCmd prints the usage, or a subcommand's.
func helpCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stdout, usage)
		return 0
	}
	texts := map[string]string{"hub": hubUsage, "edge": edgeUsage, "check": checkUsage, "token": tokenUsage, "help": usage}
	if t, ok := texts[args[0]]; ok && len(args) == 1 {
		fmt.Fprint(stdout, t)
		return 0
	}
	fmt.Fprint(stderr, usage)
	return 2
}
