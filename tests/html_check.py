"""Open a report page in headless Chromium: console errors, sections present, a screenshot.

Used by the tests; also handy by hand: `python -m amygdala_tl.html_check out/report.html shot.png`.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def opened_page(page_path: Path, width: int = 1300, height: int = 900) -> Iterator[tuple[Any, list[str]]]:
    """(the page loaded in headless Chromium, the console and page errors it raises while open)."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(Path(page_path).resolve().as_uri())
        page.wait_for_load_state("load")
        try:
            yield page, errors
        finally:
            browser.close()


def check_page(page_path: Path, screenshot: Path) -> tuple[list[str], list[str]]:
    """(console errors and page errors, ids of the report sections found in order)."""
    with opened_page(page_path) as (page, errors):
        found = page.eval_on_selector_all("section", "sections => sections.map(s => s.id)")
        broken = page.eval_on_selector_all("img", "images => images.filter(i => !i.complete || i.naturalWidth === 0).length")
        if broken:
            errors.append(f"{broken} images failed to load")
        page.screenshot(path=str(screenshot), full_page=True)
    return errors, found


if __name__ == "__main__":
    print(check_page(Path(sys.argv[1]), Path(sys.argv[2])))
