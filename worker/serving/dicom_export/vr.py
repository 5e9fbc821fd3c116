"""Values kept within their Value Representation's limits (PS3.5 6.2), and source text read as declared.

Why: a value copied from a source into an output must still be valid there. A 5,000-character PatientName
(PN allows 64 characters per component group) was copied whole, and text whose bytes are not valid in the
source's declared character set became U+FFFD replacement characters without a word.

What is done with text that is not valid in its declared character set: it is read as ISO 8859-1 (Latin-1,
which maps every byte to a character, and the usual mislabelling: Latin-1 bytes declared UTF-8 or ASCII),
and the output says so: the attribute's keyword (never its value) is listed in the part's
`dicom_output.notes` and a WARNING is logged. Character sets with code extensions (ISO 2022) are decoded by
pydicom, whose own handling applies.
"""

from __future__ import annotations

from pydicom import Dataset
from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement

# Maximum length in characters of the string VRs whose values can be cut and still mean something (PN: per
# component group). Numbers, dates, times and UIDs are never cut: a cut one would be a different value.
MAX_LENGTH = {"AE": 16, "CS": 16, "LO": 64, "LT": 10240, "PN": 64, "SH": 16, "ST": 1024}
TEXT_VRS = ("LO", "LT", "PN", "SH", "ST", "UC", "UT")  # VRs that the Specific Character Set applies to
FALLBACK = "iso8859"  # Python's name for ISO 8859-1


def size(text: str) -> int:
    """The length DICOM's limits are checked against in our outputs: bytes in UTF-8, the outputs' character
    set (validators count bytes; for ASCII it is the number of characters)."""
    return len(text.encode("utf-8"))


def cut_text(text: str, limit: int) -> str:
    """The text cut to `limit` bytes in UTF-8, never inside a character."""
    if size(text) <= limit:
        return text
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore").rstrip()


def within_limits(vr: str, value):
    """The value cut to what `vr` allows, for each of its values; other values unchanged."""
    limit = MAX_LENGTH.get(vr)
    if limit is None or value is None:
        return value
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [within_limits(vr, v) for v in value]
    if vr == "PN":
        return "=".join(_person_name_group(group, limit) for group in str(value).split("="))
    if isinstance(value, str):
        return cut_text(value, limit)
    return value


def _person_name_group(group: str, limit: int) -> str:
    """A PN component group within `limit` characters, its components (family^given^...) kept: the longest
    is cut first, so 'AAAA...(5000)^B' becomes 'AAAA...(62)^B', not a name without its given name."""
    components = group.split("^")
    while size("^".join(components)) > limit:
        longest = max(range(len(components)), key=lambda k: size(components[k]))
        excess = size("^".join(components)) - limit
        components[longest] = cut_text(components[longest], max(size(components[longest]) - excess, 0))
    return "^".join(components)


def clamp(dataset: Dataset) -> list[str]:
    """Cuts every top-level string value of `dataset` to its VR's limit, in place; returns the keywords cut."""
    cut = []
    for element in dataset:
        if element.VR in MAX_LENGTH and element.value not in (None, ""):
            value = within_limits(element.VR, element.value)
            if str(value) != str(element.value):
                cut.append(element.keyword or str(element.tag))
            if value != element.value or element.VR == "PN":
                # a PN is set again from its text: pydicom would write a decoded name's original bytes, which
                # are in the source's character set, not in the output's (UTF-8)
                element.value = value
    return cut


def decode_strictly(dataset: Dataset, raw_value=None) -> list[str]:
    """Decodes the top-level text of `dataset` with its declared character set; a value not valid in it is
    read as ISO 8859-1. Returns the keywords so read. An element pydicom already decoded (with replacement
    characters where the bytes were not valid) is read again with `raw_value(tag) -> bytes`, when given.

    Only for declarations without code extensions (one encoding: ASCII, a Latin part, UTF-8, ...); others
    are left to pydicom."""
    declared = dataset.get("SpecificCharacterSet", "")
    names = [declared] if isinstance(declared, str) else list(declared)
    if len(names) > 1 or any("2022" in name for name in names):
        return []
    encoding = convert_encodings(names or ["ISO_IR 6"])[0]
    misread = []
    for tag in list(dataset.keys()):
        raw = dataset.get_item(tag)
        if raw is None or raw.VR not in TEXT_VRS or not raw.value:
            continue
        if isinstance(raw, DataElement):  # decoded already: only a replacement character says it failed
            if raw_value is None or "\ufffd" not in str(raw.value):
                continue
            data = raw_value(tag)
            if not data:
                continue
        else:
            data = bytes(raw.value)
        try:
            data.decode(encoding, "strict")
        except (UnicodeDecodeError, LookupError):
            text = data.decode(FALLBACK).rstrip(" \x00")
            values = text.split("\\") if raw.VR not in ("LT", "ST", "UT") else [text]
            dataset[tag] = DataElement(tag, raw.VR, values if len(values) > 1 else values[0])
            misread.append(dataset[tag].keyword or str(tag))
    return misread
