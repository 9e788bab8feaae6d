# understudy — see README.md.
GO ?= go
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
BIN := bin

.PHONY: all build test unit lint demo bench bench-failover clean fuzz

all: build

build:
	$(GO) build -o $(BIN)/understudy ./cmd/understudy
	$(GO) build -o $(BIN)/usweb ./cmd/usweb

# Unit tests need no privileges; as root the integration tests in network
# namespaces run too (they skip, saying so, otherwise). Then every fuzz target
# runs for its budget (see fuzz).
test: lint build
	$(GO) test -count=1 -timeout 30m ./...
	$(MAKE) --no-print-directory fuzz

unit:
	$(GO) test -count=1 -short ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

demo: build
	scripts/demo.sh

# Kernel forwarding, HAProxy and understudy side by side (root; about 8
# minutes): one table, also under bench/results/. US_BENCH_ROUNDS (5),
# US_FAILOVERS (21) and US_FLOWS (100000) size it.
bench: build
	$(GO) test -count=1 -run '^$$' -bench BenchmarkCompare -benchtime 1x -timeout 40m ./testbed/

# Client stall when the primary fails mid-download (root; about 2 minutes).
bench-failover: build
	$(GO) test -count=1 -run '^$$' -bench BenchmarkFailoverStall -benchtime 1x -timeout 20m ./testbed/

# Every fuzz target, for a number of executions that takes about 30 s each
# on the development VM. Not a duration: in Go 1.26 a -fuzztime duration
# races the fuzzing coordinator's own deadline and can fail a clean run with
# "context deadline exceeded" (golang/go#75804). FUZZTIME (a duration or a
# count such as 100000x) overrides all three.
FUZZ_PARSE ?= 400000x
FUZZ_REWRITE ?= 400000x
FUZZ_FLOW ?= 150000x
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(or $(FUZZTIME),$(FUZZ_PARSE)) ./rewrite/
	$(GO) test -run '^$$' -fuzz '^FuzzRewrite$$' -fuzztime $(or $(FUZZTIME),$(FUZZ_REWRITE)) ./rewrite/
	$(GO) test -run '^$$' -fuzz '^FuzzFlow$$' -fuzztime $(or $(FUZZTIME),$(FUZZ_FLOW)) ./tcpstate/

clean:
	rm -rf $(BIN)
