# ruff: noqa: S108
"""DICOMweb benchmark: RadPACS against Orthanc's DICOMweb plugin, same data, same run.

    .venv/bin/python bench/dicomweb.py [--rounds 3] [--qido-instances 100000]

Both servers run on this machine, one after the other or side by side, and are asked
the same things in alternating order (the figures are medians):

1. STOW-RS instances/s with 1 and 4 concurrent clients (threads, one `requests`
   session each, posting multipart/related batches of 10 CT 512x512 instances; the same
   files to both; a fresh, empty archive for every pass).
2. QIDO-RS study searches, p50/p95 of 200 queries (half by PatientID, half by a
   StudyDate range of 1-7 days) over an index of 100,000 instances; the match counts of
   both servers are compared query by query.
3. WADO-RS /metadata of a 500-instance CT series (p50 of 20 requests).
4. Rendered frames (`…/frames/1/rendered`, image/jpeg) of 512x512 16-bit CT
   instances, p50/p95 of 100 requests over different instances.
5. WADO-RS retrieve of a whole 300-instance CT series (`transfer-syntax=*`), MB/s.

RadPACS runs as deployed: gunicorn (sync workers, DEBUG=0) on a private PostgreSQL
cluster, images on local disk, follow-up tasks through a private Redis and one Celery
worker (`--celery eager`: in the request instead). Orthanc is Debian's, with its
DICOMweb plugin (`apt-get install orthanc-dicomweb`) and its own config in a temp dir.
Only 127.0.0.1 is ever used (Orthanc also binds its ports on the other interfaces:
it has no loopback-only option; `RemoteAccessAllowed: false` refuses other callers).
Processes, the PostgreSQL cluster and temp dirs are removed on exit, Ctrl-C included;
the data sets stay in the cache dir (--cache) for the next run. The results table is
printed and written into docs/benchmarks.md (--no-write: not).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from harness import (
    CLEANUP,
    DICOMWEB_PLUGIN,
    FIND_PER_STUDY,
    ORTHANC,
    PYTHON,
    REPO,
    Postgres,
    bulkload_index,
    chunks,
    clean_env,
    dcmtk,
    ensure_packages,
    find_data_set,
    find_queries,
    free_port,
    import_synthetic,
    log,
    machine_busy,
    median,
    percentile,
    port_open,
    proc_cpu,
    push_data_set,
    retire,
    run,
    run_main,
    run_storescu,
    start_process,
    status_kib_total,
    stop_packaged_orthanc,
    stop_process,
    tree_cpu,
    wait_for,
)

FACILITY_CODE = "BENCH"
USERNAME = "bench"
ORTHANC_AET = "ORTHANC"
STORE_AET = "STORESCU"
RESULTS_START = "<!-- dicomweb results: start -->"
RESULTS_END = "<!-- dicomweb results: end -->"
SECTION_TITLE = "## DICOMweb against Orthanc's DICOMweb plugin"
DICOM_JSON = "application/dicom+json"
RETRIEVE_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
REQUEST_TIMEOUT = 300  # seconds, for any one HTTP request of the benchmark
WARMUP_STUDIES = 8  # one instance of each stored before every timed STOW-RS pass

# Goals of issue 4: each figure at least 2x better than Orthanc's; and these bounds.
GOAL_RATIO = 2.0
GOAL_METADATA_MS = 100.0
GOAL_RENDERED_P50_MS = 30.0


# ------------------------------------------------------------------------- servers


class RadPACSWeb:
    """The web app as docs/operations.md deploys it: gunicorn `config.wsgi`, sync
    workers, on a private PostgreSQL database copied from a migrated template."""

    name = "RadPACS"

    def __init__(
        self, root: Path, pg: Postgres, workers: int, celery: str, extra_env: dict[str, str]
    ):
        self.root = root
        self.pg = pg
        self.workers = workers
        self.celery = celery
        self.extra_env = extra_env
        self.port = free_port()
        self.images = root / "images"
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.token = ""
        self.proc = None
        self.redis = None
        self.redis_port = free_port()
        self.worker = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicom-web"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def env(self, db: str = "radpacs") -> dict[str, str]:
        env = clean_env()
        env.update(
            DJANGO_SETTINGS_MODULE="config.settings",
            DATABASE_URL=self.pg.url(db),
            DATABASE_CONN_MAX_AGE="60",
            SECRET_KEY="radpacs-bench-" + uuid.uuid4().hex * 2,
            DEBUG="0",
            ALLOWED_HOSTS="127.0.0.1,localhost",
            LOG_LEVEL="WARNING",
            VAR_DIR=str(self.root / "var"),
            IMAGE_STORAGE_DIR=str(self.images),
            PYTHONUNBUFFERED="1",
        )
        if self.celery == "redis":
            env["REDIS_URL"] = f"redis://127.0.0.1:{self.redis_port}/0"
        env.update(self.extra_env)
        return env

    def django(self, task: str, payload: Any = None, db: str = "radpacs") -> Any:
        """Run a task of this script inside Django, in a subprocess (see django_task)."""
        out = run(
            [PYTHON, str(Path(__file__).resolve()), "_django", task],
            env=self.env(db),
            cwd=REPO,
            input=json.dumps(payload),
            timeout=1800,
        )
        lines = out.strip().splitlines()
        return json.loads(lines[-1]) if lines else None

    def prepare_template(self) -> None:
        """Migrate once into a template database holding the facility, the user (radiologist
        and technologist there) and its API token; every pass copies it."""
        if self.celery == "redis":
            self.redis = start_process(
                [
                    "redis-server",
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.redis_port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                env=clean_env(),
                log_path=self.logs / "redis.log",
            )
            wait_for("redis-server", lambda: port_open(self.redis_port), 30, self.redis)
        self.pg.sql("CREATE DATABASE radpacs_template")
        run(
            [PYTHON, "manage.py", "migrate", "--no-input"],
            env=self.env("radpacs_template"),
            cwd=REPO,
            timeout=600,
        )
        self.django("setup", db="radpacs_template")
        self.token = run(
            [PYTHON, "manage.py", "issue_api_token", USERNAME],
            env=self.env("radpacs_template"),
            cwd=REPO,
            timeout=120,
        ).strip()

    def reset(self) -> None:
        self.pg.sql("DROP DATABASE IF EXISTS radpacs WITH (FORCE)")
        self.pg.sql("CREATE DATABASE radpacs TEMPLATE radpacs_template")
        retire(self.images, self.root.parent)  # not deleted: see harness.retire
        self.images.mkdir(parents=True)

    def start(self) -> None:
        if self.celery == "redis":
            run(["redis-cli", "-p", str(self.redis_port), "FLUSHALL"], timeout=30)
            worker_log = self.logs / "celery.log"
            worker_log.write_text("")
            self.worker = start_process(
                [
                    PYTHON,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "-l",
                    "WARNING",
                    "--concurrency",
                    "1",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                env=self.env(),
                log_path=worker_log,
                cwd=REPO,
            )
        log_path = self.logs / "gunicorn.log"
        log_path.write_text("")
        self.proc = start_process(
            [
                PYTHON,
                "-m",
                "gunicorn",
                "config.wsgi:application",
                "--workers",
                str(self.workers),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--timeout",
                str(REQUEST_TIMEOUT),
                "--graceful-timeout",
                "10",
                "--log-level",
                "warning",
            ],
            env=self.env(),
            log_path=log_path,
            cwd=REPO,
        )
        wait_for("gunicorn", self._ready, 90, self.proc)
        if self.worker is not None:
            wait_for("celery worker", self._worker_ready, 90, self.worker)

    def _ready(self) -> bool:
        try:
            response = requests.get(f"{self.base}/studies?limit=1", headers=self.headers, timeout=5)
        except requests.RequestException:
            return False
        return response.status_code == 200

    def _worker_ready(self) -> bool:
        out = run(
            [PYTHON, "-m", "celery", "-A", "config", "inspect", "ping", "--timeout", "2"],
            env=self.env(),
            cwd=REPO,
            timeout=30,
            check=False,
        )
        return "pong" in out

    def settle(self, timeout: float = 300) -> None:
        """Wait until the follow-up tasks are done (no study flagged for refresh)."""
        quiet_since = None

        def settled() -> bool:
            nonlocal quiet_since
            flagged = int(
                self.pg.sql("SELECT count(*) FROM pacs_study WHERE needs_refresh", db="radpacs")
            )
            if flagged:
                quiet_since = None
                return False
            quiet_since = quiet_since or time.monotonic()
            return time.monotonic() - quiet_since > 3

        wait_for("RadPACS follow-up tasks", settled, timeout)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=30)
            self.proc = None
        if self.worker is not None:
            stop_process(self.worker, timeout=30)
            self.worker = None

    def cpu(self) -> float:
        """CPU seconds of gunicorn (master and workers), PostgreSQL, the worker and Redis."""
        total = self.db_cpu()
        for proc in (self.proc, self.worker, self.redis):
            if proc is not None:
                total += tree_cpu(proc.pid)
        return total

    def db_cpu(self) -> float:
        """CPU seconds of the PostgreSQL cluster (postmaster, backends, exited ones too)."""
        return tree_cpu(self.pg.postmaster_pid)

    def count(self) -> int:
        return int(self.pg.sql("SELECT count(*) FROM pacs_instance", db="radpacs"))

    def errors(self) -> str:
        return (self.logs / "gunicorn.log").read_text(errors="replace")[-3000:]


class OrthancWeb:
    """Debian's Orthanc with the DICOMweb plugin (1.7 in Debian 12), its own config."""

    name = "Orthanc"

    def __init__(self, root: Path) -> None:
        self.root = root / "orthanc"
        self.port = free_port()
        self.http_port = free_port()
        self.proc = None
        self.headers: dict[str, str] = {}

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def config(self) -> dict[str, Any]:
        return {
            "Name": "radpacs-bench",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "storage"),
            "StorageCompression": False,
            "SyncStorageArea": True,  # the default: fsync of every file
            "DicomServerEnabled": True,  # to load the QIDO index with storescu
            "DicomAet": ORTHANC_AET,
            "DicomPort": self.port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,  # callers other than localhost refused
            "AuthenticationEnabled": False,
            "Plugins": [DICOMWEB_PLUGIN],
            # Everything else of the plugin at its defaults (StudiesMetadata and
            # SeriesMetadata "Full": /metadata reads every file of the series).
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        }

    def reset(self) -> None:
        retire(self.root, self.root.parent)
        (self.root / "storage").mkdir(parents=True)
        (self.root / "orthanc.json").write_text(json.dumps(self.config(), indent=2))

    def start(self) -> None:
        env = clean_env()
        env["TCP_NODELAY"] = "1"  # dcmtk's Nagle switch: only the storescu loading uses it
        self.proc = start_process(
            [ORTHANC, str(self.root / "orthanc.json")],
            env=env,
            log_path=self.root / "orthanc.log",
            cwd=self.root,
        )
        wait_for("Orthanc", lambda: self.rest("/plugins") is not None, 90, self.proc)
        if "dicom-web" not in self.rest("/plugins"):
            raise RuntimeError(f"Orthanc did not load {DICOMWEB_PLUGIN}: see its log")

    def rest(self, path: str) -> Any:
        try:
            response = requests.get(f"http://127.0.0.1:{self.http_port}{path}", timeout=10)
            return response.json() if response.ok else None
        except (requests.RequestException, ValueError):
            return None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=60)
            self.proc = None

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid) if self.proc is not None else 0.0

    def db_cpu(self) -> float:
        return 0.0  # its SQLite index runs inside its process

    def count(self) -> int:
        return int((self.rest("/statistics") or {}).get("CountInstances", -1))

    def errors(self) -> str:
        return (self.root / "orthanc.log").read_text(errors="replace")[-3000:]


Server = RadPACSWeb | OrthancWeb


class Meter:
    """CPU seconds of each server, of this client and of the rest of the machine
    over a section of the run."""

    def __init__(self, servers: list[Server]) -> None:
        self.servers = servers
        self.server_cpu: dict[str, float] = {}
        self.db_cpu: dict[str, float] = {}  # the part of server_cpu its database used
        self.client_cpu = self.other_cpu = self.wall = 0.0

    def __enter__(self) -> Meter:
        self._cpu = {s.name: s.cpu() for s in self.servers}
        self._db = {s.name: s.db_cpu() for s in self.servers}
        self._client = time.process_time()
        self._busy = machine_busy()
        self._started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.monotonic() - self._started
        self.server_cpu = {s.name: s.cpu() - self._cpu[s.name] for s in self.servers}
        self.db_cpu = {s.name: s.db_cpu() - self._db[s.name] for s in self.servers}
        self.client_cpu = time.process_time() - self._client
        busy = machine_busy() - self._busy
        self.other_cpu = max(0.0, busy - sum(self.server_cpu.values()) - self.client_cpu)

    @property
    def other_share(self) -> float:
        """Share of the machine's CPU the other processes used (0..1)."""
        return self.other_cpu / (self.wall * (os.cpu_count() or 1)) if self.wall else 0.0


# ------------------------------------------------------------------------ data sets


def _make_read_series(args: tuple[Path, str, str, str, int]) -> list[dict]:
    """One CT series of 512x512 slices (one file per slice) and its manifest rows."""
    folder, label, patient_id, date, slices = args
    synthetic = import_synthetic()
    from pydicom import dcmread

    patient = synthetic.PatientSpec(patient_id=patient_id, patient_name=f"Web^{label}")
    study = synthetic.StudySpec(patient=patient, study_date=date, accession_number=label)
    series_uid = synthetic.new_uid()
    rows = []
    for number in range(1, slices + 1):
        data = synthetic.ct_instance(
            study, series_uid=series_uid, series_number=1, instance_number=number
        )
        path = folder / f"{label}_{number:04d}.dcm"
        path.write_bytes(data)
        sop = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        rows.append({"file": path.name, "study": study.study_uid, "series": series_uid, "sop": sop})
    return rows


@dataclass
class ReadSeries:
    study: str
    series: str
    sops: list[str]
    files: list[Path]

    @property
    def bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)


def read_data_set(cache: Path, metadata_size: int, retrieve_size: int) -> dict[str, ReadSeries]:
    """Two CT series (512x512, 16-bit): one for /metadata and rendered frames, one for
    the whole-series retrieve; made once and cached."""
    folder = cache / "data" / f"web-ct512-{metadata_size}-{retrieve_size}"
    manifest = folder / "manifest.json"
    if not manifest.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        log(f"making the read data set: CT series of {metadata_size} and {retrieve_size} slices")
        started = time.monotonic()
        jobs = [
            (folder, "WEBMETA", "WEB0001", "20240301", metadata_size),
            (folder, "WEBRETR", "WEB0002", "20240302", retrieve_size),
        ]
        with ProcessPoolExecutor(2) as pool:
            made = dict(
                zip(("metadata", "retrieve"), pool.map(_make_read_series, jobs), strict=True)
            )
        manifest.write_text(json.dumps(made))
        log(f"  made in {time.monotonic() - started:.0f} s")
    made = json.loads(manifest.read_text())
    return {
        key: ReadSeries(
            study=rows[0]["study"],
            series=rows[0]["series"],
            sops=[r["sop"] for r in rows],
            files=[folder / r["file"] for r in rows],
        )
        for key, rows in made.items()
    }


# ---------------------------------------------------------------------------- HTTP


def multipart_body(paths: list[Path], boundary: str) -> bytes:
    """A STOW-RS request body: one application/dicom part per file (PS3.18 10.5)."""
    pieces = []
    for path in paths:
        pieces += [
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
            path.read_bytes(),
            b"\r\n",
        ]
    pieces.append(f"--{boundary}--\r\n".encode())
    return b"".join(pieces)


def stow(session: requests.Session, server: Server, paths: list[Path]) -> None:
    """POST one batch; raise unless every instance is acknowledged."""
    boundary = uuid.uuid4().hex
    response = session.post(
        f"{server.base}/studies",
        data=multipart_body(paths, boundary),
        headers={
            **server.headers,
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": DICOM_JSON,
        },
        timeout=REQUEST_TIMEOUT,
    )
    if response.status_code != 200:
        raise RuntimeError(f"{server.name} STOW-RS: {response.status_code} {response.text[:500]}")
    stored = response.json().get("00081199", {}).get("Value", [])
    if len(stored) != len(paths):
        raise RuntimeError(f"{server.name} STOW-RS: {len(stored)} of {len(paths)} acknowledged")


def stow_files(
    server: Server, files: list[Path], clients: int, batch: int, timeout: float
) -> float:
    """Send `files` in batches from `clients` threads at once (each its contiguous share);
    the wall time from the start to the last answer."""
    shares = chunks(files, clients)
    start = threading.Barrier(len(shares) + 1, timeout=60)
    errors: list[BaseException] = []

    def client(share: list[Path]) -> None:
        with requests.Session() as session:
            start.wait()
            try:
                for first in range(0, len(share), batch):
                    stow(session, server, share[first : first + batch])
            except BaseException as error:
                errors.append(error)

    threads = [threading.Thread(target=client, args=(s,), daemon=True) for s in shares]
    for thread in threads:
        thread.start()
    start.wait()
    started = time.monotonic()
    deadline = started + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    wall = time.monotonic() - started
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError(f"{server.name} STOW-RS: clients still sending after {timeout:.0f} s")
    if errors:
        raise errors[0]
    return wall


def timed_get(
    session: requests.Session, url: str, headers: dict[str, str], *, stream: bool = False
) -> tuple[float, requests.Response, int]:
    """(ms until the whole body is in, response, body bytes after content decoding)."""
    started = time.perf_counter()
    response = session.get(url, headers=headers, timeout=REQUEST_TIMEOUT, stream=stream)
    if stream:
        size = sum(len(chunk) for chunk in response.iter_content(1 << 20))
    else:
        size = len(response.content)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        body = "" if stream else response.text[:300]
        raise RuntimeError(f"GET {url}: {response.status_code} {body}")
    return elapsed, response, size


def alternate(servers: list[Server], number: int) -> list[Server]:
    return servers if number % 2 == 0 else servers[::-1]


# --------------------------------------------------------------------------- phases


@dataclass
class StowPass:
    target: str
    clients: int
    round: int
    instances: int
    stored: int
    wall: float
    server_cpu: float
    db_cpu: float
    other_share: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.stored / self.wall if self.wall else 0.0


def stow_pass(
    server: Server,
    files: list[Path],
    warmup: list[Path],
    clients: int,
    round_number: int,
    args: argparse.Namespace,
) -> StowPass:
    """A fresh archive; `warmup` stored first, one instance per request from 4 clients (so
    every gunicorn worker has run a store once and imported what it needs); then `files`,
    timed."""
    server.reset()
    server.start()
    note = ""
    try:
        stow_files(server, warmup, 4, 1, 120)
        os.sync()  # the previous pass's dirty pages are not flushed during this one
        time.sleep(0.5)
        wall = 0.0
        with Meter([server]) as meter:
            try:
                wall = stow_files(server, files, clients, args.batch, 120 + len(files) / 5)
            except RuntimeError as error:
                note = str(error)[:300]
                log(f"  WARNING {note}\n{server.errors()}")
        wall = wall or meter.wall
        stored = server.count() - len(warmup)
        if stored != len(files) and not note:
            note = f"stored {stored} of {len(files)}"
    finally:
        server.stop()
    result = StowPass(
        target=server.name,
        clients=clients,
        round=round_number,
        instances=len(files),
        stored=stored,
        wall=wall,
        server_cpu=meter.server_cpu[server.name],
        db_cpu=meter.db_cpu[server.name],
        other_share=meter.other_share,
        note=note,
    )
    log(
        f"  {server.name:8} STOW-RS x{clients} round {round_number}: {result.rate:6.1f} inst/s "
        f"({stored} in {wall:.1f} s; server CPU {result.server_cpu:.1f} s; other load "
        f"{100 * result.other_share:.0f}%)"
    )
    return result


def load_read_phase(
    args: argparse.Namespace,
    radpacs: RadPACSWeb,
    orthanc: OrthancWeb,
    root: Path,
    read: dict[str, ReadSeries],
) -> dict[str, Any]:
    """Fresh archives holding the QIDO index (Orthanc through storescu, RadPACS's rows
    bulk-created) and the two read series (STOW-RS, 4 clients, not measured)."""
    folder, rows = find_data_set(args.cache, args.qido_instances, 4, args.workers)
    total = len(rows) * FIND_PER_STUDY
    info: dict[str, Any] = {"instances": total, "studies": len(rows)}
    info["patients"] = len({r["patient_id"] for r in rows})
    orthanc.reset()
    orthanc.start()
    log(f"read phase: loading {total} small instances into Orthanc (4 storescu)")
    commands = [
        [
            dcmtk("storescu"),
            "+sd",
            "+r",
            "-aet",
            STORE_AET,
            "-aec",
            ORTHANC_AET,
            "127.0.0.1",
            str(orthanc.port),
            str(folder / str(part)),
        ]
        for part in range(4)
    ]
    wall, _cpu, codes = run_storescu(commands, args.load_timeout, root)
    loaded = orthanc.count()
    info["orthanc_load_s"] = wall
    log(f"  Orthanc: {loaded} instances in {wall:.0f} s, storescu exit {codes}")
    if loaded != total:
        raise RuntimeError(f"Orthanc holds {loaded} of {total} instances after {wall:.0f} s")

    log(f"read phase: bulk-loading {total} index rows into RadPACS")
    radpacs.reset()
    started = time.monotonic()
    radpacs.django("bulkload", {"folder": str(folder), "parts": 4})
    info["radpacs_load_s"] = time.monotonic() - started
    radpacs.start()

    files = read["metadata"].files + read["retrieve"].files
    for server in (radpacs, orthanc):
        wall = stow_files(server, files, 4, args.batch, 120 + len(files) / 5)
        log(f"  {server.name}: STOW-RS of the {len(files)} read-series instances in {wall:.1f} s")
    if radpacs.celery == "redis":
        radpacs.settle()
    info["rows"] = rows
    return info


def qido_phase(
    servers: list[Server], rows: list[dict], queries_count: int
) -> tuple[dict[str, Any], Meter]:
    queries = find_queries(rows, queries_count)
    warmup = find_queries(rows, 20, seed=5)
    sessions = {s.name: requests.Session() for s in servers}
    times: dict[str, list[tuple[str, float, int]]] = {s.name: [] for s in servers}
    mismatches: list[str] = []

    def ask(server: Server, keys: dict[str, str]) -> tuple[float, int]:
        url = f"{server.base}/studies?{urllib.parse.urlencode(keys)}"
        ms, response, _size = timed_get(
            sessions[server.name], url, {**server.headers, "Accept": DICOM_JSON}
        )
        return ms, len(response.json())

    for _kind, keys in warmup:
        for server in servers:
            ask(server, keys)
    with Meter(servers) as meter:
        for number, (kind, keys) in enumerate(queries):
            counts = {}
            for server in alternate(servers, number):
                ms, matches = ask(server, keys)
                times[server.name].append((kind, ms, matches))
                counts[server.name] = matches
            if len(set(counts.values())) > 1:
                mismatches.append(f"{keys}: {counts}")
    for session in sessions.values():
        session.close()
    for text in mismatches[:3]:
        log(f"  QIDO match counts differ: {text}")
    result: dict[str, Any] = {"queries": len(queries), "mismatches": len(mismatches)}
    for name, samples in times.items():
        entry = {}
        for kind in ("all", "PatientID", "StudyDate range"):
            values = [ms for k, ms, _ in samples if kind in ("all", k)]
            entry[kind] = {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95)}
        entry["mean_matches"] = statistics.mean(m for _, _, m in samples)
        result[name] = entry
    return result, meter


def metadata_phase(
    servers: list[Server], series: ReadSeries, requests_count: int, encoding: str
) -> tuple[dict[str, Any], Meter]:
    """Series /metadata, `encoding` the Accept-Encoding (gzip as browsers, or identity)."""
    sessions = {s.name: requests.Session() for s in servers}
    times: dict[str, list[float]] = {s.name: [] for s in servers}
    info: dict[str, Any] = {}

    def ask(server: Server) -> float:
        url = f"{server.base}/studies/{series.study}/series/{series.series}/metadata"
        headers = {**server.headers, "Accept": DICOM_JSON, "Accept-Encoding": encoding}
        ms, response, size = timed_get(sessions[server.name], url, headers)
        items = len(response.json())
        if items != len(series.sops):
            raise RuntimeError(f"{server.name} /metadata: {items} of {len(series.sops)} instances")
        info[server.name] = {
            "bytes": size,
            "wire_bytes": int(response.headers.get("Content-Length") or 0) or None,
            "content_encoding": response.headers.get("Content-Encoding", "identity"),
        }
        return ms

    for server in servers:
        ask(server)
    with Meter(servers) as meter:
        for number in range(requests_count):
            for server in alternate(servers, number):
                times[server.name].append(ask(server))
    for session in sessions.values():
        session.close()
    result = {
        name: {**info[name], "p50": percentile(v, 0.5), "p95": percentile(v, 0.95), "all": v}
        for name, v in times.items()
    }
    return result, meter


def rendered_phase(
    servers: list[Server], series: ReadSeries, requests_count: int
) -> tuple[dict[str, Any], Meter]:
    from PIL import Image

    sessions = {s.name: requests.Session() for s in servers}
    times: dict[str, list[float]] = {s.name: [] for s in servers}
    sizes: dict[str, list[int]] = {s.name: [] for s in servers}
    step = max(1, len(series.sops) // requests_count)
    chosen = series.sops[::step][:requests_count]
    warmup = series.sops[1::step][:5]

    def ask(server: Server, sop: str, check: bool = False) -> float:
        url = (
            f"{server.base}/studies/{series.study}/series/{series.series}/instances/{sop}"
            "/frames/1/rendered"
        )
        ms, response, size = timed_get(
            sessions[server.name], url, {**server.headers, "Accept": "image/jpeg"}
        )
        sizes[server.name].append(size)
        if check:
            image = Image.open(io.BytesIO(response.content))
            if image.format != "JPEG" or image.size != (512, 512):
                raise RuntimeError(f"{server.name} rendered: {image.format} {image.size}")
        return ms

    for sop in warmup:
        for server in servers:
            ask(server, sop, check=True)
    with Meter(servers) as meter:
        for number, sop in enumerate(chosen):
            for server in alternate(servers, number):
                times[server.name].append(ask(server, sop))
    for session in sessions.values():
        session.close()
    result = {
        name: {
            "p50": percentile(v, 0.5),
            "p95": percentile(v, 0.95),
            "requests": len(v),
            "jpeg_bytes": statistics.median(sizes[name]),
        }
        for name, v in times.items()
    }
    return result, meter


def retrieve_phase(
    servers: list[Server], series: ReadSeries, repeats: int
) -> tuple[dict[str, Any], Meter]:
    sessions = {s.name: requests.Session() for s in servers}
    rates: dict[str, list[float]] = {s.name: [] for s in servers}
    info: dict[str, Any] = {}
    expected = series.bytes

    def ask(server: Server) -> float:
        url = f"{server.base}/studies/{series.study}/series/{series.series}"
        headers = {**server.headers, "Accept": RETRIEVE_ACCEPT, "Accept-Encoding": "identity"}
        ms, response, size = timed_get(sessions[server.name], url, headers, stream=True)
        if size < expected:
            raise RuntimeError(f"{server.name} retrieve: {size} bytes, the files hold {expected}")
        info[server.name] = {"bytes": size, "content_type": response.headers.get("Content-Type")}
        return size / 1e6 / (ms / 1000)

    for server in servers:
        ask(server)
    with Meter(servers) as meter:
        for number in range(repeats):
            for server in alternate(servers, number):
                rates[server.name].append(ask(server))
    for session in sessions.values():
        session.close()
    result = {
        name: {
            **info[name],
            "mb_s": median(v),
            "all": v,
            "seconds": info[name]["bytes"] / 1e6 / median(v),
        }
        for name, v in rates.items()
    }
    return result, meter


def read_phase(
    args: argparse.Namespace, radpacs: RadPACSWeb, orthanc: OrthancWeb, root: Path
) -> dict[str, Any]:
    read = read_data_set(args.cache, args.metadata_instances, args.retrieve_instances)
    loaded = load_read_phase(args, radpacs, orthanc, root, read)
    rows = loaded.pop("rows")
    servers: list[Server] = [radpacs, orthanc]
    result: dict[str, Any] = {"load": loaded, "meters": {}}
    try:
        log(f"QIDO-RS: {args.queries} study searches, alternating")
        result["qido"], meter = qido_phase(servers, rows, args.queries)
        result["meters"]["qido"] = meter_dict(meter, args.queries)
        for encoding in ("gzip", "identity"):
            log(f"WADO-RS /metadata ({encoding}): {args.metadata_requests} requests each")
            key = f"metadata_{encoding}"
            result[key], meter = metadata_phase(
                servers, read["metadata"], args.metadata_requests, encoding
            )
            result["meters"][key] = meter_dict(meter, args.metadata_requests)
        log(f"rendered frames: {args.rendered_requests} instances each")
        result["rendered"], meter = rendered_phase(
            servers, read["metadata"], args.rendered_requests
        )
        result["meters"]["rendered"] = meter_dict(meter, args.rendered_requests)
        log(f"WADO-RS retrieve of the {args.retrieve_instances}-instance series")
        result["retrieve"], meter = retrieve_phase(servers, read["retrieve"], args.retrieve_repeats)
        result["meters"]["retrieve"] = meter_dict(meter, args.retrieve_repeats)
        result["retrieve_files_mb"] = read["retrieve"].bytes / 1e6
    finally:
        radpacs.stop()
        orthanc.stop()
    return result


def meter_dict(meter: Meter, requests_each: int) -> dict[str, Any]:
    return {
        "cpu_ms_per_request": {
            name: 1000 * cpu / max(1, requests_each) for name, cpu in meter.server_cpu.items()
        },
        "other_share": meter.other_share,
        "wall": meter.wall,
    }


# -------------------------------------------------------------------- Django side


def django_task(task: str) -> None:
    """Runs in a subprocess with DJANGO_SETTINGS_MODULE and DATABASE_URL set."""
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    payload = json.loads(sys.stdin.read() or "null")
    if task == "setup":
        _setup()
    elif task == "bulkload":
        _bulkload(Path(payload["folder"]), payload["parts"])
    else:
        raise SystemExit(f"unknown task {task}")


def _setup() -> None:
    """The facility and a user who is radiologist and technologist there (view and
    upload images); the API token is issued by `manage.py issue_api_token`."""
    from accounts.models import Facility, Membership, User
    from accounts.roles import Role

    facility = Facility.objects.create(name="Benchmark", code=FACILITY_CODE, mrn_issuer="BENCH")
    user = User.objects.create_user(USERNAME, first_name="Bench", last_name="Mark")
    user.set_unusable_password()
    user.save()
    for role in (Role.RADIOLOGIST, Role.TECHNOLOGIST):
        Membership.objects.create(user=user, facility=facility, role=role)
    print(json.dumps({"facility": facility.pk, "user": user.pk}))


def _bulkload(folder: Path, parts: int) -> None:
    """Study, Series and Instance rows of the QIDO data set, as ingest would make them.

    Each instance's metadata_json is real DICOM JSON: that of its study's first file
    (read and converted as ingest does) with the instance's own SOP Instance UID and
    Instance Number, so the rows have the size and shape of ingested ones.
    """
    from pacs.dicom.parse import instance_json, read_header

    rows = [json.loads(line) for line in (folder / "studies.jsonl").read_text().splitlines()]

    def metadata(index: int, row: dict) -> Iterator[str]:
        first = folder / str(index % parts) / f"f{index:07d}_01.dcm"
        template = instance_json(read_header(first.read_bytes()))
        number_one = '"00200013":{"vr":"IS","Value":[1]}'
        if number_one not in template or row["sops"][0] not in template:
            raise RuntimeError(f"unexpected DICOM JSON of {first}")
        for number, sop in enumerate(row["sops"], 1):
            yield template.replace(row["sops"][0], sop).replace(
                number_one, f'"00200013":{{"vr":"IS","Value":[{number}]}}'
            )

    bulkload_index(FACILITY_CODE, rows, metadata)
    print(json.dumps({"studies": len(rows)}))


# -------------------------------------------------------------------------- report


def machine_info(pg: Postgres) -> dict[str, str]:
    import gunicorn
    import pydicom

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    version = run([ORTHANC, "--version"], check=False).splitlines()
    plugin = run(["dpkg-query", "-W", "-f=${Version}", "orthanc-dicomweb"], check=False, timeout=30)
    return {
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{status_kib_total() / 1024 / 1024:.0f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "orthanc": version[0].replace(ORTHANC, "Orthanc") if version else "?",
        "plugin": plugin or "?",
        "postgresql": pg.version(),
        "gunicorn": gunicorn.__version__,
        "pydicom": pydicom.__version__,
    }


APP_DIRS = ["accounts", "config", "pacs", "ris", "billing"]


def code_revision() -> tuple[str, str]:
    """(the application code's revision as text, a fingerprint that changes when the
    code does: HEAD and the uncommitted changes of the app directories)."""
    git = ["git", "-C", str(REPO)]
    head = run([*git, "rev-parse", "--short", "HEAD"], check=False).strip()
    dirty = run(
        [*git, "status", "--porcelain", "--untracked-files=no", "--", *APP_DIRS], check=False
    ).split()[1::2]
    diff = run([*git, "diff", "HEAD", "--", *APP_DIRS], check=False)
    text = head + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else "")
    return text, head + hashlib.sha256(diff.encode()).hexdigest()


def cpu_text(p: StowPass) -> str:
    """Server CPU ms per stored instance; RadPACS's split into Python and PostgreSQL."""
    per = 1000 / max(1, p.stored)
    text = f"{p.server_cpu * per:.1f}"
    if p.db_cpu:
        text += f" = {(p.server_cpu - p.db_cpu) * per:.1f} + {p.db_cpu * per:.1f} PostgreSQL"
    return text


@dataclass
class Row:
    measure: str
    radpacs: float
    orthanc: float
    unit: str
    higher_is_better: bool
    bound: str = ""  # an absolute goal besides the ratio, e.g. "< 100 ms"
    bound_met: bool | None = None
    detail: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """How many times better RadPACS is (throughput: RadPACS/Orthanc; time: the inverse)."""
        if not self.radpacs or not self.orthanc:
            return float("nan")
        return self.radpacs / self.orthanc if self.higher_is_better else self.orthanc / self.radpacs

    @property
    def met(self) -> str:
        goals = [f"2x: {'yes' if self.ratio >= GOAL_RATIO else 'no'}"]
        if self.bound:
            goals.append(f"{self.bound}: {'yes' if self.bound_met else 'no'}")
        return "; ".join(goals)


def figures(stow: list[StowPass], read: dict[str, Any] | None, clients: list[int]) -> list[Row]:
    out = []
    for n in clients:
        rp = median(p.rate for p in stow if p.target == "RadPACS" and p.clients == n)
        oc = median(p.rate for p in stow if p.target == "Orthanc" and p.clients == n)
        out.append(
            Row(f"STOW-RS, {n} client{'s' if n > 1 else ''} (instances/s)", rp, oc, "", True)
        )
    if read:
        q = read["qido"]
        for stat in ("p50", "p95"):
            out.append(
                Row(
                    f"QIDO-RS study search {stat} (ms)",
                    q["RadPACS"]["all"][stat],
                    q["Orthanc"]["all"][stat],
                    "ms",
                    False,
                )
            )
        m = read["metadata_gzip"]
        rp = m["RadPACS"]["p50"]
        out.append(
            Row(
                "WADO-RS series /metadata p50 (ms, gzip)",
                rp,
                m["Orthanc"]["p50"],
                "ms",
                False,
                f"< {GOAL_METADATA_MS:.0f} ms",
                rp < GOAL_METADATA_MS,
            )
        )
        m = read["metadata_identity"]
        rp = m["RadPACS"]["p50"]
        out.append(
            Row(
                "WADO-RS series /metadata p50 (ms, identity)",
                rp,
                m["Orthanc"]["p50"],
                "ms",
                False,
                f"< {GOAL_METADATA_MS:.0f} ms",
                rp < GOAL_METADATA_MS,
            )
        )
        r = read["rendered"]
        rp = r["RadPACS"]["p50"]
        out.append(
            Row(
                "rendered frame p50 (ms)",
                rp,
                r["Orthanc"]["p50"],
                "ms",
                False,
                f"p50 < {GOAL_RENDERED_P50_MS:.0f} ms",
                rp < GOAL_RENDERED_P50_MS,
            )
        )
        out.append(
            Row("rendered frame p95 (ms)", r["RadPACS"]["p95"], r["Orthanc"]["p95"], "ms", False)
        )
        w = read["retrieve"]
        out.append(
            Row(
                "whole-series retrieve (MB/s)",
                w["RadPACS"]["mb_s"],
                w["Orthanc"]["mb_s"],
                "",
                True,
            )
        )
    return out


def number(value: float) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def render(
    args: argparse.Namespace,
    info: dict[str, str],
    stow: list[StowPass],
    read: dict[str, Any] | None,
    started: dt.datetime,
    loads: tuple[str, str],
) -> str:
    clients = sorted({1, args.clients})
    rows = figures(stow, read, clients)
    lines = [
        f"### Run of {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{' '.join(['.venv/bin/python', 'bench/dicomweb.py', *sys.argv[1:]])}`",
        "",
        f"RadPACS code measured: {info['revision']} (at the start of the run)."
        + (
            f" **The code changed during the run** (at its end: {info['revision_end']}): "
            "the figures may mix both."
            if info.get("revision_end")
            else ""
        ),
        "",
        f"Machine: {info['cpus']} CPUs ({info['cpu']}), {info['memory']} RAM, Linux "
        f"{info['kernel']}; load average {loads[0]} at the start, {loads[1]} at the end. "
        f"Versions: {info['orthanc']} with orthanc-dicomweb {info['plugin']} (Debian), "
        f"PostgreSQL {info['postgresql']}, Python {info['python']}, gunicorn "
        f"{info['gunicorn']}, pydicom {info['pydicom']}.",
        "",
        f"RadPACS: gunicorn `config.wsgi`, {args.web_workers} sync workers, DEBUG=0, "
        "DATABASE_CONN_MAX_AGE=60, PostgreSQL with fsync and synchronous_commit on, images on "
        "local disk, "
        + (
            "follow-up tasks (study_refresh: counts, thumbnail) through a private Redis and one "
            "Celery worker, whose CPU counts as RadPACS's"
            if args.celery == "redis"
            else "REDIS_URL unset (follow-up tasks run eagerly, inside the request)"
        )
        + "; a Bearer token of a radiologist + technologist. Orthanc: SQLite index, "
        "StorageCompression false, SyncStorageArea true, DICOMweb plugin at its defaults "
        "(series metadata `Full`: read from the files), HTTP without authentication. "
        "The client is this script (`requests`, one session per client thread).",
        "",
        "| measure | RadPACS | Orthanc | RadPACS better by | goal met? |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.measure} | **{number(row.radpacs)}** | {number(row.orthanc)} | "
            f"{row.ratio:.2f}x | {row.met} |"
        )
    lines.append("")
    if stow:
        lines += [
            f"STOW-RS: {stow[0].instances} CT instances (512x512, 16-bit, "
            f"{args.stow_bytes / stow[0].instances / 1e6:.2f} MB each), batches of "
            f"{args.batch} per request, a fresh archive per pass, median of {args.rounds} "
            f"rounds (order alternating), after {WARMUP_STUDIES} warm-up requests of one instance "
            "each. "
            "Every round, instances/s (server CPU ms per instance; RadPACS's = gunicorn"
            + (", Celery worker and Redis" if args.celery == "redis" else "")
            + " + PostgreSQL):"
        ]
        for n in clients:
            for target in ("RadPACS", "Orthanc"):
                mine = [p for p in stow if p.target == target and p.clients == n]
                text = ", ".join(f"{p.rate:.0f} ({cpu_text(p)})" for p in mine)
                lines.append(f"- {target}, {n} client{'s' if n > 1 else ''}: {text}")
        other = [p.other_share for p in stow]
        lines += [
            "",
            f"Other processes used {100 * median(other):.0f}% of the machine's CPU during a "
            f"median STOW pass (max {100 * max(other):.0f}%).",
        ]
        notes = [f"{p.target} x{p.clients} r{p.round}: {p.note}" for p in stow if p.note]
        if notes:
            lines += ["", "Incomplete passes: " + "; ".join(notes) + "."]
        lines.append("")
    if read:
        load, q, meters = read["load"], read["qido"], read["meters"]
        lines += [
            f"Reads: one archive each holding {load['instances']} small instances "
            f"({load['studies']} studies, {load['patients']} patients; Orthanc loaded through "
            f"4 storescu in {load['orthanc_load_s']:.0f} s, RadPACS's rows bulk-created with "
            f"real DICOM JSON in {load['radpacs_load_s']:.0f} s) plus two CT series stored "
            f"through STOW-RS: {args.metadata_instances} instances (/metadata, rendered) and "
            f"{args.retrieve_instances} instances ({read['retrieve_files_mb']:.0f} MB, "
            "retrieve). Requests alternate between the servers after a warm-up.",
            "",
            "| reads | RadPACS | Orthanc |",
            "|---|---|---|",
            f"| QIDO-RS by PatientID p50 / p95 (ms) | {q['RadPACS']['PatientID']['p50']:.1f} / "
            f"{q['RadPACS']['PatientID']['p95']:.1f} | {q['Orthanc']['PatientID']['p50']:.1f} / "
            f"{q['Orthanc']['PatientID']['p95']:.1f} |",
            f"| QIDO-RS by StudyDate range p50 / p95 (ms) | "
            f"{q['RadPACS']['StudyDate range']['p50']:.1f} / "
            f"{q['RadPACS']['StudyDate range']['p95']:.1f} | "
            f"{q['Orthanc']['StudyDate range']['p50']:.1f} / "
            f"{q['Orthanc']['StudyDate range']['p95']:.1f} |",
            f"| QIDO-RS matches per query (mean) | {q['RadPACS']['mean_matches']:.1f} | "
            f"{q['Orthanc']['mean_matches']:.1f} |",
        ]
        for encoding in ("gzip", "identity"):
            m = read[f"metadata_{encoding}"]
            lines.append(
                f"| /metadata ({encoding}) p50 / p95 (ms); body | "
                + " | ".join(
                    f"{m[n]['p50']:.0f} / {m[n]['p95']:.0f}; {m[n]['bytes'] / 1e6:.2f} MB JSON, "
                    f"sent {m[n]['content_encoding']}"
                    + (f" ({m[n]['wire_bytes'] / 1e6:.2f} MB)" if m[n]["wire_bytes"] else "")
                    for n in ("RadPACS", "Orthanc")
                )
                + " |"
            )
        r = read["rendered"]
        lines.append(
            "| rendered frame p50 / p95 (ms); JPEG size | "
            + " | ".join(
                f"{r[n]['p50']:.1f} / {r[n]['p95']:.1f}; {r[n]['jpeg_bytes'] / 1000:.0f} kB"
                for n in ("RadPACS", "Orthanc")
            )
            + " |"
        )
        w = read["retrieve"]
        lines.append(
            "| retrieve MB/s (each repeat); seconds | "
            + " | ".join(
                ", ".join(f"{v:.0f}" for v in w[n]["all"]) + f"; {w[n]['seconds']:.2f} s"
                for n in ("RadPACS", "Orthanc")
            )
            + " |"
        )
        labels = {
            "qido": "QIDO-RS",
            "metadata_gzip": "/metadata gzip",
            "metadata_identity": "/metadata identity",
            "rendered": "rendered",
            "retrieve": "retrieve",
        }
        for key, label in labels.items():
            cpu = meters[key]["cpu_ms_per_request"]
            lines.append(
                f"| server CPU ms per request: {label} | {cpu['RadPACS']:.1f} | "
                f"{cpu['Orthanc']:.1f} |"
            )
        lines += [
            "",
            "Server CPU: RadPACS's gunicorn, PostgreSQL"
            + (", Celery worker and Redis" if args.celery == "redis" else "")
            + "; Orthanc's process (at 100 ticks/s: coarse for the few /metadata and "
            "retrieve requests). Other processes on the machine used "
            + ", ".join(
                f"{100 * meters[key]['other_share']:.0f}% ({label})"
                for key, label in labels.items()
            )
            + " of its CPU during the read measures. QIDO-RS queries whose match counts "
            f"differed between the servers: {q['mismatches']} of {q['queries']}.",
            "",
        ]
    return "\n".join(lines)


def write_markdown(text: str) -> Path:
    path = REPO / "docs" / "benchmarks.md"
    block = f"{RESULTS_START}\n\n{text.rstrip()}\n\n{RESULTS_END}"
    current = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if RESULTS_START in current and RESULTS_END in current:
        head, _, rest = current.partition(RESULTS_START)
        _, _, tail = rest.partition(RESULTS_END)
        current = head + block + tail
    else:
        current = f"{current.rstrip()}\n\n{SECTION_TITLE}\n\n{block}\n"
    path.write_text(current)
    return path


# ---------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="STOW-RS rounds")
    parser.add_argument("--stow-instances", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=10, help="instances per STOW-RS request")
    parser.add_argument("--clients", type=int, default=4, help="concurrent STOW-RS clients")
    parser.add_argument("--qido-instances", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--metadata-instances", type=int, default=500)
    parser.add_argument("--metadata-requests", type=int, default=20)
    parser.add_argument("--rendered-requests", type=int, default=100)
    parser.add_argument("--retrieve-instances", type=int, default=300)
    parser.add_argument("--retrieve-repeats", type=int, default=10)
    parser.add_argument("--web-workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument(
        "--celery",
        choices=["redis", "eager"],
        default="redis",
        help="RadPACS follow-up tasks: a private Redis + 1 worker, or eagerly in the request",
    )
    parser.add_argument(
        "--radpacs-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the RadPACS processes",
    )
    parser.add_argument("--skip-stow", action="store_true")
    parser.add_argument("--skip-reads", action="store_true")
    parser.add_argument("--load-timeout", type=float, default=1800)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/radpacs-bench"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    args = parser.parse_args()
    args.radpacs_env_dict = dict(item.split("=", 1) for item in args.radpacs_env)
    return args


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "_django":
        django_task(sys.argv[2])
        return 0
    args = parse_args()
    started = dt.datetime.now(dt.UTC)
    revision, fingerprint = code_revision()  # other people may change the code meanwhile
    load_start = "{} {} {}".format(*Path("/proc/loadavg").read_text().split()[:3])
    packages = ["dcmtk", "orthanc", "orthanc-dicomweb", "postgresql"]
    ensure_packages(packages + (["redis-server"] if args.celery == "redis" else []))
    stop_packaged_orthanc()

    args.cache.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="web-", dir=args.cache))
    CLEANUP.push("remove temp dir", lambda: shutil.rmtree(root, ignore_errors=True))
    log(f"work dir {root}")

    files: list[Path] = []
    warmup: list[Path] = []
    if not args.skip_stow:
        every = push_data_set(args.cache, 3000, 20, args.workers)
        # The first studies are timed; one instance of each of the last ones warms the
        # servers up (a new study per request: every gunicorn worker queues a follow-up task).
        per_study = len(every) // 20
        warmup = every[-WARMUP_STUDIES * per_study :: per_study]
        files = every[: min(args.stow_instances, len(every) - WARMUP_STUDIES * per_study)]
        args.stow_bytes = sum(f.stat().st_size for f in files)

    pg = Postgres(root, "on")
    pg.start()
    log(f"PostgreSQL {pg.version()} on 127.0.0.1:{pg.port}")
    radpacs = RadPACSWeb(root / "radpacs", pg, args.web_workers, args.celery, args.radpacs_env_dict)
    radpacs.prepare_template()
    orthanc = OrthancWeb(root)
    info = machine_info(pg)
    info["revision"] = revision

    stow_passes: list[StowPass] = []
    if not args.skip_stow:
        servers: list[Server] = [radpacs, orthanc]
        for round_number in range(1, args.rounds + 1):
            for clients in sorted({1, args.clients}):
                order = servers if (round_number + clients) % 2 else servers[::-1]
                for server in order:
                    stow_passes.append(
                        stow_pass(server, files, warmup, clients, round_number, args)
                    )
    read = None
    if not args.skip_reads:
        read = read_phase(args, radpacs, orthanc, root)

    load_end = "{} {} {}".format(*Path("/proc/loadavg").read_text().split()[:3])
    revision_end, fingerprint_end = code_revision()
    if fingerprint_end != fingerprint:
        info["revision_end"] = revision_end
        log(f"WARNING: the RadPACS code changed during the run ({revision} -> {revision_end})")
    text = render(args, info, stow_passes, read, started, (load_start, load_end))
    print("\n" + text)
    results = args.cache / "results"
    results.mkdir(exist_ok=True)
    raw = results / f"dicomweb-{started:%Y%m%d-%H%M%S}.json"
    raw.write_text(
        json.dumps(
            {
                "info": info,
                "stow": [{**p.__dict__, "rate": p.rate} for p in stow_passes],
                "read": read,
                "argv": sys.argv,
            },
            indent=1,
            default=str,
        )
    )
    log(f"raw results: {raw}")
    if not args.no_write:
        log(f"written to {write_markdown(text)}")
    return 0


if __name__ == "__main__":
    run_main(main)
