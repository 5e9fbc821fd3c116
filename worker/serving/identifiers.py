"""What of a study identifies its patient, noted as it arrives, so that no log line carries it.

The worker's own messages name parts by number ("part 3", "file 2 of the studyPath folder") and never quote a
file name, a folder name or a UID. Text that is not ours can: a model's exception or log line ("no slices in
series 1.2.840.113619..."), a library's warning. Each value below is added to the call's
`service_runtime.logs.StudyNames`, which replaces it in every record logged while the call is handled, by
whoever logs it: <file name of part 3>, <SOPInstanceUID of part 3>, <PatientName of part 1>.

The values of a header cost more to find (decoding each element: about a fifth of a millisecond an instance)
than all the rest of a small call's logging, and a call that succeeds logs nothing while it is handled: the
header is handed to the StudyNames as a source, read the first time a record is checked (or a batch's names
are), on whichever thread logs it. It is read without changing the header, which the model may be reading
at the same time.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement, convert_raw_data_element

from service_runtime.logs import StudyNames, current_study_names

# The values of a header that identify the patient, the visit or the study: looked up by keyword (walking
# every element would decode each, three times the cost of reading the header).
UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
                "SynchronizationFrameOfReferenceUID", "ConcatenationUID", "IrradiationEventUID")
NAME_KEYWORDS = ("PatientName", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
                 "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "PhysiciansOfRecord",
                 "NameOfPhysiciansReadingStudy", "RequestingPhysician", "ScheduledPerformingPhysicianName")
ID_KEYWORDS = ("PatientID", "OtherPatientIDs", "IssuerOfPatientID", "AccessionNumber", "StudyID")


def part_arrived(label: str, filename: str, name: str) -> None:
    """A part's file name and Content-Disposition name (`label`: how messages name the part). A name that is a
    number is a counter (the original test tool numbers its fields "1", "2", ...), not an identifier: hidden,
    it would hide every such number in the lines ("1000 bytes")."""
    names = current_study_names()
    if names is not None:
        names.add(filename, f"file name of {label}")
        if not name.isdigit():
            names.add(name, f"name of {label}")


def header_read(label: str, header: pydicom.Dataset) -> None:
    """The UIDs, names and IDs of an instance's header, found when a record first needs them."""
    names = current_study_names()
    if names is not None:
        names.add_source(functools.partial(_identifying_values, label, header))


def study_path_named(study_path: str) -> None:
    """A studyPath, whole and each of its folder names."""
    names = current_study_names()
    if names is not None:
        names.add(study_path, "studyPath")
        for component in Path(study_path).parts:
            names.add(component, "a folder name of the studyPath")


def folder_listed(folder: Path, files: Iterable[Path]) -> None:
    """The names of the files (and of the folders between) found in a studyPath `folder`, in path order."""
    names = current_study_names()
    if names is not None:
        for number, path in enumerate(files, start=1):
            for component in path.relative_to(folder).parts:
                names.add(component, f"a name in the path of file {number} of the studyPath folder")


_TAGS = [(pydicom.datadict.tag_for_keyword(keyword), keyword) for keyword in (*UID_KEYWORDS, *NAME_KEYWORDS,
                                                                                *ID_KEYWORDS)]
_MEDIA_STORAGE_UID = pydicom.datadict.tag_for_keyword("MediaStorageSOPInstanceUID")


def _identifying_values(label: str, header: pydicom.Dataset, names: StudyNames):
    """(value, name) of each identifying value of `header`: the source header_read gives `names`."""
    present = header.keys()  # most are absent: looked up by tag in the element map, no keyword lookup
    for tag, keyword in _TAGS:
        if tag not in present:
            continue
        element = header.get_item(tag)
        if isinstance(element, RawDataElement) and names.noted_before((tag, element.value)):
            continue  # the same bytes as an earlier part's (the study's UID, the patient's name): not decoded again
        for value in _element_values(header, element):
            yield value, f"{keyword} of {label}"
            if keyword in NAME_KEYWORDS:  # "DOE^JOHN": a model may write the family or given name alone
                for component in re.split(r"[\^=]", value):
                    yield component, f"a part of {keyword} of {label}"
    meta = getattr(header, "file_meta", None)
    if meta is not None and _MEDIA_STORAGE_UID in meta:
        for value in _element_values(meta, meta.get_item(_MEDIA_STORAGE_UID)):
            yield value, f"MediaStorageSOPInstanceUID of {label}"


def _element_values(dataset: pydicom.Dataset, element) -> list[str]:
    """The values of an element of `dataset`. One not decoded yet (a RawDataElement) is decoded as
    `dataset[tag]` would, but the result is not stored in `dataset`: the model may be reading it on another
    thread. A value its VR cannot hold (a hostile header: a name declared as numbers of the wrong length) is
    hidden as its bytes read as text."""
    if not isinstance(element, RawDataElement):
        return _values(element.value)
    try:
        return _values(convert_raw_data_element(element, encoding=dataset.original_character_set, ds=dataset).value)
    except Exception:
        return [text for text in bytes(element.value or b"").decode("latin-1").split("\\") if text]


def _values(value) -> list[str]:
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [str(item) for item in value if item]
    return [str(value)] if value else []
