# The HTTP bridge the Arterys app talks to: stateless, no model code, no pixel decoding.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app

COPY requirements-bridge.txt ./
RUN pip install --no-cache-dir -r requirements-bridge.txt

COPY logging.yaml ./
COPY contract/ contract/
COPY bridge/ bridge/

RUN useradd --system --uid 10001 bridge
USER bridge

ENV BRIDGE_LISTEN=0.0.0.0:8900 \
    BRIDGE_WORKER=dns:///worker:50051
EXPOSE 8900
HEALTHCHECK --interval=5s --timeout=3s CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8900/readyz', timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bridge"]
