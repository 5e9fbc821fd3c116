"""The test tool's HTML report and contact sheets, from real runs against real worker and bridge processes.

The report is opened in a real headless Chromium (Debian's `chromium` + `chromium-driver`, driven by
selenium): every image must load, the page must log no error, and a screenshot is saved beside the
report. Missing Chromium is a failure, not a skip: `make test` installs it (tools/system-tools.txt).
"""

from __future__ import annotations

import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import system_tools
from tests.dicom_factory import write_standard_study
from tests.services import ROOT, mock_stack
from testtool.drawing import LINE_COLOR
from testtool.loading import load_study
from testtool.sheets import MARKED, Tile, contact_sheet

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1600")
SERIES = 4  # write_standard_study


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess, object]]:
    """One tool run per command, against the mock model behind a bridge: {command: (out dir, run, study)}."""
    root = tmp_path_factory.mktemp("root")
    study = write_standard_study(root / "study")
    results = {}
    with mock_stack(tmp_path_factory.mktemp("stack"), root) as stack:
        for command in ("get-label-mask", "get-linear-measurements"):
            out = tmp_path_factory.mktemp(command) / "out"
            run = subprocess.run([sys.executable, "-m", "testtool", "--host", "127.0.0.1", "-p", str(stack["port"]),
                                  "-i", str(study.folder), "-o", str(out), "-c", command, "-l"],
                                 cwd=ROOT, capture_output=True, text=True, timeout=120)
            assert run.returncode == 0, run.stdout + run.stderr
            results[command] = (out, run, study)
    return results


# ---------------------------------------------------------------------------------------------------
# In a browser


def chromium_driver(profile: Path):
    """A selenium Chrome driver on Debian's chromium; fails the test when either program is missing."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = system_tools.require("chromium", "chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def test_the_report_opens_in_a_real_browser(runs, tmp_path):
    out, _, _ = runs["get-label-mask"]
    profile = tmp_path / "profile"
    profile.mkdir()
    driver = chromium_driver(profile)
    try:
        driver.set_page_load_timeout(30)
        driver.get((out / "index.html").as_uri())
        images = driver.execute_script(
            "return Array.from(document.images, i => [i.getAttribute('src'), i.complete, i.naturalWidth]);")
        headings = driver.execute_script("return Array.from(document.querySelectorAll('h2'), h => h.textContent);")
        log = driver.get_log("browser")
        screenshot = out / "report_screenshot.png"
        assert driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()

    sources = [src for src, _, _ in images]
    assert [src for src in sources if src.endswith("_sheet.png")] == [f"series{n:02d}_sheet.png"
                                                                       for n in range(1, SERIES + 1)]
    # Each frame with findings: the image as sent (plain/) beside the same frame with its findings drawn.
    pairs = [(src, sources[i + 1]) for i, src in enumerate(sources) if src.startswith("plain/")]
    assert pairs and all(overlay == plain.removeprefix("plain/") for plain, overlay in pairs), sources
    assert all(complete and width > 0 for _, complete, width in images), images
    assert log == []  # no error, no warning: a missing image or a script error would show here
    assert headings == ["Summary", "Series", "Findings", "Protocol checks", "Request and answer"]
    with Image.open(screenshot) as shot:
        assert shot.format == "PNG" and shot.width == 1280 and shot.height > 1000  # the window's viewport
        pixels = np.asarray(shot.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100  # text, tables and overlays, not a blank page
    assert (pixels == (230, 25, 75)).all(axis=2).any()  # the label mask's "core" colour: the sheets are shown


# ---------------------------------------------------------------------------------------------------
# The page's content


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"
        self.targets += [value for name, value in attrs if name in ("href", "src") and value]


@pytest.mark.parametrize("command", ["get-label-mask", "get-linear-measurements"])
def test_every_link_is_relative_and_resolves(runs, command):
    out, _, _ = runs[command]
    links = _Links()
    links.feed((out / "index.html").read_text(encoding="utf-8"))
    files = [target for target in links.targets if not target.startswith("#")]
    assert links.scripts == 0
    assert files and all(":" not in target and not target.startswith("/") for target in files), files
    assert [target for target in files if not (out / target).is_file()] == []
    for number in range(1, SERIES + 1):
        assert f"series{number:02d}_sheet.png" in files
    assert len([target for target in files if "_slice" in target]) >= 18  # every per-frame PNG is listed


def test_the_page_names_whole_series_uids_findings_checks_and_json(runs):
    out, run, study = runs["get-linear-measurements"]
    page = (out / "index.html").read_text(encoding="utf-8")
    answer = json.loads((out / "response.json").read_text())

    for spec in study.series:
        assert page.count(spec.series_uid) >= 2  # summary table and series section, never shortened
        assert spec.series_uid in run.stdout  # the terminal summary too
    assert "0 protocol violations" in page and "0 violations" in page
    for item in answer["linear_measurements_2d"]:
        assert item["SOPInstanceUID"] in page
    assert "world [x, y] names no single point" in page  # the sagittal series' note
    assert "&quot;inference_command&quot;: &quot;get-linear-measurements&quot;" in page  # request JSON, escaped
    assert (out / "hashes.txt").read_text() in page


def middle_axial_png(out: Path, study) -> Path:
    """The PNG of the middle image (4th of 6) of the axial CT; series are numbered in UID order here."""
    axial = next(spec for spec in study.series if spec.description == "ct axial")
    number = list(load_study(study.folder).series).index(axial.series_uid) + 1
    return out / f"series{number:02d}_slice0004_frame01.png"


def test_label_mask_legend_is_listed_on_the_page_and_below_each_image(runs):
    out, _, study = runs["get-label-mask"]
    page = (out / "index.html").read_text(encoding="utf-8")
    assert page.count('class="swatch"') == 2 * SERIES + 2  # core and rim, for every series and the whole study
    with Image.open(middle_axial_png(out, study)) as img:
        pixels = np.asarray(img.convert("RGB"))
    image_height = 32 * 8  # the axial CT: 32 rows at scale 8; the panel is below it
    assert pixels.shape[0] > image_height
    assert (pixels[image_height:, :40] == (230, 25, 75)).all(axis=2).any()  # the "core" swatch


def test_world_measurements_are_drawn_on_the_image(runs):
    """The mock model measures 10.5 mm along x from the middle axial image's position: from pixel (0, 0)
    to column 15 (0.7 mm columns), drawn at scale 8."""
    out, _, study = runs["get-linear-measurements"]
    with Image.open(middle_axial_png(out, study)) as img:
        pixels = np.asarray(img.convert("RGB"))
    cyan = (pixels == LINE_COLOR).all(axis=2)
    # the line runs along canvas row 3.5 from column 3.5 to 123.5 (its label follows it on the right)
    assert any(cyan[row, 6:121].all() for row in (3, 4))
    assert not cyan[12:, :4].any()  # nowhere else at the left edge: it starts at the image's first pixel


# ---------------------------------------------------------------------------------------------------
# Contact sheets


def test_contact_sheet_holds_every_tile_in_order_and_outlines_the_marked_ones():
    colours = [(200, 30 * k, 0) for k in range(7)]
    tiles = [Tile(Image.new("RGB", (40, 30), colour), f"{k + 1}", marked=k == 2) for k, colour in enumerate(colours)]
    sheet = np.asarray(contact_sheet(tiles, ["series 1", "SeriesInstanceUID 1.2.3"], [("core", (0, 0, 250))]))

    corners = []
    for colour in colours:
        rows, cols = np.nonzero((sheet == colour).all(axis=2))
        assert rows.size == 40 * 30, colour  # the whole tile, once
        corners.append((rows.min(), cols.min()))
    assert corners == sorted(corners)  # row by row, left to right
    assert len({row for row, _ in corners}) == 1  # 7 small tiles fit one row of the sheet
    top, left = corners[2]
    assert (sheet[top - 2, left:left + 40] == MARKED).all() and not (sheet[corners[1][0] - 2] == MARKED).all()
    assert (sheet[corners[0][0] + 30:] == (0, 0, 250)).all(axis=2).any()  # the legend, below the tiles


def outlined_tiles(sheet: np.ndarray, colour) -> int:
    """Rectangles outlined in `colour`: pixels of it with none above or to the left, and more below and right."""
    on = (sheet == colour).all(axis=2)
    padded = np.pad(on, 1)
    corner = on & ~padded[:-2, 1:-1] & ~padded[1:-1, :-2] & padded[2:, 1:-1] & padded[1:-1, 2:]
    return int(corner.sum())


def test_every_series_gets_a_sheet_with_all_its_frames(runs):
    out, _, study = runs["get-label-mask"]
    loaded = load_study(study.folder)
    for number, images in enumerate(loaded.series.values(), start=1):
        with Image.open(out / f"series{number:02d}_sheet.png") as sheet:
            pixels = np.asarray(sheet.convert("RGB"))
        # every frame of every series carries the label mask, so every tile is outlined as marked
        assert outlined_tiles(pixels, MARKED) == sum(image.frames for image in images)
