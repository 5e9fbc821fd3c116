"""Small models used only by tests, loaded by real worker processes with --model tests.models:Name."""

from __future__ import annotations

import hashlib
import logging

from mock_model.model import MockModel
from worker import InvalidInput, Model, Result, Study, UnsupportedStudy


class RequestProbe(Model):
    """Reports what reached the model: the request JSON, attachments and instances in order."""

    name = "request_probe"

    def infer(self, study: Study) -> Result:
        return Result(study_ml_json={
            "request": study.request,
            "command": study.command,
            "input_hash": study.input_hash,
            "route": study.route,
            "attachments": [
                {"index": a.index, "name": a.name, "filename": a.filename, "content_type": a.content_type,
                 "sha256": hashlib.sha256(a.read_bytes()).hexdigest()}
                for a in study.attachments
            ],
            "instances": [{"index": i.index, "sop_instance_uid": i.sop_instance_uid, "filename": i.filename}
                          for i in study.instances],
        })


class UnprocessableModel(Model):
    name = "unprocessable"

    def infer(self, study: Study) -> Result:
        raise UnsupportedStudy("this model reads chest X-rays; the study holds CT and MR series")


class TracedModel(Model):
    """A model with its own OpenTelemetry span and log line, as a model author would write them: both must
    belong to the request's trace. The command "fail" raises (HTTP 500)."""

    name = "traced"
    commands = ("trace", "fail")

    def infer(self, study: Study) -> Result:
        from opentelemetry import trace

        with trace.get_tracer("tests.models").start_as_current_span("model.forward") as span:
            span.set_attribute("model.instances", len(study.instances))
            logging.getLogger("tests.models").info("traced model inferring")
            if study.command == "fail":
                raise RuntimeError("the traced model failed on purpose")
        return Result(study_ml_json={"instances": len(study.instances)})


class BatchingTracedModel(Model):
    """A batching model with its own span and log line per batch; waits for two studies (a long delay)."""

    name = "batching_traced"
    max_batch_size = 2
    max_batch_delay = 60.0

    def infer_batch(self, studies: list[Study]) -> list[Result]:
        from opentelemetry import trace

        with trace.get_tracer("tests.models").start_as_current_span("model.forward") as span:
            span.set_attribute("model.studies", len(studies))
            logging.getLogger("tests.models").info("batching model inferring %d studies", len(studies))
        return [Result(study_ml_json={"instances": len(study.instances)}) for study in studies]


class TalkativeModel(MockModel):
    """The mock model, saying everything that identifies its study, as a careless model would: the first
    instance's file name, patient name and ID and UIDs in its own log line, and in the refusal or exception the
    request's "talk" asks for ("refuse", "unsupported", "crash"). The worker must keep all of it out of its log;
    the client may get it back in its answer."""

    name = "talkative"

    def infer(self, study: Study) -> Result:
        first = study.instances[0] if study.instances else None
        said = "" if first is None else (
            f"{first.filename} of {first.header.get('PatientName')} ({first.header.get('PatientID')}), study "
            f"{first.header.get('StudyInstanceUID')}, series {first.series_instance_uid}, image "
            f"{first.sop_instance_uid}")
        logging.getLogger("talkative").info("reading %s", said)
        talk = study.request.get("talk")
        if talk == "refuse":
            raise InvalidInput(f"cannot read {said}")
        if talk == "unsupported":
            raise UnsupportedStudy(f"nothing to find in {said}")
        if talk == "crash":
            raise ValueError(f"crashed on {said}")
        return super().infer(study)


class TalkativeBatchingModel(TalkativeModel):
    """TalkativeModel in batches of two (waiting up to 10 s for the second study), logging every study's
    identifiers in one line per batch."""

    name = "talkative_batching"
    max_batch_size = 2
    max_batch_delay = 10.0

    def infer_batch(self, studies: list[Study]) -> list[Result]:
        logging.getLogger("talkative").info("a batch of %s", "; ".join(
            f"{i.filename} {i.header.get('PatientName')} {i.sop_instance_uid}" for s in studies for i in s.instances))
        return [self.infer(study) for study in studies]
