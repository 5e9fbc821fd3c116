"""Who made a DICOM output: the model (name, version) run by this worker, written into every object."""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from worker.serving.dicom_export.codes import long_string

MANUFACTURER = "arterys-grpc-bridge"
BRIDGE_VERSION = "0.1.0"  # pyproject.toml's version


@dataclass(frozen=True)
class Device:
    model_name: str = ""
    model_version: str = ""

    @property
    def name(self) -> str:
        return long_string(self.model_name or "unnamed model")

    @property
    def version(self) -> str:
        return long_string(self.model_version or "unknown")

    @property
    def uid(self) -> str:
        """The same model and version always get the same Device Observer UID, so reports can be grouped."""
        return generate_uid(entropy_srcs=[MANUFACTURER, self.name, self.version])

    def equipment(self) -> dict:
        """The General/Enhanced General Equipment keywords highdicom's SOP classes take."""
        return {
            "manufacturer": MANUFACTURER,
            "manufacturer_model_name": self.name,
            "software_versions": [self.version, long_string(f"{MANUFACTURER} {BRIDGE_VERSION}"),
                                  long_string(f"highdicom {hd.__version__}")],
            # A software device has no serial number; the attribute is Type 1 in the SEG, so it gets one.
            "device_serial_number": "1",
        }

    def seg_algorithm(self) -> hd.AlgorithmIdentificationSequence:
        return hd.AlgorithmIdentificationSequence(
            name=self.name, family=codes.DCM.ArtificialIntelligence, version=self.version,
        )

    def sr_algorithm(self) -> hd.sr.AlgorithmIdentification:
        return hd.sr.AlgorithmIdentification(name=self.name, version=self.version)
