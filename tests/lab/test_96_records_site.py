"""The records site in a real browser (Debian's chromium via playwright), from file://.

Records of real runs against the session's lab (find-vm-ip twice, network-inventory,
through ``opsbook run`` with the lab's parameter sets), rendered by ``opsbook records
html``. A reviewer's path: the index, a search for a guest by its MAC that finds the
find-vm-ip runs, the newest one's page (its addresses, what changed since the run
before, the executed cells unfolded), the previous run through that section's link,
the host's page, back to the index. Every link on every page visited resolves to a
file; the console stays free of errors; a PNG per step goes to artifacts/records-site/.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from jupyter_browser import CHROMIUM, CHROMIUM_FLAGS, watched_page
from playwright.sync_api import Browser, Page, expect, sync_playwright

from opslib.lab.config import Lab
from opslib.lab.notebook import lab_defaults
from opslib.lab.simulated import labvirt

# a lab of its own, configured as the wiki says, beside the simulated session (test.sh)
pytestmark = [pytest.mark.lab, pytest.mark.browser, pytest.mark.lab_session("configured")]

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "artifacts" / "records-site"
RUNS = ("find-vm-ip", "network-inventory", "find-vm-ip")


def opsbook(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "opslib.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"opsbook {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def site(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Records of read-only runs on the lab, and the site rendered from them."""
    records = tmp_path_factory.mktemp("records")
    params = lab_defaults(lab)
    for runbook in RUNS:
        opsbook("run", runbook, "-q", "-f", str(params / f"{runbook}.yaml"), "--records",
                str(records))  # fmt: skip
    out = opsbook("records", "--records", str(records), "html")
    assert f"{len(RUNS)} runs: {len(RUNS)} record pages rendered, 1 host page" in out, out
    return records / "index.html"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with watched_page(browser) as (pg, _):  # the console must stay free of errors
        yield pg


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def assert_links_resolve(page: Page) -> None:
    """Every link and script of the page names a file that exists."""
    urls = page.eval_on_selector_all("a[href], script[src]", "els => els.map(e => e.href || e.src)")
    assert urls
    for url in urls:
        parsed = urlparse(url)
        assert parsed.scheme == "file", url
        assert Path(unquote(parsed.path)).is_file(), f"{page.url}: {url} does not resolve"


def test_a_reviewer_finds_a_vm_by_its_mac_and_reads_its_runs(
    lab: Lab, site: Path, page: Page
) -> None:
    guest = lab.nat_guests[0]
    lease = labvirt.nat_leases(lab)[guest.nat_mac]
    page.goto(site.as_uri())
    rows = page.locator("#runs tbody tr")
    expect(rows).to_have_count(len(RUNS))
    assert_links_resolve(page)
    shot(page, "01-index")

    # the search box finds the guest's runs by its MAC, from the static files alone
    page.locator("#search").fill(guest.nat_mac.upper())
    found = rows.filter(has_text="find-vm-ip")
    expect(found).to_have_count(2)
    for i in range(2):
        expect(found.nth(i)).to_be_visible()
        expect(found.nth(i).locator("td.match")).to_contain_text(guest.nat_mac)
    visible = [r for r in rows.all() if r.is_visible()]
    assert all(guest.nat_mac in r.locator("td.match").inner_text() for r in visible)
    expect(page.locator("#count")).to_contain_text(f"{len(visible)} of {len(RUNS)} runs")
    shot(page, "02-index-search-mac")

    # the newest find-vm-ip run's page: the header, its addresses, since the previous run
    found.first.locator("td a").filter(has_text=".html").click()
    expect(page.locator("h1")).to_contain_text("find-vm-ip on lab")
    expect(page.locator("dl.header")).to_contain_text("revision")
    addresses = page.locator("h5", has_text="addresses").locator(
        "xpath=following-sibling::table[1]"
    )
    expect(addresses).to_contain_text(guest.nat_mac)
    expect(addresses).to_contain_text(lease)
    since = page.locator("#since")
    expect(since).to_be_visible()
    cells = page.locator("details#cells")
    expect(cells.locator("details.cell").first).to_be_hidden()
    cells.locator("summary").first.click()
    expect(cells.locator("details.cell").first).to_be_visible()
    assert_links_resolve(page)
    shot(page, "03-record-page")

    # the previous run of find-vm-ip on lab, through the section's link
    page.locator("#since + p a").first.click()
    expect(page.locator("h1")).to_contain_text("find-vm-ip on lab")
    expect(page.locator("#since + p")).to_contain_text("The first run of this runbook")
    assert_links_resolve(page)
    shot(page, "04-previous-record-page")

    # the host's page: the latest run of each runbook there
    page.locator("nav a", has_text="host lab").click()
    expect(page.locator("h1")).to_have_text("Host lab")
    latest = page.locator("#latest-runs tbody tr")
    expect(latest).to_have_count(2)
    expect(latest.filter(has_text="find-vm-ip")).to_contain_text("ok")
    expect(latest.filter(has_text="network-inventory")).to_contain_text("ok")
    assert_links_resolve(page)
    shot(page, "05-host-page")

    page.locator("nav a", has_text="all records").click()
    expect(page.locator("#runs tbody tr")).to_have_count(len(RUNS))
