"""The DICOM outputs read back by the consumers' own code: dcmqi (PyPI) rebuilds every segment and reads every
report, Orthanc (Debian, with its DICOMweb plugin) stores sources and outputs and serves them back over
QIDO-RS and WADO-RS, and the OHIF viewer itself (npm's @ohif/app) shows them in headless Chromium: the
segments listed and drawn in the test tool's colours, the measurement report's boxes and lengths drawn, no
error in the console. Screenshots are kept in test-artifacts/ohif/.

The outputs come from the worker's exporter on two studies: the Hounsfield phantom (a BINARY SEG with "bone"
and "air", the measurement report with its boxes, the findings report with volumes) plus the mock model's
lengths on it, and tests/test_dicom_export_studies.py's study (axial, sagittal, tilted RLE, enhanced
multi-frame, 4D) with the mock model's label masks and 2D probability masks.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest

from arterys_http.label_colours import label_colours
from example_models.hounsfield import HounsfieldModel
from mock_model.model import MockModel
from tests.test_dicom_export import expected_by_frame, masks_of
from tests.test_dicom_export_studies import write_export_study
from tests.test_hounsfield import answer, write_phantom
from tests.viewers import ARTIFACTS, chromium, ohif_dist, orthanc, viewer
from worker.serving.dicom_export import export_dicom
from worker.serving.results import checked, from_result

DCMQI_BIN = Path(sys.executable).parent


def _export(study, wire, model, version):
    out, binaries = export_dicom(wire.json, wire.binaries, study, keep_arterys=False, model_name=model,
                                 model_version=version)
    return [(part, pydicom.dcmread(io.BytesIO(bytes(data))), bytes(data))
            for part, data in zip(out["parts"], binaries, strict=True) if "dicom_output" in part]


def _mock(study, command):
    study.command = command
    return checked(*from_result(MockModel().infer(study)), study.index())


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("viewers")
    phantom_paths = write_phantom(tmp / "phantom")
    for path in phantom_paths:
        # Square pixels for the viewer: OHIF 3.13 places a report's SCOORDs with the row and column spacings
        # swapped (docs/dicom-outputs.md); the other studies keep tests/dicom_factory.py's 0.8 x 0.7 mm.
        ds = pydicom.dcmread(path)
        ds.PixelSpacing = [0.7, 0.7]
        ds.save_as(path)
    phantom, _, hounsfield = answer(phantom_paths)
    runs = {"hounsfield": (phantom, hounsfield, _export(phantom, hounsfield, HounsfieldModel.name,
                                                        HounsfieldModel.version))}
    lengths = _mock(phantom, "get-linear-measurements")
    runs["lengths"] = (phantom, lengths, _export(phantom, lengths, "mock_model", "1.0"))
    study, _ = write_export_study(tmp / "export")
    for command in ("get-label-mask", "get-probability-mask-2d"):
        wire = _mock(study, command)
        runs[command] = (study, wire, _export(study, wire, "mock_model", "1.0"))
    return SimpleNamespace(runs=runs, phantom_paths=phantom_paths, export_study=study)


# ------------------------------------------------------------------------------------------------ dcmqi


def read_nrrd(path: Path) -> tuple[dict, np.ndarray]:
    """A NRRD file as dcmqi writes it (header lines, a blank line, gzip'd little-endian data): (header,
    array (z, y, x))."""
    data = path.read_bytes()
    head, body = data.split(b"\n\n", 1)
    header = dict(line.split(": ", 1) for line in head.decode().splitlines()[1:] if ": " in line)
    assert header["encoding"] == "gzip" and header["endian"] == "little", header
    dtype = {"short": "<i2", "unsigned char": "u1", "unsigned short": "<u2"}[header["type"]]
    sizes = [int(v) for v in header["sizes"].split()]
    return header, np.frombuffer(gzip.decompress(body), dtype).reshape(sizes[::-1])


def _vectors(text: str) -> list[np.ndarray]:
    return [np.array([float(v) for v in group.split(",")]) for group in re.findall(r"\(([^)]*)\)", text)]


def dcmqi(tool: str, *args: str) -> str:
    path = DCMQI_BIN / tool
    if not path.exists():
        pytest.fail("dcmqi is not installed: .venv/bin/pip install -r requirements-dev.txt (pins dcmqi)")
    result = subprocess.run([str(path), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_dcmqi_rebuilds_every_segment_voxel_for_voxel_and_reads_every_report(outputs, tmp_path):
    checked_segments = reports = 0
    for name, (study, wire, produced) in outputs.runs.items():
        expected = expected_by_frame(study, masks_of(wire))
        positions = {}
        for instance in study.instances:  # every source frame's position: where dcmqi's slices are
            for frame in range(1, instance.frames + 1):
                key = (instance.sop_instance_uid, frame if "NumberOfFrames" in instance.header else None)
                header = instance.header
                if key[1] is None:
                    positions[key] = np.array([float(v) for v in header.ImagePositionPatient])
                else:
                    item = header.PerFrameFunctionalGroupsSequence[frame - 1].PlanePositionSequence[0]
                    positions[key] = np.array([float(v) for v in item.ImagePositionPatient])
        for index, (_, ds, data) in enumerate(produced):
            folder = tmp_path / f"{name}-{index}"
            folder.mkdir()
            (folder / "in.dcm").write_bytes(data)
            if ds.Modality == "SR":
                log = dcmqi("tid1500reader", "--inputDICOM", str(folder / "in.dcm"), "--outputMetadata",
                            str(folder / "sr.json"))
                read = json.loads((folder / "sr.json").read_text())
                groups = ds.ContentSequence[-1].ContentSequence
                assert len(read["Measurements"]) == len(groups), name
                reports += 1
                continue
            log = dcmqi("segimage2itkimage", "--inputDICOM", str(folder / "in.dcm"), "--outputDirectory",
                        str(folder), "-t", "nrrd")
            assert "absent" not in log, log  # dcmqi names every missing Type 2 attribute (Content Creator's Name)
            meta = json.loads((folder / "meta.json").read_text())
            labels = {s["labelID"]: s["SegmentLabel"] for group in meta["segmentAttributes"] for s in group}
            assert sorted(labels.values()) == sorted(str(s.SegmentLabel) for s in ds.SegmentSequence)
            frames = {(f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID,
                       f.DerivationImageSequence[0].SourceImageSequence[0].get("ReferencedFrameNumber"))
                      for f in ds.PerFrameFunctionalGroupsSequence}
            for number, label in labels.items():
                header, volume = read_nrrd(folder / f"{number}.nrrd")
                origin = _vectors(header["space origin"])[0]
                directions = _vectors(header["space directions"])
                normal = directions[2] / np.linalg.norm(directions[2])
                # each source frame the SEG covers is the dcmqi slice at its distance along the normal
                for key in frames:
                    offset = float((positions[key] - origin) @ normal) / np.linalg.norm(directions[2])
                    z = round(offset)
                    assert abs(offset - z) < 1e-3 and 0 <= z < volume.shape[0], (name, key, offset)
                    np.testing.assert_array_equal(volume[z] != 0, expected[key][label[:64]] != 0,
                                                  err_msg=f"{name}: {label} on {key}")
                    checked_segments += 1
                voxels = sum(int(np.count_nonzero(expected[key][label[:64]])) for key in frames)
                assert np.count_nonzero(volume) == voxels  # and nothing between the frames
    assert checked_segments > 20 and reports >= 4


# ---------------------------------------------------------------------------------------------- Orthanc


def test_orthanc_stores_sources_and_outputs_and_serves_them_back(outputs, tmp_path):
    study, _, _ = outputs.runs["get-label-mask"]
    produced = [item for name in ("get-label-mask", "get-probability-mask-2d") for item in outputs.runs[name][2]]
    with orthanc(tmp_path) as server:
        for instance in study.instances:
            server.store(instance.read_bytes())
        for _, _, data in produced:
            server.store(data)
        study_uid = study.instances[0].header.StudyInstanceUID
        series = {s["0020000E"]["Value"][0]: s for s in server.qido(f"/studies/{study_uid}/series")}
        for _, ds, _ in produced:
            found = series[ds.SeriesInstanceUID]
            assert found["00080060"]["Value"] == [ds.Modality]
            assert found["0008103E"]["Value"] == [ds.SeriesDescription]
            assert int(found["00200011"]["Value"][0]) == int(ds.SeriesNumber)
            instances = server.qido(f"/studies/{study_uid}/series/{ds.SeriesInstanceUID}/instances")
            assert [i["00080018"]["Value"][0] for i in instances] == [ds.SOPInstanceUID]  # one SEG per series
            back = pydicom.dcmread(io.BytesIO(server.wado_instance(study_uid, ds.SeriesInstanceUID,
                                                                    ds.SOPInstanceUID)))
            assert back.SOPInstanceUID == ds.SOPInstanceUID and back.PatientName == ds.PatientName
            if ds.Modality == "SEG":
                np.testing.assert_array_equal(back.pixel_array, ds.pixel_array)
            else:
                assert back.ContentSequence == ds.ContentSequence
        numbers = [int(s["00200011"]["Value"][0]) for s in series.values() if s["00080060"]["Value"][0] != "CT"
                   and s["00080060"]["Value"][0] != "MR"]
        assert len(numbers) == len(set(numbers)) == len(produced)


# ------------------------------------------------------------------------------------------------- OHIF


class Ohif:
    """The OHIF viewer driven as a person would (double-click a series, answer its prompt), read through the
    services it exposes on `window` (segmentations, display sets) and the pixels it draws."""

    def __init__(self, driver, url: str, shots: Path) -> None:
        self.driver, self.url, self.shots = driver, url, shots

    def wait(self, script: str, what: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.driver.execute_script(script)
            if value:
                return value
            time.sleep(0.25)
        self.shot("timeout")
        raise AssertionError(f"OHIF: no {what} after {timeout} s")

    def click_text(self, text: str) -> None:
        from selenium.webdriver.common.by import By

        found = [e for e in self.driver.find_elements(By.XPATH, f"//*[normalize-space(text())='{text}']")
                 if e.is_displayed()]
        assert found, f"OHIF shows no {text!r}"
        found[0].click()

    def open_series(self, ds: pydicom.Dataset) -> None:
        """Double-clicks the study browser's entry of the output's series (it shows modality, description
        and series number)."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By

        items = [e for e in self.driver.find_elements(By.CSS_SELECTOR, '[data-cy^="study-browser-thumbnail"]')
                 if e.text.split() and e.text.split()[0] == ds.Modality and f"S:{ds.SeriesNumber}" in e.text]
        assert items, f"no series {ds.SeriesDescription!r} in the study browser"
        ActionChains(self.driver).double_click(items[0]).perform()

    def pixels(self, name: str) -> np.ndarray:
        from PIL import Image

        path = self.shot(name)
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB")).astype(int)

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path


def _drawings(drawn: np.ndarray, gap: int = 6) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (top, left, bottom, right) of the drawn pixels' groups, pixels closer than `gap`
    grouped (a dashed outline is one drawing); a box's label line, which leaves a corner, is cut off by
    keeping only the rows and columns most of the group's pixels are on."""
    pixels = set(zip(*np.nonzero(drawn), strict=True))
    groups = []
    while pixels:
        todo, group = [pixels.pop()], []
        while todo:
            row, column = todo.pop()
            group.append((row, column))
            for dr in range(-gap, gap + 1):
                for dc in range(-gap, gap + 1):
                    if (row + dr, column + dc) in pixels:
                        pixels.remove((row + dr, column + dc))
                        todo.append((row + dr, column + dc))
        rows, columns = np.array(group).T
        dense_rows = [r for r in np.unique(rows) if np.count_nonzero(rows == r) > 10]
        dense_columns = [c for c in np.unique(columns) if np.count_nonzero(columns == c) > 10]
        if dense_rows and dense_columns:
            groups.append((min(dense_rows), min(dense_columns), max(dense_rows), max(dense_columns)))
    return groups


def _colour_pixels(picture: np.ndarray, colour) -> int:
    return int((np.abs(picture - np.array(colour[:3])).max(axis=2) <= 2).sum())


def test_ohif_lists_and_draws_the_segments_and_the_measurement_reports(outputs, tmp_path):
    study, _, produced = outputs.runs["hounsfield"]
    lengths = outputs.runs["lengths"][2]
    shots = ARTIFACTS / "ohif"
    shots.mkdir(parents=True, exist_ok=True)
    dist = ohif_dist()
    (tmp_path / "profile").mkdir()
    with orthanc(tmp_path) as server, viewer(dist, server) as url:
        for path in outputs.phantom_paths:
            server.store(path.read_bytes())
        for _, _, data in produced + lengths:
            server.store(data)
        seg = next(ds for _, ds, _ in produced if ds.Modality == "SEG")
        boxes = next(ds for part, ds, _ in produced if part["label"] == "measurement report")
        length_report = next(ds for part, ds, _ in lengths if part["label"] == "measurement report")
        driver = chromium(tmp_path / "profile")
        try:
            driver.set_page_load_timeout(60)
            ohif = Ohif(driver, url, shots)
            driver.get(f"{url}/app-config.js")  # the origin's storage: the first-visit tour counts as shown
            driver.execute_script("localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']))")
            driver.get(f"{url}/viewer?StudyInstanceUIDs={seg.StudyInstanceUID}")
            ohif.wait("return document.querySelectorAll('[data-cy^=\"study-browser-thumbnail\"]').length >= 5",
                      "study browser with the CT, the SEG and three reports")
            colours = label_colours(["bone", "air"])

            # The SEG: listed with its segments, drawn in the test tool's colours on the slices they cover.
            ohif.open_series(seg)
            ohif.wait("return Array.from(document.querySelectorAll('button')).some(b => b.textContent === 'Yes')",
                      "prompt to open the segmentation")
            ohif.click_text("Yes")
            segments = ohif.wait("""
                const s = window.services.segmentationService.getSegmentations();
                if (s.length !== 1) return null;
                const v = window.services.viewportGridService.getActiveViewportId();
                const list = Object.values(s[0].segments).map(x => [x.segmentIndex, x.label,
                    window.services.segmentationService.getSegmentColor(v, s[0].segmentationId, x.segmentIndex)]);
                return list.length === 2 && list.every(x => x[2]) ? list : null;""", "segments")
            assert [(index, label) for index, label, _ in segments] == [(1, "bone"), (2, "air")]
            for _, label, colour in segments:
                assert colour[:3] == list(colours[label]), (label, colour)
            driver.find_element("css selector", '[data-cy="panelSegmentation-btn"]').click()
            panel = ohif.wait("""const t = document.body.innerText;
                return t.includes('bone') && t.includes('air') ? t : null;""", "segments listed in the panel")
            assert seg.SeriesDescription in panel or "bone" in panel
            drawn = {}
            for index in range(6):  # every slice: bone on the second to fifth, air on all
                driver.execute_script("""
                    const v = window.services.viewportGridService.getActiveViewportId();
                    window.services.cornerstoneViewportService.getCornerstoneViewport(v).setImageIdIndex(arguments[0]);
                    """, index)
                time.sleep(1.0)
                picture = ohif.pixels(f"seg-slice{index + 1}")
                for label in ("bone", "air"):
                    drawn[label] = max(drawn.get(label, 0), _colour_pixels(picture, colours[label]))
            assert drawn["bone"] > 200 and drawn["air"] > 200, drawn  # their outlines, in their colours
            driver.execute_script("""
                const v = window.services.viewportGridService.getActiveViewportId();
                window.services.cornerstoneViewportService.getCornerstoneViewport(v).setImageIdIndex(2);""")
            time.sleep(1.0)
            ohif.shot("segmentation")

            # The measurement reports: every group read by OHIF's SR loader and drawn on its image.
            for report, expected in ((boxes, ["bone", "bone", "air", "air"]),
                                     (length_report, ["mock width", "mock world"])):
                ohif.open_series(report)
                measurements = ohif.wait("""
                    const d = window.services.displaySetService.getActiveDisplaySets()
                        .find(x => x.SOPInstanceUID === arguments[0]);
                    if (!d || !d.isLoaded || !d.measurements) return null;
                    return d.measurements.map(m => [m.TrackingIdentifier, m.loaded, m.graphicType || '',
                        m.labels.map(l => l.label + ': ' + l.value)]);""".replace("arguments[0]",
                                                                            json.dumps(report.SOPInstanceUID)),
                    f"report {report.SeriesDescription}")
                assert sorted(m[0] for m in measurements) == sorted(expected), measurements
                assert all(m[1] for m in measurements), f"not placed on an image: {measurements}"
                for number, (name, *_rest) in enumerate(measurements):  # each on its image, in OHIF's SR colours
                    driver.execute_script("""
                        const d = window.services.displaySetService.getActiveDisplaySets()
                            .find(x => x.SOPInstanceUID === arguments[0]);
                        const v = window.services.viewportGridService.getActiveViewportId();
                        const viewport = window.services.cornerstoneViewportService.getCornerstoneViewport(v);
                        viewport.setImageIdIndex(viewport.getImageIds().indexOf(d.measurements[arguments[1]].imageId));
                        """, report.SOPInstanceUID, number)
                    for _ in range(10):  # OHIF draws a moment after the image is shown: longer on a busy machine
                        time.sleep(1.0)
                        picture = ohif.pixels(f"report-{name.replace(' ', '-')}-{number + 1}")
                        # green, or yellow for the measurement OHIF has selected
                        green = (picture[:, :, 1] >= 220) & (picture[:, :, 2] <= 70) & (
                            (picture[:, :, 0] <= 70) | (picture[:, :, 0] >= 220))
                        if green.sum() > 40:
                            break
                    assert green.sum() > 40, f"{name}: not drawn ({green.sum()} pixels of OHIF's SR colours)"
                    if name in ("bone", "air"):  # each box drawn: around the bright or dark block it was found on
                        boxes = [b for b in _drawings(green) if b[2] - b[0] > 20 and b[3] - b[1] > 20]
                        assert boxes, name
                        for top, left, bottom, right in boxes:
                            level = picture[top + 4:bottom - 3, left + 4:right - 3].mean(axis=2)
                            share = float(((level > 200) if name == "bone" else (level < 40)).mean())
                            assert share > 0.8, f"{name}: a box drawn is not on its block ({share:.0%})"
            assert any("Length: " in label and label.endswith(" mm") for m in measurements for label in m[3])
            log = driver.get_log("browser")
        finally:
            driver.quit()
    errors = [entry["message"] for entry in log if entry["level"] == "SEVERE"]
    assert errors == [], errors
