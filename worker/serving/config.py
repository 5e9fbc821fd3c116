"""The worker's settings: one typed tree, from which `python -m worker`'s flags, its WORKER_* variables and
its `--help` come (service_runtime/settings.py); each flag's help names its variable in brackets."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from contract import limits as contract_limits
from dicom_geometry.acceptance import DEFAULT_MAX_IMAGE_BYTES
from service_runtime import settings
from service_runtime.settings import setting
from worker.serving import security, stow

MIB = 1 << 20
# A bridge resolves its DNS target again only when a connection ends (gRPC does not poll DNS): ending every
# connection this often gets a new replica its first calls within about this long plus the DNS TTL. Calls
# in flight finish on the old connection (grpc.max_connection_age_grace_ms); a reconnection costs a few ms.
MAX_CONNECTION_AGE_SECONDS = 15.0
ENV_PREFIX = "WORKER_"


def _output_formats(text: str) -> tuple[str, ...]:
    from worker.serving.dicom_export.formats import parse_output_formats_flag

    return tuple(parse_output_formats_flag(text))


def _mib(size: int) -> float:
    return size / MIB


def _bytes(mib: float) -> int:
    return int(mib * MIB)


@dataclass(frozen=True)
class StudyLimits:
    """What one request may hold; the same limits as the bridge's, enforced again for direct gRPC callers."""

    max_study_bytes: int = setting(contract_limits.MAX_STUDY_BYTES, "largest study (all parts)")
    max_parts: int = setting(contract_limits.MAX_PARTS, "most parts in one request")
    max_part_bytes: int = setting(contract_limits.MAX_PART_BYTES, "largest single part")
    max_json_bytes: int = contract_limits.MAX_JSON_BYTES
    # Decoded size one instance may declare (rows x columns x frames x samples x bits): checked against the
    # pixel data that came, so that a few bytes cannot make a model allocate gigabytes.
    max_image_bytes: int = setting(DEFAULT_MAX_IMAGE_BYTES, "largest decoded image one instance may declare (rows x "
                                                            "columns x frames x samples x bytes)")
    max_result_bytes: int = setting(4 << 30, "largest answer (all binary parts) a model may return")
    max_command_length: int = contract_limits.MAX_COMMAND_LENGTH


@dataclass(frozen=True)
class WorkerConfig:
    model: str = setting(None, "package.module:Name, or a package exposing one Model; Name may also be an Arterys "
                               "handler function, hosted as a legacy handler", required=True)
    # Searched for --model's module before the installed packages.
    model_dir: str = setting(".", "folder searched for --model's module before the installed packages (as "
                                  "uvicorn's --app-dir)")
    # Restart the worker when the model's source changes (development).
    reload: bool = setting(False, "development: restart the worker when a source file of the model (or under "
                                  "--model-dir) changes", switch="both", env_note="[WORKER_RELOAD=1]")
    listen: str = setting("127.0.0.1:50051", "gRPC address HOST:PORT (port 0 picks a free one)")
    metrics_listen: str = setting("", "Prometheus /metrics address HOST:PORT; empty disables")
    concurrency: int = setting(1, "inferences run at once (models are rarely thread-safe)")
    queue_size: int = setting(32, "calls whose study has arrived that may wait for the model beyond the running "
                                  "ones; when they are all taken new calls are refused at once, so the bridge can "
                                  "try another worker")
    # 0: bounded by the memory budget alone (worker/serving/admission.py).
    max_receiving: int = setting(0, "at most this many calls receiving their study at once; 0: as many as the "
                                    "memory budget allows for (1/8 of --max-study-memory-mib, 64 KiB each: 1,024 "
                                    "by default); what they hold is bounded by --max-study-memory-mib and "
                                    "--max-spool-bytes")
    default_command: str = setting("", "inference_command used when a request names none (overrides the model's)")
    # Answer formats when a request names none.
    output_formats: tuple[str, ...] = setting(
        ("arterys",), "answer formats when a request's JSON names no \"output_formats\", comma-separated: arterys "
                      "(the protocol's masks), dicom (DICOM SEG + SR, docs/dicom-outputs.md)",
        parse=str, shown=",".join, to_value=_output_formats)
    study_root: str = setting("", "folder under which studyPath requests may read; empty refuses them")
    spool_dir: str = setting("", "where incoming studies beyond --spool-memory-mib are written; empty: the "
                                 "system's temporary folder")
    spool_memory_bytes: int = setting(
        16 * MIB, "study bytes per call kept in memory before the rest goes to --spool-dir (a ported Arterys "
                  "handler reads every instance into memory anyway, so its studies stay in memory)",
        flag="--spool-memory-mib", parse=float, shown=_mib, to_value=_bytes)
    max_study_memory_bytes: int = setting(
        512 * MIB, "study bytes all calls together keep in memory; beyond it their parts go to the spool",
        flag="--max-study-memory-mib", parse=float, shown=_mib, to_value=_bytes)
    # 0: 90% of the spool file system's free space at start (worker/serving/spool.py).
    max_spool_bytes: int = setting(0, "bytes all calls together may write to --spool-dir; when it is full new "
                                      "calls are refused and a call that needs more is ended (503 spool_full at "
                                      "the bridge). 0: 90%% of the space free on its file system when the worker "
                                      "starts")
    idle_timeout_seconds: float = setting(30.0, "a request stream that sends nothing for this long is ended")
    min_receive_rate: int = setting(contract_limits.MIN_UPLOAD_RATE, "bytes per second a request stream must send "
                                    "while its study arrives, over each --receive-window-seconds of waiting, less "
                                    "one 1 MiB chunk (the bridge's lag); slower streams are ended. The bridge's "
                                    "--min-upload-rate; 0 disables")
    receive_window_seconds: float = setting(contract_limits.RATE_WINDOW_SECONDS, "the window of --min-receive-rate "
                                            "(the bridge's --body-timeout)")
    grace_seconds: float = setting(30.0, "on SIGTERM, how long in-flight inferences may take to finish")
    max_connection_age_seconds: float = setting(MAX_CONNECTION_AGE_SECONDS, "connections are recycled after this, "
                                                "so bridges find new replicas")
    max_message_bytes: int = contract_limits.MESSAGE_BYTES
    limits: StudyLimits = field(default_factory=StudyLimits)
    security: security.WorkerSecurity = field(default_factory=security.WorkerSecurity)
    stow: stow.StowConfig = field(default_factory=stow.StowConfig)  # the PACS the DICOM outputs go to


def build_parser() -> argparse.ArgumentParser:
    return settings.build_parser(
        WorkerConfig, ENV_PREFIX, prog=settings.program_name("arterys-worker", "worker"),
        description="Hosts one model behind the Inference gRPC service, with health, reflection and metrics. "
                    "Every flag can also be set by the environment variable named in brackets.")


def parse_config(argv: list[str] | None = None) -> WorkerConfig:
    parser = build_parser()
    config = settings.read(WorkerConfig, parser, argv)
    security.check(parser, config.security)
    stow.check(parser, config.stow)
    return config
