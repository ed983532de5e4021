# Switchyard's build, test and check targets. The Dockerfile
# (deploy/Dockerfile) and CI (.ci/run) both run `make build`, so CI proves
# the static build the image ships.

# The release this tree is: the image tag the kustomize base (newTag) and the
# Helm chart (appVersion) name, and the one `switchyard inject` puts in by
# default. Bump all of them together; make deploy-test checks they agree.
RELEASE := 0.1.0
# The version stamped into the binary and the image's tag: the release unless
# told otherwise (make image VERSION=$(git describe --always --dirty) for a
# development image; then name that tag in your overlay or values).
VERSION ?= $(RELEASE)
# Where `make image` tags the image (needs a Docker engine); push it with
# docker push $(IMAGE).
IMAGE ?= ghcr.io/switchyard-gw/switchyard:$(VERSION)

GO ?= go

.PHONY: all build test lint deploy-test helm-lint bench bench-cluster image clean

all: lint test build

# A static binary (no cgo, no libc), without local paths or debug symbols,
# stamped with VERSION (printed by `switchyard version`).
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/switchyard ./cmd/switchyard

test:
	$(GO) test -race ./...

lint:
	@unformatted=$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	cd deploy/test && $(GO) vet ./...

# Renders the kustomize base and the Helm chart and checks them (its own Go
# module, so Kubernetes libraries stay out of the main module).
deploy-test:
	cd deploy/test && $(GO) test -count=1 ./...

# The helm CLI's lint, with the Helm version pinned in deploy/test/go.mod (a
# Go tool dependency: no helm binary needs to be installed). deploy-test runs
# the same lint through Helm's Go package, without building the CLI.
helm-lint:
	cd deploy/test && $(GO) tool helm lint --strict ../helm/switchyard

# The load tool's scenarios (docs/BENCHMARKS.md) on fresh local nodes, one
# JSON line each on stdout; BENCH_DURATION per scenario (about 14 of them).
BENCH_DURATION ?= 8s
bench:
	scripts/bench.sh $(BENCH_DURATION)

# The cluster scenario (docs/BENCHMARKS.md, "A cluster of N sidecars"):
# CLUSTER_SIZES real nodes on loopback, one JSON line per size.
CLUSTER_SIZES ?= 10 50 100
bench-cluster:
	scripts/bench-cluster.sh $(CLUSTER_SIZES)

image:
	docker build --build-arg VERSION=$(VERSION) -f deploy/Dockerfile -t $(IMAGE) .

clean:
	rm -rf bin
