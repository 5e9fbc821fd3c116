# The model worker: one model behind gRPC (health, reflection, metrics). Scale it with
# `docker compose up --scale worker=3`; the bridge spreads requests over every replica.
# For your own model: add its package and pins, and set WORKER_MODEL.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app

COPY requirements-worker.txt ./
RUN pip install --no-cache-dir -r requirements-worker.txt

COPY logging.yaml ./
COPY contract/ contract/
COPY worker/ worker/
COPY mock_model/ mock_model/

RUN useradd --system --uid 10001 model && mkdir -p /spool && chown model /spool
USER model

ENV WORKER_MODEL=mock_model \
    WORKER_LISTEN=0.0.0.0:50051 \
    WORKER_METRICS_LISTEN=0.0.0.0:9464 \
    WORKER_SPOOL_DIR=/spool \
    WORKER_GRACE_SECONDS=30
EXPOSE 50051 9464
HEALTHCHECK --interval=5s --timeout=5s --start-period=10s CMD ["python", "-m", "worker.probe"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "worker"]
