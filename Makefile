# The two commands of the README, and a few conveniences.
.PHONY: demo test lint bench image-test

demo:  ## moto with seeded accounts, the exporter, Prometheus with the shipped rules and Alertmanager; alerts fire in about a minute
	bash scripts/demo.sh

.PHONY: docs
docs:  ## docs/screenshot.png: the demo's firing alerts in Prometheus, taken by headless Chromium (installs chromium)
	bash scripts/docs.sh

test:  ## installs what the tests need (venv with moto, Prometheus), then runs every test
	bash scripts/test.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

bench: ## render time, memory, config validation at scale, CPU per AWS request, sizing, IAM throttling (release build; ~45 min)
	cargo bench --bench render
	cargo bench --bench config
	cargo build --release
	.venv/bin/python scripts/bench_refresh.py cpu 1500
	.venv/bin/python scripts/bench_refresh.py memory 100000
	.venv/bin/python scripts/bench_refresh.py slowreaders 100000 500
	.venv/bin/python scripts/bench_refresh.py credentials 2500 1000
	.venv/bin/python scripts/bench_refresh.py sizing 200 200
	.venv/bin/python scripts/bench_refresh.py throttled 20 1000 5000

# Your own image, until you use a release's: `make image IMAGE=registry/name:tag` builds the
# Dockerfile with docker buildx and pushes it (log in to the registry first).
# PLATFORMS=linux/amd64,linux/arm64 builds both (a platform other than the host's runs
# under QEMU: much slower); the default is the host's.
.PHONY: image
image: ## build the container image and push it: make image IMAGE=registry/name:tag [PLATFORMS=linux/amd64,linux/arm64]
	@test -n "$(IMAGE)" || { echo "usage: make image IMAGE=registry/name:tag [PLATFORMS=linux/amd64,linux/arm64]" >&2; exit 2; }
	docker buildx build $(if $(PLATFORMS),--platform $(PLATFORMS)) \
		--build-arg IKE_REVISION="$$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)" \
		--tag "$(IMAGE)" --push .

image-test: ## static release binary -> container image (buildah) -> run as 65532 against moto; ~10 min from clean, so not in `make test`
	bash tests/image/test.sh
