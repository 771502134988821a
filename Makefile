# Concord — make targets. `make test` is the test command CI runs.
GO ?= go
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# fuzzing runs a fixed number of inputs (not a duration): no deadline races on
# a loaded CI machine
FUZZTIME ?= 100000x

.PHONY: all build run test deps vet unit race integration goroutines fuzz clean demo bench-repl bench bench-mem bench-cmds bench-append gobench bench-ae

all: build

build:
	$(GO) build -o concord ./cmd/concord

run:
	$(GO) run ./cmd/concord

# Installs what the tests need on a fresh machine (redis-cli,
# redis-benchmark, redis-server for the comparison harness).
deps:
	@if ! command -v redis-cli >/dev/null || ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then \
		echo "installing redis-tools and redis-server"; \
		$(SUDO) apt-get install -y redis-tools redis-server >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update >/dev/null && $(SUDO) apt-get install -y redis-tools redis-server >/dev/null; }; \
	fi
	@# Debian starts a redis-server service on 6379 when it can; tests never use it.

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }

# Unit and property tests with the race detector. CONCORD_POISON_ARGS=1:
# servers overwrite each command's arguments once it is served, so a handler
# that keeps one without copying it fails (resp.Config.PoisonArgs).
race:
	CONCORD_POISON_ARGS=1 $(GO) test -race -count=1 ./crdt/... ./keyspace/... ./resp/... ./commands/... ./persistence/... ./peering/... ./cmd/...

# End-to-end tests against real clients and a real redis-server.
integration: deps
	CONCORD_POISON_ARGS=1 $(GO) test -count=1 -timeout 15m ./integration/...

# The request path again with a goroutine per connection (--io goroutines;
# the other runs use the event loop, the default).
goroutines: deps
	CONCORD_TEST_IO=goroutines CONCORD_POISON_ARGS=1 $(GO) test -count=1 -timeout 15m ./resp/... ./integration/...

# Bounded fuzzing of every decoder and the request reader.
fuzz:
	$(GO) test -run XXX -fuzz FuzzDecodeState -fuzztime $(FUZZTIME) ./crdt
	$(GO) test -run XXX -fuzz FuzzDecodeBatch -fuzztime $(FUZZTIME) ./crdt
	$(GO) test -run XXX -fuzz FuzzDecodeMessage -fuzztime $(FUZZTIME) ./crdt
	$(GO) test -run XXX -fuzz FuzzGuard -fuzztime $(FUZZTIME) ./resp
	$(GO) test -run XXX -fuzz FuzzACLRules -fuzztime $(FUZZTIME) ./commands
	$(GO) test -run XXX -fuzz FuzzPages -fuzztime $(FUZZTIME) ./persistence

test: deps vet race integration goroutines fuzz

clean:
	rm -f concord

# Three regions on this machine: clients on 7001-7003, NATS on 4301-4303.
demo: build
	BIN=./concord ./docs/demo.sh

# Replication lag (write in A -> merged in B and C), p50/p99 per rate.
bench-repl:
	BENCH_REPL_SECONDS=$${BENCH_REPL_SECONDS:-10} $(GO) test -run XXX -bench BenchmarkReplicationLag -benchtime 1x ./integration

# redis-benchmark against Concord and redis-server (AOF everysec) in one run,
# side by side with the ratio (SET, GET, INCR, SADD, HSET and a mix of the
# five at once). BENCH_QUICK=1 finishes in under a minute;
# BENCH_FSYNC=always compares both with an fsync per write.
bench: build deps
	$(GO) run ./cmd/concord-bench -concord ./concord

# Commands a Redis user expects to be cheap (SCAN, RANDOMKEY, SSCAN,
# MEMORY USAGE, ...) against 1M keys and 100k-element keys, Concord vs
# redis-server: an O(n) regression shows as an outlying ratio.
bench-cmds: build deps
	$(GO) run ./cmd/concord-bench -mode commands -concord ./concord

# APPENDs of 40 bytes to a 10 MB string in region A, replicated to B:
# A's rate and how long B took to catch up (BENCH_APPENDS=20000).
bench-append:
	$(GO) test -run XXX -bench BenchmarkAppendReplication -benchtime 1x ./integration

# RSS per string key and per set member, Concord vs redis-server.
bench-mem: build deps
	$(GO) run ./cmd/concord-bench -mode memory -concord ./concord

# Go benchmarks of the hot paths, with allocations.
gobench:
	$(GO) test -run XXX -bench . -benchmem ./crdt ./resp ./keyspace ./persistence ./commands

# Anti-entropy: resync of an empty region and compare of identical ones.
bench-ae:
	BENCH_AE_KEYS=$${BENCH_AE_KEYS:-1000000} $(GO) test -run XXX -bench BenchmarkAntiEntropy -benchtime 1x -timeout 20m ./integration
