"""Dynamic batching: studies waiting for a model that defines `infer_batch` run through it together.

A GPU answers eight inputs in little more time than one, so a model may opt in (worker/sdk/model.py, `Model`):
`infer_batch(studies) -> list[Result]` with `max_batch_size` and `max_batch_delay`. As NVIDIA Triton's
dynamic batcher does, the worker then gathers the studies that have fully arrived and wait for the model,
and starts a batch when `max_batch_size` of them wait or when the first has waited `max_batch_delay`
seconds, whichever comes first; while every model thread is busy the studies accumulate, and the next batch
starts as soon as a thread is free. At most `--concurrency` batches run at once.

Each study keeps its own call: its deadline, cancellation, input hash, log tags, trace span, result checks
and error stay with it (worker/serving/servicer.py hands the study in and gets its own answer back, through a
`concurrent.futures.Future` that behaves like the one a thread pool gives for `infer`). So:

- a study whose caller has gone before its batch starts is dropped from the batch (its future is
  cancelled); once its batch has started it runs to the end with the others and counts as an overrun;
- `infer_batch` answers with one item per study, in order: a `Result`, or an exception instance for a
  study that fails (`InvalidInput(...)`, `UnsupportedStudy(...)`, any exception), which fails that study
  alone. Should `infer_batch` raise instead, the worker cannot tell which study it was about, so it runs
  each study of that batch again on its own: the study that raises fails alone, the others get their
  answers (slower; a WARNING says so);
- an answer list of the wrong length is the model's mistake: every study of that batch fails with a
  message saying so (HTTP 500), and the worker keeps serving.

Everything but the model call runs on the worker's event loop, so no lock is needed. The admission
(worker/serving/admission.py) gives a batching model `(concurrency + 1) x max_batch_size` places in the model
(`model_places`): a batch per model thread, and the next batch gathering while they run, so that a thread
that frees finds it ready. With one batch's places only, the next batch gathered after the model had
finished: 3.8x the requests per second of no batching instead of 4.8x (BENCHMARKS.md, "Batching").
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from service_runtime.logs import StudyNames, current_study_names, current_tags, set_tags, use_study_names
from worker.sdk.model import Model
from worker.sdk.study import Study
from worker.serving.metrics import WorkerMetrics
from worker.serving.tracing import batch_span

log = logging.getLogger("worker.batching")


class BatchAnswerError(Exception):
    """`infer_batch` did not answer one item per study: a mistake of the model, reported for every study."""


def batching(model: Model) -> bool:
    return callable(getattr(model, "infer_batch", None))


def batcher_for(model: Model, concurrency: int, model_threads: ThreadPoolExecutor,
                metrics: WorkerMetrics) -> Batcher | None:
    """The model's Batcher, None for a model without `infer_batch`. The batch series of the metrics are made
    (at 0) for every model, as the stage timers are: dashboards and alerts see them before any batch."""
    name = model.describe_name()
    for histogram in (metrics.batch_size, metrics.batch_fill_seconds, metrics.batch_model_seconds):
        histogram.labels(name)
    return Batcher(model, concurrency, model_threads, metrics) if batching(model) else None


def model_places(model: Model, concurrency: int) -> int:
    """Studies that may hold a place in the model at once: for a batching model, a batch per model thread and
    the next batch, gathering."""
    return (concurrency + 1) * batch_settings(model)[0] if batching(model) else concurrency


def batch_settings(model: Model) -> tuple[int, float]:
    """(max_batch_size, max_batch_delay), checked: a wrong value stops the worker with one clear message."""
    size, delay = getattr(model, "max_batch_size", None), getattr(model, "max_batch_delay", None)
    name = model.describe_name()
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"model {name}: max_batch_size must be an integer of at least 1, got {size!r}")
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 60:
        raise ValueError(f"model {name}: max_batch_delay must be a number of seconds from 0 to 60, got {delay!r}")
    return size, float(delay)


@dataclass(eq=False)
class _Waiting:
    study: Study
    future: concurrent.futures.Future
    context: contextvars.Context  # the call's, as copied for the model: its log tags and current span
    since: float


class Batcher:
    """Gathers studies into batches and runs them on the model's threads. Driven by three events, all on
    the event loop: a study arrives, a model thread becomes free, the oldest study's delay runs out."""

    def __init__(self, model: Model, concurrency: int, model_threads: ThreadPoolExecutor,
                 metrics: WorkerMetrics) -> None:
        self.infer_batch = model.infer_batch
        self.max_size, self.max_delay = batch_settings(model)
        self.model_threads = model_threads
        self.free_threads = concurrency
        name = model.describe_name()
        self.sizes = metrics.batch_size.labels(name)
        self.fill_seconds = metrics.batch_fill_seconds.labels(name)
        self.model_seconds = metrics.batch_model_seconds.labels(name)
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._filling_since: float | None = None  # a thread is free and studies wait for more to come
        self._timer: asyncio.TimerHandle | None = None

    # --------------------------------------------------------------------------- on the event loop

    def submit(self, study: Study, context: contextvars.Context) -> concurrent.futures.Future:
        """Queues a study that has arrived; the future ends with its Result or its own exception. Cancelling
        the future before its batch starts drops the study from the batch."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._waiting.append(_Waiting(study, future, context, time.monotonic()))
        self._schedule()
        return future

    def _schedule(self) -> None:
        """Starts every batch that is due: full, or its first study has waited max_delay (at once when it
        waited for a busy model); otherwise makes sure a timer comes back when the delay runs out."""
        while self.free_threads > 0:
            if not self._live():
                self._filling_since = None
                return
            now = time.monotonic()
            due = self._waiting[0].since + self.max_delay  # _live() left a live study first
            if self._live() < self.max_size and now < due:
                if self._filling_since is None:
                    self._filling_since = now
                if self._timer is None:
                    self._timer = asyncio.get_running_loop().call_later(due - now, self._delay_over)
                return
            self._start(now)

    def _delay_over(self) -> None:
        self._timer = None
        self._schedule()

    def _start(self, now: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        filling_since, self._filling_since = self._filling_since, None
        batch = self._take()
        if not batch:
            return  # every study taken had lost its caller
        self.fill_seconds.observe(now - filling_since if filling_since is not None else 0.0)
        self.sizes.observe(len(batch))
        self.free_threads -= 1
        loop = asyncio.get_running_loop()
        self.model_threads.submit(self._run, batch).add_done_callback(lambda _done: _call_soon(loop, self._thread_free))

    def _thread_free(self) -> None:
        self.free_threads += 1
        self._schedule()

    def _live(self) -> int:
        """Studies waiting whose caller has not cancelled; the ones cancelled at the head are let go."""
        while self._waiting and self._waiting[0].future.cancelled():
            self._waiting.popleft()
        return sum(not w.future.cancelled() for w in self._waiting)

    def _take(self) -> list[_Waiting]:
        """Up to max_size studies, oldest first, each marked running. A study whose caller has gone is
        dropped: its future is cancelled, and its call ends without the model having seen it."""
        batch: list[_Waiting] = []
        while self._waiting and len(batch) < self.max_size:
            waiting = self._waiting.popleft()
            if waiting.study.is_cancelled():
                waiting.future.cancel()
            if waiting.future.set_running_or_notify_cancel():
                batch.append(waiting)
        return batch

    # --------------------------------------------------------------------------- on a model thread

    def _run(self, batch: list[_Waiting]) -> None:
        started = time.monotonic()
        try:
            # A context of its own: nothing of the thread's previous batch, nothing of the loop's.
            answers = contextvars.Context().run(self._in_batch_context, batch)
        except BaseException as error:  # never leave a caller waiting, whatever happened
            answers = [error] * len(batch)
        self.model_seconds.observe(time.monotonic() - started)
        for waiting, answer in zip(batch, answers, strict=True):
            if isinstance(answer, BaseException):
                waiting.future.set_exception(answer)
            else:
                waiting.future.set_result(answer)

    def _in_batch_context(self, batch: list[_Waiting]) -> list:
        """Log lines the model writes carry every input hash, request id and trace id of the batch,
        comma-separated (each is about all of them); with tracing on, the batch's span is current."""
        tags = [w.context.run(current_tags) for w in batch]
        set_tags(**{name: ",".join(dict.fromkeys(t[name] for t in tags if t.get(name)))
                    for name in ("input_hash", "request_id", "trace_id")})
        # And none of their studies' identifiers (worker/serving/identifiers.py).
        use_study_names(StudyNames.joined(w.context.run(current_study_names) for w in batch))
        with batch_span([w.context for w in batch]):
            return self._answers([w.study for w in batch])

    def _answers(self, studies: list[Study]) -> list:
        """One answer (a Result or an exception) per study, in order."""
        try:
            answers = self.infer_batch(list(studies))
        except Exception as error:
            if len(studies) == 1:
                return [error]
            log.warning("infer_batch raised %s for a batch of %d studies; running each of them again on its own "
                        "so that only the study concerned fails (return an exception in that study's place "
                        "instead: docs/model-authors.md, Batching)", type(error).__name__, len(studies))
            return [error if study.is_cancelled() else self._answers([study])[0] for study in studies]
        if not isinstance(answers, (list, tuple)) or len(answers) != len(studies):
            got = f"{len(answers)} answers" if isinstance(answers, (list, tuple)) else type(answers).__name__
            return [BatchAnswerError(f"infer_batch() returned {got} for a batch of {len(studies)} studies; it must "
                                     "return a list with one Result (or exception) per study, in the order given")
                    for _ in studies]
        return list(answers)


def _call_soon(loop: asyncio.AbstractEventLoop, callback) -> None:
    """From a model thread: `callback` on the event loop, unless the worker stopped while the batch ran."""
    try:
        loop.call_soon_threadsafe(callback)
    except RuntimeError:  # the loop is closed: nobody is left to serve
        pass
