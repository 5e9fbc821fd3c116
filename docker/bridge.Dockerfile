# The HTTP bridge the Arterys app talks to: stateless, no model code, no pixel decoding.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY requirements-bridge.txt ./
RUN pip install --no-cache-dir -r requirements-bridge.txt

COPY logging.yaml ./
COPY arterys_http/ arterys_http/
COPY contract/ contract/
COPY bridge/ bridge/

# A numeric user (not a name), so Kubernetes' runAsNonRoot can check it; the bridge writes no files.
RUN groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin bridge
USER 10001:10001

ENV BRIDGE_LISTEN=0.0.0.0:8900 \
    BRIDGE_WORKER=dns:///worker:50051
EXPOSE 8900
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8900/readyz', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bridge"]
