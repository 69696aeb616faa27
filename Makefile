# Gondolin for containerd. `make demo` and `make test` are the two entry points;
# everything else is a step they take.
SHELL := /bin/bash
.DEFAULT_GOAL := build

GO       ?= go
OUT      := $(CURDIR)/_output
CACHE    := $(CURDIR)/.cache
BIN      := $(OUT)/bin
SHARE    := $(OUT)/share/gondolin
LIBDIR   := $(OUT)/lib/gondolin
AGENT    := $(LIBDIR)/gondolin-agent
PREFIX   ?= /usr/local
GOFLAGS_BUILD := -trimpath -buildvcs=false

export PATH := $(BIN):$(CACHE)/tools/bin:/usr/local/go/bin:$(PATH)

.PHONY: build shim cli agent images vmm deps tools dev-up dev-down demo test unit integration critest fuzz fuzz-quick bench install clean proto

build: shim cli images vmm

## deps: Debian packages and Go-built tools (containerd, ctr) the project needs.
deps:
	hack/install-deps.sh

tools:
	hack/build-tools.sh $(CACHE)/tools

shim:
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/containerd-shim-gondolin-v1 ./shim/cmd/containerd-shim-gondolin-v1

## cli: the operator's command, gondolin (install, uninstall, audit; docs/cli.md).
cli:
	$(GO) build $(GOFLAGS_BUILD) -o $(BIN)/gondolin ./cmd/gondolin

# The agent is PID 1 of the guest: static, no cgo.
agent:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -ldflags '-s -w' -o $(AGENT) ./guest-agent/cmd/gondolin-agent

## images: guest kernel + initramfs (with the agent) and their manifest.
images: agent
	$(GO) run ./images/cmd/gondolin-mkimage --agent $(AGENT) --out $(SHARE) --cache $(CACHE)/images

## vmm: the pinned QEMU (Debian's bookworm-backports build) and Rust virtiofsd
## that can save and resume a VM, into _output/lib/gondolin, where the shim's
## default config finds them (hack/vmm-bundle.sh; made once into .cache/tools,
## then copied only when they change).
vmm:
	hack/vmm-bundle.sh build $(CACHE)/tools $(LIBDIR)

proto:
	cd guest-agent/api && protoc -I. --go_out=paths=source_relative:. --go-ttrpc_out=paths=source_relative:. agent.proto

dev-up: build tools
	hack/dev-up.sh

dev-down:
	hack/dev-down.sh

demo: deps build tools
	hack/demo.sh

unit:
	$(GO) vet ./...
	$(GO) test ./...
	cd bench && $(GO) vet ./... && $(GO) test ./...

## integration: also builds the kubelet (hack/build-tools.sh's kubelet component, left
## out of make tools: ~10 min cold), which the standalone-kubelet test runs.
integration: build tools
	hack/build-tools.sh $(CACHE)/tools kubelet
	hack/integration.sh

## critest: CRI conformance. cri-tools' critest against the dev containerd
## (make dev-up first), once with the runtime handler runc and once with gondolin,
## images from a local registry filled with stand-ins built here; fails on a gondolin
## failure not in hack/critest-known-failures.txt (hack/critest.sh;
## GONDOLIN_CRITEST_FOCUS narrows it, GONDOLIN_CRITEST_RUNTIMES picks the handlers).
critest: build tools
	hack/critest.sh

## fuzz: every Go fuzz target in the repository, FUZZTIME each (default 60s), one
## after another (hack/fuzz.sh; FUZZ=regexp picks targets). fuzz-quick is the short
## pass make test runs, about 150 s shared among the targets: go test ./... has
## already run each target's seed corpus (testdata/fuzz/FuzzX) as a plain test.
FUZZTIME ?= 60s
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) hack/fuzz.sh

fuzz-quick:
	GO=$(GO) FUZZBUDGET=150 hack/fuzz.sh

## bench: the same workloads under runc, runsc (gVisor) and gondolin in one session
## (hack/bench.sh). BENCH_QUICK=1 for a short smoke run, BENCH_RUNS=N; results go to
## .cache/bench/<UTC time>-<commit>/, named on the last line of output.
bench: build tools
	hack/build-tools.sh $(CACHE)/tools runsc
	hack/bench.sh

test: deps unit fuzz-quick integration

install: build
	install -D -m 0755 $(BIN)/containerd-shim-gondolin-v1 $(PREFIX)/bin/containerd-shim-gondolin-v1
	install -D -m 0755 $(BIN)/gondolin $(PREFIX)/bin/gondolin
	for f in vmlinuz initrd.img vmlinuz-stock initrd-stock.img config-minimal manifest.json; do \
		install -D -m 0644 $(SHARE)/$$f $(PREFIX)/share/gondolin/$$f || exit 1; \
	done
	hack/vmm-bundle.sh install $(LIBDIR) $(PREFIX)/lib/gondolin

clean:
	rm -rf $(OUT)
