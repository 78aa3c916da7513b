package tunnel

import (
	"io"
	"testing"
)

// The edge's status, its tunnelConnected event and the hub's entry name
// the transport the tunnel runs on.
func TestTransportIsReported(t *testing.T) {
	eachTransport(t, func(t *testing.T, tr string) {
		r := startRig(t, rigOptions{transport: tr})
		ev, _ := r.edgeEvts.wait(t, 0, 0, named(EventTunnelConnected))
		if got := ev.Data.(TunnelConnectedEvent).Transport; got != tr {
			t.Fatalf("tunnelConnected transport %q, want %q", got, tr)
		}
		st := r.edge.Status()
		if st.Transport == nil || *st.Transport != tr {
			t.Fatalf("edge status transport %v, want %q", st.Transport, tr)
		}
		if st.Hubs[0].Transport == nil || *st.Hubs[0].Transport != tr {
			t.Fatalf("edge hubs[0] transport %v, want %q", st.Hubs[0].Transport, tr)
		}
		hs := r.hub.Status()
		if len(hs.ConnectedEdges) != 1 || hs.ConnectedEdges[0].Transport != tr {
			t.Fatalf("hub connectedEdges %+v, want one on %q", hs.ConnectedEdges, tr)
		}
		if hs.QUICPort != r.hub.Port() {
			t.Fatalf("quicPort %d, want the tunnel port %d", hs.QUICPort, r.hub.Port())
		}
		c := r.dial(t)
		c.Write([]byte("ping"))
		c.CloseWrite()
		got, _ := io.ReadAll(c)
		if string(got) != "ping" {
			t.Fatalf("echo %q", got)
		}
	})
}
