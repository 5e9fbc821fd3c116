"""What of a study identifies its patient, noted as it arrives, so that no log line carries it.

The worker's own messages name parts by number ("part 3", "file 2 of the studyPath folder") and never quote a
file name, a folder name or a UID. Text that is not ours can: a model's exception or log line ("no slices in
series 1.2.840.113619..."), a library's warning. Each value below is added to the call's
`service_runtime.logs.StudyNames`, which replaces it in every record logged while the call is handled, by
whoever logs it: <file name of part 3>, <SOPInstanceUID of part 3>, <PatientName of part 1>.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pydicom
from pydicom.uid import UID_dictionary

from service_runtime.logs import current_study_names

# Besides every UID (VR UI) that is not one of the standard's own (SOP classes, transfer syntaxes): the values
# of a header that name the patient or the visit. Names (VR PN) anywhere at the top level are added too.
IDENTIFYING_KEYWORDS = ("PatientID", "OtherPatientIDs", "IssuerOfPatientID", "AccessionNumber", "StudyID")
# Walked for UIDs except this sequence: it repeats geometry per frame (thousands of items), and carries none.
SKIPPED_SEQUENCES = ("PerFrameFunctionalGroupsSequence",)


def part_arrived(label: str, filename: str, name: str) -> None:
    """A part's file name and Content-Disposition name (`label`: how messages name the part)."""
    names = current_study_names()
    if names is not None:
        names.add(filename, f"file name of {label}")
        names.add(name, f"name of {label}")


def header_read(label: str, header: pydicom.Dataset) -> None:
    """The UIDs, names and IDs of an instance's header."""
    names = current_study_names()
    if names is None:
        return
    for keyword, value in _identifying_values(header):
        names.add(value, f"{keyword} of {label}")


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


def _identifying_values(dataset: pydicom.Dataset, top: bool = True):
    for element in dataset:
        if element.VR == "SQ":
            if element.keyword not in SKIPPED_SEQUENCES:
                for item in element.value or ():
                    yield from _identifying_values(item, top=False)
            continue
        keyword = element.keyword or str(element.tag)
        if element.VR == "UI":
            for value in _values(element.value):
                if value not in UID_dictionary:
                    yield keyword, value
        elif top and (element.VR == "PN" or keyword in IDENTIFYING_KEYWORDS):
            for value in _values(element.value):
                yield keyword, value
    if top:
        for element in getattr(dataset, "file_meta", None) or ():
            if element.VR == "UI" and str(element.value) not in UID_dictionary:
                yield element.keyword, str(element.value)


def _values(value) -> list[str]:
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [str(item) for item in value if item]
    return [str(value)] if value else []
