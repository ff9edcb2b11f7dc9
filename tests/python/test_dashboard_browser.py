"""The dashboard in a real headless browser (Debian's /usr/bin/chromium driven by
playwright, no browser download) against `python -m geyser.server` and a real worker on the
embedded store: the pages load, a running job's progress bar moves, the retry and cancel
buttons work, the jobs filter works. Screenshots go to tests/output/screenshots/.
Without chromium the test skips, except in CI (CI=true), where it fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import dashboard_jobs  # noqa: F401  (registers the gated job types)
import geyser
import jobs_for_tests  # noqa: F401  (registers the job types)
from conftest import HERE, free_port, job, start_worker, wait_for, worker_env
from test_web import wait_for_port

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = HERE.parent / "output" / "screenshots"
#: Milliseconds the browser waits for something to appear before the test fails.
DEADLINE_MS = 30_000

if not CHROMIUM.exists():
    reason = f"{CHROMIUM} is missing (apt-get install -y chromium; scripts/test.sh does this)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402


@pytest.fixture
def server(embedded: str) -> Iterator[str]:
    """`python -m geyser.server` and a one-process worker on the test's embedded store."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "geyser.server", "--port", str(port), "-m", "jobs_for_tests",
                             "-m", "dashboard_jobs"], env=worker_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    worker = start_worker("-m", "dashboard_jobs", "-c", "1")
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        for p in (worker, proc):
            p.send_signal(signal.SIGTERM)
        for p in (worker, proc):
            p.communicate(timeout=60)


@pytest.fixture
def page() -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 800})
            tab.set_default_timeout(DEADLINE_MS)
            yield tab
        finally:
            browser.close()


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def bar(page: Page) -> float:
    return float(page.eval_on_selector("#progress", "bar => bar.value"))


def open_gate(gate: Path, step: int) -> None:
    Path(f"{gate}.{step}").touch()


def test_dashboard_in_a_browser(server: str, page: Page, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    uuid = geyser.make_base_job({"gate": str(gate), "steps": 3}, "gated").enqueue()

    # The overview: a row per queue, its sparkline drawn from the 2-second polls.
    page.goto(f"{server}/")
    expect(page.locator('tr[data-queue="gated"]')).to_be_visible()
    page.wait_for_function("() => document.querySelector('tr[data-queue=\"gated\"] polyline')"
                           ".getAttribute('points').split(' ').length >= 3")
    shot(page, "overview")

    # A running job's bar follows each step the test lets it take.
    page.goto(f"{server}/dashboard/jobs/{uuid}")
    expect(page.locator('#status[data-status="running"]')).to_be_visible()
    shown = bar(page)
    for step in (1, 2):
        open_gate(gate, step)
        page.wait_for_function("shown => document.getElementById('progress').value > shown", arg=shown)
        shown = bar(page)
        assert abs(shown - step / 4) < 1e-9, shown
        expect(page.locator("#completeness")).to_have_text(f"{round(100 * step / 4)}%")
    shot(page, "job-running")
    open_gate(gate, 3)
    expect(page.locator('#status[data-status="succeeded"]')).to_be_visible()
    assert "step 3 of 3 done" in page.locator("#events").inner_text()
    shot(page, "job-succeeded")

    # Cancel a running job from its button, then retry it from the next page's button.
    second_gate = tmp_path / "second"
    second = geyser.make_base_job({"gate": str(second_gate), "steps": 1}, "gated").enqueue()
    page.goto(f"{server}/dashboard/jobs/{second}")
    expect(page.locator('#status[data-status="running"]')).to_be_visible()
    page.click("#cancel")
    expect(page.locator('#status[data-status="cancelled"]')).to_be_visible()
    assert job(second).status == "cancelled"
    shot(page, "job-cancelled")
    page.click("#retry")
    expect(page.locator('#status[data-status="running"]')).to_be_visible()
    assert job(second).attempts == 2
    open_gate(second_gate, 1)
    expect(page.locator('#status[data-status="succeeded"]')).to_be_visible()

    # The jobs list filtered by status, then by queue.
    failed = geyser.make_base_job({"mode": "finish"}, "fail").enqueue()
    wait_for("the fail job to fail", lambda: job(failed).status == "failed")
    page.goto(f"{server}/dashboard/jobs")
    expect(page.locator("#jobs tbody tr")).to_have_count(3)
    page.select_option('select[name="status"]', "failed")
    page.click('#filters button[type="submit"]')
    expect(page.locator("#jobs tbody tr")).to_have_count(1)
    expect(page.locator(f'tr[data-uuid="{failed}"]')).to_be_visible()
    shot(page, "jobs-filtered")
    page.select_option('select[name="status"]', "")
    page.select_option('select[name="queue"]', "gated")
    page.click('#filters button[type="submit"]')
    expect(page.locator("#jobs tbody tr")).to_have_count(2)
    assert set(page.eval_on_selector_all("#jobs tbody tr", "rows => rows.map(r => r.dataset.uuid)")) == {uuid, second}
