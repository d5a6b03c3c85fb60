# syntax=docker/dockerfile:1
#
# The notify image: a static binary on distroless, running as nonroot.
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) -t notify:dev .
#
# Multi-arch: the build stage runs on the builder's own platform and
# cross-compiles (no emulation), e.g.
#   docker buildx build --platform linux/amd64,linux/arm64 -t REPO/notify:TAG --push .

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS TARGETARCH
ARG VERSION=dev
# CGO_ENABLED=0: a static binary, no libc needed in the final image.
# -trimpath and -buildvcs=false: reproducible, and .git is not in the context.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -buildvcs=false -ldflags="-s -w -X main.version=${VERSION}" \
        -o /out/notify ./cmd/notify

# distroless/static: CA certificates (rediss://), tzdata, /etc/passwd with the
# nonroot user (65532), and nothing else: no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/notify /usr/local/bin/notify
USER 65532:65532
# 3000 HTTP (WebSocket, API, metrics, health), 8080 gRPC, 7946 gossip (TCP+UDP).
EXPOSE 3000 8080 7946/tcp 7946/udp
ENTRYPOINT ["/usr/local/bin/notify"]
CMD ["serve"]
