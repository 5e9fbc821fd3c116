"""Coded concepts for labels and classification values: standard codes where one fits, else a private scheme.

A model's labels are free text ("liver", "mock finding"). A PACS and a viewer need codes, so a short table
maps common names to SNOMED CT (SCT) and DICOM (DCM) codes; every other label becomes a code of the private
scheme 99ARTBR whose value is the label itself and whose meaning is the label, so nothing is lost and the
same label always gets the same code. docs/dicom-outputs.md lists the table.
"""

from __future__ import annotations

import re

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from worker.serving.dicom_export.vr import cut_text

PRIVATE_SCHEME = "99ARTBR"  # "99" starts every private coding scheme designator (PS3.16 8.2)
CODING_SCHEMES = [
    CodingSchemeIdentificationItem(
        designator=PRIVATE_SCHEME,
        name="arterys-grpc-bridge model labels",
        responsible_organization="arterys-grpc-bridge",
    )
]

ANATOMY = codes.SCT.AnatomicalStructure
TISSUE = codes.SCT.Tissue
ABNORMAL = codes.SCT.MorphologicallyAbnormalStructure
SUBSTANCE = codes.SCT.Substance
# Neither anatomy nor abnormality is claimed for a label we do not know.
UNKNOWN_CATEGORY = codes.SCT.SpatialAndRelationalConcept

# normalised label -> (segmented property category, property type / finding type)
KNOWN_LABELS: dict[str, tuple[Code, Code]] = {
    "bone": (TISSUE, codes.SCT.Bone),
    "air": (SUBSTANCE, codes.DCM.Air),
    "lung": (ANATOMY, codes.SCT.Lung),
    "liver": (ANATOMY, codes.SCT.Liver),
    "kidney": (ANATOMY, codes.SCT.Kidney),
    "heart": (ANATOMY, codes.SCT.Heart),
    "brain": (ANATOMY, codes.SCT.Brain),
    "lesion": (ABNORMAL, codes.SCT.Lesion),
    "tumor": (ABNORMAL, codes.SCT.Tumor),
    "tumour": (ABNORMAL, codes.SCT.Tumor),
    "nodule": (ABNORMAL, codes.SCT.Nodule),
    "mass": (ABNORMAL, codes.SCT.Mass),
}

# classification values (strings, case-insensitive) that have a standard code
KNOWN_VALUES: dict[str, Code] = {
    "normal": codes.SCT.Normal,
    "abnormal": codes.SCT.Abnormal,
    "present": codes.DCM.Present,
    "absent": codes.DCM.Absent,
    "yes": codes.SCT.Yes,
    "no": codes.SCT.No,
    "positive": codes.SCT.Positive,
    "negative": codes.SCT.Negative,
}

MILLIMETRE = codes.UCUM.Millimeter
PIXELS = Code("{pixels}", "UCUM", "pixels")  # a UCUM annotation: lengths on images without PixelSpacing
NO_UNITS = codes.UCUM.NoUnits
LENGTH = codes.SCT.Length


def _normalised(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def long_string(text: str) -> str:
    """A Long String (LO) value: at most 64 bytes in UTF-8 (the outputs' character set), no backslash
    (DICOM's value separator)."""
    return cut_text(text.replace("\\", "/"), 64)


def private_code(text: str) -> Code:
    """A 99ARTBR code whose value and meaning are the text (meaning cut at the 64 characters LO allows)."""
    text = text.replace("\\", "/").strip() or "unnamed"
    return Code(text, PRIVATE_SCHEME, long_string(text))


def label_codes(label: str) -> tuple[Code, Code]:
    """(category, type) for a mask label or finding name."""
    return KNOWN_LABELS.get(_normalised(label), (UNKNOWN_CATEGORY, private_code(label)))


def value_code(value: str | bool) -> Code:
    """The coded value of a classification: Yes/No for booleans, standard codes for common words."""
    if isinstance(value, bool):
        return codes.SCT.Yes if value else codes.SCT.No
    return KNOWN_VALUES.get(_normalised(value), private_code(value))


def key_code(key: str) -> Code:
    """The concept name of a classification key: always private (a model's keys are its own vocabulary)."""
    return private_code(key)
VOLUME = codes.SCT.Volume
MILLILITRE = Code("ml", "UCUM", "milliliter")
PRESENCE = codes.DCM.PresenceOfProperty
ABSENT = codes.DCM.Absent
