"""The DICOM consumers the tests run for real: Orthanc with its DICOMweb plugin (Debian's `orthanc`,
`orthanc-dicomweb`), the OHIF viewer's built app (npm's @ohif/app, installed by tests/viewers/install-ohif.sh)
served behind a same-origin proxy to Orthanc (Orthanc sends no CORS headers), and headless Chromium.

Everything listens on loopback and lives in the test's temporary folder; a missing program is a failure
naming the command that installs it (`make test` installs them all: tools/system-tools.txt).
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.services import ROOT, free_port
from tests.system_tools import require

OHIF_DIR = ROOT / "tests" / "viewers" / "ohif"
OHIF_VERSION = "3.13.2"  # tests/viewers/install-ohif.sh installs it
DICOMWEB_PLUGINS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so.1.7")
# Debian's chromium refuses connections on a closed network without the background services turned off;
# WebGL (OHIF draws with it) needs SwiftShader, which newer Chromium only uses when told to.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--window-size=1600,1000")
ARTIFACTS = ROOT / "test-artifacts"  # screenshots kept after the run (gitignored)


@dataclass
class Orthanc:
    url: str
    process: subprocess.Popen
    log_path: Path
    auth: tuple[str, str] | None = None

    @property
    def dicomweb(self) -> str:
        return self.url + "/dicom-web"

    def store(self, data: bytes) -> str:
        """Stores one instance through Orthanc's REST API; returns its Orthanc id."""
        response = requests.post(self.url + "/instances", data=data, auth=self.auth, timeout=30)
        response.raise_for_status()
        return response.json()["ID"]

    def qido(self, path: str) -> list[dict]:
        response = requests.get(self.dicomweb + path, auth=self.auth, timeout=30,
                                headers={"Accept": "application/dicom+json"})
        response.raise_for_status()
        return response.json() if response.content else []

    def wado_instance(self, study: str, series: str, instance: str) -> bytes:
        """One instance through WADO-RS, as the Part 10 bytes of its multipart/related answer."""
        response = requests.get(f"{self.dicomweb}/studies/{study}/series/{series}/instances/{instance}",
                                auth=self.auth, timeout=30,
                                headers={"Accept": 'multipart/related; type="application/dicom"'})
        response.raise_for_status()
        from requests_toolbelt.multipart.decoder import MultipartDecoder

        (part,) = MultipartDecoder.from_response(response).parts
        return part.content

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _plugin() -> str:
    for path in DICOMWEB_PLUGINS:
        if Path(path).exists():
            return path
    return require(DICOMWEB_PLUGINS[0])[0]  # fails the test, naming its Debian package


@contextmanager
def orthanc(tmp: Path, users: dict[str, str] | None = None):
    """An Orthanc of its own on a free loopback port (DICOMweb at /dicom-web; no DICOM port), its storage in
    `tmp`; with `users`, HTTP basic authentication."""
    (binary,) = require("Orthanc")
    folder = tmp / "orthanc"
    (folder / "db").mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = {
        "Name": "arterys-tests", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": bool(users), "RegisteredUsers": users or {},
        "Plugins": [_plugin()], "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        "StorageCompression": False, "SaveJobs": False,
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log_path = folder / "orthanc.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    server = Orthanc(f"http://127.0.0.1:{port}", process, log_path,
                     next(iter(users.items())) if users else None)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(server.url + "/system", auth=server.auth, timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Orthanc did not start:\n{server.log()[-2000:]}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ohif_dist() -> Path:
    stamp = OHIF_DIR / "VERSION"
    if not stamp.exists() or stamp.read_text().strip() != OHIF_VERSION:
        require("npm")
        pytest.fail(f"the OHIF viewer {OHIF_VERSION} is not installed: tests/viewers/install-ohif.sh "
                    "(`make system-tools` runs it)")
    return OHIF_DIR


def app_config(name: str) -> str:
    """OHIF's app-config.js: one DICOMweb data source, on the page's own origin (the proxy forwards
    /dicom-web to Orthanc), no investigational-use dialog."""
    source = {
        "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb", "sourceName": name,
        "configuration": {
            "friendlyName": "Orthanc", "name": name, "wadoUriRoot": "/wado", "qidoRoot": "/dicom-web",
            "wadoRoot": "/dicom-web", "qidoSupportsIncludeField": False, "imageRendering": "wadors",
            "thumbnailRendering": "wadors", "enableStudyLazyLoad": True, "supportsFuzzyMatching": False,
            "supportsWildcard": True, "staticWado": False, "singlepart": "bulkdata,video",
            "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
            "omitQuotationForMultipartRequest": True,
        },
    }
    config = {"routerBasename": "/", "extensions": [], "modes": [], "showStudyList": True,
              "maxNumberOfWebWorkers": 1, "showCPUFallbackMessage": False, "showLoadingIndicator": False,
              "strictZSpacingForVolumeViewport": False, "investigationalUseDialog": {"option": "never"},
              "defaultDataSourceName": name, "dataSources": [source]}
    return f"window.config = {json.dumps(config)};\n"


@contextmanager
def viewer(dist: Path, target: Orthanc):
    """OHIF's dist/ served on a loopback port, /app-config.js ours, /dicom-web/* forwarded to Orthanc, every
    other path the app's index.html (its router's pages). Yields the base URL."""
    config = app_config("orthanc").encode()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(dist), **kwargs)

        def log_message(self, *args):  # quiet: the test reads the browser's log, not the server's
            pass

        def do_GET(self):
            if self.path.startswith("/dicom-web/"):
                return self._forward()
            if self.path == "/app-config.js":
                return self._send(200, "application/javascript", config)
            if not (dist / self.path.split("?")[0].lstrip("/")).is_file():
                self.path = "/index.html"
            return super().do_GET()

        def _forward(self):
            headers = {"Accept": self.headers["Accept"]} if self.headers.get("Accept") else {}
            answer = requests.get(target.url + self.path, headers=headers, auth=target.auth, timeout=60)
            self._send(answer.status_code, answer.headers.get("Content-Type", "application/octet-stream"),
                       answer.content)

        def _send(self, status: int, content_type: str, body: bytes):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def chromium(profile: Path):
    """A selenium driver on Debian's chromium, a fresh profile, the browser's log kept."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = require("chromium", "chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))
