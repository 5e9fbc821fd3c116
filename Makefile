# The two commands a newcomer needs: `make run` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# `make run` addresses and model: the services' own variable names, from the environment or the command
# line (`BRIDGE_LISTEN=127.0.0.1:8905 make run`, `make run WORKER_MODEL=my_model:MyModel`). Every other
# WORKER_* / BRIDGE_* variable reaches the two services unchanged (e.g. WORKER_RELOAD=1).
BRIDGE_LISTEN ?= 127.0.0.1:8900
WORKER_LISTEN ?= 127.0.0.1:50051
WORKER_METRICS_LISTEN ?= 127.0.0.1:9464
WORKER_MODEL ?= mock_model

.PHONY: setup system-tools sample-study run test test-containers certs fuzz soak proto lint bench clean

setup: $(STAMP)

# Re-installs only when the pinned requirements change (the example models' own pins included).
$(STAMP): $(wildcard requirements*.txt example_models/*/requirements.txt)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $(STAMP)

# One worker (the mock model unless WORKER_MODEL names another) and the bridge; Ctrl-C stops both.
run: setup
	$(PY) -m tools.run_local --http $(BRIDGE_LISTEN) --worker $(WORKER_LISTEN) --metrics $(WORKER_METRICS_LISTEN) \
		--model $(WORKER_MODEL)

# The programs the tests run for real (tools/system-tools.txt: Prometheus, Chromium, dicom3tools...): the
# missing ones are installed with apt-get on Debian/Ubuntu as root or with sudo, after a line saying which;
# elsewhere (or with INSTALL_SYSTEM_TOOLS=0) a line says what is missing and how to install it, and the tests
# still run: those needing a missing program fail, listed together at the end. Then the OHIF viewer's built
# app (npm's @ohif/app, pinned) for the viewer test, through npm's cache: tests never download anything.
system-tools:
	$(PYTHON) tools/system_tools.py install
	@tests/viewers/install-ohif.sh || echo "system tools: the OHIF viewer was not installed (needs npm); tests/test_dicom_viewers.py will fail"

# A small CT series of a phantom (no patient data) in sample-study/, to send with the test tool.
sample-study: setup
	$(PY) -m testtool --make-sample-study sample-study

# Tests spend most of their time waiting on real processes, so they run on 4 xdist workers.
test: setup system-tools
	$(PY) -m pytest -n 4 --dist worksteal -m "not quiet"
	$(PY) -m pytest -m quiet

# The images built and the compose stack run for real on a Docker engine (tests/container_stack.py): installs
# docker.io and docker-compose from Debian when missing (as root), starts dockerd when none runs, makes the
# Python base image from a Debian mirror (no registry needed), and removes everything it made. A few minutes;
# `make test` needs no Docker.
test-containers: setup
	$(PY) -m tests.container_stack

# Certificates, keys and a bearer token for the TLS override (deploy/compose/tls.yml), for a trial:
# deploy/compose/secrets/, never overwritten. `make certs CERT_NAMES="--name bridge.example.org"` adds names.
certs: setup
	$(PY) -m tools.make_certs $(CERT_NAMES)

# A longer fuzzing run than CI's: tests/test_fuzz_*.py (hypothesis, see tests/conftest.py) with the "long"
# profile, 20x the examples of `make test` and fresh random ones each run. A failure prints the shrunk
# example and a @reproduce_failure line to replay it. Takes a few minutes.
fuzz: setup
	HYPOTHESIS_PROFILE=long $(PY) -m pytest tests/test_fuzz_*.py --timeout=3600

# 2,000 mixed requests (every command, 5% malformed, 5% clients hanging up) from 16 clients through real
# worker and bridge processes; fails when an answer, the memory growth or a leak misses its target
# (benchmarks/soak.py). A few minutes.
soak: setup
	$(PY) -m benchmarks.soak

# Regenerates the committed gRPC stubs from proto/ (tests/test_proto_stubs.py fails when they are stale).
proto: setup
	$(PY) -m grpc_tools.protoc -I proto --python_out=. --pyi_out=. --grpc_python_out=. proto/contract/inference.proto

lint: setup
	$(PY) -m ruff check .

# Reference (the original single-process design), ours and the floor, interleaved; writes BENCHMARKS.md.
bench: setup
	$(PY) -m benchmarks.compare

clean:
	rm -rf $(VENV) .pytest_cache
