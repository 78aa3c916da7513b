package main

import (
	"testing"
	"time"
)

func TestCheckProxyHeader(t *testing.T) {
	for _, c := range []struct {
		line string
		ok   bool
	}{
		{"PROXY TCP4 127.0.0.1 127.0.0.1 50000 4000\r\n", true},
		{"PROXY TCP4 127.0.0.1 127.0.0.1 50000 4001\r\n", false}, // wrong port
		{"PROXY TCP4 127.0.0.1 127.0.0.1 50000 4000\n", false},   // no CR
		{"PROXY TCP6 ::1 ::1 50000 4000\r\n", false},
		{"PROXY TCP4 10.0.0.1 127.0.0.1 50000 4000\r\n", false},
		{"GET / HTTP/1.1\r\n", false},
	} {
		if err := checkProxyHeader(c.line, 4000); (err == nil) != c.ok {
			t.Errorf("%q: err %v, want ok=%v", c.line, err, c.ok)
		}
	}
}

func TestPercentiles(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Microsecond)
	}
	p50, p99 := percentiles(ds)
	if p50 != 50 || p99 != 99 {
		t.Errorf("p50 %v p99 %v, want 50 and 99", p50, p99)
	}
}

func TestParseFlagsQuick(t *testing.T) {
	cfg, err := parseFlags([]string{"-quick", "-conns", "700", "-modes", "tunnel,direct"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Duration != time.Second || cfg.Conns != 700 || len(cfg.MemLevels) != 2 || cfg.MemLevels[1] != 1000 {
		t.Errorf("quick defaults not applied or explicit flag overridden: %+v", cfg)
	}
	if len(cfg.Modes) != 2 || cfg.Modes[0] != modeDirect || cfg.Modes[1] != modeTunnel {
		t.Errorf("modes %v, want [direct tunnel]", cfg.Modes)
	}
	if cfg.ABRounds != 2 || cfg.MetricsAB || cfg.ScrapeInterval != time.Second {
		t.Errorf("-metrics-ab defaults: %+v", cfg)
	}
	for _, bad := range [][]string{{"-mem", "100,50"}, {"-modes", "udp"}, {"-conns", "0"}, {"extra"}, {"-ab-rounds", "0"}, {"-scrape-interval", "0s"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%v: want an error", bad)
		}
	}
}
