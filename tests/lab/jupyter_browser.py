"""Driving JupyterLab in a real browser: Debian's chromium through playwright.

Shared by the browser tests (test_95 against the lab's JupyterLab, test_97_browser_booted_host
through an SSH tunnel to the booted host's): how chromium is launched, the console
watch, screenshots, and reading what a runbook's widgets and result tables show.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, ConsoleMessage, Page, expect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
KERNEL_WAIT = 90_000  # ms: JupyterLab's first load and a kernel start on a busy 2-core box


def chromium_in_netns(netns: str, directory: Path) -> Path:
    """An executable for playwright that starts Debian's chromium inside network namespace
    ``netns`` (playwright drives it over pipes, which the namespace does not cut)."""
    wrapper = directory / "chromium-in-netns"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {netns} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


class Console:
    """Errors the page reported: console messages of type error and uncaught exceptions."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def message(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.errors.append(f"console: {msg.text} ({msg.location.get('url', '')})")

    def page_error(self, exc: Exception) -> None:
        self.errors.append(f"page error: {exc}")


@contextmanager
def watched_page(browser: Browser) -> Iterator[tuple[Page, Console]]:
    """A page in a fresh context; on leaving, the console must have stayed free of errors."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    console = Console()
    pg.on("console", console.message)
    pg.on("pageerror", console.page_error)
    yield pg, console
    context.close()
    assert console.errors == [], "errors in the browser console:\n" + "\n".join(console.errors)


def shot(page: Page, directory: Path, name: str) -> None:
    # JupyterLab scrolls inside the notebook panel: this is the viewport, scrolled to the step
    directory.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(directory / f"{name}.png"), full_page=True)


def open_and_run_all(page: Page, url: str) -> None:
    """Open a notebook's JupyterLab URL (``…/lab/tree/PATH?token=…``), run all its cells."""
    # reset: a fresh workspace, so that only this notebook is open
    page.goto(url + "&reset")
    status = page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"ipykernel\) \| Idle"))
    expect(status).to_be_visible(timeout=KERNEL_WAIT)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()


def widget_button(page: Page, label: str) -> Any:
    return page.locator("button.jupyter-button").filter(has_text=re.compile(rf"^\s*{label}\s*$"))


def form_field(page: Page, kind: str, label: str) -> Any:
    """A form field (``kind``: text, dropdown, checkbox…) by its label."""
    return page.locator(f".widget-{kind}").filter(has=page.locator("label", has_text=label))


def result_table(page: Page, title: str) -> Any:
    """The table under a result's ``<h5>title</h5>`` (opslib.records.render.result_html)."""
    heading = page.locator(".jp-OutputArea-output h5", has_text=re.compile(rf"^{title}$")).last
    return heading.locator("xpath=following-sibling::table[1]")


def table_rows(table: Any) -> list[dict[str, str]]:
    """A rendered table's body rows, keyed by its header cells."""
    header = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    rows = [r.split("\t") for r in table.locator("tbody tr").all_inner_texts()]
    return [dict(zip(header, (c.strip() for c in r), strict=False)) for r in rows]


def last_result(page: Page) -> Any:
    return page.locator(".jp-OutputArea-output h4").last
