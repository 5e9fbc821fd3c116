"""What both services run on that is not their contract: each process's plumbing, shared so it is written once.

- `logs`: logging.yaml applied at start, the request tags on every line (input hash, request id, trace id),
  one record per line, no study values; `native_log`: what gRPC's C core writes to stderr, logged the same way.
- `malloc`: glibc tuned to keep large buffers in the heap and to give memory back once a service is idle.
- `tls`: certificates and keys read from PEM files, for gRPC credentials and the bridge's HTTPS.
- `tracing`: OpenTelemetry, off unless the standard OTEL_* variables turn it on.

`logging.yaml` here is a link to the repository's (the one to edit); a wheel carries a copy.
"""
