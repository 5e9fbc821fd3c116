"""Request messages bundled in one gRPC message (`InferRequest.bundle`): the bytes contract/wire.py writes and
reads, a real worker answering any bundling of a stream exactly as the messages one by one, and a real bridge
bundling only for a worker that says it reads bundles, seen through a recording proxy between the two. A
small study's whole stream in one InferWhole call: the worker reads it as Infer reads the same messages; the
bridge sends it so, and falls back to Infer for a worker that predates the method."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
import tracemalloc
from concurrent import futures

import grpc
import pytest
import requests
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bridge import channel as bridge_channel
from bridge.config import BridgeConfig
from bridge.inference import SMALL_STUDY_BYTES
from bridge.server import create_server
from contract import inference_pb2 as pb
from contract import metadata, wire
from contract.limits import BUNDLE_MESSAGES, stream_options
from mock_model import MockModel
from tests import http_helpers as http
from tests import services
from tests.conftest import start_worker
from tests.services import free_port, wait_for
from tests.test_hostile_clients import metric
from tests.worker_client import collect, dicom_parts, request_messages, stub_for
from worker.serving.admission import RECEIVING_CALL_BYTES
from worker.serving.receive import unbundled
from worker.serving.server import SERVICE_NAME

HEADER = pb.InferRequest(header=pb.RequestHeader(request_json=b'{"inference_command": "bbox"}', request_id="t"))
PART = pb.InferRequest(part=pb.PartHeader(kind=pb.PART_KIND_DICOM, content_type="application/dicom"))
END = pb.InferRequest(end=pb.RequestEnd(part_count=1))
COMMAND = {"inference_command": "get-bounding-box-2d"}


def generated(*messages: pb.InferRequest) -> bytes:
    return pb.InferRequest(bundle=pb.RequestBundle(messages=messages)).SerializeToString()


# --------------------------------------------------------------------------------------------- the bytes


def test_a_bundle_is_written_byte_for_byte_as_the_generated_classes_write_it():
    pieces = [b"abc", memoryview(b"defg"), bytearray(b"h")]
    written = wire.request_message([HEADER, PART, wire.Chunk(pieces), END])
    assert written == generated(HEADER, PART, pb.InferRequest(chunk=b"abcdefgh"), END)
    assert wire.request_message([wire.Chunk(pieces)]) == pb.InferRequest(chunk=b"abcdefgh").SerializeToString()
    assert wire.request_message([PART]) == PART.SerializeToString()  # one message goes as itself
    assert wire.request_chunk(pieces) == pb.InferRequest(chunk=b"abcdefgh").SerializeToString()


def test_a_bundle_reads_back_into_its_messages_with_chunks_as_views():
    big = bytes(range(256)) * 5000  # a length of three varint bytes
    read = wire.parse_request(generated(HEADER, PART, pb.InferRequest(chunk=big), pb.InferRequest(chunk=b""), END))
    assert type(read) is list and len(read) == 5
    assert read[0] == HEADER and read[1] == PART and read[4] == END
    assert type(read[2]) is memoryview and read[2] == big
    assert read[3] == b""  # an empty chunk is written as the field alone: still a view, of nothing


@pytest.mark.parametrize("raw", [
    generated(HEADER, END) + b"\x10\x01",  # a field the fast path does not know, after the bundle
    pb.InferRequest(bundle=pb.RequestBundle(messages=[HEADER, END])).SerializeToString()[:-1],  # cut short
    b"\x2a\x05\x0a\x10\x01\x02\x03",  # an inner length past the end
])
def test_a_bundle_not_in_the_exact_layout_is_left_to_protobuf(raw):
    try:
        expected = pb.InferRequest.FromString(raw)
    except DecodeError:  # what protobuf cannot read is refused when read, never raised by the deserializer
        with pytest.raises(wire.Unreadable, match="not a valid InferRequest"):
            list(wire.unbundle(wire.parse_request(raw)))
    else:
        assert wire.parse_request(raw) == expected


def test_a_bundle_holds_at_most_bundle_messages_however_it_is_laid_out():
    full = [pb.InferRequest(chunk=b"")] * BUNDLE_MESSAGES
    read = wire.parse_request(generated(*full))
    assert type(read) is list and len(list(wire.unbundle(read))) == BUNDLE_MESSAGES
    for raw in (generated(*full, END), generated(*full, END) + b"\x10\x01"):  # exact layout; protobuf's
        with pytest.raises(wire.OverfullBundle, match=f"more than {BUNDLE_MESSAGES} messages"):
            list(wire.unbundle(wire.parse_request(raw)))
    answer = pb.InferResponse(bundle=pb.ResponseBundle(messages=[pb.InferResponse(binary=pb.BinaryChunk(data=b"x"))]
                                                       * (BUNDLE_MESSAGES + 1))).SerializeToString()
    with pytest.raises(wire.OverfullBundle):
        list(wire.unbundle(wire.parse_response(answer)))


def test_senders_start_another_bundle_past_bundle_messages():
    messages = list(range(2 * BUNDLE_MESSAGES + 1))
    assert [len(group) for group in wire.bundles_of(messages)] == [BUNDLE_MESSAGES, BUNDLE_MESSAGES, 1]
    assert list(wire.bundles_of([])) == []


def test_an_answers_bundle_is_written_as_the_generated_classes_write_it_and_read_back_as_views():
    pieces = [(0, b"abc"), (1, memoryview(b"defg")), (2, b""), (300, b"h" * 70_000)]
    written = wire.response_binaries(pieces)
    assert written == pb.InferResponse(bundle=pb.ResponseBundle(messages=[
        pb.InferResponse(binary=pb.BinaryChunk(part_index=i, data=bytes(d))) for i, d in pieces])).SerializeToString()
    read = wire.parse_response(written)
    assert [type(m) for m in read] == [wire.Binary, wire.Binary, pb.InferResponse, wire.Binary]  # empty: protobuf
    chunks = [m if isinstance(m, wire.Binary) else m.binary for m in read]
    assert [(m.part_index, bytes(m.data)) for m in chunks] == [(i, bytes(d)) for i, d in pieces]
    assert wire.response_binaries(pieces[3:]) == wire.response_binary(300, b"h" * 70_000)


# ------------------------------------------------------------------------------------------- the worker


def test_a_bundle_the_worker_has_read_keeps_none_of_its_messages():
    """gRPC keeps the last message it read until the call's objects are collected: had the bundle kept its
    chunks, a worker serving small studies at 8 clients went from 90 to 150 MB."""
    raw_bundle = wire.parse_request(generated(PART, pb.InferRequest(chunk=b"x" * 100_000), END))
    protobuf_bundle = pb.InferRequest.FromString(generated(PART, pb.InferRequest(chunk=b"y" * 100_000), END))
    held = [raw_bundle, protobuf_bundle]  # what gRPC's receiver holds

    async def stream():
        for message in held:
            yield message

    async def read_all():
        return [m async for m in unbundled(stream())]

    read = asyncio.run(read_all())
    assert [("chunk", bytes(m)) if type(m) is memoryview else (m.WhichOneof("message"), m.chunk) for m in read] == [
        ("part", b""), ("chunk", b"x" * 100_000), ("end", b""), ("part", b""), ("chunk", b"y" * 100_000), ("end", b"")]
    assert raw_bundle == [] and not protobuf_bundle.HasField("bundle")


@pytest.fixture(scope="module")
def worker():
    server = start_worker(MockModel(), model="mock_model")
    yield server
    server.stop(0)


def bundled(messages: list[pb.InferRequest], sizes: list[int]) -> list[bytes]:
    """The stream's messages in consecutive bundles of `sizes` (cycled), serialised by the generated classes."""
    out, at, turn = [], 0, 0
    while at < len(messages):
        size = sizes[turn % len(sizes)]
        group = messages[at:at + size]
        out.append(group[0].SerializeToString() if len(group) == 1 else generated(*group))
        at, turn = at + size, turn + 1
    return out


def raw_call(port: int, raw_messages: list[bytes], timeout: float = 60, call_metadata=()):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=stream_options())
    call = channel.stream_stream(wire.INFER_METHOD, request_serializer=None,
                                 response_deserializer=pb.InferResponse.FromString)
    try:
        return collect(call(iter(raw_messages), timeout=timeout, metadata=call_metadata))
    finally:
        channel.close()


def raw_answer(port: int, raw_messages: list[bytes], call_metadata=()) -> list[bytes]:
    """The answer's gRPC messages as sent."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=stream_options())
    try:
        call = channel.stream_stream(wire.INFER_METHOD, request_serializer=None, response_deserializer=None)
        return list(call(iter(raw_messages), timeout=60, metadata=call_metadata))
    finally:
        channel.close()


def opened(answer: list[bytes]):
    """The answer's result and its (part index, bytes) chunks, bundles opened."""
    result, chunks = None, []
    for raw in answer:
        read = wire.parse_response(raw)
        for message in read if type(read) is list else [read]:
            if isinstance(message, wire.Binary):
                chunks.append((message.part_index, bytes(message.data)))
            elif message.WhichOneof("message") == "result":
                result = message.result
    return result, chunks


def test_a_caller_that_reads_bundles_gets_small_masks_in_fewer_messages_and_the_same_answer(worker, standard_sent):
    parts = dicom_parts([i.path for i in standard_sent])
    stream = [m.SerializeToString() for m in request_messages({"inference_command": "get-probability-mask-2d"},
                                                              parts)]
    alone = raw_answer(worker.port, stream)
    together = raw_answer(worker.port, stream, ((metadata.READS_BUNDLES, metadata.YES),))
    masks = len(opened(alone)[0].parts)
    assert masks > len(parts) / 2
    assert len(alone) == 1 + masks  # the result, then one chunk per mask
    assert len(together) == 2  # the result, then every mask in one bundle
    assert pb.InferResponse.FromString(together[0]).WhichOneof("message") == "result"
    assert opened(together) == opened(alone)


@pytest.mark.parametrize("sizes", [[1000], [2], [3, 1], [1, 4]], ids=["all-in-one", "pairs", "threes", "late"])
def test_the_worker_answers_any_bundling_exactly_as_the_messages_one_by_one(worker, standard_sent, sizes):
    parts = dicom_parts([i.path for i in standard_sent[:4]])
    messages = list(request_messages({"inference_command": "get-probability-mask"}, parts, chunk=20_000))
    alone = collect(stub_for(worker.port).Infer(iter(messages), timeout=60))
    together = raw_call(worker.port, bundled(messages, sizes))
    assert together.result == alone.result  # the input hash included: every byte arrived, in order
    assert together.binaries == alone.binaries


def test_a_whole_call_is_answered_exactly_as_its_messages_streamed(worker, standard_sent):
    parts = dicom_parts([i.path for i in standard_sent[:4]])
    messages = list(request_messages({"inference_command": "get-probability-mask"}, parts, chunk=20_000))
    alone = collect(stub_for(worker.port).Infer(iter(messages), timeout=60))
    whole = collect(stub_for(worker.port).InferWhole(pb.InferRequest(bundle=pb.RequestBundle(messages=messages)),
                                                     timeout=60))
    assert whole.result == alone.result  # the input hash included: every byte arrived, in order
    assert whole.binaries == alone.binaries and whole.binaries


@pytest.mark.parametrize("method", [wire.INFER_METHOD, wire.INFER_WHOLE_METHOD])
def test_bytes_that_are_no_request_message_are_invalid_argument_and_the_worker_keeps_serving(worker, standard_sent,
                                                                                           method):
    garbage = b"\xff\xff\xff\xff garbage"
    channel = grpc.insecure_channel(f"127.0.0.1:{worker.port}", options=stream_options())
    try:
        if method == wire.INFER_METHOD:
            call = channel.stream_stream(method, request_serializer=None)(iter([garbage]), timeout=30)
        else:
            call = channel.unary_stream(method, request_serializer=None)(garbage, timeout=30)
        with pytest.raises(grpc.RpcError) as refused:
            list(call)
    finally:
        channel.close()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid InferRequest" in refused.value.details()
    parts = dicom_parts([standard_sent[0].path])
    request = pb.InferRequest(bundle=pb.RequestBundle(messages=list(request_messages({}, parts))))
    assert collect(stub_for(worker.port).InferWhole(request, timeout=60)).result.input_hash


@pytest.mark.parametrize(("request_message", "status", "needle"), [
    (pb.InferRequest(bundle=pb.RequestBundle(messages=[HEADER, PART, pb.InferRequest(chunk=b"DICM")])),
     grpc.StatusCode.INVALID_ARGUMENT, "ended without an end message"),
    (HEADER, grpc.StatusCode.INVALID_ARGUMENT, "ended without an end message"),  # not a bundle: the header alone
    (PART, grpc.StatusCode.INVALID_ARGUMENT, "must start with a header"),
    (pb.InferRequest(chunk=b"DICM"), grpc.StatusCode.INVALID_ARGUMENT, "must start with a header"),  # read as a view
], ids=["no-end", "header-alone", "no-header", "chunk-alone"])
def test_a_whole_call_that_is_not_a_whole_stream_is_refused_and_the_worker_keeps_serving(
        worker, standard_sent, request_message, status, needle):
    with pytest.raises(grpc.RpcError) as refused:
        collect(stub_for(worker.port).InferWhole(request_message, timeout=60))
    assert refused.value.code() == status
    assert needle in refused.value.details()
    parts = dicom_parts([standard_sent[0].path])
    request = pb.InferRequest(bundle=pb.RequestBundle(messages=list(request_messages({}, parts))))
    assert collect(stub_for(worker.port).InferWhole(request, timeout=60)).result.input_hash


PARKING = pb.InferRequest(header=pb.RequestHeader(request_json=b"{}", request_id="parked", admission_wait_ms=60_000))


@contextlib.contextmanager
def full_worker_with_three_places(tmp_path, standard_sent):
    """A worker process whose one model slot is taken and whose calls receiving or parked are bounded at 3
    (--max-receiving): yields its stub and its metrics port."""
    metrics_port = free_port()
    worker = services.start_worker(tmp_path, "mock_model.faults:SlowModel", "--concurrency", "1", "--queue-size", "0",
                                   "--max-receiving", "3", "--idle-timeout-seconds", "5",
                                   "--metrics-listen", f"127.0.0.1:{metrics_port}", env={"MOCK_INFER_SECONDS": "120"})
    stub = stub_for(worker.port)
    occupying = stub.Infer(request_messages({}, dicom_parts([standard_sent[0].path])), timeout=120)
    try:
        wait_for(lambda: metric(metrics_port, "worker_inflight_inferences") == 1, 20, "the model slot taken",
                 service=worker)
        yield stub, metrics_port
    finally:
        occupying.cancel()
        worker.stop()


def test_a_parked_whole_call_counts_its_part_headers_bytes_too(tmp_path, standard_sent):
    """A whole call keeps all of its one message while it is parked: a part header as long as its sender makes it
    (here a file name of 3 x 64 KiB) counts as chunk bytes do, so that the parking bound stays one of memory.
    With --max-receiving 3 such a call (one call and three more for its bytes) cannot park: it is refused at
    once, saying so; counted as a call alone, it would park until its wait ends."""
    with full_worker_with_three_places(tmp_path, standard_sent) as (stub, metrics_port):
        named = pb.InferRequest(part=pb.PartHeader(kind=pb.PART_KIND_DICOM, content_type="application/dicom",
                                                   filename="f" * (3 * RECEIVING_CALL_BYTES - 2_000)))
        with pytest.raises(grpc.RpcError) as refused:
            collect(stub.InferWhole(pb.InferRequest(bundle=pb.RequestBundle(messages=[PARKING, named, END])),
                                    timeout=60))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "this call's study would count as 3 more" in refused.value.details(), refused.value.details()
        assert metric(metrics_port, "worker_parked_calls") == 0


@pytest.mark.parametrize(("empties", "status"), [
    (60_000, grpc.StatusCode.RESOURCE_EXHAUSTED),  # counted for what its messages hold: more than 3 places' worth
    (200_000, grpc.StatusCode.INVALID_ARGUMENT),  # past the contract's messages per bundle: refused as it is read
])
def test_a_whole_call_of_countless_empty_messages_counts_for_what_it_holds(tmp_path, standard_sent, empties, status):
    """Found in review: a bundle's messages are each read into a Python object (a view, an InferRequest) of a
    few hundred bytes, however few bytes each is on the wire (1,000,000 empty chunks, 4 MB sent: +320 MB of the
    worker's RSS; a 16 MiB bundle of them kept its event loop busy for 10 s). Parked, such a call counted for
    its data bytes, none, so --max-receiving (a bound of memory) let ~1,000 of them hold tens of GB. Now each
    message counts MESSAGE_OBJECT_BYTES, and a bundle may hold BUNDLE_MESSAGES at most: with --max-receiving
    3, neither call parks."""
    assert (empties < BUNDLE_MESSAGES) == (status == grpc.StatusCode.RESOURCE_EXHAUSTED)
    with full_worker_with_three_places(tmp_path, standard_sent) as (stub, metrics_port):
        chunks = [pb.InferRequest(chunk=b"")] * empties
        call = stub.InferWhole(pb.InferRequest(bundle=pb.RequestBundle(messages=[PARKING, *chunks, END])), timeout=60)
        wait_for(lambda: call.done() or metric(metrics_port, "worker_parked_calls") >= 1, 30,
                 "the call refused or parked")
        assert metric(metrics_port, "worker_parked_calls") == 0, "parked, counted as holding nothing"
        with pytest.raises(grpc.RpcError) as refused:
            collect(call)
        assert refused.value.code() == status, refused.value.details()
        if status == grpc.StatusCode.INVALID_ARGUMENT:
            assert f"a bundle holds more than {BUNDLE_MESSAGES} messages" in refused.value.details()


@pytest.mark.parametrize(("stream", "needle"), [
    ([HEADER.SerializeToString(), generated(PART, pb.InferRequest(bundle=pb.RequestBundle(messages=[END])))],
     "a bundle holds another bundle"),
    ([generated(pb.InferRequest(chunk=b"DICM"), HEADER)], "must start with a header"),
])
def test_a_misshapen_bundle_is_invalid_argument_and_the_worker_keeps_serving(worker, standard_sent, stream, needle):
    with pytest.raises(grpc.RpcError) as refused:
        raw_call(worker.port, stream)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in refused.value.details()
    parts = dicom_parts([standard_sent[0].path])
    assert collect(stub_for(worker.port).Infer(request_messages({}, parts), timeout=60)).result.input_hash


# ------------------------------------------------------------------------------- the bridge, through a proxy


class RecordingProxy:
    """A gRPC proxy in front of a worker that keeps every request message of every Infer and InferWhole call as
    sent (raw bytes; `methods` says which each was). As a worker that predates InferWhole (`whole_calls`
    False) it answers those UNIMPLEMENTED, as gRPC does for a method it does not have, and counts them
    (`unimplemented`); it can also hide the worker's `reads-bundles` from the caller (a worker that predates
    bundles)."""

    def __init__(self, target: str, hide_bundles: bool = False, whole_calls: bool = True) -> None:
        self.upstream = grpc.insecure_channel(target, options=stream_options())
        self.hide_bundles = hide_bundles
        self.whole_calls = whole_calls
        self.calls: list[list[bytes]] = []
        self.methods: list[str] = []
        self.answers: list[list[bytes]] = []
        self.unimplemented = 0
        self.shutting_down = False  # answer every InferWhole call CANCELLED, counted in `cancelled`
        self.cancelled = 0
        self.lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=stream_options())
        handler = grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "Infer": grpc.stream_stream_rpc_method_handler(self.infer),
            "InferWhole": grpc.unary_stream_rpc_method_handler(self.infer_whole)})
        self.server.add_generic_rpc_handlers((handler,))
        checks = health.HealthServicer()
        checks.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(checks, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def infer(self, request_iterator, context):
        seen: list[bytes] = []
        answered: list[bytes] = []
        with self.lock:
            self.calls.append(seen)
            self.methods.append("Infer")
            self.answers.append(answered)

        def forwarded():
            for raw in request_iterator:
                seen.append(raw)
                yield raw

        call = self.upstream.stream_stream(wire.INFER_METHOD)(forwarded(), metadata=self._kept(
            context.invocation_metadata()))
        yield from self._relay(call, context, answered)

    def infer_whole(self, request, context):
        if not self.whole_calls:
            with self.lock:
                self.unimplemented += 1
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        if self.shutting_down:  # as gRPC's server ends a call it had not handed to the servicer yet
            with self.lock:
                self.cancelled += 1
            context.abort(grpc.StatusCode.CANCELLED, "Cancelled")
        answered: list[bytes] = []
        with self.lock:
            self.calls.append([request])
            self.methods.append("InferWhole")
            self.answers.append(answered)
        call = self.upstream.unary_stream(wire.INFER_WHOLE_METHOD)(request, metadata=self._kept(
            context.invocation_metadata()))
        yield from self._relay(call, context, answered)

    def _relay(self, call, context, answered: list[bytes]):
        try:
            context.send_initial_metadata(self._kept(call.initial_metadata()))
            for raw in call:
                answered.append(raw)
                yield raw
        except grpc.RpcError:
            pass
        context.set_trailing_metadata(call.trailing_metadata() or ())
        if call.code() != grpc.StatusCode.OK:
            context.abort(call.code(), call.details())

    def _kept(self, pairs) -> list:
        return [(key, value) for key, value in pairs or () if not (self.hide_bundles and key == metadata.READS_BUNDLES)]

    def stop(self) -> None:
        self.server.stop(0)
        self.upstream.close()


GENERATIONS = {  # workers the bridge may meet: (hides reads-bundles, has InferWhole)
    "takes-whole-calls": (False, True),
    "predates-whole-calls": (False, False),
    "predates-bundles": (True, False),
}


@contextlib.contextmanager
def bridge_through_proxy(worker, generation: str):
    hide_bundles, whole_calls = GENERATIONS[generation]
    proxy = RecordingProxy(f"127.0.0.1:{worker.port}", hide_bundles=hide_bundles, whole_calls=whole_calls)
    bridge = create_server(BridgeConfig(routes={"/": f"127.0.0.1:{proxy.port}"}, listen="127.0.0.1:0"))
    url = f"http://127.0.0.1:{bridge.port}"
    try:
        wait_for(lambda: requests.get(url + "/healthcheck", timeout=5).text == "READY", what="READY")
        yield url, proxy
    finally:
        bridge.stop(0)
        proxy.stop()


@pytest.fixture(scope="module", params=list(GENERATIONS))
def proxied(request, worker):
    with bridge_through_proxy(worker, request.param) as (url, proxy):
        yield url, proxy


def kinds(raw: bytes) -> list[str]:
    """The request messages one gRPC message carries, by kind, as the worker reads them."""
    read = wire.parse_request(raw)
    inner = read if type(read) is list else (read,)
    return ["chunk" if type(m) is memoryview else m.WhichOneof("message") for m in inner]


def post(url: str, paths: list, attachments: list = (), command: dict = COMMAND):
    response = http.post_like_original_tool(url + "/", command, paths, attachments)
    answer = http.parse_answer(response)
    assert answer.hashes == http.expected_hashes_line(http.request_part_contents(command, paths, attachments), answer)
    return answer


def test_a_small_study_goes_whole_in_one_message_or_after_its_header(proxied, standard_sent):
    url, proxy = proxied
    paths = [i.path for i in standard_sent[:3]]
    assert sum(len(open(p, "rb").read()) for p in paths) < SMALL_STUDY_BYTES // 2
    proxy.calls.clear()
    proxy.methods.clear()
    post(url, paths)
    (sent,) = proxy.calls
    if proxy.whole_calls:  # the header, the parts and the end: one gRPC message, one call
        assert proxy.methods == ["InferWhole"]
        assert [kinds(raw) for raw in sent] == [["header"] + ["part", "chunk"] * 3 + ["end"]]
    elif proxy.hide_bundles:  # each message alone, as before bundles
        assert proxy.methods == ["Infer"]
        assert [kinds(raw) for raw in sent] == [["header"], *(["part"], ["chunk"]) * 3, ["end"]]
    else:
        assert proxy.methods == ["Infer"]
        assert [kinds(raw) for raw in sent] == [["header"], ["part", "chunk"] * 3 + ["end"]]


def test_a_study_path_request_goes_whole_too(proxied, tmp_path):
    url, proxy = proxied
    proxy.calls.clear()
    proxy.methods.clear()
    response = requests.post(url + "/", json={"studyPath": "anywhere", **COMMAND}, timeout=30)
    assert response.status_code in (400, 403, 404), response.text  # this worker has no study root: refused
    (sent,) = proxy.calls
    assert proxy.methods == ["InferWhole" if proxy.whole_calls else "Infer"]
    assert [kind for raw in sent for kind in kinds(raw)] == ["header", "end"]


def test_a_call_cancelled_by_a_worker_shutting_down_before_admission_goes_to_the_next_worker(worker, standard_sent):
    """A worker's gRPC server that begins shutting down cancels the calls it had taken but not yet handed to the
    servicer (a whole call is handed over only once its message has arrived): nothing of them was processed,
    so the bridge tries the next worker, as for UNAVAILABLE (the container test once saw 1 request of 400
    answered 499 while a worker stopped)."""
    stopping = RecordingProxy(f"127.0.0.1:{worker.port}")
    stopping.shutting_down = True
    healthy = RecordingProxy(f"127.0.0.1:{worker.port}")
    target = f"ipv4:127.0.0.1:{stopping.port},127.0.0.1:{healthy.port}"
    bridge = create_server(BridgeConfig(routes={"/": target}, listen="127.0.0.1:0"))
    url = f"http://127.0.0.1:{bridge.port}"
    try:
        wait_for(lambda: requests.get(url + "/metrics", timeout=5).text.count('bridge_ready_workers{route="/"} 2.0'),
                 what="both workers ready")
        paths = [i.path for i in standard_sent[:2]]
        for _ in range(6):
            post(url, paths)  # 200, or it raises
        assert stopping.cancelled >= 1  # round robin sent it some
        assert healthy.methods == ["InferWhole"] * 6
    finally:
        bridge.stop(0)
        stopping.stop()
        healthy.stop()


def test_a_worker_that_predates_whole_calls_costs_one_wasted_call_a_pause(worker, standard_sent, monkeypatch,
                                                                         caplog):
    paths = [i.path for i in standard_sent[:2]]
    monkeypatch.setattr(bridge_channel, "WHOLE_CALLS_PAUSE", 5.0)  # 60 s in service
    caplog.set_level(logging.INFO, logger="bridge.workers")
    with bridge_through_proxy(worker, "predates-whole-calls") as (url, proxy):
        for _ in range(3):
            post(url, paths)
        assert proxy.unimplemented == 1  # the first request's; the next two went as Infer calls at once
        assert proxy.methods == ["Infer"] * 3
        said = [r.getMessage() for r in caplog.records if "does not take InferWhole calls" in r.getMessage()]
        assert len(said) == 1 and f"127.0.0.1:{proxy.port}" in said[0] and "for 5 s" in said[0], said  # once a pause
        # The pause over, the channel tries again: the worker may have been upgraded since.
        time.sleep(5.1)
        post(url, paths)
        assert proxy.unimplemented == 2 and proxy.methods == ["Infer"] * 4


def test_a_large_study_streams_in_fewer_messages_than_parts(proxied, standard_sent):
    url, proxy = proxied
    paths = [i.path for i in standard_sent]
    attachments = [(f"notes-{n}.bin", bytes([n]) * 1_500_000) for n in range(3)]  # 4.5 MB: it streams
    proxy.calls.clear()
    post(url, paths, attachments)
    (sent,) = proxy.calls
    flat = [kind for raw in sent for kind in kinds(raw)]
    assert flat[0] == "header" and flat[-1] == "end" and flat.count("part") == len(paths) + len(attachments)
    assert kinds(sent[0]) == ["header"]  # alone: admission comes before any study byte
    if proxy.hide_bundles:
        assert all(len(kinds(raw)) == 1 for raw in sent)
    else:
        assert len(sent) < flat.count("part"), [kinds(raw) for raw in sent]
    # What reached the worker, in order, is the request's parts' bytes (the worker's hash, checked in post,
    # says the same).
    received = bytearray()
    for raw in sent:
        read = wire.parse_request(raw)
        received += b"".join(m for m in (read if type(read) is list else (read,)) if type(m) is memoryview)
    assert bytes(received) == b"".join(http.request_part_contents(COMMAND, paths, attachments)[1:])


def test_small_masks_come_back_bundled_only_between_services_that_read_bundles(proxied, standard_sent):
    url, proxy = proxied
    paths = [i.path for i in standard_sent]
    proxy.answers.clear()
    answer = post(url, paths, command={"inference_command": "get-probability-mask-2d"})
    (answered,) = proxy.answers
    assert len(answer.binaries) >= len(paths)  # a mask per frame
    assert len(answered) == (1 + len(answer.binaries) if proxy.hide_bundles else 2)
    assert [bytes(data) for _, data in opened(answered)[1]] == answer.binaries


def test_the_bridge_keeps_no_small_study_while_its_answer_is_awaited(tmp_path, standard_sent):
    """grpc.aio keeps a unary-request call's request until the call ends: a whole call's study stayed in the
    bridge while it waited in the worker's queue (32 clients of one-image studies: about 40 MB more). The
    bridge's own allocations (it runs in this process, the worker in its own) are traced while 12 small
    studies wait at a worker whose model is busy."""
    metrics_port = free_port()
    worker = services.start_worker(tmp_path, "mock_model.faults:SlowModel", "--concurrency", "1",
                                   "--metrics-listen", f"127.0.0.1:{metrics_port}", env={"MOCK_INFER_SECONDS": "120"})
    bridge = create_server(BridgeConfig(routes={"/": worker.address}, listen="127.0.0.1:0"))
    parts = [("application/json", b"{}"), ("application/octet-stream", bytes(range(256)) * 2_400)]
    parts += [("application/dicom", i.path.read_bytes()) for i in standard_sent[:1]]
    body = http.hand_built_body(parts, "b")
    head = http.raw_post_head(body)
    assert 600_000 < len(body) <= SMALL_STUDY_BYTES
    sockets = []
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(12):
            sock = socket.create_connection(("127.0.0.1", bridge.port), timeout=30)
            sock.sendall(head)
            sock.sendall(body)
            sockets.append(sock)
        wait_for(lambda: metric(metrics_port, "worker_inflight_inferences") == 1
                 and metric(metrics_port, "worker_queue_depth") == 11, timeout=60, what="12 studies at the worker")
        held = tracemalloc.get_traced_memory()[0] - before
        assert held < 12 * len(body) // 4, f"the bridge holds {held} bytes for 12 studies of {len(body)} waiting"
    finally:
        tracemalloc.stop()
        for sock in sockets:
            sock.close()
        bridge.stop(0)
        worker.stop()
