from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PartKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PART_KIND_UNSPECIFIED: _ClassVar[PartKind]
    PART_KIND_ATTACHMENT: _ClassVar[PartKind]
    PART_KIND_DICOM: _ClassVar[PartKind]

class BinaryType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BINARY_TYPE_UNSPECIFIED: _ClassVar[BinaryType]
    PROBABILITY_MASK: _ClassVar[BinaryType]
    BOOLEAN_MASK: _ClassVar[BinaryType]
    HEATMAP: _ClassVar[BinaryType]
    NUMERIC_LABEL_MASK: _ClassVar[BinaryType]
    DICOM_SECONDARY_CAPTURE: _ClassVar[BinaryType]
    DICOM: _ClassVar[BinaryType]
    DICOM_STRUCTURED_REPORT: _ClassVar[BinaryType]
    DICOM_GSPS: _ClassVar[BinaryType]
PART_KIND_UNSPECIFIED: PartKind
PART_KIND_ATTACHMENT: PartKind
PART_KIND_DICOM: PartKind
BINARY_TYPE_UNSPECIFIED: BinaryType
PROBABILITY_MASK: BinaryType
BOOLEAN_MASK: BinaryType
HEATMAP: BinaryType
NUMERIC_LABEL_MASK: BinaryType
DICOM_SECONDARY_CAPTURE: BinaryType
DICOM: BinaryType
DICOM_STRUCTURED_REPORT: BinaryType
DICOM_GSPS: BinaryType

class InferRequest(_message.Message):
    __slots__ = ("header", "part", "chunk", "end", "bundle")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    part: PartHeader
    chunk: bytes
    end: RequestEnd
    bundle: RequestBundle
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., part: _Optional[_Union[PartHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ..., end: _Optional[_Union[RequestEnd, _Mapping]] = ..., bundle: _Optional[_Union[RequestBundle, _Mapping]] = ...) -> None: ...

class RequestBundle(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[InferRequest]
    def __init__(self, messages: _Optional[_Iterable[_Union[InferRequest, _Mapping]]] = ...) -> None: ...

class RequestHeader(_message.Message):
    __slots__ = ("request_json", "inference_command", "study_path", "request_id", "route", "admission_wait_ms")
    REQUEST_JSON_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_COMMAND_FIELD_NUMBER: _ClassVar[int]
    STUDY_PATH_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    request_json: bytes
    inference_command: str
    study_path: str
    request_id: str
    route: str
    admission_wait_ms: int
    def __init__(self, request_json: _Optional[bytes] = ..., inference_command: _Optional[str] = ..., study_path: _Optional[str] = ..., request_id: _Optional[str] = ..., route: _Optional[str] = ..., admission_wait_ms: _Optional[int] = ...) -> None: ...

class PartHeader(_message.Message):
    __slots__ = ("kind", "content_type", "filename", "name", "size_hint")
    KIND_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_HINT_FIELD_NUMBER: _ClassVar[int]
    kind: PartKind
    content_type: str
    filename: str
    name: str
    size_hint: int
    def __init__(self, kind: _Optional[_Union[PartKind, str]] = ..., content_type: _Optional[str] = ..., filename: _Optional[str] = ..., name: _Optional[str] = ..., size_hint: _Optional[int] = ...) -> None: ...

class RequestEnd(_message.Message):
    __slots__ = ("input_hash", "part_count")
    INPUT_HASH_FIELD_NUMBER: _ClassVar[int]
    PART_COUNT_FIELD_NUMBER: _ClassVar[int]
    input_hash: str
    part_count: int
    def __init__(self, input_hash: _Optional[str] = ..., part_count: _Optional[int] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("result", "binary", "bundle")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    BINARY_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    result: InferResult
    binary: BinaryChunk
    bundle: ResponseBundle
    def __init__(self, result: _Optional[_Union[InferResult, _Mapping]] = ..., binary: _Optional[_Union[BinaryChunk, _Mapping]] = ..., bundle: _Optional[_Union[ResponseBundle, _Mapping]] = ...) -> None: ...

class ResponseBundle(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[InferResponse]
    def __init__(self, messages: _Optional[_Iterable[_Union[InferResponse, _Mapping]]] = ...) -> None: ...

class BinaryChunk(_message.Message):
    __slots__ = ("part_index", "data")
    PART_INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    part_index: int
    data: bytes
    def __init__(self, part_index: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class InferResult(_message.Message):
    __slots__ = ("protocol_version", "parts", "bounding_boxes_2d", "linear_measurements_2d", "study_ml_json", "series_ml_json", "palettes", "extra_json", "input_hash")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    BOUNDING_BOXES_2D_FIELD_NUMBER: _ClassVar[int]
    LINEAR_MEASUREMENTS_2D_FIELD_NUMBER: _ClassVar[int]
    STUDY_ML_JSON_FIELD_NUMBER: _ClassVar[int]
    SERIES_ML_JSON_FIELD_NUMBER: _ClassVar[int]
    PALETTES_FIELD_NUMBER: _ClassVar[int]
    EXTRA_JSON_FIELD_NUMBER: _ClassVar[int]
    INPUT_HASH_FIELD_NUMBER: _ClassVar[int]
    protocol_version: str
    parts: _containers.RepeatedCompositeFieldContainer[Part]
    bounding_boxes_2d: BoundingBoxList
    linear_measurements_2d: LinearMeasurementList
    study_ml_json: str
    series_ml_json: SeriesJsonList
    palettes: PaletteList
    extra_json: str
    input_hash: str
    def __init__(self, protocol_version: _Optional[str] = ..., parts: _Optional[_Iterable[_Union[Part, _Mapping]]] = ..., bounding_boxes_2d: _Optional[_Union[BoundingBoxList, _Mapping]] = ..., linear_measurements_2d: _Optional[_Union[LinearMeasurementList, _Mapping]] = ..., study_ml_json: _Optional[str] = ..., series_ml_json: _Optional[_Union[SeriesJsonList, _Mapping]] = ..., palettes: _Optional[_Union[PaletteList, _Mapping]] = ..., extra_json: _Optional[str] = ..., input_hash: _Optional[str] = ...) -> None: ...

class Point2D(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class BoundingBoxList(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[BoundingBox2D]
    def __init__(self, items: _Optional[_Iterable[_Union[BoundingBox2D, _Mapping]]] = ...) -> None: ...

class BoundingBox2D(_message.Message):
    __slots__ = ("label", "sop_instance_uid", "top_left", "bottom_right", "frame_number", "extra_json")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SOP_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    TOP_LEFT_FIELD_NUMBER: _ClassVar[int]
    BOTTOM_RIGHT_FIELD_NUMBER: _ClassVar[int]
    FRAME_NUMBER_FIELD_NUMBER: _ClassVar[int]
    EXTRA_JSON_FIELD_NUMBER: _ClassVar[int]
    label: str
    sop_instance_uid: str
    top_left: Point2D
    bottom_right: Point2D
    frame_number: int
    extra_json: str
    def __init__(self, label: _Optional[str] = ..., sop_instance_uid: _Optional[str] = ..., top_left: _Optional[_Union[Point2D, _Mapping]] = ..., bottom_right: _Optional[_Union[Point2D, _Mapping]] = ..., frame_number: _Optional[int] = ..., extra_json: _Optional[str] = ...) -> None: ...

class LinearMeasurementList(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[LinearMeasurement2D]
    def __init__(self, items: _Optional[_Iterable[_Union[LinearMeasurement2D, _Mapping]]] = ...) -> None: ...

class LinearMeasurement2D(_message.Message):
    __slots__ = ("label", "sop_instance_uid", "frame_number", "coordinates_type", "start", "end", "extra_json")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SOP_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    FRAME_NUMBER_FIELD_NUMBER: _ClassVar[int]
    COORDINATES_TYPE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    EXTRA_JSON_FIELD_NUMBER: _ClassVar[int]
    label: str
    sop_instance_uid: str
    frame_number: int
    coordinates_type: str
    start: Point2D
    end: Point2D
    extra_json: str
    def __init__(self, label: _Optional[str] = ..., sop_instance_uid: _Optional[str] = ..., frame_number: _Optional[int] = ..., coordinates_type: _Optional[str] = ..., start: _Optional[_Union[Point2D, _Mapping]] = ..., end: _Optional[_Union[Point2D, _Mapping]] = ..., extra_json: _Optional[str] = ...) -> None: ...

class SeriesJsonList(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[SeriesJson]
    def __init__(self, items: _Optional[_Iterable[_Union[SeriesJson, _Mapping]]] = ...) -> None: ...

class SeriesJson(_message.Message):
    __slots__ = ("series_instance_uid", "json")
    SERIES_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    series_instance_uid: str
    json: str
    def __init__(self, series_instance_uid: _Optional[str] = ..., json: _Optional[str] = ...) -> None: ...

class Part(_message.Message):
    __slots__ = ("label", "binary_type", "binary_data_shape", "series_instance_uid", "dicom_image", "probability_threshold", "palette", "label_map", "dicom_conformance", "extra_json", "binary_size")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    BINARY_TYPE_FIELD_NUMBER: _ClassVar[int]
    BINARY_DATA_SHAPE_FIELD_NUMBER: _ClassVar[int]
    SERIES_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    DICOM_IMAGE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PALETTE_FIELD_NUMBER: _ClassVar[int]
    LABEL_MAP_FIELD_NUMBER: _ClassVar[int]
    DICOM_CONFORMANCE_FIELD_NUMBER: _ClassVar[int]
    EXTRA_JSON_FIELD_NUMBER: _ClassVar[int]
    BINARY_SIZE_FIELD_NUMBER: _ClassVar[int]
    label: str
    binary_type: BinaryType
    binary_data_shape: BinaryDataShape
    series_instance_uid: str
    dicom_image: DicomImage
    probability_threshold: float
    palette: str
    label_map: LabelMap
    dicom_conformance: Conformance
    extra_json: str
    binary_size: int
    def __init__(self, label: _Optional[str] = ..., binary_type: _Optional[_Union[BinaryType, str]] = ..., binary_data_shape: _Optional[_Union[BinaryDataShape, _Mapping]] = ..., series_instance_uid: _Optional[str] = ..., dicom_image: _Optional[_Union[DicomImage, _Mapping]] = ..., probability_threshold: _Optional[float] = ..., palette: _Optional[str] = ..., label_map: _Optional[_Union[LabelMap, _Mapping]] = ..., dicom_conformance: _Optional[_Union[Conformance, _Mapping]] = ..., extra_json: _Optional[str] = ..., binary_size: _Optional[int] = ...) -> None: ...

class BinaryDataShape(_message.Message):
    __slots__ = ("timepoints", "depth", "width", "height")
    TIMEPOINTS_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    timepoints: int
    depth: int
    width: int
    height: int
    def __init__(self, timepoints: _Optional[int] = ..., depth: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class DicomImage(_message.Message):
    __slots__ = ("sop_instance_uid", "frame_number")
    SOP_INSTANCE_UID_FIELD_NUMBER: _ClassVar[int]
    FRAME_NUMBER_FIELD_NUMBER: _ClassVar[int]
    sop_instance_uid: str
    frame_number: int
    def __init__(self, sop_instance_uid: _Optional[str] = ..., frame_number: _Optional[int] = ...) -> None: ...

class LabelMap(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[LabelEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[LabelEntry, _Mapping]]] = ...) -> None: ...

class LabelEntry(_message.Message):
    __slots__ = ("value", "name")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    value: str
    name: str
    def __init__(self, value: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Conformance(_message.Message):
    __slots__ = ("recommended", "extra_json")
    RECOMMENDED_FIELD_NUMBER: _ClassVar[int]
    EXTRA_JSON_FIELD_NUMBER: _ClassVar[int]
    recommended: _containers.RepeatedCompositeFieldContainer[ConformanceItem]
    extra_json: str
    def __init__(self, recommended: _Optional[_Iterable[_Union[ConformanceItem, _Mapping]]] = ..., extra_json: _Optional[str] = ...) -> None: ...

class ConformanceItem(_message.Message):
    __slots__ = ("description", "compliant", "extra_json")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    COMPLIANT_FIELD_NUMBER: _ClassVar[int]
    EXTRA_JSON_FIELD_NUMBER: _ClassVar[int]
    description: str
    compliant: bool
    extra_json: str
    def __init__(self, description: _Optional[str] = ..., compliant: _Optional[bool] = ..., extra_json: _Optional[str] = ...) -> None: ...

class PaletteList(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Palette]
    def __init__(self, items: _Optional[_Iterable[_Union[Palette, _Mapping]]] = ...) -> None: ...

class Palette(_message.Message):
    __slots__ = ("name", "type", "data", "extra_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EXTRA_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    data: _containers.RepeatedCompositeFieldContainer[AnchorPoint]
    extra_json: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., data: _Optional[_Iterable[_Union[AnchorPoint, _Mapping]]] = ..., extra_json: _Optional[str] = ...) -> None: ...

class AnchorPoint(_message.Message):
    __slots__ = ("threshold", "color")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    COLOR_FIELD_NUMBER: _ClassVar[int]
    threshold: float
    color: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, threshold: _Optional[float] = ..., color: _Optional[_Iterable[int]] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelDescription(_message.Message):
    __slots__ = ("name", "version", "commands", "default_command")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_COMMAND_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    commands: _containers.RepeatedScalarFieldContainer[str]
    default_command: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., commands: _Optional[_Iterable[str]] = ..., default_command: _Optional[str] = ...) -> None: ...
