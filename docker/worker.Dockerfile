# The model worker: one model behind gRPC (health, reflection, metrics). Scale it with
# `docker compose up --scale worker=3`; the bridge spreads requests over every replica.
# For your own model: build FROM this image, add your package and pins, set WORKER_MODEL
# (deploy/examples/my-model shows how; docs/deployment.md explains).
# PYTHON_IMAGE: any Debian-based Python 3.11 image, e.g. your registry's mirror of it, or the one
# docker/python-base-image.sh makes from a Debian mirror where no registry is reachable.
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim

# The dependencies are installed in a stage of their own, into a virtualenv that the image copies: a CA
# bundle handed to pip here (docker/build-ca/, for a proxy that re-signs TLS) never reaches the image.
FROM ${PYTHON_IMAGE} AS dependencies
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
COPY docker/build-ca/ /build-ca/
COPY requirements-worker.txt /tmp/
RUN python -m venv /opt/venv \
    && if [ -f /build-ca/ca-bundle.pem ]; then export PIP_CERT=/build-ca/ca-bundle.pem; fi \
    && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements-worker.txt

FROM ${PYTHON_IMAGE}
# The virtualenv's pip stays: images for other models install their packages with it (deploy/examples).
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
COPY --from=dependencies /opt/venv /opt/venv
WORKDIR /app

COPY logging.yaml ./
COPY arterys_http/ arterys_http/
COPY contract/ contract/
COPY service_runtime/ service_runtime/
COPY dicom_geometry/ dicom_geometry/
COPY worker/ worker/
COPY mock_model/ mock_model/

# A numeric user (not a name), so Kubernetes' runAsNonRoot can check it; /spool is the only place the
# worker writes, so the root file system can be mounted read-only.
RUN groupadd --system --gid 10001 model \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin model \
    && mkdir -p /spool && chown 10001:10001 /spool
USER 10001:10001

ENV WORKER_MODEL=mock_model \
    WORKER_LISTEN=0.0.0.0:50051 \
    WORKER_METRICS_LISTEN=0.0.0.0:9464 \
    WORKER_SPOOL_DIR=/spool \
    WORKER_GRACE_SECONDS=30
EXPOSE 50051 9464
# A success ends the start period at once, so a long one costs nothing for a fast model and lets a big
# one load (docker-compose.yml makes it configurable: WORKER_START_PERIOD).
HEALTHCHECK --interval=10s --timeout=5s --start-period=300s --retries=3 CMD ["python", "-m", "worker.probe"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "worker"]
