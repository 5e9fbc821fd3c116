"""Command-line flags of `python -m worker`, each also readable from a WORKER_* environment variable."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field

from contract import limits as contract_limits
from dicom_geometry.acceptance import DEFAULT_MAX_IMAGE_BYTES
from worker import security, stow

MIB = 1 << 20
# A bridge resolves its DNS target again only when a connection ends (gRPC does not poll DNS): ending every
# connection this often gets a new replica its first calls within about this long plus the DNS TTL. Calls
# in flight finish on the old connection (grpc.max_connection_age_grace_ms); a reconnection costs a few ms.
MAX_CONNECTION_AGE_SECONDS = 15.0


@dataclass(frozen=True)
class StudyLimits:
    """What one request may hold; the same limits as the bridge's, enforced again for direct gRPC callers."""

    max_study_bytes: int = contract_limits.MAX_STUDY_BYTES
    max_parts: int = contract_limits.MAX_PARTS
    max_part_bytes: int = contract_limits.MAX_PART_BYTES
    max_json_bytes: int = contract_limits.MAX_JSON_BYTES
    # Decoded size one instance may declare (rows x columns x frames x samples x bits): checked against the
    # pixel data that came, so that a few bytes cannot make a model allocate gigabytes.
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_result_bytes: int = 4 << 30
    max_command_length: int = contract_limits.MAX_COMMAND_LENGTH


@dataclass
class WorkerConfig:
    model: str
    model_dir: str = "."  # searched for --model's module before the installed packages
    reload: bool = False  # restart the worker when the model's source changes (development)
    listen: str = "127.0.0.1:50051"
    metrics_listen: str = ""
    concurrency: int = 1
    queue_size: int = 32
    max_receiving: int = 0  # 0: bounded by the memory budget alone (worker/admission.py)
    default_command: str = ""
    study_root: str = ""
    spool_dir: str = ""
    spool_memory_bytes: int = 16 * MIB
    max_study_memory_bytes: int = 512 * MIB
    max_spool_bytes: int = 0  # 0: 90% of the spool file system's free space at start (worker/spool.py)
    idle_timeout_seconds: float = 30.0
    min_receive_rate: int = contract_limits.MIN_UPLOAD_RATE
    receive_window_seconds: float = contract_limits.RATE_WINDOW_SECONDS
    grace_seconds: float = 30.0
    max_connection_age_seconds: float = MAX_CONNECTION_AGE_SECONDS
    max_message_bytes: int = contract_limits.MESSAGE_BYTES
    limits: StudyLimits = field(default_factory=StudyLimits)
    security: security.WorkerSecurity = field(default_factory=security.WorkerSecurity)
    output_formats: tuple[str, ...] = ("arterys",)  # answer formats when a request names none
    stow: stow.StowConfig = field(default_factory=stow.StowConfig)  # the PACS the DICOM outputs go to


def _env(name: str, default):
    return os.environ.get(name, default)



def _program_name() -> str:
    """As the user typed it: `arterys-worker` (the installed console script) or `python -m worker`."""
    invoked = os.path.basename(sys.argv[0] if sys.argv else "")
    return invoked if invoked == "arterys-worker" else "python -m worker"

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_program_name(),
        description="Hosts one model behind the Inference gRPC service, with health, reflection and metrics. "
                    "Every flag can also be set by the environment variable named in brackets.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--model", default=_env("WORKER_MODEL", None), required="WORKER_MODEL" not in os.environ,
        help="package.module:Name, or a package exposing one Model; Name may also be an Arterys handler "
             "function, hosted as a legacy handler [WORKER_MODEL]")
    add("--model-dir", default=_env("WORKER_MODEL_DIR", "."),
        help="folder searched for --model's module before the installed packages (as uvicorn's --app-dir) "
             "[WORKER_MODEL_DIR]")
    add("--reload", action=argparse.BooleanOptionalAction, default=_env("WORKER_RELOAD", "") not in ("", "0"),
        help="development: restart the worker when a source file of the model (or under --model-dir) changes "
             "[WORKER_RELOAD=1]")
    add("--listen", default=_env("WORKER_LISTEN", "127.0.0.1:50051"),
        help="gRPC address HOST:PORT (port 0 picks a free one) [WORKER_LISTEN]")
    add("--metrics-listen", default=_env("WORKER_METRICS_LISTEN", ""),
        help="Prometheus /metrics address HOST:PORT; empty disables [WORKER_METRICS_LISTEN]")
    add("--concurrency", type=int, default=int(_env("WORKER_CONCURRENCY", 1)),
        help="inferences run at once (models are rarely thread-safe) [WORKER_CONCURRENCY]")
    add("--queue-size", type=int, default=int(_env("WORKER_QUEUE_SIZE", 32)),
        help="calls whose study has arrived that may wait for the model beyond the running ones; when they "
             "are all taken new calls are refused at once, so the bridge can try another worker "
             "[WORKER_QUEUE_SIZE]")
    add("--max-receiving", type=int, default=int(_env("WORKER_MAX_RECEIVING", 0)),
        help="at most this many calls receiving their study at once; 0: as many as the memory budget allows "
             "for (1/8 of --max-study-memory-mib, 64 KiB each: 1,024 by default); what they hold is bounded by "
             "--max-study-memory-mib and --max-spool-bytes [WORKER_MAX_RECEIVING]")
    add("--default-command", default=_env("WORKER_DEFAULT_COMMAND", ""),
        help="inference_command used when a request names none (overrides the model's) [WORKER_DEFAULT_COMMAND]")
    add("--output-formats", default=_env("WORKER_OUTPUT_FORMATS", "arterys"),
        help="answer formats when a request's JSON names no \"output_formats\", comma-separated: arterys (the "
             "protocol's masks), dicom (DICOM SEG + SR, docs/dicom-outputs.md) [WORKER_OUTPUT_FORMATS]")
    add("--study-root", default=_env("WORKER_STUDY_ROOT", ""),
        help="folder under which studyPath requests may read; empty refuses them [WORKER_STUDY_ROOT]")
    add("--spool-dir", default=_env("WORKER_SPOOL_DIR", ""),
        help="where incoming studies beyond --spool-memory-mib are written; empty: the system's temporary "
             "folder [WORKER_SPOOL_DIR]")
    add("--spool-memory-mib", type=float, default=float(_env("WORKER_SPOOL_MEMORY_MIB", 16)),
        help="study bytes per call kept in memory before the rest goes to --spool-dir (a ported Arterys handler "
             "reads every instance into memory anyway, so its studies stay in memory) [WORKER_SPOOL_MEMORY_MIB]")
    add("--max-study-memory-mib", type=float, default=float(_env("WORKER_MAX_STUDY_MEMORY_MIB", 512)),
        help="study bytes all calls together keep in memory; beyond it their parts go to the spool "
             "[WORKER_MAX_STUDY_MEMORY_MIB]")
    add("--max-spool-bytes", type=int, default=int(_env("WORKER_MAX_SPOOL_BYTES", 0)),
        help="bytes all calls together may write to --spool-dir; when it is full new calls are refused and a "
             "call that needs more is ended (503 spool_full at the bridge). 0: 90%% of the space free on its "
             "file system when the worker starts [WORKER_MAX_SPOOL_BYTES]")
    add("--idle-timeout-seconds", type=float, default=float(_env("WORKER_IDLE_TIMEOUT_SECONDS", 30)),
        help="a request stream that sends nothing for this long is ended [WORKER_IDLE_TIMEOUT_SECONDS]")
    add("--min-receive-rate", type=int, default=int(_env("WORKER_MIN_RECEIVE_RATE", contract_limits.MIN_UPLOAD_RATE)),
        help="bytes per second a request stream must send while its study arrives, over each "
             "--receive-window-seconds of waiting, less one 1 MiB chunk (the bridge's lag); slower streams are "
             "ended. The bridge's --min-upload-rate; 0 disables [WORKER_MIN_RECEIVE_RATE]")
    add("--receive-window-seconds", type=float,
        default=float(_env("WORKER_RECEIVE_WINDOW_SECONDS", contract_limits.RATE_WINDOW_SECONDS)),
        help="the window of --min-receive-rate (the bridge's --body-timeout) [WORKER_RECEIVE_WINDOW_SECONDS]")
    add("--grace-seconds", type=float, default=float(_env("WORKER_GRACE_SECONDS", 30)),
        help="on SIGTERM, how long in-flight inferences may take to finish [WORKER_GRACE_SECONDS]")
    add("--max-connection-age-seconds", type=float,
        default=float(_env("WORKER_MAX_CONNECTION_AGE_SECONDS", MAX_CONNECTION_AGE_SECONDS)),
        help="connections are recycled after this, so bridges find new replicas [WORKER_MAX_CONNECTION_AGE_SECONDS]")
    defaults = StudyLimits()
    add("--max-study-bytes", type=int, default=int(_env("WORKER_MAX_STUDY_BYTES", defaults.max_study_bytes)),
        help="largest study (all parts) [WORKER_MAX_STUDY_BYTES]")
    add("--max-parts", type=int, default=int(_env("WORKER_MAX_PARTS", defaults.max_parts)),
        help="most parts in one request [WORKER_MAX_PARTS]")
    add("--max-part-bytes", type=int, default=int(_env("WORKER_MAX_PART_BYTES", defaults.max_part_bytes)),
        help="largest single part [WORKER_MAX_PART_BYTES]")
    add("--max-image-bytes", type=int, default=int(_env("WORKER_MAX_IMAGE_BYTES", defaults.max_image_bytes)),
        help="largest decoded image one instance may declare (rows x columns x frames x samples x bytes) "
             "[WORKER_MAX_IMAGE_BYTES]")
    add("--max-result-bytes", type=int, default=int(_env("WORKER_MAX_RESULT_BYTES", defaults.max_result_bytes)),
        help="largest answer (all binary parts) a model may return [WORKER_MAX_RESULT_BYTES]")
    security.add_flags(parser)
    stow.add_flags(parser)
    return parser


def parse_config(argv: list[str] | None = None) -> WorkerConfig:
    # Imported here: worker.dicom_export imports worker.study, which imports this module.
    from worker.dicom_export.formats import parse_output_formats_flag

    parser = build_parser()
    args = vars(parser.parse_args(argv))
    secure = security.from_args(parser, args)
    stored = stow.from_args(parser, args)
    try:
        args["output_formats"] = tuple(parse_output_formats_flag(args["output_formats"]))
    except ValueError as error:  # one line, not argparse's usage block: the flag is often set by the environment
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    limits = StudyLimits(**{name: args.pop(name) for name in (
        "max_study_bytes", "max_parts", "max_part_bytes", "max_image_bytes", "max_result_bytes")})
    spool_memory_bytes = int(args.pop("spool_memory_mib") * MIB)
    max_study_memory_bytes = int(args.pop("max_study_memory_mib") * MIB)
    return WorkerConfig(**args, spool_memory_bytes=spool_memory_bytes, max_study_memory_bytes=max_study_memory_bytes,
                        limits=limits, security=secure, stow=stored)
