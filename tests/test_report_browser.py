"""The Snakemake report of the tiny study, opened in headless Chromium as a researcher would.

Builds the report (`snakemake --report`) of a copy of the finished tiny study, loads it in
Chromium through selenium and checks:
- the Training, Data, Throughput, Fits and Search categories are there and each opens;
- every figure decodes as an image, and every result has a caption;
- the browser console shows no error.
Skipped where Chromium, chromedriver or selenium is missing; CI installs them
(.ci/browser_up.sh) and sets ARCHSCALE_REQUIRE_BROWSER, which turns that skip into a failure.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import run_snakemake

pytestmark = [pytest.mark.workflow, pytest.mark.browser]

CATEGORIES = {"Training", "Data", "Throughput", "Fits", "Search"}


def _driver_or_reason():
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        return None, "chromium and chromedriver are not installed (.ci/browser_up.sh)"
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None, "selenium is not installed (pip install -e '.[test]')"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(chromedriver), options=options), ""


@pytest.fixture(scope="module")
def browser():
    driver, reason = _driver_or_reason()
    if driver is None:
        if os.environ.get("ARCHSCALE_REQUIRE_BROWSER"):
            pytest.fail(f"ARCHSCALE_REQUIRE_BROWSER is set but {reason}")
        pytest.skip(reason)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def report_html(tiny_study_done, tmp_path_factory) -> Path:
    """The report of a copy of the tiny study, after `snakemake` (rule all) made its figures."""
    work = tmp_path_factory.mktemp("report") / "study"
    shutil.copytree(tiny_study_done, work, symlinks=True)
    run_snakemake(work, "--cores", "2", check=True)
    run_snakemake(work, "--report", "report.html", check=True)
    return work / "report.html"


def test_report_opens_with_every_category_figure_and_no_console_error(browser, report_html):
    from selenium.webdriver.common.by import By

    browser.get(report_html.as_uri())
    categories = browser.execute_script("return categories")
    assert CATEGORIES <= set(categories), sorted(categories)
    results = browser.execute_script("return results")
    for path, result in results.items():
        assert result["caption"].strip(), f"{path} has no caption"
    images = [r["data_uri"] for r in results.values() if r["mime_type"].startswith("image/")]
    assert len(images) >= 6  # training, throughput, chinchilla, u-curves, predicted, frontier
    widths = browser.execute_async_script("""
        const [uris, done] = arguments;
        Promise.all(uris.map(uri => new Promise(resolve => {
            const img = new Image();
            img.onload = () => resolve(img.naturalWidth);
            img.onerror = () => resolve(0);
            img.src = uri;
        }))).then(done);""", images)
    assert all(w > 0 for w in widths), widths
    for category in sorted(categories):  # open each from the report's main menu
        browser.get(report_html.as_uri())
        browser.find_element(By.XPATH, f"//a[.//span[normalize-space()='{category}']]").click()
        names = [results[p]["name"] for sub in categories[category].values() for p in sub]
        page = browser.find_element(By.TAG_NAME, "body").text
        assert all(name in page for name in names), (category, names, page[:500])
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
