# ruff: noqa: S603, S311, S103
"""What the benchmarks in bench/ share: processes that are always stopped, CPU and memory
read from /proc, Debian packages, a private PostgreSQL cluster and the cached data sets.

Every process started with `start_process` is registered in `CLEANUP`; `run_main` runs
a benchmark's main and then `CLEANUP`, on Ctrl-C and SIGTERM too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
FIND_PER_STUDY = 10  # instances per study (one series) in the C-FIND / QIDO data set


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", flush=True)


# --------------------------------------------------------------------------- processes


class Cleanup:
    """Everything to undo on exit, last in first out; each step runs once."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, Callable[[], None]]] = []

    def push(self, name: str, step: Callable[[], None]) -> None:
        self.steps.append((name, step))

    def remove(self, step: Callable[[], None]) -> None:
        self.steps = [(n, s) for n, s in self.steps if s is not step]

    def run(self) -> None:
        while self.steps:
            name, step = self.steps.pop()
            try:
                step()
            except Exception as error:
                print(f"cleanup: {name}: {error}", file=sys.stderr)


CLEANUP = Cleanup()


def start_process(
    cmd: list[str], *, env: dict[str, str], log_path: Path, cwd: Path | None = None
) -> subprocess.Popen:
    """Start `cmd` in its own session (so Ctrl-C reaches only us, and stopping its
    process group stops what it spawned); stopped on exit whatever happens."""
    handle = log_path.open("ab")
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    handle.close()

    def stop() -> None:
        stop_process(proc)

    proc.bench_stop = stop  # type: ignore[attr-defined]
    CLEANUP.push(f"stop {cmd[0]} {proc.pid}", stop)
    return proc


def stop_process(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    # Whatever the leader left behind in its group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    stop = getattr(proc, "bench_stop", None)
    if stop is not None:
        CLEANUP.remove(stop)


def run(cmd: list[str], *, timeout: float = 600, check: bool = True, **kwargs: Any) -> str:
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[:6])} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result.stdout


def free_port() -> int:
    # Orthanc binds every interface: the port must be free on all of them.
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def wait_for(what: str, ready: Callable[[], bool], timeout: float, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        if ready():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not ready after {timeout:.0f} s")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# ------------------------------------------------------------------ /proc measurements


def proc_cpu(pid: int, children: bool = False) -> float:
    """CPU seconds (user + system) of a process; with children, also its reaped ones."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def descendants(pid: int) -> list[int]:
    by_parent: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        by_parent.setdefault(ppid, []).append(int(stat.split("/")[2]))
    out, stack = [], [pid]
    while stack:
        for child in by_parent.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def tree_cpu(pid: int) -> float:
    """CPU seconds of a daemon and everything it ran (PostgreSQL: postmaster + backends,
    exited backends included through the postmaster's reaped-children counters)."""
    return proc_cpu(pid, children=True) + sum(proc_cpu(p) for p in descendants(pid))


def status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def retire(path: Path, run_root: Path) -> None:
    """Move a previous pass's files out of the way; they are deleted with the run.

    Deleting them between passes skewed the next pass: on ext4 without a journal (these
    machines), allocating an inode skips every inode of its group deleted in the last
    minutes, one buffer lookup each, and whoever created files right after a deletion
    of thousands paid for it (perf: up to 19% of dicom_server's CPU in
    `recently_deleted`).
    """
    if not path.exists():
        return
    graveyard = run_root / "retired"
    graveyard.mkdir(exist_ok=True)
    path.rename(graveyard / f"{path.name}-{time.monotonic_ns()}")


def machine_busy() -> float:
    """CPU seconds all cores spent busy since boot (from /proc/stat)."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(p) for p in parts[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


class RssSampler:
    """Samples the summed VmRSS of some processes every 0.25 s in a thread."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.is_set():
            total = sum(status_kib(p, "VmRSS") for p in self.pids)
            self.samples.append((time.monotonic() - start, total))
            self._stop.wait(0.25)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def at_fraction(self, fraction: float) -> int:
        if not self.samples:
            return 0
        end = self.samples[-1][0]
        return next(kib for t, kib in self.samples if t >= fraction * end)


# ----------------------------------------------------------------------- installation


def pg_bindir() -> Path | None:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p)],
    )
    return Path(found[-1]).parent if found else None


# Debian's dcmtk programs by full path: the venv puts pynetdicom's Python scripts of the
# same names (storescu, findscu, ...) first on PATH, a far slower client to measure with.
DCMTK = Path("/usr/bin")


def dcmtk(program: str) -> str:
    return str(DCMTK / program)


# Debian package -> whether it is installed (what the benchmarks run from it).
PACKAGE_PRESENT: dict[str, Callable[[], bool]] = {
    "chromium": lambda: shutil.which("chromium") is not None,
    "dcmtk": lambda: (DCMTK / "storescu").exists(),
    "orthanc": lambda: Path(ORTHANC).exists(),
    "orthanc-dicomweb": lambda: Path(DICOMWEB_PLUGIN).exists(),
    "postgresql": lambda: pg_bindir() is not None,
    "redis-server": lambda: shutil.which("redis-server") is not None,
}


def ensure_packages(packages: Iterable[str]) -> None:
    """Install the missing ones of `packages` (keys of PACKAGE_PRESENT) with apt-get."""
    missing = [name for name in packages if not PACKAGE_PRESENT[name]()]
    if not missing:
        return
    log(f"installing {' '.join(missing)} (apt-get)")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    apt = [
        *sudo,
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "-y",
        "-q",
        "-o",
        "Dpkg::Options::=--force-confold",
        "install",
        "--no-install-recommends",
        *missing,
    ]
    if subprocess.run(apt, capture_output=True, check=False, timeout=900).returncode != 0:
        run(
            [*sudo, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "update"], timeout=900
        )
        run(apt, timeout=900)
    stop_packaged_orthanc()


def stop_packaged_orthanc() -> None:
    """Debian's postinst may start its own Orthanc (ports 4242/8042): stop that one,
    by its pid, never anything else."""
    for exe in glob.glob("/proc/[0-9]*/exe"):
        try:
            if os.readlink(exe) != ORTHANC:
                continue
            pid = int(exe.split("/")[2])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.startswith(b"/etc/orthanc") for arg in cmdline):
            log(f"stopping the packaged Orthanc service instance (pid {pid})")
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)


# ------------------------------------------------------------------------- data sets


def import_synthetic():
    """pacs.dicom.synthetic, importable outside Django (it needs only the settings name)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "1")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from pacs.dicom import synthetic

    return synthetic


def _make_push_study(args: tuple[Path, int, int, str]) -> list[str]:
    folder, index, slices, date = args
    synthetic = import_synthetic()
    patient = synthetic.PatientSpec(
        patient_id=f"PUSH{index:04d}", patient_name=f"Push^Patient{index:04d}"
    )
    study = synthetic.StudySpec(patient=patient, study_date=date, accession_number=f"PA{index:06d}")
    names = []
    for number, data in enumerate(synthetic.ct_series(study, slices=slices), 1):
        path = folder / f"s{index:03d}_{number:04d}.dcm"
        path.write_bytes(data)
        names.append(path.name)
    return names


def push_data_set(cache: Path, instances: int, studies: int, workers: int) -> list[Path]:
    """`instances` CT 512x512 slices in `studies` studies, made once and cached."""
    folder = cache / "data" / f"ct512-{instances}x{studies}"
    manifest = folder / "manifest.json"
    if manifest.exists():
        names = json.loads(manifest.read_text())["files"]
        if len(names) == instances and all(
            (folder / n).exists() for n in names[:: max(1, instances // 50)]
        ):
            return [folder / n for n in names]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    log(f"making the push data set: {instances} CT instances in {studies} studies -> {folder}")
    base, extra = divmod(instances, studies)
    jobs = [
        (
            folder,
            i,
            base + (1 if i < extra else 0),
            (dt.date(2024, 1, 1) + dt.timedelta(i)).strftime("%Y%m%d"),
        )
        for i in range(studies)
    ]
    started = time.monotonic()
    with ProcessPoolExecutor(workers) as pool:
        names = [name for batch in pool.map(_make_push_study, jobs) for name in batch]
    manifest.write_text(json.dumps({"files": names}))
    log(f"  made in {time.monotonic() - started:.0f} s")
    return [folder / n for n in names]


FIND_START_DATE = dt.date(2021, 1, 1)
FIND_DAYS = 1000


def _make_find_studies(args: tuple[Path, int, int, int, int]) -> list[dict]:
    folder, first, last, parts, seed = args
    synthetic = import_synthetic()
    from pydicom import dcmread

    rng = random.Random(seed * 1_000_003 + first)
    rows = []
    for index in range(first, last):
        patient_number = index // 2  # two studies per patient
        patient = synthetic.PatientSpec(
            patient_id=f"FP{patient_number:06d}",
            patient_name=f"Find^Patient{patient_number:06d}",
            birth_date=f"19{40 + patient_number % 60:02d}0{1 + patient_number % 9}15",
            sex="MF"[patient_number % 2],
        )
        date = FIND_START_DATE + dt.timedelta(rng.randrange(FIND_DAYS))
        study = synthetic.StudySpec(
            patient=patient,
            study_date=date.strftime("%Y%m%d"),
            study_time=f"{8 + index % 10:02d}{index % 60:02d}00",
            accession_number=f"FA{index:07d}",
            description="CT CHEST",
            referring_physician="Referring^Doctor",
        )
        target = folder / str(index % parts)
        sops = []
        series_uid = ""
        for number, data in enumerate(
            synthetic.ct_series(study, slices=FIND_PER_STUDY, rows=8, columns=8), 1
        ):
            path = target / f"f{index:07d}_{number:02d}.dcm"
            path.write_bytes(data)
            ds = dcmread(path, specific_tags=["SOPInstanceUID", "SeriesInstanceUID"])
            sops.append(str(ds.SOPInstanceUID))
            series_uid = str(ds.SeriesInstanceUID)
        rows.append(
            {
                "study_uid": study.study_uid,
                "series_uid": series_uid,
                "sops": sops,
                "patient_id": patient.patient_id,
                "patient_name": patient.patient_name,
                "birth_date": patient.birth_date,
                "sex": patient.sex,
                "study_date": study.study_date,
                "study_time": study.study_time,
                "accession": study.accession_number,
                "description": study.description,
                "referring": study.referring_physician,
            }
        )
    return rows


def find_data_set(cache: Path, instances: int, parts: int, workers: int) -> tuple[Path, list[dict]]:
    """Small CT instances (8x8), 10 per study, two studies per patient, study dates spread
    over 1,000 days; files split into `parts` folders (one per storescu)."""
    studies = max(1, instances // FIND_PER_STUDY)
    folder = cache / "data" / f"find-{studies * FIND_PER_STUDY}-p{parts}"
    manifest = folder / "studies.jsonl"
    if manifest.exists():
        rows = [json.loads(line) for line in manifest.read_text().splitlines()]
        if len(rows) == studies:
            return folder, rows
    shutil.rmtree(folder, ignore_errors=True)
    for part in range(parts):
        (folder / str(part)).mkdir(parents=True)
    log(
        f"making the C-FIND data set: {studies * FIND_PER_STUDY} small instances, {studies} studies"
    )
    started = time.monotonic()
    step = 500
    jobs = [(folder, a, min(a + step, studies), parts, 7) for a in range(0, studies, step)]
    with ProcessPoolExecutor(workers) as pool:
        rows = [row for batch in pool.map(_make_find_studies, jobs) for row in batch]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    log(f"  made in {time.monotonic() - started:.0f} s")
    return folder, rows


# ------------------------------------------------------------------------- PostgreSQL


class Postgres:
    """A private cluster on 127.0.0.1 (as scripts/test.sh does it), durable settings."""

    def __init__(self, root: Path, synchronous_commit: str) -> None:
        self.bindir = pg_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL is not installed")
        self.dir = root / "pg"
        self.data = self.dir / "data"
        self.port = free_port()
        self.synchronous_commit = synchronous_commit
        self.as_pg: list[str] = []
        if os.geteuid() == 0:
            self.as_pg = ["runuser", "-u", "postgres", "--", "env", f"--chdir={self.dir}"]

    def start(self) -> None:
        self.dir.mkdir(parents=True)
        os.chmod(self.dir.parent, 0o755)
        if self.as_pg:
            shutil.chown(self.dir, "postgres", "postgres")
        run(
            [
                *self.as_pg,
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            ],
            timeout=120,
        )
        config = (
            f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
            f"unix_socket_directories = '{self.dir}'\nmax_connections = 100\n"
            # Durable, like a production archive: every commit is on disk before success.
            f"fsync = on\nsynchronous_commit = {self.synchronous_commit}\n"
            "full_page_writes = on\n"
        )
        conf = self.data / "postgresql.conf"
        run([*self.as_pg, "sh", "-c", f"cat >> {conf}"], input=config)
        CLEANUP.push("stop PostgreSQL", self.stop)
        run(
            [
                *self.as_pg,
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.dir / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            timeout=90,
        )

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            run(
                [
                    *self.as_pg,
                    str(self.bindir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    "60",
                    "stop",
                ],
                timeout=90,
                check=False,
            )

    @property
    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def url(self, db: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def sql(self, statement: str, db: str = "postgres") -> str:
        return run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                statement,
            ],
            timeout=300,
        ).strip()

    def version(self) -> str:
        return self.sql("SHOW server_version")


def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in list(env):
        if name in {"TCP_NODELAY", "REDIS_URL", "DATABASE_URL", "DJANGO_SETTINGS_MODULE"} or (
            name.startswith(("DICOM_", "IMAGE_", "S3_", "CELERY_"))
        ):
            del env[name]
    return env


def chunks(items: list[Path], parts: int) -> list[list[Path]]:
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < extra else 0)
        out.append(items[start:end])
        start = end
    return [c for c in out if c]


def run_storescu(
    commands: list[list[str]], timeout: float, log_dir: Path
) -> tuple[float, float, list[int]]:
    """Start the storescu processes together; wall time until the last one ends, their
    CPU seconds (wait4 rusage) and exit codes. Killed at `timeout`."""
    env = clean_env()
    env["TCP_NODELAY"] = "1"  # dcmtk reads it: Nagle off on the client side too
    procs = []
    started = time.monotonic()
    for number, cmd in enumerate(commands):
        procs.append(start_process(cmd, env=env, log_path=log_dir / f"storescu-{number}.log"))
    pending = {p.pid: p for p in procs}
    codes: dict[int, int] = {}
    cpu = 0.0
    deadline = started + timeout
    while pending and time.monotonic() < deadline:
        for pid, proc in list(pending.items()):
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                proc.returncode = os.waitstatus_to_exitcode(status)
                codes[pid] = proc.returncode
                cpu += usage.ru_utime + usage.ru_stime
                del pending[pid]
                stop_process(proc)
        time.sleep(0.01)
    wall = time.monotonic() - started
    for proc in pending.values():
        log(f"  storescu {proc.pid} still running after {timeout:.0f} s: killed")
        stop_process(proc)
        codes[proc.pid] = -9
    return wall, cpu, [codes[p.pid] for p in procs]


def find_queries(rows: list[dict], count: int, seed: int = 11) -> list[tuple[str, dict[str, str]]]:
    rng = random.Random(seed)
    patients = sorted({r["patient_id"] for r in rows})
    queries = []
    for number in range(count):
        if number % 2 == 0:
            queries.append(("PatientID", {"PatientID": rng.choice(patients)}))
        else:
            first = FIND_START_DATE + dt.timedelta(rng.randrange(FIND_DAYS))
            last = first + dt.timedelta(rng.randrange(7))
            queries.append(("StudyDate range", {"StudyDate": f"{first:%Y%m%d}-{last:%Y%m%d}"}))
    return queries


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def status_kib_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------- main


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_main(main: Callable[[], int]) -> NoReturn:
    """Run a benchmark's main, then undo everything it started (Ctrl-C, SIGTERM too)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # Also when started in the background, where a shell leaves SIGINT ignored.
    signal.signal(signal.SIGINT, _interrupted)
    try:
        status = main()
    except KeyboardInterrupt:
        status = 130
    finally:
        CLEANUP.run()
    sys.exit(status)


def bulkload_index(
    facility_code: str,
    rows: list[dict[str, Any]],
    metadata: Callable[[int, dict[str, Any]], Iterable[str]] | None = None,
) -> None:
    """Study, Series and Instance rows of the C-FIND / QIDO data set, as ingest would
    make them, then VACUUM ANALYZE. Runs in a Django process (a `django_task`).
    `metadata(index, row)` gives each instance's DICOM JSON ('{}' without it)."""
    from django.db import connection, transaction

    from accounts.models import Facility
    from pacs.models import Instance, Series, Study

    def empty(index: int, row: dict[str, Any]) -> Iterable[str]:
        return ["{}"] * len(row["sops"])

    metadata = metadata or empty
    facility = Facility.objects.get(code=facility_code)
    batch = 1000
    for start in range(0, len(rows), batch):
        part = rows[start : start + batch]
        with transaction.atomic():
            studies = Study.objects.bulk_create(
                Study(
                    facility=facility,
                    study_instance_uid=r["study_uid"],
                    dicom_patient_id=r["patient_id"],
                    patient_name=r["patient_name"],
                    patient_birth_date=r["birth_date"],
                    patient_sex=r["sex"],
                    study_date=r["study_date"],
                    study_time=r["study_time"],
                    accession_number=r["accession"],
                    study_id="1",
                    study_description=r["description"],
                    referring_physician_name=r["referring"],
                    modalities_in_study="CT",
                    number_of_series=1,
                    number_of_instances=len(r["sops"]),
                )
                for r in part
            )
            series = Series.objects.bulk_create(
                Series(
                    facility=facility,
                    study=study,
                    series_instance_uid=r["series_uid"],
                    modality="CT",
                    series_number=1,
                    series_description="Axial 1.25mm",
                    body_part_examined="CHEST",
                    series_date=r["study_date"],
                    number_of_instances=len(r["sops"]),
                )
                for study, r in zip(studies, part, strict=True)
            )
            Instance.objects.bulk_create(
                Instance(
                    facility=facility,
                    series=s,
                    sop_instance_uid=sop,
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    instance_number=number,
                    rows=8,
                    columns=8,
                    storage_key=f"bench/{sop}.dcm",
                    size=0,
                    sha256="0" * 64,
                    metadata_json=text,
                )
                for index, (s, r) in enumerate(zip(series, part, strict=True), start)
                for number, (sop, text) in enumerate(
                    zip(r["sops"], metadata(index, r), strict=True), 1
                )
            )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
