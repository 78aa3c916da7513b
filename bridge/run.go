package bridge

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/serve-zone/remoteingress/tunnel"
	"github.com/sourcegraph/jsonrpc2"
)

// EventReady is the name of the event written first, once the bridge reads requests.
const EventReady = "ready"

// flushShare is the part of the shutdown budget kept for flushing queued events.
const flushShare = 500 * time.Millisecond

// readyData is the data of the ready event.
type readyData struct {
	Version string `json:"version"`
}

// Run serves one session: it writes the ready event to out, answers the
// requests read from in and writes engine events to out, until in ends or
// ctx is cancelled. Then it stops the hub and the edge (at the same time),
// flushes queued events and returns, all within opts.ShutdownTimeout.
//
// Requests are handled concurrently: at most opts.MaxInFlight at once, and
// as many quick ones (ping, status requests, unknown methods), with at most
// opts.MaxInFlightBytes between them. A request that does not fit makes Run
// stop reading in until one is answered, so a parent writing faster than it
// is answered waits on the pipe while memory stays bounded.
//
// Run never closes in or out. Bad input lines and a failing out do not end
// it. It returns the errors of the shutdown and of reading in (other than
// io.EOF), if any. When it returns because ctx was cancelled, a read of in
// may still be under way; whatever it brings is discarded.
func Run(ctx context.Context, in io.Reader, out io.Writer, opts Options) error {
	return run(ctx, in, out, opts, tunnelEngine())
}

// run is Run with a replaceable engine.
func run(ctx context.Context, in io.Reader, out io.Writer, opts Options, eng engine) error {
	opts, err := opts.withDefaults()
	if err != nil {
		return err
	}
	log := opts.Logger.With("dialect", opts.Dialect.String())
	params := &paramStore{}
	st := newLineStream(in, out, newCodec(opts.Dialect), opts.maxLineBytes, params, log)

	ready := &jsonrpc2.Request{Method: EventReady, Notif: true}
	if err := ready.SetParams(readyData{Version: opts.Version}); err != nil {
		return err
	}
	if err := st.WriteObject(ready); err != nil {
		log.Error("could not write the ready event", "error", err)
	}

	events := newEventQueue(opts.EventQueueSize, log)
	srv := newServer(eng, events, params, log)
	srv.mons.version = opts.Version
	st.rejectLog.Burst, srv.failLog.Burst = opts.logBurst, opts.logBurst

	// The Conn outlives ctx until the shutdown is done, so that events of the
	// shutdown still reach the parent when it is listening.
	connCtx, cancelConn := context.WithCancel(context.Background())
	defer cancelConn()
	adm := newAdmission(opts.MaxInFlight, opts.MaxInFlightBytes)
	conn := jsonrpc2.NewConn(connCtx, st, boundedHandler{srv: srv, adm: adm}, jsonrpc2.SetLogger(connLogger{log}))
	defer conn.Close()
	defer adm.close() // before conn.Close: a read waiting for admission ends
	defer srv.failLog.Flush()
	defer st.rejectLog.Flush()
	go events.run(func(ev tunnel.Event) error { return conn.Notify(connCtx, ev.Name, ev.Data) })

	var readErr error
	select {
	case <-ctx.Done():
		log.Info("stopping: cancelled")
	case <-conn.DisconnectNotify():
		if readErr = st.readErr(); readErr == nil {
			log.Info("stopping: input closed")
		} else {
			log.Error("stopping: reading input failed", "error", readErr)
			readErr = fmt.Errorf("reading input: %w", readErr)
		}
	}
	return shutdown(srv, events, opts.ShutdownTimeout, readErr)
}

// shutdown stops the hub and the edge, then flushes events, within budget.
func shutdown(srv *server, events *eventQueue, budget time.Duration, readErr error) error {
	deadline := time.Now().Add(budget)
	stopBudget := budget - min(flushShare, budget/4)

	var result *multierror.Error
	if readErr != nil {
		result = multierror.Append(result, readErr)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- srv.shutdown() }()
	timer := time.NewTimer(stopBudget)
	defer timer.Stop()
	select {
	case err := <-stopped:
		if err != nil {
			result = multierror.Append(result, err)
		}
	case <-timer.C:
		result = multierror.Append(result, fmt.Errorf("stopping the hub and the edge took longer than %s", stopBudget))
	}

	events.close()
	flush := time.NewTimer(max(time.Until(deadline), 0))
	defer flush.Stop()
	select {
	case <-events.done:
	case <-flush.C:
		srv.log.Warn("queued events not flushed: the output is blocked")
	}
	return result.ErrorOrNil()
}
