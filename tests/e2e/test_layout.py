"""The base layout works on a phone, a tablet and a desktop, in a real browser."""

import pytest
from playwright.sync_api import Page

from accounts.roles import Role
from tests.e2e.conftest import screenshot
from tests.factories import PASSWORD, PatientFactory, member

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def log_in(page: Page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")


def has_horizontal_overflow(page: Page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1")


def test_a_clerk_uses_the_menu_on_a_phone(page_factory, live_server, facility_a):
    member(facility_a, Role.FRONT_DESK, username="phoneclerk")
    PatientFactory(facility=facility_a, family_name="Phonepatient")
    page = page_factory(390, 844, touch=True)
    log_in(page, live_server.url, "phoneclerk")
    nav = page.locator("nav.nav")
    assert not nav.is_visible(), "the menu starts folded on a phone"
    assert not has_horizontal_overflow(page)
    page.click("label[for=nav-toggle]")
    assert nav.is_visible()
    screenshot(page, "phone-menu-open")
    nav.get_by_role("link", name="Patients").click()
    page.wait_for_url("**/ris/patients/")
    assert page.locator("table").get_by_text("Phonepatient").is_visible()
    assert not has_horizontal_overflow(page), "wide tables scroll inside their box"
    screenshot(page, "phone-patients")
    assert page.console_errors == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(("width", "height"), [(820, 1180), (1440, 900)])
def test_the_menu_is_always_shown_on_a_tablet_and_a_desktop(
    page_factory, live_server, facility_a, width, height
):
    member(facility_a, Role.RADIOLOGIST, username="rad")
    page = page_factory(width, height)
    log_in(page, live_server.url, "rad")
    nav = page.locator("nav.nav")
    assert nav.is_visible()
    assert not page.locator("label[for=nav-toggle]").is_visible()
    labels = [text.strip() for text in nav.locator("a").all_inner_texts()]
    assert "Reading worklist" in labels and "Fee schedule" not in labels
    assert not has_horizontal_overflow(page)
    screenshot(page, f"home-{width}")
    assert page.console_errors == []  # type: ignore[attr-defined]


def test_the_api_docs_render_from_local_files(page_factory, live_server, facility_a):
    member(facility_a, Role.FRONT_DESK, username="apiuser")
    page = page_factory(1280, 900)
    log_in(page, live_server.url, "apiuser")
    failed: list[str] = []
    # A request cut short by the navigation itself (net::ERR_ABORTED) is not a failure.
    page.on(
        "requestfailed",
        lambda request: "ERR_ABORTED" not in (request.failure or "") and failed.append(request.url),
    )
    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector(".swagger-ui .opblock", timeout=15_000)
    assert page.get_by_text("/api/v1/patients/").first.is_visible()
    screenshot(page, "api-docs")
    assert failed == []
