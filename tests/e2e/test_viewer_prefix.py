"""The viewer behind a proxy that mounts RadPACS under a path prefix.

The proxy's WSGI server passes the prefix as SCRIPT_NAME (docs/operations.md): every URL
the pages, the viewer's config and DICOMweb's BulkDataURIs carry must keep it, and the
viewer's chunks, web workers and codecs must load from under it.
"""

import threading
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from django.core.wsgi import get_wsgi_application

from tests.e2e.conftest import NEEDS_POSTGRESQL, screenshot
from tests.e2e.test_viewer import SIZE, SLICES, open_viewer, wait_for
from tests.factories import PASSWORD, archived_study

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), NEEDS_POSTGRESQL]

PREFIX = "/radpacs"


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def behind_prefix(app):
    """What a proxy in front of gunicorn does: /radpacs/x reaches Django as x, prefix in
    SCRIPT_NAME; anything outside the prefix is not ours."""

    def mounted(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if not path.startswith(PREFIX + "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"outside the prefix"]
        environ["SCRIPT_NAME"] = PREFIX
        environ["PATH_INFO"] = path[len(PREFIX) :]
        return app(environ, start_response)

    return mounted


@pytest.fixture
def prefixed_server() -> Iterator[str]:
    server = make_server(
        "127.0.0.1",
        0,
        # Static files as in production: WhiteNoise's middleware, which matches the path
        # below the prefix (Django's own static handler does not know of prefixes).
        behind_prefix(get_wsgi_application()),
        server_class=_ThreadingServer,
        handler_class=_QuietHandler,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}{PREFIX}"
    server.shutdown()
    server.server_close()


def test_the_viewer_works_under_a_path_prefix(
    page_factory, prefixed_server, radiologist, facility_a, tmp_path, settings
):
    settings.STORAGES = {
        **settings.STORAGES,
        "images": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "images")},
        },
    }
    ct_study = archived_study(facility_a, "P1", slices=SLICES, size=SIZE)
    page = page_factory(1100, 700)
    page.goto(f"{prefixed_server}/")
    page.fill("#id_username", radiologist.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{prefixed_server}/")
    open_viewer(page, prefixed_server, ct_study.study_instance_uid)
    wait_for(page, f"document.querySelector('.vp').dataset.loaded === '{SLICES}'")
    urls = page.evaluate("performance.getEntriesByType('resource').map((r) => r.name)")
    ours = [url for url in urls if url.startswith("http://127.0.0.1")]
    assert ours and all(url.startswith(prefixed_server + "/") for url in ours), ours
    assert any("/dicom-web/studies/" in url and "/frames/" in url for url in ours)
    assert any("decodeImageFrameWorker" in url for url in ours), "the decoder worker loaded"
    thumbnail = page.locator(".series-list img").first
    wait_for(page, "document.querySelector('.series-list img').naturalWidth > 0")
    assert thumbnail.get_attribute("src").startswith(f"{prefixed_server}/dicom-web/")
    assert page.console_errors == []
    screenshot(page, "viewer-under-prefix")
