# The remoteingress-bin image, built from source: a Go stage compiles the
# static binary, the final image is FROM scratch with that one file in it.
#
#   podman build -t remoteingress --build-arg VERSION=$(git describe --tags --always) .
#   make image IMAGE_FROM=source
#
# Where the Go base image cannot be pulled, Dockerfile.dist builds the same
# final image from the binaries of `make dist` (what `make image` does).
ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=$VERSION" \
      -o /out/remoteingress-bin ./cmd/remoteingress-bin

FROM scratch
ARG VERSION=dev
LABEL org.opencontainers.image.title="remoteingress" \
      org.opencontainers.image.description="Edge ingress tunnel: remoteingress-bin hub|edge --config FILE" \
      org.opencontainers.image.source="https://github.com/serve-zone/remoteingress" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="$VERSION"
COPY --from=build /out/remoteingress-bin /remoteingress-bin
# No CA bundle: the tunnel authenticates by the shared secret (and an optional
# certificate pin or hubCa given in the config), never by the system roots.
USER 65532:65532
EXPOSE 8443/tcp 8443/udp
ENTRYPOINT ["/remoteingress-bin"]
