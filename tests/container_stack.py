"""`make test-containers` (`python -m tests.container_stack`): the images and the compose stack, for real.

What an operator does, on a Docker engine: build both images with the project's Dockerfiles (from a Python
base image made out of Debian packages when no registry is reachable, with the host's CA bundle handed to
pip for a TLS-intercepting proxy), `up` with two workers, real studies through the test tool, one worker
stopped in the middle of a load and started again, the TLS override with certificates made here, `down`.

It installs docker.io and docker-compose from Debian when they are missing (as root), starts dockerd when
none runs, prints each step and its duration, and removes what it made: containers, networks, volumes,
its images (KEEP_IMAGES=1 keeps them for a faster second run), the dockerd it started. Settings:
PYTHON_IMAGE (a base image to build from instead of making one), DEBIAN_MIRROR (for making one; default
the host's apt mirror), BUILD_CA_BUNDLE (default: the bundle this host's Python trusts).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import requests
import yaml

from tests.dicom_factory import SeriesSpec, write_study
from tests.http_helpers import post_like_original_tool
from tests.services import ROOT, free_port

CA_BUNDLE = ROOT / "docker/build-ca/ca-bundle.pem"
BASE_SCRIPT = ROOT / "docker/python-base-image.sh"
STARTUP_TIMEOUT = 240  # the workers' models load in seconds; containers start in a few more
# Enough that the load outlasts a worker's graceful stop (120 were all answered before `docker stop` returned
# once the stop got quicker: nothing was then checked).
LOAD_REQUESTS = 400
LOAD_CLIENTS = 4


class StepFailed(AssertionError):
    pass


def check(condition, message: str) -> None:
    if not condition:
        raise StepFailed(message)


def run(args: list[str], *, env: dict | None = None, timeout: float = 600, capture: bool = True,
        check_exit: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=capture, text=True,
                            timeout=timeout)
    if check_exit and result.returncode != 0:
        raise StepFailed(f"`{' '.join(args)}` exited {result.returncode}:\n{(result.stdout or '')[-3000:]}"
                         f"{(result.stderr or '')[-3000:]}")
    return result


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StepFailed(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------------- the engine


class Engine:
    """The Docker engine and compose, installed and started when missing; stopped again if started here."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.dockerd: subprocess.Popen | None = None
        self.compose: list[str] = []

    def install_missing(self) -> str:
        packages = []
        if not shutil.which("dockerd"):
            packages.append("docker.io")
        if not shutil.which("docker-compose"):
            packages.append("docker-compose")
        if not shutil.which("debootstrap") and not os.environ.get("PYTHON_IMAGE"):
            packages.append("debootstrap")
        if not packages:
            return "docker.io, docker-compose and debootstrap are installed"
        check(os.geteuid() == 0, f"{' '.join(packages)} missing: install them (apt-get install {' '.join(packages)})"
                                 " or run this as root")
        run(["apt-get", "update", "-q"], timeout=600)
        run(["apt-get", "install", "-y", "-q", *packages], env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=900)
        return f"installed {' '.join(packages)}"

    def _answers(self) -> bool:
        return run(["docker", "info", "--format", "{{.ServerVersion}}"], check_exit=False, timeout=30).returncode == 0

    def start(self) -> str:
        if self._answers():
            version = run(["docker", "info", "--format", "{{.ServerVersion}} {{.Driver}}"]).stdout.strip()
            return f"dockerd {version} was running"
        log = open(self.workdir / "dockerd.log", "w")  # noqa: SIM115 (closed with the process)
        self.dockerd = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(lambda: self.dockerd.poll() is not None or self._answers(), 60, "dockerd to answer")
        finally:
            log.close()
        check(self.dockerd.poll() is None, f"dockerd exited {self.dockerd.returncode}:\n"
                                           f"{(self.workdir / 'dockerd.log').read_text()[-3000:]}")
        version = run(["docker", "info", "--format", "{{.ServerVersion}} {{.Driver}}"]).stdout.strip()
        return f"started dockerd {version} (its log: {self.workdir / 'dockerd.log'})"

    def stop(self) -> None:
        if self.dockerd is not None and self.dockerd.poll() is None:
            self.dockerd.send_signal(signal.SIGTERM)
            try:
                self.dockerd.wait(60)
            except subprocess.TimeoutExpired:
                self.dockerd.kill()
                self.dockerd.wait(10)

    def find_compose(self) -> str:
        if shutil.which("docker-compose"):
            self.compose = ["docker-compose"]
        else:
            check(run(["docker", "compose", "version"], check_exit=False).returncode == 0,
                  "neither docker-compose nor `docker compose` is available")
            self.compose = ["docker", "compose"]
        return run([*self.compose, "version"]).stdout.splitlines()[0]


# --------------------------------------------------------------------------------- the stack


class Stack:
    """One compose project (its own name, so nothing of the operator's is touched) with its files."""

    def __init__(self, engine: Engine, name: str, tag: str, python_image: str) -> None:
        self.engine, self.name = engine, name
        self.port = free_port()
        self.env = {"IMAGE_TAG": tag, "PYTHON_IMAGE": python_image, "HTTP_PUBLISH": f"127.0.0.1:{self.port}",
                    "COMPOSE_PROJECT_NAME": name}
        self.files = ["docker-compose.yml"]

    def compose(self, *args: str, timeout: float = 600, check_exit: bool = True) -> subprocess.CompletedProcess:
        files = [arg for path in self.files for arg in ("-f", str(path))]
        return run([*self.engine.compose, "-p", self.name, *files, *args], env=self.env, timeout=timeout,
                   check_exit=check_exit)

    def containers(self, service: str, all_states: bool = False) -> list[str]:
        args = ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={self.name}",
                "--filter", f"label=com.docker.compose.service={service}"]
        return run(args + (["-a"] if all_states else [])).stdout.split()

    def health(self, container: str) -> str:
        state = json.loads(run(["docker", "inspect", "--format", "{{json .State}}", container]).stdout)
        return state.get("Health", {}).get("Status", state["Status"])

    def wait_healthy(self, replicas: int) -> float:
        started = time.monotonic()

        def healthy() -> bool:
            workers, bridges = self.containers("worker"), self.containers("bridge")
            return (len(workers) == replicas and len(bridges) == 1
                    and all(self.health(c) == "healthy" for c in workers + bridges))

        wait_until(healthy, STARTUP_TIMEOUT, f"{replicas} healthy workers and a healthy bridge", interval=2)
        return time.monotonic() - started

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    def worker_metric(self, container: str, name: str) -> float:
        """A worker's metric, summed over its series, read inside its container (port 9464 is not published)."""
        script = ("import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9464/metrics', "
                  "timeout=5).read().decode())")
        text = run(["docker", "exec", container, "python", "-c", script]).stdout
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") or line.startswith(name + " "))

    def logs(self, container: str) -> str:
        result = run(["docker", "logs", container])
        return result.stdout + result.stderr

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "45", timeout=300)

    def leftovers(self) -> list[str]:
        label = f"label=com.docker.compose.project={self.name}"
        found = []
        for kind, args in (("container", ["docker", "ps", "-aq"]), ("network", ["docker", "network", "ls", "-q"]),
                           ("volume", ["docker", "volume", "ls", "-q"])):
            found += [f"{kind} {ident}" for ident in run([*args, "--filter", label]).stdout.split()]
        return found


# --------------------------------------------------------------------------------- the steps


class Run:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.engine = Engine(workdir)
        self.suffix = f"{os.getpid()}"
        self.tag = f"containertest-{self.suffix}"
        self.base_made: str | None = None
        self.ca_copied = False
        self.stack: Stack | None = None
        self.images_before: set[str] = set()
        self.passed: list[str] = []
        self.failed: list[str] = []
        self.figures: list[str] = []

    def step(self, name: str, action: Callable[[], str | None]) -> None:
        print(f"-- {name} ...", flush=True)
        started = time.monotonic()
        try:
            note = action()
        except Exception as error:
            seconds = time.monotonic() - started
            print(f"FAILED {name} ({seconds:.1f} s): {error}", flush=True)
            if not isinstance(error, StepFailed):
                traceback.print_exc()
            self.failed.append(name)
            raise
        seconds = time.monotonic() - started
        print(f"ok     {name} ({seconds:.1f} s){': ' + note if note else ''}", flush=True)
        self.passed.append(name)

    # ----- preparation

    def base_image(self) -> str:
        given = os.environ.get("PYTHON_IMAGE")
        if given:
            return f"building FROM {given} (PYTHON_IMAGE)"
        made = f"arterys-grpc-bridge/python-base:containertest-{self.suffix}"
        args = [str(BASE_SCRIPT), "--tag", made]
        if os.environ.get("DEBIAN_MIRROR"):
            args += ["--mirror", os.environ["DEBIAN_MIRROR"]]
        self.base_made = made
        out = run(args, timeout=900).stdout.strip().splitlines()
        return f"no registry needed: {made} made from Debian packages ({out[0] if out else ''})"

    def python_image(self) -> str:
        return os.environ.get("PYTHON_IMAGE") or self.base_made

    def ca_bundle(self) -> str:
        if CA_BUNDLE.exists():
            return f"using the operator's {CA_BUNDLE.relative_to(ROOT)}"
        paths = ssl.get_default_verify_paths()
        source = (os.environ.get("BUILD_CA_BUNDLE") or os.environ.get("PIP_CERT") or paths.cafile
                  or paths.openssl_cafile)
        check(source and Path(source).is_file(), f"no CA bundle at {source}: set BUILD_CA_BUNDLE")
        shutil.copyfile(source, CA_BUNDLE)
        self.ca_copied = True
        return f"pip in the build trusts {source} (copied to {CA_BUNDLE.relative_to(ROOT)} for the build only)"

    def build(self) -> str:
        self.images_before = set(run(["docker", "images", "-aq"]).stdout.split())
        self.stack = Stack(self.engine, f"arterysct{self.suffix}", self.tag, self.python_image())
        times = []
        for service in ("bridge", "worker"):
            started = time.monotonic()
            self.stack.compose("build", service, timeout=1200)
            times.append(f"{service} {time.monotonic() - started:.0f} s")
            self.figures.append(f"build {service}: {time.monotonic() - started:.0f} s")
        return ", ".join(times)

    def images_hold_no_build_secret(self) -> str:
        notes = []
        for service in ("bridge", "worker"):
            image = f"arterys-grpc-bridge/{service}:{self.tag}"
            config = json.loads(run(["docker", "image", "inspect", image]).stdout)[0]["Config"]
            check(config["User"] == "10001:10001", f"{image} runs as {config['User']!r}")
            check(not any(v.startswith("PIP_CERT=") for v in config["Env"]), f"{image} keeps PIP_CERT")
            archive = self.workdir / f"{service}.tar"
            run(["docker", "save", "-o", str(archive), image], timeout=300)
            names = layer_file_names(archive)
            archive.unlink()
            check(not any(name.lstrip("./").startswith("build-ca") for name in names),
                  f"{image} has the build's CA folder in a layer")
            size = json.loads(run(["docker", "image", "inspect", image]).stdout)[0]["Size"]
            notes.append(f"{service} {size / 1e6:.0f} MB")
            self.figures.append(f"image {service}: {size / 1e6:.0f} MB")
        return "no build-ca in any layer, no PIP_CERT, user 10001; " + ", ".join(notes)

    # ----- the plain stack

    def up(self) -> str:
        self.stack.compose("up", "-d", "--scale", "worker=2", timeout=STARTUP_TIMEOUT + 60)
        seconds = self.stack.wait_healthy(2)
        answer = requests.get(self.stack.url() + "/healthcheck", timeout=5)
        check(answer.status_code == 200 and answer.text.strip() == "READY", f"/healthcheck: {answer.text!r}")
        self.figures.append(f"up to healthy, 2 workers: {seconds:.0f} s")
        return f"2 workers and the bridge healthy after {seconds:.0f} s; /healthcheck READY"

    def studies(self) -> str:
        study = self.workdir / "study"
        write_study(study, [SeriesSpec("ct axial", rows=32, cols=48, count=6)])
        results = []
        for name, args in (("3D mask", ["-c", "get-probability-mask"]),
                           ("bounding box", ["-c", "get-bounding-box-2d"]),
                           ("DICOM outputs", ["-c", "get-probability-mask", "--output-formats", "arterys,dicom"])):
            out = self.workdir / f"testtool-{name.replace(' ', '-')}"
            result = run([sys.executable, "-m", "testtool", "-i", str(study), "-o", str(out), "--host", "127.0.0.1",
                          "-p", str(self.stack.port), "-q", *args], check_exit=False, timeout=120)
            check(result.returncode == 0, f"test tool, {name}: exit {result.returncode}\n{result.stdout[-2000:]}"
                                          f"{result.stderr[-2000:]}")
            check(json.loads((out / "response.json").read_text()), f"{name}: empty answer")
            if name == "DICOM outputs":
                check(list(out.glob("sc_*.dcm")), "DICOM outputs: no DICOM object in the answer")
            results.append(name)
        return f"{', '.join(results)}: answered, 0 protocol violations (test tool exit 0)"

    def stop_one_worker_mid_load(self) -> str:
        study = self.workdir / "load-study"
        record = write_study(study, [SeriesSpec("ct load", rows=64, cols=64, count=8)], seed=11)
        files = [instance.path for instance in record.instances]
        workers = self.stack.containers("worker")
        victim, survivor = workers[0], workers[1]
        done, codes = [], []

        def one(_):
            answer = post_like_original_tool(self.stack.url() + "/", {"inference_command": "get-probability-mask"},
                                             files, timeout=120)
            done.append(1)
            return answer.status_code

        with concurrent.futures.ThreadPoolExecutor(LOAD_CLIENTS) as pool:
            futures = [pool.submit(one, i) for i in range(LOAD_REQUESTS)]
            wait_until(lambda: len(done) >= LOAD_REQUESTS // 4, 120, "a quarter of the load", interval=0.05)
            stopped_at = len(done)
            run(["docker", "stop", "--time", "45", victim], timeout=120)
            after_stop = LOAD_REQUESTS - len(done)
            codes = [future.result() for future in futures]
        check(after_stop > 0, "the load ended before the worker had stopped: nothing was checked")
        lost = [code for code in codes if code != 200]
        check(not lost, f"{len(lost)} of {LOAD_REQUESTS} requests failed while a worker stopped: {sorted(set(lost))}")
        state = json.loads(run(["docker", "inspect", "--format", "{{json .State}}", victim]).stdout)
        check(state["ExitCode"] == 0, f"the stopped worker exited {state['ExitCode']}")
        logs = self.stack.logs(victim)
        bad = [line for line in logs.splitlines() if " ERROR " in line or "Traceback" in line]
        check(not bad, "the stopped worker logged errors:\n" + "\n".join(bad[:20]))
        served = self.stack.worker_metric(survivor, "worker_inferences_total")
        return (f"{LOAD_REQUESTS} requests from {LOAD_CLIENTS} clients, a worker stopped (SIGTERM) after "
                f"{stopped_at} answers ({after_stop} still to come once it had stopped): all 200, it exited 0 with no "
                f"ERROR line; the other served {served:.0f}")

    def restart_worker(self) -> str:
        running = self.stack.containers("worker")
        stopped = [c for c in self.stack.containers("worker", all_states=True) if c not in running]
        check(len(stopped) == 1, f"expected one stopped worker, found {stopped}")
        (restarted,) = stopped
        started = time.monotonic()
        self.stack.compose("up", "-d", "--scale", "worker=2", "--no-recreate")
        self.stack.wait_healthy(2)
        healthy = time.monotonic() - started
        study = self.workdir / "study"
        files = sorted(study.glob("*.dcm"))

        def served() -> bool:
            for _ in range(4):  # round_robin: a few requests reach every ready worker
                answer = post_like_original_tool(self.stack.url() + "/", {"inference_command": "get-bounding-box-2d"},
                                                 files, timeout=60)
                check(answer.status_code == 200, f"a request failed after the restart: {answer.status_code}")
            return self.stack.worker_metric(restarted, "worker_inferences_total") > 0

        wait_until(served, 60, "the restarted worker to receive requests", interval=0.5)
        traffic = time.monotonic() - started
        self.figures.append(f"restarted worker: healthy after {healthy:.0f} s, serving after {traffic:.0f} s")
        return f"healthy after {healthy:.0f} s, serving requests after {traffic:.0f} s"

    def down(self) -> str:
        self.stack.down()
        left = self.stack.leftovers()
        check(not left, f"`down` left {', '.join(left)}")
        return "no container, network or volume left"

    # ----- TLS

    def tls(self) -> str:
        from tools.make_certs import make

        secrets_dir = self.workdir / "secrets"
        paths = make(secrets_dir, ["localhost", "127.0.0.1"])
        override = self.workdir / "secrets-override.yml"
        # The secrets' files, moved to this run's folder (deploy/compose/secrets stays the operator's). With a
        # service: docker-compose 1.x takes a file without one for the old version 1 format.
        override.write_text(yaml.safe_dump({"services": {"bridge": {}},
                                            "secrets": {name: {"file": str(path)} for name, path in paths.items()}}))
        self.stack.files = ["docker-compose.yml", "deploy/compose/tls.yml", str(override)]
        self.stack.compose("up", "-d", "--scale", "worker=2", timeout=STARTUP_TIMEOUT + 60)
        seconds = self.stack.wait_healthy(2)
        token = [line for line in paths["bridge-tokens"].read_text().splitlines() if not line.startswith("#")][0]
        url = self.stack.url("https")
        refused = requests.get(url + "/", verify=str(paths["ca.crt"]), timeout=10)
        check(refused.status_code == 401, f"HTTPS without a token: {refused.status_code}, not 401")
        study = self.workdir / "study"
        out = self.workdir / "testtool-tls"
        result = run([sys.executable, "-m", "testtool", "-i", str(study), "-o", str(out), "--host", "127.0.0.1",
                      "-p", str(self.stack.port), "-q", "--cacert", str(paths["ca.crt"]), "--token", token,
                      "-c", "get-probability-mask"], check_exit=False, timeout=120)
        check(result.returncode == 0, f"test tool over HTTPS: exit {result.returncode}\n{result.stderr[-2000:]}")
        self.stack.down()
        left = self.stack.leftovers()
        check(not left, f"`down` left {', '.join(left)}")
        return (f"healthy after {seconds:.0f} s (worker probes over mutual TLS, bridge probe over HTTPS); "
                f"401 without a token, a study answered over HTTPS with one; down left nothing")

    # ----- cleaning up

    def cleanup(self) -> list[str]:
        problems = []
        if self.stack is not None:
            with contextlib.suppress(Exception):
                self.stack.down()
            problems += self.stack.leftovers() if self.engine._answers() else []
        if self.ca_copied:
            CA_BUNDLE.unlink(missing_ok=True)
        if os.environ.get("KEEP_IMAGES") != "1" and self.engine._answers():
            images = [f"arterys-grpc-bridge/{service}:{self.tag}" for service in ("bridge", "worker")]
            if self.base_made:
                images.append(self.base_made)
            run(["docker", "rmi", "-f", *images], check_exit=False)
            # The build stages the legacy builder leaves untagged.
            new = set(run(["docker", "images", "-aq", "--filter", "dangling=true"]).stdout.split())
            if self.images_before and new - self.images_before:
                run(["docker", "rmi", "-f", *(new - self.images_before)], check_exit=False)
        self.engine.stop()
        return problems


def layer_file_names(archive: Path) -> list[str]:
    """Every path in every layer of a `docker save` archive."""
    names = []
    with tarfile.open(archive) as outer:
        for member in outer.getmembers():
            if member.name.endswith("layer.tar") or member.name.startswith("blobs/"):
                handle = outer.extractfile(member)
                if handle is None:
                    continue
                try:
                    with tarfile.open(fileobj=handle) as layer:
                        names += layer.getnames()
                except tarfile.ReadError:  # a config or manifest blob, not a layer
                    continue
    return names


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="container-test-") as tmp:
        state = Run(Path(tmp))
        steps = [
            ("tools: docker.io, docker-compose, debootstrap", state.engine.install_missing),
            ("engine: dockerd", state.engine.start),
            ("compose", state.engine.find_compose),
            ("Python base image", state.base_image),
            ("CA bundle for pip (TLS-intercepting proxy)", state.ca_bundle),
            ("build both images (compose build)", state.build),
            ("images keep no build secret", state.images_hold_no_build_secret),
            ("up --scale worker=2, wait for health", state.up),
            ("studies through the test tool", state.studies),
            ("stop one worker mid-load", state.stop_one_worker_mid_load),
            ("up again: the worker returns and gets traffic", state.restart_worker),
            ("down", state.down),
            ("TLS override: HTTPS, tokens, mutual TLS", state.tls),
        ]
        try:
            for name, action in steps:
                state.step(name, action)
        except Exception:
            pass
        finally:
            print("-- cleaning up ...", flush=True)
            cleaning = time.monotonic()
            problems = state.cleanup()
            print(f"{'ok    ' if not problems else 'FAILED'} cleaning up ({time.monotonic() - cleaning:.1f} s)"
                  f"{': left ' + ', '.join(problems) if problems else ''}", flush=True)
            if problems:
                state.failed.append("cleaning up")
    total = time.monotonic() - started
    for figure in state.figures:
        print(f"   {figure}")
    print(f"container test took {total:.0f} s")
    skipped = len(steps) - len(state.passed) - len(state.failed)
    print(f"containers: {len(state.passed)} passed, {len(state.failed) + skipped} failed")
    return 0 if not state.failed and not skipped else 1


if __name__ == "__main__":
    sys.exit(main())
