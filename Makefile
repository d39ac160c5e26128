# entrowatch — build, test, demo. `make help` lists the targets.
GO        ?= go
BIN       := bin/entrowatch
# A count, not a duration: with -fuzztime=8s Go 1.26's fuzz coordinator can fail a
# target with a bare "context deadline exceeded" at the deadline on a loaded machine
# (golang/go#75804, fixed in Go 1.27); a count has no deadline to race.
FUZZTIME  ?= 15000x
# Minimising each new interesting input is capped: Go's default (60s) spends the
# whole fuzz time shrinking one input derived from the multi-KB seeds.
FUZZMINIMIZETIME ?= 1s
# The fast build: Go 1.26's experimental SIMD (an AVX-512 entropy kernel chosen at run time,
# with the portable kernel as fallback) and GOAMD64=v3 (FMA) when this CPU has it.
# `make build FAST=0` builds the portable binary.
FAST      ?= 1
ifeq ($(FAST),1)
BUILDENV  := GOEXPERIMENT=simd GOAMD64=$(shell grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo && grep -qw bmi2 /proc/cpuinfo && echo v3 || echo v1)
endif
# chDB (current ClickHouse as a library) for SQL compatibility tests; installed by `make deps`.
CHDB_LIB_PATH ?= $(CURDIR)/.cache/npm/node_modules/@chdb/lib-linux-x64-gnu/libchdb.so
export CHDB_LIB_PATH

.PHONY: help build test unit fuzz vet lint bench demo deps deps-server clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

build: ## build bin/entrowatch
	$(BUILDENV) $(GO) build -trimpath -ldflags "-X main.version=$$(git describe --always --dirty 2>/dev/null || echo dev)" -o $(BIN) ./cmd/entrowatch

deps: ## install what the tests need (apt: clickhouse, gcc, prometheus for promtool; npm: chDB library)
	bash scripts/deps.sh

deps-server: ## install what the demo and run need (apt: clickhouse-server, clickhouse-client)
	bash scripts/deps.sh server

vet: ## go vet ./...
	$(GO) vet ./...

STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint: ## staticcheck ./... (dead code, never-used values, error-string style); built on first use
	$(GO) run $(STATICCHECK) ./...

unit: ## go test -race ./... (integration tests start their own broker and clickhouse-server); the operators again as the fast build compiles them, with -race too
	$(GO) test -race -count=1 -timeout 20m ./...
	GOEXPERIMENT=simd $(GO) vet ./operators/...
	GOEXPERIMENT=simd $(BUILDENV) $(GO) test -race -count=1 ./operators/...

fuzz: ## run every fuzz target briefly (FUZZTIME each)
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' .); do \
	  pkg=./$$(dirname $$f); \
	  for t in $$(grep -oE '^func Fuzz[A-Za-z0-9_]*' $$f | sed 's/func //'); do \
	    echo "fuzz $$pkg $$t"; $(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=$(FUZZMINIMIZETIME) $$pkg; \
	  done; done

test: deps vet lint build unit fuzz ## everything CI runs

bench: build ## Go benchmarks of the hot paths (fast build) and entrowatch bench operators
	$(BUILDENV) $(GO) test -run='^$$' -bench='Profile|Operator' -benchmem ./operators/profile/
	./$(BIN) bench operators

demo: deps-server build ## the whole loop on bundled real traces
	./$(BIN) demo

clean: ## remove bin/ and .cache/ (the chDB library)
	rm -rf bin .cache
