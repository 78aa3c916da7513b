// Package standalone runs a hub or an edge from a config file, without a
// parent process (CONTRACT section 11): it loads and validates the file
// (config.go), starts the engine, reloads on SIGHUP and when the
// allowedEdgesFile changes (watch.go), and drains on SIGTERM/SIGINT.
package standalone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"syscall"
	"time"

	"github.com/serve-zone/remoteingress/internal/params"
	"github.com/serve-zone/remoteingress/tunnel"
)

// Options are what a standalone run takes from its process.
type Options struct {
	// Stderr receives the logs (one line each) and startup errors.
	Stderr io.Writer
	// Signals delivers SIGHUP (reload), SIGTERM and SIGINT (drain; a
	// second one stops at once). The caller subscribes it (signal.Notify).
	Signals <-chan os.Signal
	// Notify hears of readiness, reloads and the drain; nil: nobody.
	Notify Notifier
	// Version is logged at start.
	Version string
	// Getenv reads the environment (default os.Getenv).
	Getenv func(string) string
}

func (o Options) withDefaults() Options {
	if o.Notify == nil {
		o.Notify = nopNotifier{}
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	return o
}

// startLog makes the logger a loaded file asks for and logs the start.
func (o Options) startLog(c Common, mode, path string) (*slog.Logger, *slog.LevelVar) {
	level := new(slog.LevelVar)
	setLevel(level, c.LogLevel)
	log := newLogger(o.Stderr, c.LogFormat, level)
	log.Info("remoteingress-bin starting", "version", o.Version, "mode", mode, "config", path, "pid", os.Getpid())
	return log, level
}

// forceWait bounds how long a second signal waits for the close it forces.
const forceWait = 2 * time.Second

// drainer is what a drain needs of a running hub or edge.
type drainer interface {
	Shutdown(ctx context.Context) error
}

// RunHub runs a hub from the config file at path until it is told to stop,
// and returns the exit code: 0 after a stop, 1 when it cannot start.
func RunHub(path string, o Options) int {
	o = o.withDefaults()
	f, err := LoadHub(path)
	if err != nil {
		fmt.Fprintf(o.Stderr, "remoteingress-bin hub: %v\n", err)
		return 1
	}
	log, level := o.startLog(f.Common, "hub", path)
	cfg := f.Hub
	cfg.Logger = log
	mon, err := startMetrics(cfg.MetricsListen, o.Version, log)
	if err != nil {
		log.Error("hub failed to start", "error", err.Error())
		return 1
	}
	defer mon.close()
	h, err := tunnel.StartHub(cfg, f.Allowed)
	if err != nil {
		log.Error("hub failed to start", "error", configMessage(err))
		return 1
	}
	mon.setHub(h)
	running := f.Hub // what needs a restart is compared with this
	log.Info("hub ready", "tunnelPort", h.Port(), "allowedEdges", len(f.Allowed), "allowedEdgesFile", f.AllowedEdgesFile)
	o.Notify.Ready()

	current := slices.Clone(f.Allowed)
	apply := func(list []tunnel.EdgeCredential, from string) {
		if slices.Equal(list, current) {
			log.Debug("allowed edges unchanged", "from", from)
			return
		}
		if err := h.SetAllowedEdges(list); err != nil {
			log.Error("allowed edges not updated, the old list stays", "from", from, "error", configMessage(err))
			return
		}
		current = slices.Clone(list)
		log.Info("allowed edges updated", "from", from, "count", len(list))
	}

	w := newWatcher(f.AllowedEdgesFile, log)
	defer func() { w.close() }()
	var lastWatchErr string
	for {
		select {
		case <-w.changed():
			list, err := LoadAllowedEdges(f.AllowedEdgesFile)
			if err != nil {
				if msg := err.Error(); msg != lastWatchErr {
					log.Error("allowedEdgesFile changed but is not valid; the running list stays", "error", msg)
					lastWatchErr = msg
				}
				continue
			}
			lastWatchErr = ""
			apply(list, "allowedEdgesFile")
		case sig := <-o.Signals:
			if sig == syscall.SIGHUP {
				o.Notify.Reloading()
				nf, err := LoadHub(path)
				if err != nil {
					log.Error("reload failed; the running config stays", "error", err.Error())
					o.Notify.Ready()
					continue
				}
				reloadCommon(log, level, changedParams(params.StartHub, running, nf.Hub), &f.Common, &nf.Common)
				if nf.AllowedEdgesFile != f.AllowedEdgesFile {
					w.close()
					w = newWatcher(nf.AllowedEdgesFile, log)
				}
				f = nf
				lastWatchErr = ""
				apply(nf.Allowed, "reload")
				log.Info("config reloaded", "config", path)
				o.Notify.Ready()
				continue
			}
			return drain(h, sig, f.GracePeriod, o, log)
		}
	}
}

// RunEdge runs an edge from the config file at path ("" for none: src
// gives everything) until it is told to stop, and returns the exit code.
func RunEdge(path string, src EdgeSources, o Options) int {
	o = o.withDefaults()
	if src.Getenv == nil {
		src.Getenv = o.Getenv
	}
	f, err := LoadEdge(path, src)
	if err != nil {
		fmt.Fprintf(o.Stderr, "remoteingress-bin edge: %v\n", err)
		return 1
	}
	log, level := o.startLog(f.Common, "edge", path)
	cfg := f.Edge
	cfg.Logger = log
	mon, err := startMetrics(cfg.MetricsListen, o.Version, log)
	if err != nil {
		log.Error("edge failed to start", "error", err.Error())
		return 1
	}
	defer mon.close()
	e, err := tunnel.StartEdge(cfg)
	if err != nil {
		log.Error("edge failed to start", "error", configMessage(err))
		return 1
	}
	mon.setEdge(e)
	running := f.Edge
	log.Info("edge ready", "listenPorts", e.Status().ListenPorts)
	o.Notify.Ready()
	for sig := range o.Signals {
		if sig != syscall.SIGHUP {
			return drain(e, sig, f.GracePeriod, o, log)
		}
		o.Notify.Reloading()
		nf, err := LoadEdge(path, src)
		if err != nil {
			log.Error("reload failed; the running config stays", "error", err.Error())
			o.Notify.Ready()
			continue
		}
		reloadCommon(log, level, changedParams(params.StartEdge, running, nf.Edge), &f.Common, &nf.Common)
		f = nf
		log.Info("config reloaded", "config", path)
		o.Notify.Ready()
	}
	return drain(e, syscall.SIGTERM, f.GracePeriod, o, log)
}

// reloadCommon is the part of a reload both sides share: it names the
// changed keys that need a restart (restartOnly, and logFormat, which keeps
// its running value) and applies logLevel; gracePeriodSecs applies by
// itself, as the new Common replaces the old one.
func reloadCommon(log *slog.Logger, level *slog.LevelVar, restartOnly []string, old, next *Common) {
	if next.LogFormat != old.LogFormat {
		restartOnly = append(restartOnly, "logFormat")
		next.LogFormat = old.LogFormat
	}
	for _, k := range restartOnly {
		log.Warn("config key changed; it takes effect at the next restart", "key", k)
	}
	setLevel(level, next.LogLevel)
}

// drain stops a hub or an edge gracefully: new connections are refused at
// once, open streams get up to grace to finish. A second SIGTERM/SIGINT
// closes everything at once. The exit code is 0 either way.
func drain(d drainer, sig os.Signal, grace time.Duration, o Options, log *slog.Logger) int {
	log.Info("stopping: draining open streams", "signal", sig.String(), "gracePeriod", grace.String())
	o.Notify.Stopping()
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Shutdown(ctx) }()
	for {
		select {
		case err := <-done:
			if errors.Is(err, context.DeadlineExceeded) {
				log.Warn("grace period over; the remaining streams were closed")
			} else if err != nil {
				log.Warn("stopped with errors", "error", err.Error())
			}
			log.Info("remoteingress-bin stopped")
			return 0
		case s := <-o.Signals:
			if s == syscall.SIGHUP {
				log.Info("reload ignored: stopping")
				continue
			}
			log.Warn("second signal: closing every stream now", "signal", s.String())
			cancel()
			select {
			case <-done:
				log.Info("remoteingress-bin stopped")
			case <-time.After(forceWait):
				log.Warn("streams did not close within " + forceWait.String() + "; exiting anyway")
			}
			return 0
		}
	}
}

// changedParams names the params whose engine fields differ between a and
// b, by the schema's engine names (never their values: one may be a secret).
func changedParams[C any](s params.Schema[C], a, b C) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	var out []string
	for _, f := range s.Fields {
		fa, fb := va.FieldByName(f.Engine), vb.FieldByName(f.Engine)
		if fa.IsValid() && fb.IsValid() && !reflect.DeepEqual(fa.Interface(), fb.Interface()) {
			out = append(out, f.Name)
		}
	}
	return out
}

// configMessage renders an engine error, a *tunnel.ConfigError in param names.
func configMessage(err error) string {
	if pe, ok := params.FromConfigError(err); ok {
		return pe.Error()
	}
	return err.Error()
}
