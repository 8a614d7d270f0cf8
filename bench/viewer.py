#!/usr/bin/env python3
"""Viewer benchmark in the real browser: a 300-slice CT opened in headless chromium.

RadPACS runs as deployed (gunicorn `config.wsgi`, DEBUG=0, private PostgreSQL: the
RadPACSWeb server of bench/dicomweb.py). The CT (512x512, 16-bit, ~0.5 MB a slice) is
stored through STOW-RS. Each round opens a fresh browser context (cold cache, new login),
clicks the study's "Open" link in the study list and reads the viewer's own timings,
measured from the navigation the click starts:

- first image: the first slice rendered on screen;
- whole series: every slice fetched, decoded and cached (the progress bar full);
- scroll: slices displayed per second stepping through the loaded series, each step
  waiting for Cornerstone's IMAGE_RENDERED event (what a held arrow key or wheel does).

Goals of issue 5: first image under 1 s, whole series under 5 s, scrolling >= 30 fps.
There is no yardstick peer here (Orthanc's own viewer plugins are not in Debian 12).

    .venv/bin/python bench/viewer.py [--rounds 3] [--slices 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import requests
from dicomweb import RadPACSWeb
from harness import (
    CLEANUP,
    PYTHON,
    REPO,
    Postgres,
    descendants,
    ensure_packages,
    import_synthetic,
    log,
    proc_cpu,
    run,
    run_main,
)
from playwright.sync_api import sync_playwright

PASSWORD = "bench-" + uuid.uuid4().hex
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
GOAL_FIRST_IMAGE_MS = 1000.0
GOAL_SERIES_MS = 5000.0
GOAL_SCROLL_FPS = 30.0
STOW_BATCH = 20

# Steps through every slice, one IMAGE_RENDERED at a time; resolves to slices per second.
SCROLL_SCRIPT = """
async () => {
  const viewer = window.radpacsViewer;
  const viewport = viewer.viewport(0);
  const element = viewer.slots[0].element;
  const total = viewer.slots[0].imageIds.length;
  await viewport.setImageIdIndex(0);
  const start = performance.now();
  for (let index = 1; index < total; index += 1) {
    const rendered = new Promise((resolve) =>
      element.addEventListener('CORNERSTONE_IMAGE_RENDERED', resolve, { once: true }));
    viewport.setImageIdIndex(index);
    await rendered;
  }
  return (total - 1) / ((performance.now() - start) / 1000);
}
"""


# Where the first image's time goes: when each of the first requests ended, from navigation.
RESOURCES_SCRIPT = """
() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const picks = performance.getEntriesByType('resource')
    .filter((r) => !r.name.includes('/frames/') || r.name.endsWith('/frames/1'))
    .slice(0, 8)
    .map((r) => {
      const name = r.name.split('/').slice(-2).join('/');
      return `${name}: ${Math.round(r.startTime)}-${Math.round(r.responseEnd)}`;
    });
  const page = `page ${Math.round(nav.responseEnd)}`;
  return [`${page}, DOMContentLoaded ${Math.round(nav.domContentLoadedEventEnd)}`, ...picks]
    .join('; ');
}
"""


def store_ct(web: RadPACSWeb, slices: int) -> str:
    """The CT through STOW-RS, in batches; returns its Study Instance UID."""
    synthetic = import_synthetic()
    spec = synthetic.StudySpec(
        patient=synthetic.PatientSpec(patient_id="VIEWER1", patient_name="Viewer^Bench"),
        description="CT CHEST 300",
        accession_number="VIEWBENCH1",
    )
    batch: list[bytes] = []

    def send() -> None:
        boundary = uuid.uuid4().hex
        body = (
            b"".join(
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part + b"\r\n"
                for part in batch
            )
            + f"--{boundary}--\r\n".encode()
        )
        response = requests.post(
            f"{web.base}/studies?facility=BENCH",
            data=body,
            headers={
                **web.headers,
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json",
            },
            timeout=300,
        )
        response.raise_for_status()
        batch.clear()

    for data in synthetic.ct_series(spec, slices=slices):
        batch.append(data)
        if len(batch) == STOW_BATCH:
            send()
    if batch:
        send()
    return spec.study_uid


def set_password(web: RadPACSWeb) -> None:
    """The benchmark user logs in through the browser like a radiologist."""
    run(
        [
            PYTHON,
            "manage.py",
            "shell",
            "-c",
            "from accounts.models import User; u = User.objects.get(username='bench'); "
            f"u.set_password('{PASSWORD}'); u.save()",
        ],
        env=web.env("radpacs_template"),
        cwd=REPO,
        timeout=120,
    )


def browser_cpu() -> float:
    """CPU seconds of the running chromium processes (the browser is our descendant)."""
    total = 0.0
    for pid in descendants(os.getpid()):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if name.startswith("chrom"):
            total += proc_cpu(pid)
    return total


def open_round(
    browser, base: str, study_uid: str, width: int, height: int, verbose: bool = False
) -> dict[str, float]:
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        page = context.new_page()
        response = page.goto(f"{base}/")
        if page.locator("#id_username").count() == 0:
            raise RuntimeError(
                f"no login form at {page.url} ({response.status}): {page.content()[:500]}"
            )
        page.fill("#id_username", "bench")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/")
        page.goto(f"{base}/pacs/studies/")
        browser_before = browser_cpu()
        page.locator(f"a[href$='/viewer/studies/{study_uid}/']").first.click()
        deadline = time.monotonic() + 120
        timings: dict = {}
        while time.monotonic() < deadline:
            timings = page.evaluate("JSON.stringify(window.radpacsViewer?.timings ?? {})")
            timings = json.loads(timings)
            if "seriesLoaded" in timings:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"series not loaded in 120 s: {timings}")
        load_cpu = browser_cpu() - browser_before
        if verbose:
            log(f"  resources: {page.evaluate(RESOURCES_SCRIPT)}")
        fps = page.evaluate(SCROLL_SCRIPT)
        errors = page.evaluate("document.querySelector('.vw-status').textContent")
        if "could not be loaded" in errors:
            raise RuntimeError(errors)
        return {
            "first_image_ms": timings["firstImage"],
            "series_ms": timings["seriesLoaded"],
            "scroll_fps": fps,
            "load_cpu": load_cpu,
        }
    finally:
        context.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--web-workers", type=int, default=4)
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args()

    ensure_packages(["chromium", "postgresql"])
    if not (REPO / "frontend" / "dist" / "viewer.js").exists():
        run([str(REPO / "scripts" / "build-viewer.sh")], timeout=900)
    root = Path(tempfile.mkdtemp(prefix="viewer-"))
    CLEANUP.push("remove temp dir", lambda: shutil.rmtree(root, ignore_errors=True))
    pg = Postgres(root, "on")
    pg.start()
    # As deployed: DEBUG off, static files (the viewer's bundle too) collected for WhiteNoise.
    web = RadPACSWeb(
        root / "radpacs", pg, args.web_workers, "eager", {"STATIC_ROOT": str(root / "static")}
    )
    CLEANUP.push("stop RadPACS", web.stop)
    web.prepare_template()
    set_password(web)
    run([PYTHON, "manage.py", "collectstatic", "--noinput", "-v0"], env=web.env(), cwd=REPO)
    web.reset()
    web.start()
    log(f"storing a {args.slices}-slice CT through STOW-RS")
    study_uid = store_ct(web, args.slices)
    web.settle()

    rounds = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        for number in range(1, args.rounds + 1):
            server_before, browser_before = web.cpu(), browser_cpu()
            result = open_round(
                browser,
                web.base.removesuffix("/dicom-web"),
                study_uid,
                args.width,
                args.height,
                verbose=number == 1,
            )
            rounds.append(result)
            log(
                f"round {number}: first image {result['first_image_ms']:.0f} ms, whole series "
                f"{result['series_ms']:.0f} ms, scroll {result['scroll_fps']:.1f} fps; CPU s: "
                f"server {web.cpu() - server_before:.1f}, chromium "
                f"{browser_cpu() - browser_before:.1f} (whole round; "
                f"{result['load_cpu']:.1f} until loaded)"
            )
        browser.close()

    first = statistics.median(r["first_image_ms"] for r in rounds)
    series = statistics.median(r["series_ms"] for r in rounds)
    fps = statistics.median(r["scroll_fps"] for r in rounds)
    version = run([CHROMIUM, "--version"], timeout=30).strip()
    commit = run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, timeout=30).strip()

    def verdict(met: bool) -> str:
        return "met" if met else "missed"

    print()
    print(
        f"Viewer, {args.slices}-slice CT 512x512 (commit {commit}, {platform.machine()}, "
        f"{version}, {args.width}x{args.height}, gunicorn {args.web_workers} workers)"
    )
    print("| | median of rounds | each round | goal |")
    print("|---|---|---|---|")
    each = lambda key, fmt: ", ".join(fmt.format(r[key]) for r in rounds)  # noqa: E731
    print(
        f"| click to first image | {first:.0f} ms | {each('first_image_ms', '{:.0f}')} | "
        f"< {GOAL_FIRST_IMAGE_MS:.0f} ms: {verdict(first < GOAL_FIRST_IMAGE_MS)} |"
    )
    print(
        f"| whole series loaded | {series:.0f} ms | {each('series_ms', '{:.0f}')} | "
        f"< {GOAL_SERIES_MS:.0f} ms: {verdict(series < GOAL_SERIES_MS)} |"
    )
    print(
        f"| scroll once loaded | {fps:.1f} fps | {each('scroll_fps', '{:.1f}')} | "
        f">= {GOAL_SCROLL_FPS:.0f} fps: {verdict(fps >= GOAL_SCROLL_FPS)} |"
    )
    return 0


if __name__ == "__main__":
    run_main(main)
