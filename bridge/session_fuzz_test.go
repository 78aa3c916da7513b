package bridge

import (
	"bytes"
	"context"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// maxSessionFuzzInput bounds the inputs of FuzzBridgeSession: a session costs
// far more than a line, and big inputs take long to minimize.
const maxSessionFuzzInput = 16 << 10

// sessionSeeds are input streams for FuzzBridgeSession.
func sessionSeeds() []string {
	// The short line seeds, a few to a stream: small seeds minimize fast.
	var seeds, group []string
	for _, l := range lineSeeds() {
		if len(l) >= 2000 {
			continue
		}
		if group = append(group, l); len(group) == 5 {
			seeds = append(seeds, strings.Join(group, "\n"), strings.Join(group, "\r\n")+"\r\n")
			group = nil
		}
	}
	seeds = append(seeds, strings.Join(group, "\n"))
	seeds = append(seeds,
		`{"id":"deep","method":"ping","params":`+strings.Repeat("[", 10001)+"\n"+strings.Repeat("{", 3000),
		"\ufeff"+`{"id":"a","method":"ping"}`+"\n"+`{"jsonrpc":"2.0","id":1,"method":"ping"}`,
		`{"id":"h","method":"startHub","params":{"tunnelPort":0}}`+"\n"+
			`{"id":"u","method":"updateAllowedEdges","params":{"edges":[{"id":"e","secret":"s"}]}}`+"\n"+
			`{"id":"e","method":"startEdge","params":{"hubHost":"h","edgeId":"e","secret":"s","listenPorts":[80]}}`+"\n"+
			`{"id":"s1","method":"getHubStatus"}`+"\n"+`{"id":"s2","method":"getEdgeStatus"}`+"\n"+
			`{"id":"x1","method":"stopEdge"}`+"\n"+`{"id":"x2","method":"stopHub"}`,
		`{"jsonrpc":"2.0","method":"startHub"}`+"\n"+`{"jsonrpc":"2.0","id":"b","method":"startHub","params":[1]}`,
		strings.Repeat(`{"id":"p","method":"ping"}`+"\n", 50),
		`{"id":"long","method":"ping","params":{"x":"`+strings.Repeat("y", 10000)+`"}}`+"\nnext\n",
		"\n\n\r\n \t\n",
		"no newline at the end",
	)
	return seeds
}

// FuzzBridgeSession runs arbitrary input through Run in both dialects with a
// fake engine: no panic, the ready event first, only lines of the dialect's
// shapes, and Run returns once the input ends.
func FuzzBridgeSession(f *testing.F) {
	for _, s := range sessionSeeds() {
		f.Add([]byte(s))
	}
	limitMinimizeTime(5 * time.Second)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > maxSessionFuzzInput {
			t.Skip()
		}
		for _, d := range []Dialect{Management, JSONRPC} {
			checkSession(t, d, data)
		}
	})
}

// checkSession runs one session of dialect d over data and checks its output.
func checkSession(t *testing.T, d Dialect, data []byte) {
	t.Helper()
	inR, inW := io.Pipe()
	go func() {
		_, _ = inW.Write(data)
		inW.Close()
	}()
	var out testutil.SyncBuffer
	opts := Options{Dialect: d, Version: "fuzz", EventQueueSize: 16, maxLineBytes: 12 << 10}
	done := make(chan error, 1)
	go func() { done <- run(context.Background(), inR, &out, opts, (&fakeEngine{}).engine()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: Run: %v", d, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: Run did not return after the input ended", d)
	}

	lines := bytes.Split(bytes.TrimSuffix([]byte(out.String()), []byte("\n")), []byte("\n"))
	check := checkManagementLine
	readyName := "event"
	if d == JSONRPC {
		check, readyName = checkJSONRPCLine, "method"
	}
	for i, l := range lines {
		m := check(t, l)
		if i == 0 && string(m[readyName]) != `"ready"` {
			t.Fatalf("%s: the first line is not the ready event: %q", d, l)
		}
	}
}

// limitMinimizeTime sets -test.fuzzminimizetime to d unless it was given. Go
// minimizes every input that finds new code, trying a number of shorter
// inputs quadratic in its length: for inputs of kilobytes (deep nesting, big
// ids) or at a fraction of a millisecond a session, the default minute would
// take most of a short fuzzing run.
func limitMinimizeTime(d time.Duration) {
	const name = "test.fuzzminimizetime"
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	if !given && flag.Lookup(name) != nil {
		_ = flag.Set(name, d.String())
	}
}
