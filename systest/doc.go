// Package systest holds the system tests of remoteingress: the real
// remoteingress-bin (built once per run), each hub and edge its own process
// driven over the --management dialect, against real PROXY-protocol
// consumers (nginx, HAProxy), a real STUN server (coturn), HTTP load (wrk),
// real UDP software on the UDP path (a DNS server, dnsmasq; UDP load with
// loss and jitter measured, iperf3 -u),
// simulated networks (network namespaces with delay, loss and cuts) and
// process faults (kill -9 of hub, edge and parent), several hubs (one
// hub killed, hung by SIGSTOP or restarted gracefully under load, and
// failover order), the edge firewall's
// nftables backend (rules the edge installs in a network namespace of the
// test's own; the host's firewall is never touched), both transports (the
// impaired link over TLS and over QUIC; transport "auto" falling back to TLS
// when UDP to the hub is dropped by a rule in the hub's namespace or the hub
// runs with quic: false, and back on QUIC after a reconnect; "quic" against
// a hub without QUIC), plus a bounded soak.
//
// Everything is in the _test.go files; run them with
//
//	go test -race -count=1 -v ./systest/
//
// Tools that are missing skip their test with a message naming the Debian
// package (scripts/ci-system-deps.sh installs them), unless CI=true, in
// which case the test fails; so does a kernel without nf_tables for the
// nftables tests. Tests that need network namespaces skip when not run as
// root. Only 127.0.0.0/8, ::1 and addresses inside network namespaces
// the tests create themselves are used.
//
// Environment: SOAK_DURATION (a Go duration; default 30s, 3m with CI=true),
// SYSTEST_LINK=netem|tun (how the two-host test impairs its link; default
// netem when the kernel has it, else a userspace TUN link emulator),
// SYSTEST_RACE_BINARY=1 (build the binary under test with -race),
// SYSTEST_BINARY=path (test that binary instead of building one).
//
// Bench mode: SYSTEST_BENCH=1 runs TestWANBench (skipped otherwise; make
// bench-wan, about five minutes, not part of make test): over the two-host
// link with 50 ms each way and 1% loss, TLS (with the kernel's default TCP
// congestion control and with cubic) and QUIC side by side: one stream's
// rate and 8 parallel streams' aggregate beside plain TCP over the same
// link, and the p99 of one-at-a-time 100-byte request/100-byte reply
// exchanges on an open connection (and on a new connection each) while a
// bulk stream runs through the same tunnel connection. It prints a table;
// SYSTEST_BENCH_JSON=path writes the rows as JSON (make bench-wan:
// bench-wan.json). SYSTEST_BENCH_DELAY (one way, default 50ms),
// SYSTEST_BENCH_LOSS (default 0.01), SYSTEST_BENCH_DURATION (per rate row,
// default 8s) and SYSTEST_BENCH_RR (per latency row, default 20s) change it.
package systest
