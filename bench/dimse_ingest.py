# ruff: noqa: S108
"""DIMSE benchmark: RadPACS against Orthanc on this machine, same data, same run.

    .venv/bin/python bench/dimse_ingest.py [--instances 3000] [--rounds 3] [--skip-find]

1. C-STORE throughput. A synthetic CT data set (20 studies of 512x512 16-bit slices,
   ~0.5 MB each, made once by pacs.dicom.synthetic into a cache dir) is pushed with
   dcmtk `storescu` (1 and N parallel processes, TCP_NODELAY=1 on the client) into
   - RadPACS: 2 `manage.py dicom_server` processes sharing one port (SO_REUSEPORT),
     a private PostgreSQL cluster with fsync and synchronous_commit on, local images;
   - Orthanc (Debian package) with its defaults, and tuned (TCP_NODELAY=1 in its
     environment); no compression, SyncStorageArea on (each file fsynced).
   Every pass starts fresh servers on an empty archive; the order of the servers
   alternates across rounds and the median of the rounds is reported.
2. C-FIND latency. A second, small-instance data set (10 instances per study) is
   loaded into Orthanc through storescu and into RadPACS's index with bulk_create,
   then 200 study-level C-FIND (half by PatientID, half by StudyDate range) are sent,
   interleaved, to both over one open association each; p50/p95 in ms.

Everything listens on and talks to 127.0.0.1 only (Orthanc also binds its ports on
the other interfaces: it has no option to bind loopback only). Processes, the
PostgreSQL cluster and temp dirs are removed on exit, Ctrl-C included; the data
sets stay in the cache dir (--cache, default /tmp/radpacs-bench) for the next run.
The results table is printed and written into docs/benchmarks.md (--no-write: not).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    CLEANUP,
    FIND_PER_STUDY,
    ORTHANC,
    PYTHON,
    REPO,
    Postgres,
    RssSampler,
    bulkload_index,
    chunks,
    clean_env,
    dcmtk,
    descendants,
    ensure_packages,
    find_data_set,
    find_queries,
    free_port,
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
    status_kib,
    status_kib_total,
    stop_packaged_orthanc,
    stop_process,
    tree_cpu,
    wait_for,
)

RADPACS_AET = "RADPACS"
ORTHANC_AET = "ORTHANC"
STORE_AET = "STORESCU"
FIND_AET = "FINDSCU"
FACILITY_CODE = "BENCH"
# docs/benchmarks.md keeps one results block per --block (default: the --celery mode).
RESULTS_START = "<!-- dimse_ingest results ({}): start (written by bench/dimse_ingest.py) -->"
RESULTS_END = "<!-- dimse_ingest results ({}): end -->"


# -------------------------------------------------------------------------- RadPACS


class RadPACS:
    """The archive as deployed: `manage.py dicom_server` processes sharing one port."""

    name = "RadPACS"

    def __init__(
        self,
        root: Path,
        pg: Postgres,
        processes: int,
        extra_env: dict[str, str],
        celery: str = "eager",
        listen: str = "shared",
    ):
        self.root = root
        self.pg = pg
        self.processes = processes
        self.listen = listen
        self.port = free_port()
        self.images = root / "images"
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.extra_env = extra_env
        self.procs: list[subprocess.Popen] = []
        # eager: REDIS_URL unset, follow-up tasks run in the C-STORE's thread after commit;
        # redis: a private redis-server and one Celery worker (concurrency 1) per pass.
        self.celery = celery
        self.redis: subprocess.Popen | None = None
        self.redis_port = free_port()
        self.worker: subprocess.Popen | None = None

    def env(self, db: str = "radpacs") -> dict[str, str]:
        env = clean_env()
        env.update(
            DJANGO_SETTINGS_MODULE="config.settings",
            DATABASE_URL=self.pg.url(db),
            SECRET_KEY="radpacs-bench-" + "x" * 40,
            DEBUG="0",
            LOG_LEVEL="WARNING",
            VAR_DIR=str(self.root / "var"),
            IMAGE_STORAGE_DIR=str(self.images),
            DICOM_AE_TITLE=RADPACS_AET,
            DICOM_REUSE_PORT="1",
            PYTHONUNBUFFERED="1",
        )
        if self.celery == "redis":
            env["REDIS_URL"] = f"redis://127.0.0.1:{self.redis_port}/0"
        env.update(self.extra_env)
        return env

    def django(
        self, task: str, payload: Any = None, db: str = "radpacs", timeout: float = 1800
    ) -> Any:
        """Run a task of this script inside Django, in a subprocess (see django_task)."""
        arg = json.dumps(payload)
        out = run(
            [PYTHON, str(Path(__file__).resolve()), "_django", task],
            env=self.env(db),
            cwd=REPO,
            input=arg,
            timeout=timeout,
        )
        lines = out.strip().splitlines()
        return json.loads(lines[-1]) if lines else None

    def prepare_template(self) -> None:
        """Migrate once into a template database; every pass copies it (an empty archive
        with the facility and the two calling AEs registered)."""
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

    def reset(self) -> None:
        self.pg.sql("DROP DATABASE IF EXISTS radpacs WITH (FORCE)")
        self.pg.sql("CREATE DATABASE radpacs TEMPLATE radpacs_template")
        retire(self.images, self.root.parent)
        self.images.mkdir(parents=True)

    def start(self) -> None:
        self.procs = []
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
                    "INFO",
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
            wait_for(
                "celery worker",
                lambda: " ready." in worker_log.read_text(errors="replace"),
                90,
                self.worker,
            )
        # shared: one command forking N processes that accept from one socket (balanced
        # by load); reuseport: N commands on one port, spread by the kernel's hash.
        commands = 1 if self.listen == "shared" else self.processes
        extra = ["--processes", str(self.processes)] if self.listen == "shared" else []
        for number in range(commands):
            log_path = self.logs / f"dicom_server-{number}.log"
            log_path.write_text("")
            proc = start_process(
                [
                    PYTHON,
                    "manage.py",
                    "dicom_server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    *extra,
                ],
                env=self.env(),
                log_path=log_path,
                cwd=REPO,
            )
            self.procs.append(proc)
            wait_for(
                f"dicom_server {number}",
                lambda p=log_path: "DICOM listener" in p.read_text(errors="replace"),
                90,
                proc,
            )

    def stop(self) -> None:
        for proc in self.procs:
            stop_process(proc)
        self.procs = []
        if self.worker is not None:
            stop_process(self.worker, timeout=30)
            self.worker = None

    @property
    def pids(self) -> list[int]:
        """Every dicom_server process, forked ones included."""
        pids = []
        for proc in self.procs:
            pids += [proc.pid, *descendants(proc.pid)]
        return pids

    def server_cpu(self) -> float:
        return sum(proc_cpu(p) for p in self.pids)

    def helper_cpu(self) -> float:
        """PostgreSQL, and the Celery worker and Redis when they are used."""
        total = tree_cpu(self.pg.postmaster_pid)
        for proc in (self.worker, self.redis):
            if proc is not None:
                total += tree_cpu(proc.pid)
        return total

    def count(self) -> int:
        return int(self.pg.sql("SELECT count(*) FROM pacs_instance", db="radpacs"))

    def db_stats(self) -> dict[str, int]:
        """Cluster-wide commits, WAL flushes (fsync of the WAL) and new connections."""
        row = self.pg.sql(
            "SELECT (SELECT sum(xact_commit) FROM pg_stat_database),"
            " (SELECT wal_sync FROM pg_stat_wal),"
            " (SELECT sum(sessions) FROM pg_stat_database)"
        )
        commits, wal_syncs, sessions = (int(float(v or 0)) for v in row.split("|"))
        return {"commits": commits, "wal_syncs": wal_syncs, "sessions": sessions}

    def errors(self) -> str:
        text = ""
        for number in range(self.processes):
            text += (self.logs / f"dicom_server-{number}.log").read_text(errors="replace")
        return text


# -------------------------------------------------------------------------- Orthanc


class Orthanc:
    """Debian's Orthanc with its own config in a temp dir; `tuned`: TCP_NODELAY=1."""

    def __init__(self, root: Path, tuned: bool) -> None:
        self.tuned = tuned
        self.name = "Orthanc tuned" if tuned else "Orthanc default"
        self.root = root / ("orthanc-tuned" if tuned else "orthanc-default")
        self.port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen | None = None

    def reset(self) -> None:
        retire(self.root, self.root.parent)
        (self.root / "storage").mkdir(parents=True)
        config = {
            "Name": "radpacs-bench",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "storage"),
            "StorageCompression": False,
            "SyncStorageArea": True,  # the default: fsync of every file
            "DicomServerEnabled": True,
            "DicomAet": ORTHANC_AET,
            "DicomPort": self.port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowEcho": True,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
        }
        (self.root / "orthanc.json").write_text(json.dumps(config, indent=2))

    def start(self) -> None:
        env = clean_env()
        if self.tuned:
            env["TCP_NODELAY"] = "1"
        self.proc = start_process(
            [ORTHANC, str(self.root / "orthanc.json")],
            env=env,
            log_path=self.root / "orthanc.log",
            cwd=self.root,
        )
        wait_for(self.name, lambda: self._http("/system") is not None, 90, self.proc)
        wait_for(self.name, lambda: port_open(self.port), 30, self.proc)

    def _http(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=60)
            self.proc = None

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def server_cpu(self) -> float:
        return sum(proc_cpu(p) for p in self.pids)

    def helper_cpu(self) -> float:
        return 0.0

    def db_stats(self) -> dict[str, int]:
        return {}

    def count(self) -> int:
        stats = self._http("/statistics") or {}
        return int(stats.get("CountInstances", -1))

    def errors(self) -> str:
        return (self.root / "orthanc.log").read_text(errors="replace")


# ----------------------------------------------------------------------------- push


@dataclass
class Pass:
    target: str
    associations: int
    round: int
    instances: int
    stored: int
    wall: float
    server_cpu: float
    helper_cpu: float
    client_cpu: float
    other_cpu: float
    rss_early_kib: int
    rss_end_kib: int
    peak_rss_kib: list[int] = field(default_factory=list)
    db: dict[str, int] = field(default_factory=dict)  # PostgreSQL counters over the pass
    cpu_each: list[float] = field(default_factory=list)  # per server process (balance)
    note: str = ""

    @property
    def rate(self) -> float:
        return self.stored / self.wall if self.wall else 0.0


def push_pass(
    server: RadPACS | Orthanc,
    files: list[Path],
    associations: int,
    round_number: int,
    timeout: float,
    log_dir: Path,
) -> Pass:
    server.reset()
    server.start()
    try:
        aec = RADPACS_AET if isinstance(server, RadPACS) else ORTHANC_AET
        commands = [
            [
                dcmtk("storescu"),
                "-aet",
                STORE_AET,
                "-aec",
                aec,
                "127.0.0.1",
                str(server.port),
                *map(str, part),
            ]
            for part in chunks(files, associations)
        ]
        os.sync()  # the previous pass's dirty pages are not flushed during this one
        time.sleep(0.5)
        db_before = server.db_stats()
        each_before = [proc_cpu(p) for p in server.pids]
        cpu_before = server.server_cpu()
        helper_before = server.helper_cpu()
        busy_before = machine_busy()
        with RssSampler(server.pids) as rss:
            wall, client_cpu, codes = run_storescu(commands, timeout, log_dir)
        server_cpu = server.server_cpu() - cpu_before
        cpu_each = [proc_cpu(p) - b for p, b in zip(server.pids, each_before, strict=True)]
        helper_cpu = server.helper_cpu() - helper_before
        busy = machine_busy() - busy_before
        peaks = [status_kib(p, "VmHWM") for p in server.pids]
        stored = server.count()
        if db_before:
            time.sleep(1.5)  # backends report their counters within a second
            db_after = server.db_stats()
            db_stats = {k: db_after[k] - db_before[k] for k in db_before}
        else:
            db_stats = {}
        note = ""
        if stored != len(files) or any(codes):
            note = f"stored {stored}/{len(files)}, storescu exit {codes}"
            log(f"  WARNING {server.name}: {note}")
            tail = server.errors()[-2000:]
            if tail.strip():
                log("  server log tail:\n" + tail)
        result = Pass(
            target=server.name,
            associations=associations,
            round=round_number,
            instances=len(files),
            stored=stored,
            wall=wall,
            server_cpu=server_cpu,
            helper_cpu=helper_cpu,
            client_cpu=client_cpu,
            other_cpu=max(0.0, busy - server_cpu - helper_cpu - client_cpu),
            rss_early_kib=rss.at_fraction(0.1),
            rss_end_kib=rss.samples[-1][1] if rss.samples else 0,
            peak_rss_kib=peaks,
            db=db_stats,
            cpu_each=cpu_each,
            note=note,
        )
    finally:
        server.stop()
    log(
        f"  {server.name:16} x{associations} round {round_number}: {result.rate:6.1f} inst/s "
        f"({result.stored} in {wall:.1f} s; server CPU {server_cpu:.1f} s"
        + (f" + PostgreSQL {helper_cpu:.1f} s" if helper_cpu else "")
        + f"; other load {result.other_cpu:.1f} s)"
    )
    return result


# ----------------------------------------------------------------------------- find


RETURN_KEYS = [
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
]


class FindClient:
    """One pynetdicom association per server, Nagle off on its socket."""

    def __init__(self, port: int, called: str) -> None:
        from pynetdicom import AE
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

        self.model = StudyRootQueryRetrieveInformationModelFind
        ae = AE(ae_title=FIND_AET)
        ae.add_requested_context(self.model)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
        self.assoc = ae.associate("127.0.0.1", port, ae_title=called)
        if not self.assoc.is_established:
            raise RuntimeError(f"C-FIND association to {called}:{port} refused")
        sock = self.assoc.dul.socket.socket
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def query(self, keys: dict[str, str]) -> tuple[float, int, int]:
        from pydicom.dataset import Dataset

        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        for keyword in RETURN_KEYS:
            setattr(ds, keyword, "")
        for keyword, value in keys.items():
            setattr(ds, keyword, value)
        started = time.perf_counter()
        matches, final = 0, -1
        for status, identifier in self.assoc.send_c_find(ds, self.model):
            if status is None:
                break
            if status.Status in (0xFF00, 0xFF01):
                if identifier is not None:
                    matches += 1
            else:
                final = status.Status
        return (time.perf_counter() - started) * 1000, matches, final

    def close(self) -> None:
        self.assoc.release()


def find_phase(args: argparse.Namespace, root: Path, pg: Postgres, radpacs: RadPACS) -> dict:
    folder, rows = find_data_set(args.cache, args.find_instances, args.parallel, args.workers)
    total = len(rows) * FIND_PER_STUDY
    result: dict[str, Any] = {
        "instances": total,
        "studies": len(rows),
        "patients": len({r["patient_id"] for r in rows}),
    }

    orthanc = Orthanc(root, tuned=True)
    orthanc.reset()
    orthanc.start()
    log(f"C-FIND: loading {total} instances into Orthanc tuned ({args.parallel} storescu)")
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
        for part in range(args.parallel)
    ]
    wall, _cpu, codes = run_storescu(commands, args.find_load_timeout, root)
    loaded = orthanc.count()
    result["orthanc_load_s"] = wall
    result["orthanc_loaded"] = loaded
    log(f"  Orthanc: {loaded} instances in {wall:.0f} s ({loaded / wall:.0f}/s), exit {codes}")
    if loaded != total:
        raise RuntimeError(
            f"Orthanc holds {loaded} of {total} instances after {wall:.0f} s: "
            "use a smaller --find-instances or a longer --find-load-timeout"
        )

    log(f"C-FIND: bulk-loading {total} instances into RadPACS's index")
    radpacs.reset()
    started = time.monotonic()
    radpacs.django("bulkload", {"manifest": str(folder / "studies.jsonl")})
    result["radpacs_load_s"] = time.monotonic() - started
    result["radpacs_loaded"] = radpacs.count()
    radpacs.start()

    queries = find_queries(rows, args.queries)
    warmup = find_queries(rows, 20, seed=5)
    targets = {"RadPACS": radpacs.port, "Orthanc tuned": orthanc.port}
    called = {"RadPACS": RADPACS_AET, "Orthanc tuned": ORTHANC_AET}
    clients = {name: FindClient(port, called[name]) for name, port in targets.items()}
    times: dict[str, list[tuple[str, float, int]]] = {name: [] for name in targets}
    mismatches = 0
    try:
        for _kind, keys in warmup:
            for client in clients.values():
                client.query(keys)
        for number, (kind, keys) in enumerate(queries):
            order = list(targets) if number % 2 == 0 else list(reversed(targets))
            counts = {}
            for name in order:
                ms, matches, final = clients[name].query(keys)
                if final != 0:
                    raise RuntimeError(f"{name}: C-FIND {keys} ended with status 0x{final:04X}")
                times[name].append((kind, ms, matches))
                counts[name] = matches
            if len(set(counts.values())) > 1:
                mismatches += 1
                if mismatches <= 3:
                    log(f"  match counts differ for {keys}: {counts}")
    finally:
        for client in clients.values():
            client.close()
        radpacs.stop()
        orthanc.stop()

    # Orthanc with its defaults, same index (a restart on the same storage).
    default = Orthanc(root, tuned=False)
    default.root = orthanc.root
    default.port, default.http_port = orthanc.port, orthanc.http_port
    default.start()
    try:
        client = FindClient(default.port, ORTHANC_AET)
        times["Orthanc default"] = []
        try:
            for _kind, keys in warmup[:5]:
                client.query(keys)
            for kind, keys in queries:
                ms, matches, _final = client.query(keys)
                times["Orthanc default"].append((kind, ms, matches))
        finally:
            client.close()
    finally:
        default.stop()

    result["mismatches"] = mismatches
    result["queries"] = len(queries)
    result["latency"] = {}
    for name, samples in times.items():
        entry = {}
        for kind in ("all", "PatientID", "StudyDate range"):
            values = [ms for k, ms, _ in samples if kind in ("all", k)]
            matches = [m for k, _, m in samples if kind in ("all", k)]
            entry[kind] = {
                "p50": percentile(values, 0.5),
                "p95": percentile(values, 0.95),
                "mean_matches": statistics.mean(matches) if matches else 0,
            }
        result["latency"][name] = entry
    shutil.rmtree(orthanc.root, ignore_errors=True)
    return result


# -------------------------------------------------------------------- Django side


def django_task(task: str) -> None:
    """Runs in a subprocess with DJANGO_SETTINGS_MODULE and DATABASE_URL set."""
    sys.path.insert(0, str(REPO))
    import django

    django.setup()

    from accounts.models import Facility
    from pacs.models import DicomNode

    payload = json.loads(sys.stdin.read() or "null")
    if task == "setup":
        facility = Facility.objects.create(name="Benchmark", code=FACILITY_CODE, mrn_issuer="BENCH")
        for title in (STORE_AET, FIND_AET):
            DicomNode.objects.create(facility=facility, ae_title=title, host="127.0.0.1", port=104)
        print(json.dumps({"facility": facility.pk}))
    elif task == "bulkload":
        rows = [json.loads(line) for line in Path(payload["manifest"]).read_text().splitlines()]
        bulkload_index(FACILITY_CODE, rows)
        print(json.dumps({"studies": len(rows)}))
    else:
        raise SystemExit(f"unknown task {task}")


# -------------------------------------------------------------------------- profile


def profile_pass(
    args: argparse.Namespace, radpacs: RadPACS, files: list[Path], root: Path
) -> dict[str, Any]:
    """An extra, unmeasured RadPACS pass on N associations under two `py-spy record`
    per process: one of the thread holding the GIL (Python CPU), one of all threads
    (wall time; pynetdicom's 1 ms polling sleeps and idle waits left out)."""
    radpacs.reset()
    radpacs.start()
    spies, outputs = [], {"gil": [], "wall": []}
    try:
        for pid in radpacs.pids:
            for mode in ("gil", "wall"):
                out = root / f"py-spy-{mode}-{pid}.txt"
                outputs[mode].append(out)
                extra = ["--gil"] if mode == "gil" else []
                spies.append(
                    start_process(
                        [
                            args.py_spy,
                            "record",
                            "--format",
                            "raw",
                            "--rate",
                            "100",
                            "--nonblocking",
                            *extra,
                            "-p",
                            str(pid),
                            "-o",
                            str(out),
                        ],
                        env=clean_env(),
                        log_path=root / f"py-spy-{mode}-{pid}.log",
                    )
                )
        time.sleep(1.5)
        commands = [
            [
                dcmtk("storescu"),
                "-aet",
                STORE_AET,
                "-aec",
                RADPACS_AET,
                "127.0.0.1",
                str(radpacs.port),
                *map(str, part),
            ]
            for part in chunks(files, args.parallel)
        ]
        run_storescu(commands, 120 + len(files) / 5, root)
        for spy in spies:
            with contextlib.suppress(ProcessLookupError):
                os.kill(spy.pid, signal.SIGINT)
        for spy in spies:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(30)
            stop_process(spy)
    finally:
        radpacs.stop()
    kept = args.cache / "results"
    kept.mkdir(exist_ok=True)
    stamp = f"{dt.datetime.now():%Y%m%d-%H%M%S}"
    summary: dict[str, Any] = {}
    for mode, files_out in outputs.items():
        stacks: Counter[str] = Counter()
        for out in files_out:
            if not out.exists():
                continue
            shutil.copy(out, kept / f"py-spy-{stamp}-{out.name}")
            for line in out.read_text(errors="replace").splitlines():
                stack, _, count = line.rpartition(" ")
                if stack and count.isdigit() and not (mode == "wall" and idle(stack)):
                    stacks[stack] += int(count)
        summary[mode] = summarize_profile(stacks)
    return summary


# Leaf frames of threads that wait for nothing in particular: pynetdicom's reactors
# sleep 1 ms between polls, the listener waits in select, the main thread on an Event.
IDLE_LEAVES = (
    "run_reactor (pynetdicom/dul.py:403)",
    "_run_reactor (pynetdicom/association.py:714)",
    "(selectors.py:",
    "wait (threading.py:",
)


def idle(stack: str) -> bool:
    leaf = stack.rsplit(";", 1)[-1]
    return any(marker in leaf for marker in IDLE_LEAVES)


PROFILE_MARKERS = [
    ("pynetdicom: receive PDUs / decode (DUL, dimse)", ("pynetdicom/dul.py", "pynetdicom/dimse")),
    ("handle_store (whole C-STORE handler)", ("handle_store (pacs/dimse/handlers.py",)),
    ("services.ingest", ("ingest (pacs/services.py",)),
    ("  read_header (parse header)", ("read_header (pacs/dicom/parse.py",)),
    ("  instance_json (DICOM JSON)", ("instance_json (pacs/dicom/parse.py",)),
    ("  storage.content_key (SHA-256)", ("content_key (pacs/storage.py",)),
    ("  storage.put (write + fsync)", ("put (pacs/storage.py",)),
    ("  _record (index transaction)", ("_record (pacs/services.py",)),
    ("  study_refresh (eager follow-up task)", ("study_refresh (pacs/services.py",)),
    ("    series_thumbnail (render PNG)", ("series_thumbnail (pacs/services.py",)),
    (
        "  close_old_connections + new connection",
        ("close_old_connections (", "get_new_connection ("),
    ),
    ("PostgreSQL round trips (psycopg wait/send)", ("psycopg/connection.py", "client_cursor.py")),
    ("peer lookup (peers.peer_for)", ("peer_for (pacs/dimse/peers.py",)),
    ("audit.record", ("record (accounts/audit.py",)),
]


def summarize_profile(stacks: Counter[str]) -> dict[str, Any]:
    total = sum(stacks.values())
    if not total:
        return {"samples": 0}
    inclusive = []
    for label, needles in PROFILE_MARKERS:
        hits = sum(c for s, c in stacks.items() if any(n in s for n in needles))
        inclusive.append((label, 100 * hits / total))
    leaf: Counter[str] = Counter()
    for stack, count in stacks.items():
        frame = stack.rsplit(";", 1)[-1]
        leaf[re.sub(r":\d+\)$", ")", frame)] += count
    top = [(frame, 100 * count / total) for frame, count in leaf.most_common(12)]
    return {"samples": total, "inclusive": inclusive, "self": top}


# -------------------------------------------------------------------------- report


def machine_info(pg: Postgres | None) -> dict[str, str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = status_kib_total()
    orthanc = run([ORTHANC, "--version"], check=False).splitlines()
    dcmtk_version = run([dcmtk("storescu"), "--version"], check=False).splitlines()
    import pydicom
    import pynetdicom

    head = run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], check=False).strip()
    dirty = run(
        [
            "git",
            "-C",
            str(REPO),
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            "accounts",
            "config",
            "pacs",
            "ris",
            "billing",
        ],
        check=False,
    ).split()[1::2]
    return {
        "revision": head + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else ""),
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{mem / 1024 / 1024:.0f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "orthanc": orthanc[0].replace(ORTHANC, "Orthanc") if orthanc else "?",
        "dcmtk": next(
            (m.group(1) for line in dcmtk_version if (m := re.search(r"v(\d+\.\d+\.\d+)", line))),
            "?",
        ),
        "pynetdicom": pynetdicom.__version__,
        "pydicom": pydicom.__version__,
        "postgresql": pg.version() if pg else "?",
    }


def render(
    args: argparse.Namespace,
    info: dict[str, str],
    passes: list[Pass],
    find: dict | None,
    profile: dict | None,
    started: dt.datetime,
    loads: tuple[str, str],
    durability: str,
) -> str:
    lines = [
        f"### Run of {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `{' '.join(['.venv/bin/python', 'bench/dimse_ingest.py', *sys.argv[1:]])}`",
        "",
        f"RadPACS code measured: {info['revision']} (at the start of the run).",
        "",
        f"Machine: {info['cpus']} CPUs ({info['cpu']}), {info['memory']} RAM, Linux "
        f"{info['kernel']}; load average {loads[0]} at the start, {loads[1]} at the end. "
        f"Versions: {info['orthanc']} (Debian), dcmtk {info['dcmtk']}, PostgreSQL "
        f"{info['postgresql']}, Python {info['python']}, pynetdicom {info['pynetdicom']}, "
        f"pydicom {info['pydicom']}.",
        "",
        f"RadPACS: {args.radpacs_processes} `dicom_server` processes on one port ("
        + (
            "`--processes`: one shared socket, accepts balanced by load), "
            if args.radpacs_listen == "shared"
            else "separate commands, SO_REUSEPORT), "
        )
        + f"PostgreSQL {durability}, images on local disk (fsync per file and directory), "
        "DEBUG=0, LOG_LEVEL=WARNING, "
        + (
            "REDIS_URL unset (follow-up tasks such as study_refresh run eagerly, inside the "
            "dicom_server process)"
            if args.celery == "eager"
            else "follow-up tasks through a private Redis and one Celery worker (concurrency "
            "1; its CPU and Redis's are counted with PostgreSQL's below)"
        )
        + (f", extra environment {args.radpacs_env_dict}" if args.radpacs_env_dict else "")
        + ". Orthanc: SQLite index, StorageCompression false, SyncStorageArea true; "
        "`tuned` = TCP_NODELAY=1 in its environment. storescu runs with TCP_NODELAY=1.",
        "",
    ]
    if passes:
        n = passes[0].instances
        lines += [
            f"#### C-STORE: {n} CT instances (512x512, 16-bit, "
            f"{args.push_bytes / n / 1e6:.2f} MB each, {args.studies} studies), "
            f"median of {args.rounds} rounds",
            "",
            "| server | associations | instances/s (median) | rounds | RadPACS / this | "
            "server CPU ms per instance | peak RSS (VmHWM) |",
            "|---|---|---|---|---|---|---|",
        ]
        targets = list(dict.fromkeys(p.target for p in passes))
        for associations in sorted({p.associations for p in passes}):
            rp = median(
                p.rate for p in passes if p.target == "RadPACS" and p.associations == associations
            )
            for target in targets:
                mine = [p for p in passes if p.target == target and p.associations == associations]
                if not mine:
                    continue
                rate = median(p.rate for p in mine)
                cpu = median(1000 * (p.server_cpu + p.helper_cpu) / max(1, p.stored) for p in mine)
                cpu_text = f"{cpu:.1f}"
                if target == "RadPACS":
                    python = median(1000 * p.server_cpu / max(1, p.stored) for p in mine)
                    helpers = "PostgreSQL" if args.celery == "eager" else "PostgreSQL, worker"
                    cpu_text += f" ({python:.1f} Python + {cpu - python:.1f} {helpers})"
                peak = max(sum(p.peak_rss_kib) for p in mine) / 1024
                peak_text = f"{peak:.0f} MiB"
                if target == "RadPACS":
                    per = max(max(p.peak_rss_kib) for p in mine) / 1024
                    peak_text += f" ({len(mine[0].peak_rss_kib)} processes, max {per:.0f} each)"
                ratio = "" if target == "RadPACS" else f"{rp / rate:.2f}x"
                rounds = ", ".join(f"{p.rate:.0f}" for p in mine)
                lines.append(
                    f"| {target} | {associations} | **{rate:.0f}** | {rounds} | {ratio} | "
                    f"{cpu_text} | {peak_text} |"
                )
        lines += [""]
        rss = [p for p in passes if p.target == "RadPACS"]
        with_db = [p for p in rss if p.db and p.stored]
        if with_db:
            per = {
                k: median(p.db[k] / p.stored for p in with_db)
                for k in ("commits", "wal_syncs", "sessions")
            }
            lines.append(
                f"RadPACS's PostgreSQL per stored instance (median of passes): "
                f"{per['commits']:.1f} commits, {per['wal_syncs']:.1f} WAL flushes (fsync), "
                f"{per['sessions']:.1f} new connections (psql probes included)."
            )
            lines.append("")
        if rss:
            lines.append(
                "RadPACS CPU seconds per dicom_server process (an uneven split leaves one "
                "process, one GIL, with most of the work): "
                + "; ".join(
                    f"x{p.associations} r{p.round}: " + "/".join(f"{c:.0f}" for c in p.cpu_each)
                    for p in rss
                )
                + "."
            )
            lines.append("")
            lines.append(
                "RadPACS memory while ingesting (summed RSS of the dicom_server processes, "
                "at 10% of the pass -> at its end): "
                + "; ".join(
                    f"x{p.associations} r{p.round}: {p.rss_early_kib / 1024:.0f} -> "
                    f"{p.rss_end_kib / 1024:.0f} MiB"
                    for p in rss
                )
                + "."
            )
        other = [p.other_cpu / (p.wall * (os.cpu_count() or 1)) for p in passes]
        lines += [
            "",
            f"Other processes on the machine used {100 * median(other):.0f}% of its CPU "
            f"during a median pass (max {100 * max(other):.0f}%).",
        ]
        notes = [f"{p.target} x{p.associations} r{p.round}: {p.note}" for p in passes if p.note]
        if notes:
            lines += ["", "Incomplete passes: " + "; ".join(notes) + "."]
        lines.append("")
    if find:
        lines += [
            f"#### C-FIND, study level: {find['instances']} instances "
            f"({find['studies']} studies, {find['patients']} patients), "
            f"{find['queries']} queries (half PatientID, half StudyDate range of 1-7 days)",
            "",
            "| server | p50 ms | p95 ms | PatientID p50 / p95 | StudyDate range p50 / p95 | "
            "matches per query (mean) |",
            "|---|---|---|---|---|---|",
        ]
        for name, entry in find["latency"].items():
            a, p, d = entry["all"], entry["PatientID"], entry["StudyDate range"]
            lines.append(
                f"| {name} | **{a['p50']:.1f}** | **{a['p95']:.1f}** | "
                f"{p['p50']:.1f} / {p['p95']:.1f} | {d['p50']:.1f} / {d['p95']:.1f} | "
                f"{a['mean_matches']:.1f} |"
            )
        lines += [
            "",
            f"Loading: Orthanc tuned took the {find['orthanc_loaded']} instances through "
            f"{args.parallel} storescu in {find['orthanc_load_s']:.0f} s "
            f"({find['orthanc_loaded'] / find['orthanc_load_s']:.0f}/s); RadPACS's index was "
            f"bulk-loaded (Study/Series/Instance rows, minimal metadata_json, then VACUUM "
            f"ANALYZE) in {find['radpacs_load_s']:.0f} s. RadPACS and Orthanc tuned were "
            "queried alternately over one open association each (after 20 warm-up queries); "
            "Orthanc default afterwards, restarted on the same index. Queries whose match "
            f"counts differed between RadPACS and Orthanc: {find['mismatches']}.",
            "",
        ]
    if profile and profile.get("gil", {}).get("samples"):
        gil, wall = profile["gil"], profile.get("wall", {"inclusive": [], "samples": 0})
        walls = dict(wall.get("inclusive", []))
        lines += [
            f"#### Where RadPACS's dicom_server spends its time (py-spy on both processes "
            f"during an extra {args.parallel}-association pass, 100 samples/s)",
            "",
            f"GIL: share of the {gil['samples']} samples of the thread holding the GIL (the "
            f"Python CPU one process can use). Wall: share of the {wall['samples']} samples "
            "of threads doing something (pynetdicom's 1 ms polling sleeps, the listener's "
            "select and idle waits left out; includes waiting for PostgreSQL, fsync and the GIL).",
            "",
            "| part (inclusive) | GIL | wall |",
            "|---|---|---|",
            *(
                f"| {label} | {pct:.0f}% | {walls.get(label, 0):.0f}% |"
                for label, pct in gil["inclusive"]
            ),
            "",
            "Top frames by own GIL time: "
            + "; ".join(f"`{frame}` {pct:.0f}%" for frame, pct in gil["self"][:10])
            + ".",
            "",
        ]
    return "\n".join(lines)


def write_markdown(text: str, key: str) -> Path:
    path = REPO / "docs" / "benchmarks.md"
    start, end = RESULTS_START.format(key), RESULTS_END.format(key)
    block = f"{start}\n\n{text.rstrip()}\n\n{end}"
    current = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if start in current and end in current:
        head, _, rest = current.partition(start)
        _, _, tail = rest.partition(end)
        current = head + block + tail
    else:
        title = f"## DIMSE ingest and C-FIND: latest results ({key})"
        current = f"{current.rstrip()}\n\n{title}\n\n{block}\n"
    path.write_text(current)
    return path


# ---------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=3000, help="CT instances to push")
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=4, help="storescu processes (besides 1)")
    parser.add_argument("--radpacs-processes", type=int, default=2)
    parser.add_argument(
        "--radpacs-listen",
        choices=["shared", "reuseport"],
        default="shared",
        help="shared: `dicom_server --processes N` (one socket, accepts balanced by load); "
        "reuseport: N separate commands on one port (SO_REUSEPORT, spread by a hash)",
    )
    parser.add_argument(
        "--orthanc", default="tuned,default", help="Orthanc variants: tuned, default or both"
    )
    parser.add_argument("--skip-push", action="store_true")
    parser.add_argument("--skip-find", action="store_true")
    parser.add_argument("--find-instances", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--find-load-timeout", type=float, default=1800)
    parser.add_argument(
        "--synchronous-commit",
        default="on",
        help="PostgreSQL synchronous_commit (on: every commit flushed; fsync stays on)",
    )
    parser.add_argument(
        "--radpacs-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the dicom_server processes (e.g. DATABASE_CONN_MAX_AGE=60)",
    )
    parser.add_argument(
        "--celery",
        choices=["eager", "redis"],
        default="eager",
        help="RadPACS follow-up tasks: eager (REDIS_URL unset) or a Redis broker + 1 worker",
    )
    parser.add_argument("--py-spy", help="path of py-spy: profile an extra RadPACS pass")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/radpacs-bench"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    parser.add_argument(
        "--block", help="name of the results block in docs/benchmarks.md (default: --celery)"
    )
    args = parser.parse_args()
    args.radpacs_env_dict = dict(item.split("=", 1) for item in args.radpacs_env)
    return args


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "_django":
        django_task(sys.argv[2])
        return 0
    args = parse_args()
    started = dt.datetime.now(dt.UTC)
    load_start = "{} {} {}".format(*Path("/proc/loadavg").read_text().split()[:3])
    ensure_packages(["dcmtk", "orthanc", "postgresql", "redis-server"])
    stop_packaged_orthanc()

    args.cache.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="run-", dir=args.cache))
    CLEANUP.push("remove temp dir", lambda: shutil.rmtree(root, ignore_errors=True))
    log(f"work dir {root}")

    files: list[Path] = []
    if not args.skip_push or args.py_spy:
        files = push_data_set(args.cache, args.instances, args.studies, args.workers)
        args.push_bytes = sum(f.stat().st_size for f in files)

    pg = Postgres(root, args.synchronous_commit)
    pg.start()
    durability = (
        f"fsync={pg.sql('SHOW fsync')}, synchronous_commit={pg.sql('SHOW synchronous_commit')}, "
        f"full_page_writes={pg.sql('SHOW full_page_writes')}"
    )
    log(f"PostgreSQL {pg.version()} on 127.0.0.1:{pg.port} ({durability})")
    radpacs = RadPACS(
        root / "radpacs",
        pg,
        args.radpacs_processes,
        args.radpacs_env_dict,
        args.celery,
        args.radpacs_listen,
    )
    radpacs.prepare_template()
    info = machine_info(pg)

    passes: list[Pass] = []
    if not args.skip_push:
        variants = [v.strip() for v in args.orthanc.split(",") if v.strip()]
        servers: list[RadPACS | Orthanc] = [radpacs] + [
            Orthanc(root, tuned=(v == "tuned")) for v in variants
        ]
        timeout = 120 + len(files) / 5
        for round_number in range(1, args.rounds + 1):
            for associations in sorted({1, args.parallel}):
                order = servers if (round_number + associations) % 2 else servers[::-1]
                for server in order:
                    passes.append(
                        push_pass(server, files, associations, round_number, timeout, root)
                    )
    find = None
    if not args.skip_find:
        find = find_phase(args, root, pg, radpacs)
    profile = None
    if args.py_spy and files:
        log("profiling an extra RadPACS pass with py-spy")
        profile = profile_pass(args, radpacs, files, root)

    load_end = "{} {} {}".format(*Path("/proc/loadavg").read_text().split()[:3])
    text = render(args, info, passes, find, profile, started, (load_start, load_end), durability)
    print("\n" + text)
    results = args.cache / "results"
    results.mkdir(exist_ok=True)
    raw = results / f"dimse_ingest-{started:%Y%m%d-%H%M%S}.json"
    raw.write_text(
        json.dumps(
            {
                "info": info,
                "passes": [{**p.__dict__, "rate": p.rate} for p in passes],
                "find": find,
                "profile": profile,
                "argv": sys.argv,
            },
            indent=1,
            default=str,
        )
    )
    log(f"raw results: {raw}")
    if not args.no_write:
        log(f"written to {write_markdown(text, args.block or args.celery)}")
    return 0


if __name__ == "__main__":
    run_main(main)
