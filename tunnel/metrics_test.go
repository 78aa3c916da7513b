package tunnel

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/serve-zone/remoteingress/internal/testutil"
)

// TestMetricsCountStreamsAndBytes: the counters start at zero, count a
// stream's bytes in both directions on both sides, and the stream's end.
func TestMetricsCountStreamsAndBytes(t *testing.T) {
	r := startRig(t, rigOptions{})

	hm := r.hub.Metrics()
	if !hm.Ready || hm.EdgesConnected != 1 || len(hm.Edges) != 1 || hm.Edges[0].EdgeID != "edge-1" {
		t.Fatalf("hub metrics at the start: %+v", hm)
	}
	if (hm.Edges[0].StreamMetrics != StreamMetrics{}) {
		t.Fatalf("hub stream counters before traffic: %+v", hm.Edges[0])
	}
	em := r.edge.Metrics()
	if !em.Ready || !em.TunnelUp || em.EdgeID != "edge-1" || (em.StreamMetrics != StreamMetrics{}) {
		t.Fatalf("edge metrics at the start: %+v", em)
	}

	c := r.dial(t)
	payload := bytes.Repeat([]byte("metrics!"), 64<<10) // 512 KiB: several frames
	go func() {
		c.Write(payload)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("echo: %d bytes, %v", len(got), err)
	}
	c.Close()

	want := StreamMetrics{StreamsTotal: 1, BytesIn: uint64(len(payload)), BytesOut: uint64(len(payload))}
	testutil.Eventually(t, 5*time.Second, "the stream counted and closed on both sides", func() bool {
		return r.edge.Metrics().StreamMetrics == want && r.hub.Metrics().Edges[0].StreamMetrics == want
	})
}

// TestMetricsActiveStreamsAndReconnects: an open stream is active on both
// sides; a lost tunnel drops tunnel_up and Ready, and the retries count.
func TestMetricsActiveStreamsAndReconnects(t *testing.T) {
	r := startRig(t, rigOptions{connections: 1})
	c := r.dial(t)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if a := r.edge.Metrics().StreamsActive; a != 1 {
		t.Fatalf("edge streams active = %d, want 1", a)
	}
	testutil.Eventually(t, 5*time.Second, "the hub counts the stream active", func() bool {
		return r.hub.Metrics().Edges[0].StreamsActive == 1
	})

	// Revoke the edge: the tunnel goes down, the edge retries.
	if err := r.hub.SetAllowedEdges([]EdgeCredential{}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, "the edge sees the tunnel down and retries", func() bool {
		m := r.edge.Metrics()
		return !m.TunnelUp && !m.Ready && m.Reconnects >= 1 && m.StreamsActive == 0
	})
	hm := r.hub.Metrics()
	if hm.EdgesConnected != 0 || len(hm.Edges) != 0 || !hm.Ready {
		t.Fatalf("hub metrics after the revocation: %+v", hm)
	}
	if hm.AuthFailures == 0 {
		testutil.Eventually(t, 5*time.Second, "the edge's retries count as auth failures", func() bool {
			return r.hub.Metrics().AuthFailures > 0
		})
	}
}

// TestHubMetricsReadyNeedsAnAllowedList: a hub started without a list is
// not ready until it gets one; a closed hub is not ready.
func TestHubMetricsReadyNeedsAnAllowedList(t *testing.T) {
	h, err := StartHub(HubConfig{ListenHost: "127.0.0.1", TunnelPort: 0, Logger: testLogger(t)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if m := h.Metrics(); m.Ready || len(m.Edges) != 0 {
		t.Fatalf("without a list: %+v", m)
	}
	if err := h.SetAllowedEdges([]EdgeCredential{{ID: "b", Secret: "x"}, {ID: "a", Secret: "y"}}); err != nil {
		t.Fatal(err)
	}
	m := h.Metrics()
	if !m.Ready || len(m.Edges) != 2 || m.Edges[0].EdgeID != "a" || m.Edges[1].EdgeID != "b" {
		t.Fatalf("with a list: %+v", m)
	}
	h.Close()
	if h.Metrics().Ready {
		t.Fatal("a closed hub is ready")
	}
}

func TestMetricsListenIsChecked(t *testing.T) {
	for addr, ok := range map[string]bool{
		"": true, "127.0.0.1:9100": true, ":0": true, "[::1]:9100": true, "localhost:9100": true,
		"9100": false, "127.0.0.1": false, "127.0.0.1:70000": false, "127.0.0.1:x": false,
	} {
		hub := DefaultHubConfig()
		hub.MetricsListen = addr
		edge := EdgeConfig{HubHost: "h", EdgeID: "e", Secret: "s", ListenPorts: []int{80}, MetricsListen: addr}.withDefaults()
		for side, err := range map[string]error{"hub": hub.Validate(), "edge": edge.Validate()} {
			var ce *ConfigError
			if ok != (err == nil) || (err != nil && (!errors.As(err, &ce) || ce.Field != "MetricsListen")) {
				t.Errorf("%s MetricsListen %q: %v", side, addr, err)
			}
		}
	}
}
