# The HTTP bridge the Arterys app talks to: stateless, no model code, no pixel decoding.
# PYTHON_IMAGE: any Debian-based Python 3.11 image, e.g. your registry's mirror of it, or the one
# docker/python-base-image.sh makes from a Debian mirror where no registry is reachable.
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim

# The dependencies are installed in a stage of their own, into a virtualenv that the image copies: a CA
# bundle handed to pip here (docker/build-ca/, for a proxy that re-signs TLS) never reaches the image.
FROM ${PYTHON_IMAGE} AS dependencies
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
COPY docker/build-ca/ /build-ca/
COPY requirements-bridge.txt /tmp/
RUN python -m venv /opt/venv \
    && if [ -f /build-ca/ca-bundle.pem ]; then export PIP_CERT=/build-ca/ca-bundle.pem; fi \
    && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements-bridge.txt

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
COPY --from=dependencies /opt/venv /opt/venv
WORKDIR /app

COPY logging.yaml ./
COPY arterys_http/ arterys_http/
COPY contract/ contract/
COPY service_runtime/ service_runtime/
COPY bridge/ bridge/

# A numeric user (not a name), so Kubernetes' runAsNonRoot can check it; the bridge writes no files.
RUN groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin bridge
USER 10001:10001

ENV BRIDGE_LISTEN=0.0.0.0:8900 \
    BRIDGE_WORKER=dns:///worker:50051
EXPOSE 8900
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["python", "-m", "bridge.probe"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bridge"]
