#!/usr/bin/env python3
# ruff: noqa: S311
"""Front-desk scheduling benchmark (issue 6): free-slot search and the day view.

On a private PostgreSQL cluster (durable settings, as bench/dicomweb.py), one facility
with 10 CT rooms open Monday to Friday 07:00-19:00 (lunch break 12:30-13:00) and
Saturday mornings, and 100,000 appointments of 20 minutes over about 20 months
(about 65 % of the slots taken, at random). Then, inside one Django process with
DEBUG=0, through the full request stack (Django test client: middleware, session
login, audit):

- free-slot search for a week across the 10 rooms: `GET /api/v1/procedures/{id}/free-slots/`
  for random weeks of the booked future, and the same search as a plain function call;
- the day view (`ris:schedule_day`) of a day with 200 appointments (20 per room), and
  the day list (`ris:schedule`) of the same day.

Goals of issue 6: free-slot search p95 under 50 ms; day view under 100 ms.
There is no yardstick peer: no open RIS is packaged in Debian.

    .venv/bin/python bench/scheduling.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from harness import (
    PYTHON,
    REPO,
    Postgres,
    clean_env,
    ensure_packages,
    log,
    percentile,
    run,
    run_main,
)

APPOINTMENTS = 100_000
ROOMS = 10
SLOT_MINUTES = 20
BOOKED_SHARE = 0.65
DAY_VIEW_PER_ROOM = 20
GOAL_SLOTS_P95_MS = 50.0
GOAL_DAY_VIEW_MS = 100.0


def django_env(pg: Postgres, root: Path) -> dict[str, str]:
    env = clean_env()
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=pg.url("radpacs"),
        DATABASE_CONN_MAX_AGE="60",
        SECRET_KEY="radpacs-bench-" + uuid.uuid4().hex * 2,
        DEBUG="0",
        ALLOWED_HOSTS="testserver,127.0.0.1,localhost",
        LOG_LEVEL="WARNING",
        VAR_DIR=str(root / "var"),
        IMAGE_STORAGE_DIR=str(root / "images"),
        STATIC_ROOT=str(root / "static"),
        PYTHONUNBUFFERED="1",
        TIME_ZONE=os.environ.get("TIME_ZONE", "UTC"),
    )
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="searches and day views")
    args = parser.parse_args()
    ensure_packages(["postgresql"])
    root = Path(tempfile.mkdtemp(prefix="radpacs-bench-scheduling-"))
    pg = Postgres(root, synchronous_commit="on")
    pg.start()
    pg.sql("CREATE DATABASE radpacs")
    env = django_env(pg, root)
    log(f"PostgreSQL {pg.version()} on port {pg.port}; migrating")
    run([PYTHON, "manage.py", "migrate", "--no-input"], env=env, cwd=REPO, timeout=600)
    # Pages with DEBUG off need the static files' manifest, as deployed.
    run([PYTHON, "manage.py", "collectstatic", "--noinput", "-v0"], env=env, cwd=REPO)
    log(f"loading {APPOINTMENTS:,} appointments and measuring ({args.rounds} rounds)")
    out = run(
        [PYTHON, str(Path(__file__).resolve()), "_django", str(args.rounds)],
        env=env,
        cwd=REPO,
        timeout=3600,
    )
    result = json.loads(out.strip().splitlines()[-1])
    result.update(
        postgres=pg.version(),
        cpu=platform.processor() or platform.machine(),
        cores=os.cpu_count(),
    )
    report(result)
    return 0


def report(result: dict[str, Any]) -> None:
    slots, api, day, listing = (
        result["free_slots_call"],
        result["free_slots_api"],
        result["day_view"],
        result["day_list"],
    )
    print()
    print(
        f"data: {result['appointments']:,} appointments, {ROOMS} rooms; load {result['load_s']} s"
    )
    print("| measure | p50 | p95 | goal |")
    print("|---|---|---|---|")
    verdict = "met" if api["p95"] < GOAL_SLOTS_P95_MS else "missed"
    print(
        f"| free slots, week x 10 rooms, API | {api['p50']} ms | {api['p95']} ms | "
        f"p95 < {GOAL_SLOTS_P95_MS:.0f} ms: {verdict} |"
    )
    print(f"| free slots, function call | {slots['p50']} ms | {slots['p95']} ms | |")
    verdict = "met" if day["p95"] < GOAL_DAY_VIEW_MS else "missed"
    print(
        f"| day view, {day['appointments']} appointments | {day['p50']} ms | {day['p95']} ms | "
        f"< {GOAL_DAY_VIEW_MS:.0f} ms: {verdict} |"
    )
    print(f"| day list, same day | {listing['p50']} ms | {listing['p95']} ms | |")
    print(f"slots found per search (median): {result['slots_found_median']}")
    print(json.dumps(result))


# -------------------------------------------------------------------- Django side


def django_side(rounds: int) -> None:
    """Runs in a subprocess with DJANGO_SETTINGS_MODULE and DATABASE_URL set."""
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    import datetime as dt

    from django.db import connection
    from django.test import Client
    from django.urls import reverse
    from django.utils import timezone

    from accounts.models import Facility, Membership, User
    from accounts.roles import Role
    from ris import scheduling
    from ris.models import Appointment, Order, Patient, Procedure, Room, RoomHours

    rng = random.Random(6)
    started = time.perf_counter()
    facility = Facility.objects.create(name="Bench", code="BENCH", mrn_issuer="BENCH_MRN")
    procedure = Procedure.objects.create(
        facility=facility, code="70450", name="CT head", modality="CT", duration_minutes=20
    )
    rooms = [
        Room.objects.create(facility=facility, name=f"CT {n:02d}", modality="CT", ae_title=f"CT{n}")
        for n in range(1, ROOMS + 1)
    ]
    for room in rooms:
        room.procedures.add(procedure)
        for weekday in range(5):
            RoomHours.objects.create(room=room, weekday=weekday, opens="07:00", closes="12:30")
            RoomHours.objects.create(room=room, weekday=weekday, opens="13:00", closes="19:00")
        RoomHours.objects.create(room=room, weekday=5, opens="08:00", closes="12:00")

    today = timezone.localdate()
    # Slots of the working days around today, 2/3 before and 1/3 after.
    slots_per_day = (5 * 60 + 30 + 6 * 60) // SLOT_MINUTES
    days_needed = int(APPOINTMENTS / (ROOMS * slots_per_day * BOOKED_SHARE)) + 1
    weekdays: list[dt.date] = []
    day = today - dt.timedelta(days=int(days_needed * 7 / 5 * 2 / 3))
    while len(weekdays) < days_needed:
        if day.weekday() < 5:
            weekdays.append(day)
        day += dt.timedelta(days=1)
    starts: list[tuple[Room, dt.datetime]] = []
    for day in weekdays:
        for room in rooms:
            for opens, count in (
                (dt.time(7), 330 // SLOT_MINUTES),
                (dt.time(13), 360 // SLOT_MINUTES),
            ):
                first = timezone.make_aware(dt.datetime.combine(day, opens))
                for n in range(count):
                    starts.append((room, first + dt.timedelta(minutes=SLOT_MINUTES * n)))
    booked = rng.sample(starts, APPOINTMENTS)
    # The day-view day: after the loaded range, exactly 20 appointments per room.
    view_day = weekdays[-1] + dt.timedelta(days=7 - weekdays[-1].weekday())
    for room in rooms:
        first = timezone.make_aware(dt.datetime.combine(view_day, dt.time(7)))
        booked += [
            (room, first + dt.timedelta(minutes=SLOT_MINUTES * n)) for n in range(DAY_VIEW_PER_ROOM)
        ]

    patients = Patient.objects.bulk_create(
        Patient(
            facility=facility,
            mrn=f"{n:07d}",
            mrn_issuer="BENCH_MRN",
            family_name=rng.choice(["Smith", "Nguyen", "García", "Müller", "Okafor"]),
            given_name=rng.choice(["Ann", "Ben", "Chen", "Dana", "Eli"]),
            birth_date=dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(25_000)),
        )
        for n in range(20_000)
    )
    batch = 10_000
    for offset in range(0, len(booked), batch):
        chunk = booked[offset : offset + batch]
        orders = Order.objects.bulk_create(
            Order(
                facility=facility,
                patient=rng.choice(patients),
                procedure=procedure,
                accession_number=f"B{offset + n:09d}",
                status=Order.Status.SCHEDULED,
            )
            for n in range(len(chunk))
        )
        Appointment.objects.bulk_create(
            Appointment(
                facility=facility,
                order=order,
                room=room,
                starts_at=starts_at,
                ends_at=starts_at + dt.timedelta(minutes=SLOT_MINUTES),
            )
            for order, (room, starts_at) in zip(orders, chunk, strict=True)
        )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    load_s = round(time.perf_counter() - started, 1)

    clerk = User.objects.create_user("bench-clerk", password=uuid.uuid4().hex)
    Membership.objects.create(user=clerk, facility=facility, role=Role.FRONT_DESK)
    client = Client()
    client.force_login(clerk)

    future = [d for d in weekdays if d > today] or [today]
    mondays = sorted({d - dt.timedelta(days=d.weekday()) for d in future})
    url = f"/api/v1/procedures/{procedure.pk}/free-slots/"

    def timed(call) -> float:
        begin = time.perf_counter()
        call()
        return (time.perf_counter() - begin) * 1000

    def stats(samples: list[float]) -> dict[str, float]:
        return {
            "p50": round(statistics.median(samples), 1),
            "p95": round(percentile(samples, 0.95), 1),
            "n": len(samples),
        }

    found: list[int] = []
    api: list[float] = []
    calls: list[float] = []
    for _ in range(5):  # warm up
        client.get(
            url, {"from": mondays[0].isoformat(), "to": (mondays[0] + dt.timedelta(6)).isoformat()}
        )
    for _ in range(rounds):
        monday = rng.choice(mondays)
        query = {"from": monday.isoformat(), "to": (monday + dt.timedelta(days=6)).isoformat()}

        def search(query: dict[str, str] = query) -> None:
            response = client.get(url, query)
            assert response.status_code == 200, response.content
            found.append(len(response.json()))

        api.append(timed(search))
        calls.append(
            timed(lambda m=monday: scheduling.free_slots(procedure, m, m + dt.timedelta(days=6)))
        )
    day_url = reverse("ris:schedule_day")
    list_url = reverse("ris:schedule")
    day_query = {"day": view_day.isoformat(), "facility": facility.pk}

    def view(path: str) -> None:
        response = client.get(path, day_query)
        assert response.status_code == 200, response.status_code

    for _ in range(3):
        view(day_url)
    day_samples = [timed(lambda: view(day_url)) for _ in range(min(rounds, 100))]
    list_samples = [timed(lambda: view(list_url)) for _ in range(min(rounds, 100))]
    shown = Appointment.objects.filter(starts_at__date=view_day, is_cancelled=False).count()
    print(
        json.dumps(
            {
                "appointments": Appointment.objects.count(),
                "load_s": load_s,
                "free_slots_api": stats(api),
                "free_slots_call": stats(calls),
                "slots_found_median": statistics.median(found),
                "day_view": {**stats(day_samples), "appointments": shown},
                "day_list": stats(list_samples),
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_django":
        django_side(int(sys.argv[2]))
    else:
        run_main(main)
