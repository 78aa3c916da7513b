# remoteingress: Go engine (remoteingress-bin) + TypeScript package.
# `make demo` runs the real thing on loopback; `make test` runs every test.

SHELL    := /bin/bash
GO       ?= go
BIN      := remoteingress-bin
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || node -p "require('./package.json').version" 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
FUZZTIME ?= 10s
GOFMT    := $(shell $(GO) env GOROOT)/bin/gofmt

# staticcheck for `make lint`, pinned: 0.8.2 is staticcheck 2026.2.2, the
# first release line built for Go 1.26. It is installed into TOOLS_BIN when
# that holds no staticcheck of this version.
STATICCHECK_VERSION := 0.8.2
TOOLS_BIN   ?= $(firstword $(subst :, ,$(shell $(GO) env GOPATH)))/bin
STATICCHECK := $(TOOLS_BIN)/staticcheck

.PHONY: all help build dist ts test check test-go test-ts test-system test-pack fuzz demo bench bench-go bench-wan vet fmt-check lint staticcheck clean image image-check pack

## all: build and ts (the default target)
all: build ts

## help: this list of targets
help:
	@awk '/^## [A-Za-z0-9_.-]+:/ { l = substr($$0, 4); i = index(l, ":"); printf "  %-12s %s\n", substr(l, 1, i - 1), substr(l, i + 2); more = 1; next } \
	     /^## / && more { printf "  %-12s %s\n", "", substr($$0, 4); next } { more = 0 }' $(firstword $(MAKEFILE_LIST))

## build: the host binary at dist_bin/remoteingress-bin
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist_bin/$(BIN) ./cmd/$(BIN)

## dist: static linux/amd64 and linux/arm64 binaries
dist:
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist_bin/$(BIN)_linux_amd64 ./cmd/$(BIN)
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist_bin/$(BIN)_linux_arm64 ./cmd/$(BIN)

# The container image (make image): IMAGE_FROM=dist puts the binary of
# make dist into a scratch image (Dockerfile.dist, nothing to pull);
# IMAGE_FROM=source compiles it in a Go image (Dockerfile). IMAGE_BUILDER is
# the first of podman, buildah, docker that is installed.
IMAGE         ?= remoteingress:$(VERSION)
IMAGE_ARCH    ?= $(shell $(GO) env GOARCH)
IMAGE_FROM    ?= dist
IMAGE_BUILDER ?= $(firstword $(foreach b,podman buildah docker,$(if $(shell command -v $(b) 2>/dev/null),$(b))))

## image: the container image IMAGE (FROM scratch, uid 65532) with podman, buildah or docker
## (IMAGE_FROM=dist: from make dist's binary, the default; IMAGE_FROM=source: compiled in a Go image)
image:
	@if [ -z "$(IMAGE_BUILDER)" ]; then echo "make image: no podman, buildah or docker installed" >&2; exit 1; fi
ifeq ($(IMAGE_FROM),source)
	$(IMAGE_BUILDER) build -f Dockerfile --platform linux/$(IMAGE_ARCH) --build-arg TARGETARCH=$(IMAGE_ARCH) --build-arg VERSION=$(VERSION) -t $(IMAGE) .
else
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_ARCH) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist_bin/$(BIN)_linux_$(IMAGE_ARCH) ./cmd/$(BIN)
	$(IMAGE_BUILDER) build -f Dockerfile.dist --platform linux/$(IMAGE_ARCH) --build-arg TARGETARCH=$(IMAGE_ARCH) --build-arg VERSION=$(VERSION) -t $(IMAGE) .
endif

## image-check: builds the image, checks its config (user, entrypoint, ports) and runs its binary's --version
image-check: image
	scripts/image-check.sh $(IMAGE_BUILDER) $(IMAGE) $(VERSION) $(IMAGE_ARCH)

## pack: npm tarballs of the package and of each platform package (npm/) into dist_pack/
pack: ts
	VERSION=$(VERSION) GO=$(GO) node scripts/pack.mjs

## test-pack: the packed tarballs installed into an empty directory and the seed README's flow run from there
test-pack: pack
	REMOTEINGRESS_PACK_DIR=$(CURDIR)/dist_pack node --test test/pack.test.mjs

## node_modules: the TypeScript package's dependencies, as package-lock.json pins them
node_modules: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch node_modules

## ts: the TypeScript package at dist_ts/
ts: node_modules
	npm run build

## vet: go vet on every package
vet:
	$(GO) vet ./...

## fmt-check: fails, listing them, when Go files are not as gofmt writes them
fmt-check:
	@files=$$($(GOFMT) -l $$(find . -name '*.go' -not -path './node_modules/*' -not -path './.git/*')); \
	if [ -n "$$files" ]; then echo "not gofmt-formatted (gofmt -w them):"; echo "$$files"; exit 1; fi

## lint: staticcheck on every package, as staticcheck.conf says
lint: staticcheck
	$(STATICCHECK) ./...

## staticcheck: installs staticcheck STATICCHECK_VERSION into TOOLS_BIN unless it is there
staticcheck:
	@if ! $(STATICCHECK) -version 2>/dev/null | grep -qF '($(STATICCHECK_VERSION))'; then \
		echo "installing staticcheck $(STATICCHECK_VERSION) into $(TOOLS_BIN)"; \
		GOBIN='$(TOOLS_BIN)' $(GO) install honnef.co/go/tools/cmd/staticcheck@v$(STATICCHECK_VERSION); \
	fi

## test: every test: Go unit and integration tests (-race), the TypeScript package, the packed npm tarballs, and the system tests
test: vet test-go test-ts test-pack test-system

## check: the quick subset for everyday work: format, vet, Go and TypeScript tests (no system tests)
check: fmt-check vet test-go test-ts

## test-go: the Go unit and integration tests (-race), without the system tests
test-go:
	$(GO) test -race -count=1 -timeout 15m $$($(GO) list ./... | grep -v /systest)

## test-system: the real binary against nginx, HAProxy, wrk, coturn, dnsmasq, iperf3, network namespaces, kill -9, soak
## (scripts/ci-system-deps.sh installs the tools; namespace tests need root; SOAK_DURATION=10m for a longer soak)
test-system:
	$(GO) test -race -count=1 -timeout 20m -v ./systest/ 2>&1 | grep -vE '^=== (RUN|PAUSE|CONT)'; exit $${PIPESTATUS[0]}

## test-ts: the TypeScript package against the real binary
test-ts: build ts
	REMOTEINGRESS_BINARY=$(CURDIR)/dist_bin/$(BIN) npm test

## fuzz: every fuzz target for FUZZTIME each (scripts/fuzz.sh)
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

## demo: hub + edge + HTTP target on loopback, three requests through the tunnel
demo: build ts
	REMOTEINGRESS_BINARY=$(CURDIR)/dist_bin/$(BIN) node scripts/demo.mjs

## bench: hub + edge processes against a direct path and a TLS relay on loopback (table + bench.json)
bench: build
	$(GO) run ./cmd/remoteingress-bench -bin dist_bin/$(BIN) -json bench.json

## bench-wan: the system tests' bench mode: TLS and QUIC side by side over the two-namespace link
## (50 ms each way, 1% loss: 1 and 8 streams, small-request p99 under a bulk stream; table + bench-wan.json; root, ~5 min)
bench-wan:
	SYSTEST_BENCH=1 SYSTEST_BENCH_JSON=$(CURDIR)/bench-wan.json $(GO) test -count=1 -timeout 20m -v -run '^TestWANBench$$' ./systest/ 2>&1 | grep -vE '^=== (RUN|PAUSE|CONT)'; exit $${PIPESTATUS[0]}

## bench-go: Go benchmarks of the hot paths (frame codec, tunnel in-process)
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./tunnel/

## clean: removes the built binaries and the TypeScript output
clean:
	rm -rf dist_bin dist_ts dist_pack
