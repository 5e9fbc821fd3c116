"""What serves a model: the worker process behind `python -m worker` (worker/__main__.py).

Start-up: `config` (the settings tree: flags, variables, --help), `loading` (finding --model),
`model_logging`, `porting_hints`, `reload` and `watch` (--reload), `ports`, `server` (the gRPC server,
health, reflection, metrics endpoint), `security`, `handshakes`. One call: `servicer` (its stages),
`admission` (who may send a study, who may run the model), `receive`, `rate`, `spool` and `instances` (the
study as it arrives), `batching`, `results` (a model's answer checked), `dicom_export` (DICOM SEG and SR
made from it), `stow` (sent to a PACS), `errors` (every way a call ends), `metrics`, `tracing`.
"""
