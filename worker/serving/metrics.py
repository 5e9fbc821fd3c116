"""The worker's Prometheus metrics, defined in one place (names and labels: README, "Metrics and logs").

Each WorkerMetrics owns its registry, so tests run several workers in one process without clashes.
Labels never carry UIDs; unknown inference commands are folded into "unknown" to bound cardinality, and
calls refused before their header was read (model loading, worker busy) are labelled "unread"; a model
that declares no commands gets labels for the first 20 commands it sees and "other" after.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STAGES = ("receive", "queue", "infer", "check", "send")
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
# Waiting to fill a batch is bounded by the model's max_batch_delay: milliseconds, finer than the stages.
FILL_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.inferences = Counter(
            "worker_inferences", "Inference calls by outcome.", ["model", "command", "outcome"], registry=r
        )
        self.duration = Histogram(
            "worker_inference_duration_seconds", "Time spent per stage of an inference call.",
            ["model", "stage"], buckets=DURATION_BUCKETS, registry=r,
        )
        self.inflight = Gauge("worker_inflight_inferences", "Inferences running in the model now.", registry=r)
        self.queue_depth = Gauge(
            "worker_queue_depth", "Calls whose study has arrived, waiting for an inference slot.", registry=r
        )
        self.receiving = Gauge("worker_receiving_calls", "Admitted calls still receiving their study.", registry=r)
        self.parked = Gauge("worker_parked_calls", "Calls not admitted yet, waiting for a place (their header asked "
                            "to wait: admission_wait_ms).", registry=r)
        self.study_memory = Gauge("worker_study_memory_bytes", "Study bytes calls keep in memory now.", registry=r)
        self.spool_bytes = Gauge("worker_spool_bytes", "Study bytes calls keep in the spool folder now.", registry=r)
        self.model_loaded = Gauge("worker_model_loaded", "1 once the model's load() has returned.", registry=r)
        self.received_bytes = Counter("worker_received_bytes", "Study bytes received.", registry=r)
        self.sent_bytes = Counter("worker_sent_bytes", "Binary result bytes sent.", registry=r)
        self.stow_requests = Counter(
            "worker_stow_requests", "Answers whose DICOM objects were sent to the PACS (STOW-RS), by outcome: "
            "stored, failed (after retries), dropped (too many waiting).", ["outcome"], registry=r,
        )
        for outcome in ("stored", "failed", "dropped"):
            self.stow_requests.labels(outcome)  # every series starts at 0, so rate() sees the first failure
        self.stow_attempts = Counter(
            "worker_stow_attempts", "STOW-RS requests sent, by HTTP status ('error': no answer).", ["status"],
            registry=r,
        )
        # Batching models only (worker/serving/batching.py); every model's series exist at 0.
        self.batch_size = Histogram(
            "worker_batch_size", "Studies per batch given to a model's infer_batch().", ["model"],
            buckets=BATCH_SIZE_BUCKETS, registry=r,
        )
        self.batch_fill_seconds = Histogram(
            "worker_batch_fill_seconds", "Time a batch waited for more studies once a model thread was free "
            "(at most the model's max_batch_delay).", ["model"], buckets=FILL_BUCKETS, registry=r,
        )
        self.batch_model_seconds = Histogram(
            "worker_batch_model_seconds", "Time infer_batch() took per batch.", ["model"],
            buckets=DURATION_BUCKETS, registry=r,
        )
        self.overruns = Counter(
            "worker_model_overruns", "Inferences that returned after their call had ended (cancelled or past its "
            "deadline): the model kept its slot meanwhile.", ["model"], registry=r,
        )

    def start_inferences(self, model: str, commands, outcomes) -> None:
        """Creates every command x outcome series of worker_inferences_total at 0: a series that first appears
        at 1 shows no increase to rate(), so the first failure of a kind would go unseen (dashboards and the
        failure-ratio rule alike)."""
        for command in commands:
            for outcome in outcomes:
                self.inferences.labels(model, command, outcome)
