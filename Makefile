# trimkit's build. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# The Consul agent is built from source, pinned in tools/go.mod.
CONSUL_VERSION := $(shell awk '$$1 == "github.com/hashicorp/consul" && $$2 ~ /^v/ { print $$2 }' tools/go.mod)
BIN := $(CURDIR)/bin
# bin/ first, so tests and scripts find the pinned consul.
export PATH := $(BIN):$(PATH)
# The checksum database does not know some Consul submodules; tools/go.sum
# is committed, so every build still verifies against it.
export GONOSUMDB := github.com/hashicorp/consul
# The Go that builds and tests trimkit: the first patch release free of the
# standard-library vulnerabilities govulncheck finds in go1.26.8 (see
# `make vulncheck`); the go command fetches it from the module proxy once.
export GOTOOLCHAIN := go1.26.10
# The oldest Go the module needs, its go.mod's go line: what an importer's
# go.mod is raised to (the highest go line among its dependencies, here
# github.com/hashicorp/consul/api's). `make lint` builds and vets with it.
MIN_GO := go$(shell awk '$$1 == "go" { print $$2 }' go.mod)
GO_TEST_FLAGS ?=

.PHONY: help consul jaeger proto build test lint mingo apisize vulncheck ghz demo up cluster down chaos walkthrough bench

help: ## list the targets
	@awk -F ':.*## ' '/^[a-z-]+:.*## / { printf "  make %-9s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

consul: ## build bin/consul at the pinned version (skipped when already built)
	@if [[ -x bin/consul ]] && [[ "$$(bin/consul version 2>/dev/null | head -n1)" == "Consul $(CONSUL_VERSION)" ]]; then \
		echo "bin/consul is already $(CONSUL_VERSION)"; \
	else \
		echo "building bin/consul $(CONSUL_VERSION) from the Go module proxy (cold: ~6 minutes, ~2.5 GB of modules)"; \
		go -C tools build -o ../bin/consul github.com/hashicorp/consul; \
	fi
	@bin/consul version

proto: ## regenerate pb/ and examples/orders/orderspb/ from their .proto files (needs protoc: apt-get install protobuf-compiler)
	@command -v protoc >/dev/null || { echo "protoc not found: apt-get install protobuf-compiler" >&2; exit 1; }
	go -C tools/protoc build -o ../../bin/protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go
	go -C tools/protoc build -o ../../bin/protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc
	go generate ./pb ./examples/orders/orderspb

build: ## build bin/trimsvc, bin/client and bin/trimdev
	go build -o bin/ ./cmd/...

demo: consul build ## the main job: local Consul, 3 instances, load, a SIGTERM and a SIGKILL, then a SIGSTOP (frozen, ejected by the client)
	bin/trimdev run

# TRACING=1 (make up, make cluster): Jaeger too, the instances' traces
# sent to it, its UI's address printed.
TRACING ?=
up: consul build $(if $(TRACING),jaeger) ## leave a local Consul and 3 instances running (PIDs in .run/); TRACING=1: and Jaeger
	bin/trimdev up $(if $(TRACING),-tracing)

# DCS=2 (make cluster, make chaos): two WAN-federated datacenters, dc1
# and dc2, each with its servers, client agents and instances; callers
# ask dc1's client agent 2 for both.
DCS ?= 1
cluster: consul build $(if $(TRACING),jaeger) ## leave 3 consul servers, 2 client agents and 3 instances running (PIDs in .run/); TRACING=1: and Jaeger; DCS=2: in two federated datacenters
	bin/trimdev cluster $(if $(TRACING),-tracing)$(if $(filter-out 1,$(DCS)), -dcs $(DCS))

down: ## stop what `make up` or `make cluster` started (both datacenters with DCS=2), by recorded PIDs; their logs stay in .run/last/
	@if [[ -x bin/trimdev ]]; then bin/trimdev down; else go run ./cmd/trimdev down; fi

# The chaos soak: how long it injects faults, the load's calls/s, the
# seed of its faults (empty: a new one, printed, to replay a run), and
# their sequence (deck: every kind shuffled, compound ones included;
# walkthrough: the walkthrough's steps in order).
DURATION ?= 3m
RATE ?= 300
SEED ?=
SEQUENCE ?= deck
chaos: consul build ## chaos soak on the cluster: load through client agent 2, single and compound faults (DURATION, RATE, SEED, SEQUENCE, DCS)
	bin/trimdev chaos -duration $(DURATION) -rate $(RATE) -sequence $(SEQUENCE) $(if $(SEED),-seed $(SEED))$(if $(filter-out 1,$(DCS)), -dcs $(DCS))

walkthrough: consul build ## run every step `make cluster` prints, in order, under load from cmd/client; fails if a call fails
	bin/trimdev walkthrough

# Three tests load the machine on purpose: the overload test overloads
# three instances, the connection flood test floods one with twice its
# connection limit, and the black-hole test sends 1,000 calls a second for
# 40s with each attempt's share of the time checked. They run alone, one
# after the other, after the rest, so that the other packages' tests
# neither starve them nor are starved by them.
ALONE_TESTS = ^(TestOverloadedFleetStaysUpAndRecovers|TestIdleConnectionFloodLocksNoCallerOut|TestBlackHoleInstance)$$

test: consul jaeger ## run every test, a real Consul agent and Jaeger included
	go vet ./...
	go test -race -count=1 -skip '$(ALONE_TESTS)' $(GO_TEST_FLAGS) ./...
	go test -race -count=1 -p 1 -run '$(ALONE_TESTS)' $(GO_TEST_FLAGS) ./client ./cmd/trimsvc

BENCH_COUNT ?= 3
bench: consul ghz ## benchmarks: call overhead vs raw gRPC, server throughput (ghz), discovery, failover (one datacenter and two), cluster, load reports, streams, gray failure, overload, scale (about 30 minutes)
	@mkdir -p .bench
	go test -run '^$$' -bench 'Overhead/' -benchmem -benchtime 5000x ./internal/bench | tee .bench/allocs.txt
	go test -run '^$$' -bench 'CallPath' -benchmem -benchtime 1000000x -count 3 ./internal/bench | tee -a .bench/allocs.txt
	go test -run '^$$' -bench 'OverheadInterleaved' -benchtime 1x -count $(BENCH_COUNT) ./internal/bench | tee .bench/overhead.txt
	go test -run '^$$' -bench 'OverheadPaired' -benchtime 1x ./internal/bench | tee .bench/paired.txt
	go test -run '^$$' -bench 'RetryCost' -benchtime 1x -count 3 ./client | tee -a .bench/paired.txt
	go test -run '^$$' -bench 'ServerThroughput' -benchtime 1x -timeout 10m ./internal/bench | tee .bench/server.txt
	go test -run '^$$' -bench 'Discovery|Failover|Cluster|LoadReport|Streams' -benchtime 1x -timeout 30m ./internal/bench | tee .bench/once.txt
	go test -run '^$$' -bench 'LeastLoaded' -benchtime 1x -count 3 -timeout 30m ./internal/bench | tee .bench/leastloaded.txt
	go test -run '^$$' -bench 'GrayFailure' -benchtime 1x -timeout 30m ./internal/bench | tee .bench/gray.txt
	go test -run '^$$' -bench 'Overload|Shares' -benchtime 1x -timeout 30m ./internal/bench | tee .bench/overload.txt
	go test -run '^$$' -bench 'Scale$$|ConsulRead' -benchtime 1x -timeout 30m ./internal/bench | tee .bench/scale.txt
	@echo
	@go run ./internal/bench/report .bench/allocs.txt .bench/overhead.txt .bench/paired.txt .bench/server.txt .bench/once.txt .bench/leastloaded.txt .bench/gray.txt .bench/overload.txt .bench/scale.txt | tee .bench/summary.txt

lint: vulncheck mingo apisize ## check gofmt, go vet, staticcheck and govulncheck (pinned in tools/lint), build with the oldest Go go.mod allows, and bound the API
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [[ -n "$$unformatted" ]]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	go vet ./...
	go -C tools/lint build -o ../../bin/staticcheck honnef.co/go/tools/cmd/staticcheck
	bin/staticcheck ./...

# apisize counts the exported names of client/... and sd/... as issue #31
# does (funcs, types, consts, vars, methods; fields aside) and fails above
# API_MAX: a new name has to replace one.
API_MAX := 100
apisize: ## count the exported names of client/... and sd/... (at most $(API_MAX))
	@total=0; for p in $$(go list ./client/... ./sd/...); do \
		n=$$(go doc -all $$p | grep -cE '^(func|type|const|var) |^    func '); \
		echo "  $$p $$n"; total=$$((total + n)); \
	done; echo "exported names: $$total (at most $(API_MAX))"; \
	[[ $$total -le $(API_MAX) ]]

mingo: ## build and vet with the go line's Go ($(MIN_GO)), the oldest an importer may have
	GOTOOLCHAIN=$(MIN_GO) go build ./...
	GOTOOLCHAIN=$(MIN_GO) go vet ./...

# Jaeger (v2, an OpenTelemetry Collector with Jaeger's storage, query and
# UI), built from the Go module proxy at the version pinned in tools/jaeger;
# bin/.jaeger-version records what bin/jaeger was built from.
JAEGER_VERSION := $(shell awk '$$1 == "github.com/jaegertracing/jaeger" && $$2 ~ /^v/ { print $$2 }' tools/jaeger/go.mod)
jaeger: ## build bin/jaeger at the pinned version (skipped when already built)
	@if [[ -x bin/jaeger ]] && [[ "$$(cat bin/.jaeger-version 2>/dev/null)" == "$(JAEGER_VERSION)" ]]; then \
		echo "bin/jaeger is already $(JAEGER_VERSION)"; \
	else \
		echo "building bin/jaeger $(JAEGER_VERSION) from the Go module proxy (cold: several minutes)"; \
		go -C tools/jaeger build -o ../../bin/jaeger github.com/jaegertracing/jaeger/cmd/jaeger && echo "$(JAEGER_VERSION)" > bin/.jaeger-version; \
	fi

ghz: ## build bin/ghz, the gRPC load tool of make bench's server throughput step (pinned in tools/ghz)
	go -C tools/ghz build -o ../../bin/ghz github.com/bojand/ghz/cmd/ghz

# govulncheck reads a copy of the Go vulnerability database that
# tools/lint/vulndb builds, offline, from the pinned golang.org/x/vulndb module
# (the database's usual host cannot be reached from these machines).
vulncheck: ## govulncheck with a local vulnerability database (pinned in tools/lint)
	go -C tools/lint build -o ../../bin/govulncheck golang.org/x/vuln/cmd/govulncheck
	go -C tools/lint build -o ../../bin/vulndb ./vulndb
	bin/vulndb .cache/vulndb
	bin/govulncheck -db file://$(CURDIR)/.cache/vulndb ./...
