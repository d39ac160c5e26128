# entrowatch — build, test, demo. `make help` lists the targets.
GO        ?= go
BIN       := bin/entrowatch
FUZZTIME  ?= 3s
# chDB (current ClickHouse as a library) for SQL compatibility tests; installed by `make deps`.
CHDB_LIB_PATH ?= $(CURDIR)/.cache/npm/node_modules/@chdb/lib-linux-x64-gnu/libchdb.so
export CHDB_LIB_PATH

.PHONY: help build test unit fuzz vet bench demo deps clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

build: ## build bin/entrowatch
	$(GO) build -trimpath -ldflags "-X main.version=$$(git describe --always --dirty 2>/dev/null || echo dev)" -o $(BIN) ./cmd/entrowatch

deps: ## install what tests and the demo need (apt: clickhouse; npm: chDB library)
	bash scripts/deps.sh

vet:
	$(GO) vet ./...

unit: ## go test ./... (integration tests start their own broker and clickhouse-server)
	$(GO) test -count=1 -timeout 20m ./...

fuzz: ## run every fuzz target briefly (FUZZTIME each)
	@set -e; for f in $$(grep -rl --include='*_test.go' '^func Fuzz' .); do \
	  pkg=./$$(dirname $$f); \
	  for t in $$(grep -oE '^func Fuzz[A-Za-z0-9_]*' $$f | sed 's/func //'); do \
	    echo "fuzz $$pkg $$t"; $(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) $$pkg; \
	  done; done

test: deps vet build unit fuzz ## everything CI runs

bench: ## Go benchmarks of the hot paths
	$(GO) test -run='^$$' -bench=. -benchmem ./operators/...

demo: deps build ## the whole loop on bundled real traces
	./$(BIN) demo

clean:
	rm -rf bin .cache
