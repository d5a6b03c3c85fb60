# notify: `make run` starts a node on the embedded broker, `make test` runs
# everything CI runs.

GO         ?= go
BIN        := bin/notify
DEV_SECRET ?= notify-dev-secret-change-me
DEV_API_KEY ?= notify-dev-api-key
PORT       ?= 3000
# Debian packages the tests use (command -> package), installed when missing.
TEST_TOOLS := redis-server:redis-server chromium:chromium haproxy:haproxy
SUDO       := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

IMAGE      ?= notify:dev
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: build run test e2e-long fault fault-short deps lint bench fuzz fuzz-long clean generate image up down logs helm-test

build:
	$(GO) build -trimpath -o $(BIN) ./cmd/notify

# A working node with no Redis, on the embedded in-memory broker.
run: build
	@tok=$$(NOTIFY_JWT_SECRET=$(DEV_SECRET) ./$(BIN) token --user demo --ttl 24h); \
	echo; \
	echo "  demo page:   http://localhost:$(PORT)/?token=$$tok"; \
	echo "  token:       $$tok   (user demo, 24h)"; \
	echo "  API key:     $(DEV_API_KEY)"; \
	echo "  publish:     NOTIFY_API_KEY=$(DEV_API_KEY) ./$(BIN) publish --addr localhost:$(PORT) --user demo --payload hello"; \
	echo
	PORT=$(PORT) NOTIFY_JWT_SECRET=$(DEV_SECRET) NOTIFY_API_KEY=$(DEV_API_KEY) LOG_FORMAT=text ./$(BIN)

# Everything CI runs: format and vet, every test with the race detector, the
# transport tests again on the goroutine-per-connection fallback, and the
# short subset of the fault suite (fault-short).
test: deps lint
	@# The deploy checks' modules download meanwhile (network, not CPU).
	@(cd deploy/test && $(GO) mod download) >/dev/null 2>&1 &
	$(GO) test -race -count=1 -timeout 15m ./...
	$(GO) test -race -count=1 -tags notify_noepoll ./transport/
	@$(MAKE) --no-print-directory fault-short
	deploy/test/run.sh

# test/e2e's TestHistoryRecovery at the full load of issue 10: 1,000 users at
# 2,000 messages/s through the API, 400 Go and 110 JavaScript clients (ws,
# phoenix.js, EventSource in Chromium), through a fourth node joining, a
# rolling restart of every node (SIGTERM) and a SIGKILL; about a minute.
# make test runs it smaller (200 users, 200 messages/s, 140 clients).
# NOTIFY_E2E_LONG=1 selects the full load in any go test run.
e2e-long: deps
	NOTIFY_E2E_LONG=1 $(GO) test -count=1 -timeout 20m -run '^TestHistoryRecovery$$' -v ./test/e2e/

# test/fault (issue 14), every scenario at the issue's load (1,000 users,
# 3,000 connections, 2,000 messages/s through Redis): three nodes and Redis
# in network namespaces the suite creates, haproxy in front; partitions,
# delay and loss between the nodes, SIGKILL, a rolling restart, Redis frozen
# and restarted, slow readers, a 10-minute churn soak. One line per scenario
# and a table at the end; about 20 minutes. Needs root and `ip netns` (the
# tests skip, saying why, elsewhere). NOTIFY_FAULT=1,4 (or names) picks
# scenarios, NOTIFY_FAULT_SCALE=short a fifth of the load. Before it, node's
# descriptor-shortage and handshake-flood tests (make test runs them too)
# without the race detector, where the node's RSS and latency are checked as
# well; they run first so that the fault suite's table comes last, and each
# runs whatever the other did.
fault: deps
	@st=0; \
	NOTIFY_FLOOD_LATENCY=1 $(GO) test -count=1 -v -run '^(TestAcceptWaitsOutDescriptorShortage|TestHandshakeFloodLeavesClientsAlone)$$' ./node/ || st=1; \
	$(GO) test -tags fault -count=1 -timeout 60m -v -run '^TestFault$$' ./test/fault/ || st=1; \
	exit $$st

# make test's subset: scenarios 2 (Redis cut off from a node), 4 (SIGKILL)
# and 6 (Redis frozen, then restarted empty) at a fifth of the load and with
# shorter holds, under a minute. Prints the results (all of the output when
# it fails).
fault-short:
	@log=$$(mktemp); NOTIFY_FAULT=short $(GO) test -tags fault -count=1 -timeout 5m -v -run '^TestFault$$' ./test/fault/ >$$log 2>&1; st=$$?; \
	if [ $$st -ne 0 ]; then cat $$log; else grep -E ': fault: ' $$log; sed -n '/^fault: results/,/^fault: [0-9]* scenarios/p' $$log; fi; rm -f $$log; exit $$st

# The chart, the manifests, the image files, the alert rules and the
# dashboard, checked without a cluster (part of make test).
helm-test:
	deploy/test/run.sh

# The container image (needs a Docker engine).
image:
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE) .

# Three nodes on localhost:3001-3003 and Redis (docker-compose.yml).
up:
	NOTIFY_IMAGE=$(IMAGE) NOTIFY_VERSION=$(VERSION) docker compose up -d --build
down:
	docker compose down
logs:
	docker compose logs -f

# Installs the servers the integration tests start (apt, where it exists).
deps:
	@missing=""; for t in $(TEST_TOOLS); do \
		command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t#*:}"; done; \
	if [ -n "$$missing" ]; then \
		if command -v apt-get >/dev/null 2>&1; then \
			echo "installing$$missing"; \
			$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
		else \
			echo "missing:$$missing (no apt-get here; tests needing them are skipped)"; \
		fi; \
	fi
	@if [ ! -f test/browser/node_modules/.package-lock.json ] || [ test/browser/package-lock.json -nt test/browser/node_modules/.package-lock.json ]; then \
		if command -v npm >/dev/null 2>&1; then (cd test/browser && npm ci --no-audit --no-fund --loglevel=error); \
		else echo "missing: node/npm (the browser tests are skipped)"; fi; \
	fi

# staticcheck at a pinned version, installed into bin/tools (like the
# generate plugins) when missing or of another version.
STATICCHECK_VERSION := v0.8.2
STATICCHECK = $(TOOLS)/staticcheck

# Format, vet (here, with the fallback transport, and for macOS and Windows:
# the project builds everywhere), go.mod and go.sum tidy, staticcheck.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null; find . -name '*.go' -newer go.mod 2>/dev/null) | sort -u); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags notify_noepoll ./transport/
	$(GO) vet -tags fault ./test/fault/
	GOOS=darwin $(GO) vet ./transport/ ./node/ ./cmd/... ./test/e2e/
	GOOS=windows $(GO) vet ./...
	$(GO) mod tidy -diff
	@$(GO) version -m $(STATICCHECK) 2>/dev/null | grep -q '^[[:space:]]*mod[[:space:]]*honnef.co/go/tools[[:space:]]*$(STATICCHECK_VERSION)[[:space:]]' || \
		{ echo "GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)"; \
		GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION); }
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags notify_noepoll ./transport/
	$(STATICCHECK) -tags fault ./test/fault/

# Figures, one per line as "name value unit": micro-benchmarks of the hot
# paths, then the load run (real redis-server, notify processes, client
# processes on several 127.0.0.x addresses): the one-write floor (floor_*),
# the single-node figures with the defaults (history on) and again with
# history off (names ending _history_off: per-user peruser_*, broadcast
# broadcast_*), the highest per-user rate at GOMAXPROCS=1, the relay, API
# and protocol figures, the subscribe modes on one Redis and on a Cluster
# (subscribe_*), then the history run (publish_*,
# redis_memory_per_history_entry_bytes, *_since100). Takes about twelve
# minutes.
bench: build deps
	@$(GO) test -run='^$$' -bench=. -benchmem ./transport/ ./node/... ./broker/ ./broker/mesh/ ./auth/ ./ring/ | awk ' \
		/^Benchmark/ { n = $$1; sub(/^Benchmark/, "", n); sub(/-[0-9]+$$/, "", n); \
			for (i = 3; i < NF; i += 2) { u = $$(i+1); s = (u == "ns/op") ? "" : (u == "B/op") ? "_bytes" : (u == "allocs/op") ? "_allocs" : "_rate"; \
				print n s, $$i, u } } \
		/^(FAIL|panic)/ { print; bad = 1 } END { exit bad }'
	@$(GO) run ./test/bench -notify $(BIN)

# Every fuzz target, as <package>:<name>; their seed corpora (testdata/fuzz
# and f.Add) also run in make test.
FUZZ_TARGETS := \
	./transport/:FuzzParser ./transport/:FuzzUTF8 ./transport/:FuzzRelayResponse \
	./auth/:FuzzVerify ./auth/:FuzzHMACPath ./auth/:FuzzTokenFromRequest ./auth/:FuzzDecimalString ./auth/:FuzzParseJWKSet \
	./auth/phxtoken/:FuzzVerify ./auth/phxtoken/:FuzzDecodeTerm \
	./node/internal/notifyproto/:FuzzParseRefresh \
	./node/internal/phoenix/:FuzzDecodeText ./node/internal/phoenix/:FuzzDecodeBinary ./node/internal/phoenix/:FuzzLongPollBody \
	./broker/:FuzzParseCursor ./broker/:FuzzPushConn ./broker/mesh/:FuzzDecodeFrame

# fuzz-run runs every target for $(1), one after the other, and prints a
# summary line per target (executions, corpus size; a crash fails). With
# $(2) = keep, the inputs that found new coverage (kept by Go in its build
# cache) are copied into the package's testdata/fuzz/<Name>/, to commit.
# A run that ends in "context deadline exceeded" with no failing input
# written is Go's own race at the end of -fuzztime (go.dev/issue/75804,
# fixed in Go 1.27), not a crash: it is reported and the next target runs.
define fuzz-run
	@set -e; cache=$$($(GO) env GOCACHE)/fuzz; for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; name=$${t##*:}; \
		out=$$($(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(1) $$pkg 2>&1) || \
			if echo "$$out" | grep -q 'context deadline exceeded' && ! echo "$$out" | grep -q 'Failing input written'; then \
				echo "fuzz $$pkg $$name: ended by go.dev/issue/75804 (context deadline exceeded, no failing input)"; \
			else echo "$$out"; exit 1; fi; \
		echo "fuzz $$pkg $$name: $$(echo "$$out" | grep -o 'execs: [0-9]*' | tail -1), $$(echo "$$out" | grep -o 'new interesting: [0-9]*' | tail -1), $$(echo "$$out" | grep -o 'total: [0-9]*' | tail -1) in corpus, 0 crashes"; \
		if [ "$(2)" = keep ]; then src=$$cache/$$($(GO) list $$pkg)/$$name; \
			if [ -d "$$src" ]; then mkdir -p $$pkg/testdata/fuzz/$$name && cp -n $$src/* $$pkg/testdata/fuzz/$$name/ 2>/dev/null || true; fi; fi; \
	done
endef

# Short runs of every fuzz target.
fuzz:
	$(call fuzz-run,30s)

# Ten minutes of each fuzz target (17 of them, about three hours); the
# inputs that found new coverage land in testdata/fuzz/ to be committed.
fuzz-long:
	$(call fuzz-run,10m,keep)

clean:
	rm -rf bin

# Code generated from api/proto (committed). Plugins at pinned versions go to bin/tools;
# protoc comes from Debian's protobuf-compiler.
PROTOC_GEN_GO_VERSION      := v1.36.10
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
PROTOC_GEN_TWIRP_VERSION   := v8.1.3+incompatible
TOOLS := $(CURDIR)/bin/tools

generate:
	@command -v protoc >/dev/null || { $(SUDO) apt-get install -y -qq protobuf-compiler >/dev/null; }
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	GOBIN=$(TOOLS) $(GO) install github.com/twitchtv/twirp/protoc-gen-twirp@$(PROTOC_GEN_TWIRP_VERSION)
	PATH=$(TOOLS):$$PATH protoc -I api/proto \
		--go_out=. --go_opt=module=github.com/notify-dev/notify \
		--go-grpc_out=. --go-grpc_opt=module=github.com/notify-dev/notify \
		--twirp_out=. --twirp_opt=module=github.com/notify-dev/notify \
		api/proto/notify.proto
	PATH=$(TOOLS):$$PATH protoc -I api/proto \
		--go_out=. --go_opt=module=github.com/notify-dev/notify \
		--go-grpc_out=. --go-grpc_opt=module=github.com/notify-dev/notify \
		api/proto/notifications.proto
