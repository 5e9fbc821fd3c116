"""The gRPC metadata bridge and worker exchange on an Infer call besides its messages: each key named once.

- With the call (the bridge's): `REQUEST_ID`, the request's id, so that both services' log lines carry the
  same one; `READS_BUNDLES` set to `YES`: the caller reads `InferResponse.bundle`, so an answer's small
  binary chunks may come bundled; and the W3C trace context (`traceparent`, `tracestate`:
  service_runtime/tracing.py).
- Initial metadata (the worker's, when it admits the call, before any study byte is sent): `ADMITTED` set
  to `YES`; `WORKER`, the worker's host name (the pod's name in Kubernetes), for the bridge's log; and
  `READS_BUNDLES` set to `YES`: the worker reads `InferRequest.bundle`, so the rest of the request may come
  bundled (a worker that predates bundles does not say it, and is sent each message alone).
- Trailing metadata (the worker's, with the status): `INPUT_HASH` once the study has arrived, and
  `ERROR_CODE`, the stable code of a failed call (contract/errors.py), which decides the HTTP answer.
"""

from __future__ import annotations

from collections.abc import Iterable

REQUEST_ID = "x-request-id"
ADMITTED = "admitted"
YES = "1"
WORKER = "worker"
READS_BUNDLES = "reads-bundles"
INPUT_HASH = "input-hash"
ERROR_CODE = "error-code"


def value(pairs: Iterable[tuple[str, object]] | None, key: str) -> str:
    """One value of gRPC metadata (or HTTP header pairs, names in lower case); '' when absent."""
    for name, found in pairs or ():
        if name == key:
            return found if isinstance(found, str) else bytes(found).decode("latin-1")
    return ""
