#!/usr/bin/env python3
"""Charge export benchmark (issue 9): CSV, XLSX and X12 837P of 100,000 charges.

On a private PostgreSQL cluster with durable commits (fsync and synchronous_commit on),
one facility with its billing profile, one payer, 5,000 insured patients with addresses
and birth dates, and orders with two charges each (technical TC and professional 26,
as captured when the facility does not bill globally), all ready to bill, loaded with
`bulk_create` (the capture services are not what is measured). Then, for each format,
in a fresh Python process each (so its peak RSS is the export's own), with DEBUG=0:

- the charges are reset (the first N by id ready, the rest held; VACUUM ANALYZE);
- `billing.exports.export_charges` runs on them as the export view calls it (the billing
  office's scoped queryset, `mark=True`): wall and CPU seconds (the Python process, and
  PostgreSQL's), RSS before, peak RSS (`ru_maxrss`), file size and rows;
- each format runs at N/10 too: a flat export's peak RSS barely grows from N/10 to N.

837P: the claims of the one payer (one claim per order, in interchanges of at most
5,000 claims; the file's ISA and ST segments are counted). Goals of issue 9: CSV under
5 s, XLSX under 30 s, memory flat; no goal for 837P. `--profile N` also runs each format
at N charges under cProfile and prints the functions that dominate.

    .venv/bin/python bench/billing_export.py [--charges 100000] [--formats csv,xlsx,837p]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import pstats
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from harness import (
    CLEANUP,
    PYTHON,
    REPO,
    Postgres,
    clean_env,
    ensure_packages,
    log,
    run,
    run_main,
    status_kib,
    tree_cpu,
)

FACILITY = "BENCH"
BILLER = "bench-biller"
PAYER = "Bench Health Plan"
GOAL_SECONDS = {"csv": 5.0, "xlsx": 30.0}
# "Flat": 9x the rows may add at most this much to the peak RSS (MiB, or share of it).
FLAT_MB = 10.0
FLAT_SHARE = 0.10
FORMATS = ("csv", "xlsx", "837p")


def django_env(pg: Postgres, root: Path) -> dict[str, str]:
    env = clean_env()
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=pg.url("radpacs"),
        DATABASE_CONN_MAX_AGE="60",
        SECRET_KEY="radpacs-bench-" + uuid.uuid4().hex * 2,
        DEBUG="0",
        LOG_LEVEL="WARNING",
        VAR_DIR=str(root / "var"),  # the "exports" storage: var/exports
        IMAGE_STORAGE_DIR=str(root / "images"),
        PYTHONUNBUFFERED="1",
        TIME_ZONE=os.environ.get("TIME_ZONE", "UTC"),
    )
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--charges", type=int, default=100_000)
    parser.add_argument("--formats", default=",".join(FORMATS), help="of csv,xlsx,837p")
    parser.add_argument("--patients", type=int, default=5000)
    parser.add_argument(
        "--per-order", type=int, default=2, choices=(1, 2), help="charges per order"
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs of each format at N")
    parser.add_argument("--no-flat", action="store_true", help="skip the N/10 runs")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="also profile each format at N"
    )
    args = parser.parse_args()
    formats = [f for f in args.formats.split(",") if f]
    if unknown := set(formats) - set(FORMATS):
        parser.error(f"unknown formats: {', '.join(sorted(unknown))}")
    if args.profile > args.charges:
        parser.error("--profile N must not exceed --charges")
    ensure_packages(["postgresql"])
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    root = Path(tempfile.mkdtemp(prefix="radpacs-bench-export-"))
    CLEANUP.push("remove the temp dir", lambda: shutil.rmtree(root, ignore_errors=True))
    pg = Postgres(root, synchronous_commit="on")
    pg.start()
    pg.sql("CREATE DATABASE radpacs")
    env = django_env(pg, root)
    log(f"PostgreSQL {pg.version()} on port {pg.port}; migrating")
    run([PYTHON, "manage.py", "migrate", "--no-input"], env=env, cwd=REPO, timeout=600)
    log(f"loading {args.patients:,} patients and {args.charges:,} charges")
    started = time.monotonic()
    script = str(Path(__file__).resolve())
    run(
        [PYTHON, script, "_setup", str(args.charges), str(args.patients), str(args.per_order)],
        env=env,
        cwd=REPO,
        timeout=3600,
    )
    pg.sql("VACUUM ANALYZE", db="radpacs")
    load_s = round(time.monotonic() - started, 1)
    log(f"  loaded in {load_s} s")

    plan: list[tuple[str, int]] = []
    for fmt in formats:
        if not args.no_flat:
            plan.append((fmt, max(1, args.charges // 10)))
        plan += [(fmt, args.charges)] * args.rounds
    runs = []
    for fmt, count in plan:
        log(f"{fmt}: exporting {count:,} charges")
        runs.append(export_run(pg, env, fmt, count))
        log(
            f"  {runs[-1]['seconds']} s, peak RSS {runs[-1]['peak_mb']} MB, "
            f"{runs[-1]['file_mb']} MB"
        )
    profiles = {}
    if args.profile:
        for fmt in formats:
            log(f"{fmt}: profiling an export of {args.profile:,} charges")
            out = root / f"{fmt}.prof"
            export_run(pg, env, fmt, args.profile, profile=out)
            profiles[fmt] = profile_summary(out)
    result: dict[str, Any] = {
        "charges": args.charges,
        "patients": args.patients,
        "charges_per_order": args.per_order,
        "load_s": load_s,
        "runs": runs,
        "postgres": pg.version(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average": {"start": load_at_start, "end": [round(x, 2) for x in os.getloadavg()]},
    }
    report(result)
    for fmt, text in profiles.items():
        print(f"\n## cProfile, {fmt}, {args.profile:,} charges\n{text}")
    return 0


def export_run(
    pg: Postgres, env: dict[str, str], fmt: str, count: int, profile: Path | None = None
) -> dict[str, Any]:
    """Reset the first `count` charges to ready (the others held), then export them in a
    fresh process; PostgreSQL's CPU is read around it."""
    chosen = f"SELECT id FROM billing_charge ORDER BY id LIMIT {int(count)}"  # noqa: S608
    reset = "UPDATE billing_charge SET export_id = NULL, status = CASE WHEN id IN ({}) THEN "
    pg.sql(reset.format(chosen) + "'ready' ELSE 'held' END", db="radpacs")
    pg.sql("VACUUM ANALYZE billing_charge", db="radpacs")
    cmd = [PYTHON, str(Path(__file__).resolve()), "_export", fmt, str(count)]
    if profile is not None:
        cmd.append(str(profile))
    pg_cpu = tree_cpu(pg.postmaster_pid)
    out = run(cmd, env=env, cwd=REPO, timeout=3600)
    pg_cpu = tree_cpu(pg.postmaster_pid) - pg_cpu
    measured = json.loads(out.strip().splitlines()[-1])
    if measured["marked"] != count:
        raise RuntimeError(f"{fmt}: {measured['marked']} of {count} charges marked exported")
    measured["postgres_cpu_s"] = round(pg_cpu, 1)
    return measured


def profile_summary(path: Path, top: int = 18) -> str:
    """The functions with the most time of their own, then the heaviest callers."""
    import io

    text = io.StringIO()
    stats = pstats.Stats(str(path), stream=text)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    lines = [line for line in text.getvalue().splitlines() if line.strip()]
    # Leave out pstats' own headers (the file's date and name, "Ordered by", "List").
    return "\n".join(
        line
        for line in lines
        if not line.endswith(str(path)) and not line.strip().startswith(("Ordered", "List"))
    )


def median_of(runs: list[dict[str, Any]], fmt: str, charges: int, key: str) -> float | None:
    values = [r[key] for r in runs if r["format"] == fmt and r["charges"] == charges]
    return round(statistics.median(values), 2) if values else None


def flat_verdict(runs: list[dict[str, Any]], fmt: str, charges: int) -> tuple[str, str]:
    """(median peak RSS at N/10 -> N, verdict) for one format, or ("", "") without both."""
    small_n = max(1, charges // 10)
    small = median_of(runs, fmt, small_n, "peak_mb")
    large = median_of(runs, fmt, charges, "peak_mb")
    if small is None or large is None or small_n == charges:
        return "", ""
    growth = large - small
    verdict = "flat" if growth <= max(FLAT_MB, FLAT_SHARE * small) else "grows"
    figures = f"{small} -> {large} MB (+{growth:.1f}) from {small_n:,} to {charges:,} charges"
    return figures, verdict


def report(result: dict[str, Any]) -> None:
    runs, charges = result["runs"], result["charges"]
    print()
    print(
        f"data: {charges:,} charges ({result['charges_per_order']} per order), "
        f"{result['patients']:,} patients; loaded in {result['load_s']} s; load average "
        f"{result['load_average']['start']} at the start, {result['load_average']['end']} "
        "at the end"
    )
    print(
        "| format | charges | seconds | charges/s | CPU s (Python + PostgreSQL) "
        "| peak RSS MB (before) | file MB |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        print(
            f"| {r['format']} | {r['charges']:,} | {r['seconds']} | {r['per_s']:,} "
            f"| {r['cpu_s']} + {r['postgres_cpu_s']} | {r['peak_mb']} ({r['rss_before_mb']}) "
            f"| {r['file_mb']} |"
        )
    print()
    print(
        "| format | charges | select + mark s | file written s | count, store, audit, commit s "
        "| peak RSS before writing MB |"
    )
    print("|---|---|---|---|---|---|")
    for r in runs:
        p = r["phases_s"]
        print(
            f"| {r['format']} | {r['charges']:,} | {p['before']} | {p['write']} | {p['after']} "
            f"| {r['peak_before_write_mb']} |"
        )
    print()
    for fmt in FORMATS:
        limit = GOAL_SECONDS.get(fmt)
        seconds = median_of(runs, fmt, charges, "seconds")
        if seconds is not None and limit is not None:
            verdict = "met" if seconds < limit else f"missed by {seconds - limit:.1f} s"
            print(f"goal, {fmt}: {seconds} s (median) for {charges:,} < {limit:.0f} s: {verdict}")
        figures, verdict = flat_verdict(runs, fmt, charges)
        if figures:
            print(f"memory, {fmt}: peak RSS {figures}: {verdict}")
    for r in runs:
        if r.get("claims"):
            print(
                f"837P, {r['charges']:,} charges: {r['claims']:,} claims in "
                f"{r['interchanges']} interchanges ({r['transactions']} ST-SE), "
                f"{r['left_out']} left out"
            )
    print(json.dumps(result))


# -------------------------------------------------------------------- Django side

FAMILY = ["Smith", "Müller", "García", "Nguyen", "O'Brien", "Johnson", "Kowalski", "Dubois"]
GIVEN = ["Anna", "José", "Lee", "Maria", "John", "Chloé", "Ahmed", "Grace", "Peter"]
CITIES = ["Springfield", "Chatham", "Rochester", "Petersburg", "Jacksonville"]
# (code, name, modality, technical price, professional price)
PROCEDURES = [
    ("70450", "CT head without contrast", "CT", "410.00", "95.00"),
    ("71250", "CT chest without contrast", "CT", "520.00", "110.00"),
    ("74177", "CT abdomen and pelvis with contrast", "CT", "890.00", "160.00"),
    ("70551", "MR brain without contrast", "MR", "980.00", "135.00"),
    ("71046", "XR chest 2 views", "CR", "60.00", "25.00"),
]
DIAGNOSES = ["R51.9", "R07.9,I10", "M54.50", "R10.9,K80.20", "J18.9,R05.9,R50.9"]


def django_setup() -> None:
    sys.path.insert(0, str(REPO))
    import django

    django.setup()


def setup(charges: int, patients: int, per_order: int) -> None:
    """The facility, its billing profile, one payer, patients and the ready charges."""
    django_setup()
    from django.db import transaction

    from accounts.models import Facility, Membership, User
    from accounts.roles import Role
    from billing.models import BillingProfile, Charge, Payer
    from ris.management.commands.load_demo import demo_npi
    from ris.models import Order, Patient, PatientInsurance, Procedure

    facility = Facility.objects.create(
        name="Bench Imaging",
        code=FACILITY,
        mrn_issuer=f"{FACILITY}_MRN",
        npi=demo_npi(199000000),
        place_of_service="22",
    )
    BillingProfile.objects.create(
        facility=facility,
        tax_id="991234560",
        taxonomy="261QR0200X",
        address_line1="100 Main Street",
        city="Springfield",
        state="IL",
        postal_code="627010001",
        contact_name="Billing office",
        contact_phone="2175550100",
        sender_id="BENCHBILL",
        receiver_id="BENCHCLEAR",
        receiver_name="Bench clearinghouse",
    )
    payer = Payer.objects.create(facility=facility, name=PAYER, payer_identifier="BHP01")
    biller = User.objects.create(username=BILLER, first_name="Bench", last_name="Biller")
    Membership.objects.create(user=biller, facility=facility, role=Role.BILLING)
    procedures = [
        Procedure.objects.create(facility=facility, code=code, name=name, modality=modality)
        for code, name, modality, _, _ in PROCEDURES
    ]
    radiologists = [(f"Reader{n} Ann", demo_npi(100000100 + n)) for n in range(8)]
    referring = ("Marcus Welby", demo_npi(100000900))

    people = Patient.objects.bulk_create(
        [
            Patient(
                facility=facility,
                mrn=f"M{n:07d}",
                mrn_issuer=facility.mrn_issuer,
                family_name=f"{FAMILY[n % len(FAMILY)]}{n}",
                given_name=GIVEN[n % len(GIVEN)],
                middle_name="Q" if n % 3 == 0 else "",
                birth_date=dt.date(1930, 1, 1) + dt.timedelta(days=(n * 7919) % 29000),
                sex="MF"[n % 2],
                address_street=f"{1 + n % 9000} Oak Street",
                address_other="Apt 2" if n % 5 == 0 else "",
                address_city=CITIES[n % len(CITIES)],
                address_state="IL",
                address_postal_code=f"627{n % 100:02d}",
                address_country="US",
            )
            for n in range(patients)
        ],
        batch_size=2000,
    )
    PatientInsurance.objects.bulk_create(
        [
            PatientInsurance(
                patient=p, payer=payer, member_id=f"BHP{p.pk:09d}", group_number="G100"
            )
            for p in people
        ],
        batch_size=2000,
    )
    orders = -(-charges // per_order)
    last_day = dt.date(2026, 12, 5)
    batch = 5000
    made = 0
    for first in range(0, orders, batch):
        with transaction.atomic():
            numbers = range(first, min(first + batch, orders))
            created = Order.objects.bulk_create(
                Order(
                    facility=facility,
                    patient=people[(n * 31) % patients],
                    procedure=procedures[n % len(procedures)],
                    accession_number=f"BN{n:09d}",
                    status=Order.Status.FINAL,
                    referring_physician_name="Welby^Marcus",
                    diagnosis_codes=DIAGNOSES[n % len(DIAGNOSES)],
                )
                for n in numbers
            )
            rows = []
            for n, order in zip(numbers, created, strict=True):
                code, _, _, technical, professional = PROCEDURES[n % len(PROCEDURES)]
                patient = people[(n * 31) % patients]
                reader = radiologists[n % len(radiologists)]
                components = (
                    [
                        ("technical", "TC", technical, ("", "")),
                        ("professional", "26", professional, reader),
                    ]
                    if per_order == 2
                    else [("global", "", str(float(technical) + float(professional)), reader)]
                )
                for component, modifier, price, (rendering, rendering_npi) in components:
                    if made == charges:
                        break
                    rows.append(
                        Charge(
                            facility=facility,
                            order=order,
                            patient=patient,
                            payer=payer,
                            member_id=f"BHP{patient.pk:09d}",
                            component=component,
                            procedure_code=code,
                            modifiers=modifier,
                            units=1,
                            unit_price=price,
                            amount=price,
                            diagnosis_codes=order.diagnosis_codes,
                            referring_name=referring[0],
                            referring_npi=referring[1],
                            rendering_name=rendering,
                            rendering_npi=rendering_npi,
                            place_of_service=facility.place_of_service,
                            service_date=last_day - dt.timedelta(days=(n * 90) // orders),
                            status=Charge.Status.READY,
                            capture_key=f"{component}:order:{order.pk}",
                        )
                    )
                    made += 1
            Charge.objects.bulk_create(rows, batch_size=2500)


def export_task(fmt: str, count: int, profile: str | None) -> None:
    """One export of the ready charges, measured inside this fresh process."""
    django_setup()
    import gc
    import resource

    import openpyxl  # noqa: F401  (imported as a web worker that exported before has it)

    from accounts.models import Facility, User
    from billing import exports, selectors
    from billing.models import Charge, Payer

    user = User.objects.get(username=BILLER)
    payer = Payer.objects.get(name=PAYER) if fmt == "837p" else None
    facility_id = Facility.objects.get(code=FACILITY).pk
    charges = selectors.charges(user=user, filters=selectors.ChargeFilter(status="ready"))
    # Where the time goes, without touching the module: its steps, timed from outside.
    marks: dict[str, float] = {}

    def timed(name: str, step: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            marks[f"{name}_start"] = time.perf_counter()
            marks[f"{name}_hwm_kib"] = status_kib(os.getpid(), "VmHWM")
            try:
                return step(*args, **kwargs)
            finally:
                marks[f"{name}_end"] = time.perf_counter()

        return wrapper

    for name in ("write_csv", "write_xlsx", "write_837p"):
        setattr(exports, name, timed("write", getattr(exports, name)))
    gc.collect()
    rss_before = status_kib(os.getpid(), "VmRSS")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started = time.perf_counter()
    result = exports.export_charges(
        user=user,
        facility_id=facility_id,
        charges=charges,
        fmt=fmt,
        filters={"status": "ready"},
        mark=True,
        payer=payer,
    )
    ended = time.perf_counter()
    seconds = ended - started
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    after = resource.getrusage(resource.RUSAGE_SELF)
    export = result.export
    marked = Charge.objects.filter(export=export).count()
    measured: dict[str, Any] = {
        "format": fmt,
        "charges": count,
        "rows": export.row_count,
        "marked": marked,
        "seconds": round(seconds, 2),
        "per_s": round(count / seconds),
        "cpu_s": round(after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime, 1),
        "rss_before_mb": round(rss_before / 1024, 1),
        "peak_before_mb": round(usage.ru_maxrss / 1024, 1),
        "peak_mb": round(after.ru_maxrss / 1024, 1),
        "file_mb": round(export.size / 1e6, 1),
        "profiled": bool(profile),
    }
    # Before writing: select and mark (one UPDATE); after: count, store, total, audit, commit.
    measured["phases_s"] = {
        "before": round(marks["write_start"] - started, 2),
        "write": round(marks["write_end"] - marks["write_start"], 2),
        "after": round(ended - marks["write_end"], 2),
    }
    measured["peak_before_write_mb"] = round(marks["write_hwm_kib"] / 1024, 1)
    if fmt == "837p":
        segments = {b"ISA": 0, b"ST*": 0, b"CLM": 0}
        with exports.open_export(export) as data:
            for line in data:  # one segment a line (the builder's default)
                for tag in segments:
                    segments[tag] += line.startswith(tag)
        measured.update(
            claims=segments[b"CLM"],
            interchanges=segments[b"ISA"],
            transactions=segments[b"ST*"],
            left_out=len(result.problems),
        )
    print(json.dumps(measured))


if __name__ == "__main__":
    if sys.argv[1:2] == ["_setup"]:
        setup(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1:2] == ["_export"]:
        export_task(sys.argv[2], int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
    else:
        run_main(main)
