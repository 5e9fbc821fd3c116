"""Command-line flags of `python -m worker`, each also readable from a WORKER_* environment variable."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass


@dataclass
class WorkerConfig:
    model: str
    listen: str = "127.0.0.1:50051"
    metrics_listen: str = ""
    concurrency: int = 1
    queue_size: int = 4
    default_command: str = ""
    study_root: str = ""
    spool_dir: str = ""
    grace_seconds: float = 30.0
    max_connection_age_seconds: float = 300.0
    max_message_bytes: int = 64 << 20


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="python -m worker",
        description="Hosts one model behind the Inference gRPC service, with health, reflection and metrics.",
    )
    parser.add_argument("--model", default=env("WORKER_MODEL"), required=env("WORKER_MODEL") is None,
                        help="package.module:Name, or a package exposing one Model [WORKER_MODEL]")
    parser.add_argument("--listen", default=env("WORKER_LISTEN", "127.0.0.1:50051"),
                        help="gRPC address HOST:PORT (port 0 picks a free one) [WORKER_LISTEN]")
    parser.add_argument("--metrics-listen", default=env("WORKER_METRICS_LISTEN", ""),
                        help="Prometheus /metrics address HOST:PORT; empty disables [WORKER_METRICS_LISTEN]")
    parser.add_argument("--concurrency", type=int, default=int(env("WORKER_CONCURRENCY", "1")),
                        help="inferences run at once (models are rarely thread-safe) [WORKER_CONCURRENCY]")
    parser.add_argument("--queue-size", type=int, default=int(env("WORKER_QUEUE_SIZE", "4")),
                        help="calls that may wait for a slot; more are refused at once [WORKER_QUEUE_SIZE]")
    parser.add_argument("--default-command", default=env("WORKER_DEFAULT_COMMAND", ""),
                        help="inference_command used when a request names none (overrides the model's) "
                             "[WORKER_DEFAULT_COMMAND]")
    parser.add_argument("--study-root", default=env("WORKER_STUDY_ROOT", ""),
                        help="folder under which studyPath requests may read; empty refuses them [WORKER_STUDY_ROOT]")
    parser.add_argument("--spool-dir", default=env("WORKER_SPOOL_DIR", ""),
                        help="where incoming studies are written while they are processed [WORKER_SPOOL_DIR]")
    parser.add_argument("--grace-seconds", type=float, default=float(env("WORKER_GRACE_SECONDS", "30")),
                        help="on SIGTERM, how long in-flight inferences may take to finish [WORKER_GRACE_SECONDS]")
    parser.add_argument("--max-connection-age-seconds", type=float,
                        default=float(env("WORKER_MAX_CONNECTION_AGE_SECONDS", "300")),
                        help="connections are recycled after this, so bridges find new replicas "
                             "[WORKER_MAX_CONNECTION_AGE_SECONDS]")
    return parser


def parse_config(argv: list[str] | None = None) -> WorkerConfig:
    args = build_parser().parse_args(argv)
    return WorkerConfig(**vars(args))
