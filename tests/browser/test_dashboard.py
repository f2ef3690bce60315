"""The staff dashboard in a real browser: sign in, the overview, a provider and its failed audit, the
reports filter, an audit started from a page and watched live, a key rotated, signing out; a wrong
password and a missing CSRF token refused. Screenshots go to var/screenshots/."""

import re
from datetime import UTC, datetime, timedelta

import httpx
from playwright.sync_api import expect

from api.demo.run import answer_until_verdict
from tests.browser.conftest import STAFF_EMAIL, Tab, World


def test_a_wrong_password_is_refused_then_staff_sign_in(tab: Tab) -> None:
    page = tab.page
    page.goto("/dashboard/providers")
    expect(page).to_have_url(re.compile(r"/dashboard/login\?next=/dashboard/providers$"))
    tab.shot("login")
    tab.expect(401, "/dashboard/login")
    tab.sign_in(password="not the password at all")
    expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
    tab.sign_in()
    expect(page).to_have_url(re.compile(r"/dashboard/providers$"))  # back where it was going
    expect(page.get_by_text(STAFF_EMAIL)).to_be_visible()


def test_overview(signed_in: Tab, world: World) -> None:
    page = signed_in.page
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    # fail (proof) and suspect (statistical) apart: their own counts, labels and colours.
    fail, suspect = page.locator('[data-outcome="fail"]'), page.locator('[data-outcome="suspect"]')
    expect(fail.locator("b")).to_have_text("2")
    expect(fail.locator(".badge.o-fail")).to_have_text("fail")
    expect(fail).to_contain_text("proof of inflation")
    expect(suspect.locator("b")).to_have_text("1")
    expect(suspect.locator(".badge.o-suspect")).to_have_text("suspect")
    expect(suspect).to_contain_text("statistical evidence, not proof")
    expect(page.locator('[data-outcome="pass"] b')).to_have_text("1")
    for chart in ("#chart-volume", "#chart-outcomes"):  # drawn by plotly.js, served by the app itself
        expect(page.locator(f"{chart} svg.main-svg").first).to_be_visible()
    expect(page.locator("#open-challenges")).to_contain_text("No challenge is waiting for a provider.")
    ranked = page.locator("h2:has-text('Providers by risk') + p + .table-wrap tbody tr")
    expect(ranked).to_have_count(3)
    expect(ranked.nth(2)).to_contain_text("Honest Reasoning Co")  # 1 suspect of 2 decided: below 1 of 1
    signed_in.shot("overview")
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.reload()
    expect(page.locator("#chart-outcomes svg.main-svg").first).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
        "the page scrolls sideways"
    )
    signed_in.shot("overview-phone")


def test_drill_into_a_provider_and_its_failed_audit(signed_in: Tab) -> None:
    page = signed_in.page
    page.get_by_role("link", name="Token Swap Ltd").first.click()
    expect(page.get_by_role("heading", name="Token Swap Ltd")).to_be_visible()
    expect(page.locator("#sampling")).to_contain_text("not audited on a schedule")
    expect(page.locator("#monitoring")).to_contain_text("proof alarm at audit 1")  # its failed audit
    expect(page.locator("#chart-volume svg.main-svg").first).to_be_visible()
    signed_in.shot("provider")
    page.get_by_role("link", name=re.compile(r"^\d{4}-\d\d-\d\d ")).first.click()  # its audit
    banner = page.locator("#verdict-banner")
    expect(banner).to_contain_text("fail: proof of inflation.")
    expect(banner).to_contain_text(re.compile(r"Failed proof checks?: .*token_embedding"))
    swapped = page.locator('#checks tr.failing[data-check="token_embedding"]')  # the failing check, its row
    expect(swapped).to_be_visible()
    expect(swapped.locator(".badge")).to_have_text("fail · proof of inflation")
    expect(swapped.locator("td.num").first).not_to_have_text("—")  # its figure, against its threshold
    expect(page.locator("#checks tr.failing .k-statistical")).to_have_count(0)  # only proof fails
    expect(page.locator("#rounds tbody tr")).to_have_count(1)
    expect(page.locator("#chart-blocks svg.main-svg").first).to_be_visible()
    expect(page.locator("#verify-command")).to_contain_text("coin verify-verdict verdict-")
    signed_in.shot("audit-failed")


def test_filter_reports(signed_in: Tab, world: World) -> None:
    page = signed_in.page
    page.get_by_role("link", name="Reports", exact=True).click()
    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(8)
    page.get_by_label("Provider").select_option(label="Honest Reasoning Co")
    page.get_by_label("Model").fill("demo-reasoner-mini")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(3)
    expect(page.get_by_text("3 reports match").first).to_be_visible()
    signed_in.shot("reports-filtered")
    page.get_by_role("link", name="clear").click()
    page.get_by_label("Outcome").select_option("fail")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(2)
    expect(rows.locator(".badge.o-fail")).to_have_count(2)
    page.get_by_label("Outcome").select_option("suspect")
    page.get_by_label("Request id").fill("honest-suspect")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    expect(rows.locator(".badge.o-suspect")).to_have_text("suspect · statistical evidence, not proof")
    page.get_by_label("Request id").fill("no-such-request")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("No report matches these filters.")).to_be_visible()
    page.get_by_role("link", name="clear").click()
    today = datetime.now(UTC).date()  # the date inputs are whole days; "to" includes its day
    page.get_by_label("Received from").fill(today.isoformat())
    page.get_by_label("Received to").fill(today.isoformat())
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(8)
    page.get_by_label("Received to").fill((today - timedelta(days=1)).isoformat())
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("No report matches these filters.")).to_be_visible()


def test_start_an_audit_and_watch_its_verdict_arrive(signed_in: Tab, world: World) -> None:
    page = signed_in.page
    page.goto(f"/dashboard/reports/{world.reports['honest-002']}")
    expect(page.get_by_text("Not audited yet.")).to_be_visible()
    page.get_by_role("button", name="Start an audit").click()
    expect(page).to_have_url(re.compile(r"/dashboard/audits/[0-9a-f-]{36}$"))
    expect(page.locator("#progress")).to_contain_text("Waiting for the provider")
    signed_in.shot("audit-in-progress")
    audit_id = page.url.rsplit("/", 1)[1]
    honest = world.providers["honest"]
    assert world.honest is not None
    verdict = answer_until_verdict(world.admin, honest.http, world.honest, audit_id)  # the provider answers
    # The page polls (htmx) and reloads itself with the verdict. (An honest provider passes, unless a
    # statistical check's false positive flags it: the page must show what the verdict says either way.)
    banner = page.locator("#verdict-banner")
    expect(banner).to_contain_text(f"{verdict['outcome']}: ", timeout=30_000)
    expect(page.locator("#checks tr.failing")).to_have_count(0)  # an honest provider fails no proof check
    signed_in.shot("audit-decided")


def test_rotate_a_key(signed_in: Tab, world: World) -> None:
    page = signed_in.page
    provider = world.providers["forged opening"]
    page.goto(f"/dashboard/providers/{provider.id}")
    old_prefix = provider.key.split("_")[1]
    page.get_by_role("button", name="Issue a new key").click()
    new_key = page.locator("#new-key code.key").inner_text()
    assert new_key.startswith("coin_") and new_key != provider.key
    expect(page.locator("#keys tbody tr")).to_have_count(2)
    signed_in.shot("key-issued")
    me = f"{world.base_url}/v1/providers/me"
    assert httpx.get(me, headers={"Authorization": f"Bearer {new_key}"}).status_code == 200
    page.once("dialog", lambda dialog: dialog.accept())  # "Revoke …? From now on it authenticates nothing."
    page.locator(f'tr[data-prefix="{old_prefix}"]').get_by_role("button", name="Revoke").click()
    expect(page.locator(f'tr[data-prefix="{old_prefix}"]')).to_contain_text("revoked")  # swapped in by htmx
    assert httpx.get(me, headers={"Authorization": f"Bearer {provider.key}"}).status_code == 401
    assert httpx.get(me, headers={"Authorization": f"Bearer {new_key}"}).status_code == 200
    expect(page).to_have_url(re.compile(rf"/dashboard/providers/{provider.id}$"))  # not the form's address
    page.reload()
    expect(page.locator("#new-key")).to_have_count(0)  # a key is shown once
    expect(page.locator("#keys tbody tr")).to_have_count(2)  # and the reload issued none
    provider.key = new_key
    provider.http.headers["Authorization"] = f"Bearer {new_key}"


def test_a_form_without_its_csrf_token_is_refused(signed_in: Tab, world: World) -> None:
    page = signed_in.page
    page.goto(f"/dashboard/providers/{world.providers['token swap'].id}")
    keys = page.locator("#keys tbody tr")
    before = keys.count()
    page.locator("#issue-key input[name=csrf_token]").evaluate("input => input.remove()")
    signed_in.expect(403, f"/dashboard/providers/{world.providers['token swap'].id}/keys")
    page.get_by_role("button", name="Issue a new key").click()
    expect(page.get_by_role("alert")).to_contain_text("This form expired or did not come from this dashboard")
    signed_in.shot("csrf-refused")
    page.goto(f"/dashboard/providers/{world.providers['token swap'].id}")
    expect(keys).to_have_count(before)  # nothing was issued


def test_sign_out(signed_in: Tab) -> None:
    page = signed_in.page
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/dashboard/login$"))
    page.goto("/dashboard/audits")
    expect(page).to_have_url(re.compile(r"/dashboard/login\?next=/dashboard/audits$"))
