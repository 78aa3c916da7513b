# remoteingress: Go engine (remoteingress-bin) + TypeScript package.
# `make demo` runs the real thing on loopback; `make test` runs every test.

SHELL    := /bin/bash
GO       ?= go
BIN      := remoteingress-bin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || node -p "require('./package.json').version" 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
FUZZTIME ?= 10s

.PHONY: all build dist ts node_modules test check test-go test-ts test-system fuzz demo bench bench-go vet clean

all: build ts

## build: the host binary at dist_bin/remoteingress-bin
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist_bin/$(BIN) ./cmd/$(BIN)

## dist: static linux/amd64 and linux/arm64 binaries
dist:
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist_bin/$(BIN)_linux_amd64 ./cmd/$(BIN)
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist_bin/$(BIN)_linux_arm64 ./cmd/$(BIN)

node_modules: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch node_modules

## ts: the TypeScript package at dist_ts/
ts: node_modules
	npm run build

vet:
	$(GO) vet ./...

## test: every test: Go unit and integration tests (-race), the TypeScript package, and the system tests
test: vet test-go test-ts test-system

## check: the quick subset for everyday work (no system tests)
check: vet test-go test-ts

test-go:
	$(GO) test -race -count=1 -timeout 15m $$($(GO) list ./... | grep -v /systest)

## test-system: the real binary against nginx, HAProxy, wrk, coturn, network namespaces, kill -9, soak
## (scripts/ci-system-deps.sh installs the tools; namespace tests need root; SOAK_DURATION=10m for a longer soak)
test-system:
	$(GO) test -race -count=1 -timeout 20m -v ./systest/ 2>&1 | grep -vE '^=== (RUN|PAUSE|CONT)'; exit $${PIPESTATUS[0]}

test-ts: build ts
	REMOTEINGRESS_BINARY=$(CURDIR)/dist_bin/$(BIN) npm test

## fuzz: every fuzz target for FUZZTIME each (scripts/fuzz.sh)
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

## demo: hub + edge + HTTP target on loopback, three requests through the tunnel
demo: build ts
	node scripts/demo.mjs

## bench: hub + edge processes against a direct path and a TLS relay on loopback (table + bench.json)
bench: build
	$(GO) run ./cmd/remoteingress-bench -bin dist_bin/$(BIN) -json bench.json

## bench-go: Go benchmarks of the hot paths (frame codec, tunnel in-process)
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./tunnel/

clean:
	rm -rf dist_bin dist_ts
