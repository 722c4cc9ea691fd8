"""The Snakemake report of the tiny study, opened in headless Chromium as a researcher would,
and the answer a run prints at its end.

Runs rule `all` on a copy of the finished tiny study and checks the console's last lines: the
summary with each size's speed-up, the throughput model's error and the verdicts. Builds the
report (`snakemake --report`), loads it in Chromium through selenium and checks:
- its first page, before any click, shows the answer table and the verdicts, from the top;
- the Training, Data, Throughput, Fits and Search categories are there and each opens;
- every figure decodes as an image, every result has a caption, tables are HTML pages;
- the browser console shows no error.
A report made right after `snakemake --cores 2 results/pareto.csv` (rule `all` not run) must
succeed too, and open on the answer with the verdicts named as not built yet.
Skipped where Chromium, chromedriver or selenium is missing; CI installs them
(.ci/browser_up.sh) and sets ARCHSCALE_REQUIRE_BROWSER, which turns that skip into a failure.
"""
from __future__ import annotations

import json
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
def after_rule_all(tiny_study_done, tmp_path_factory):
    """A copy of the tiny study after `snakemake --cores 2` (rule all), and that run's output."""
    work = tmp_path_factory.mktemp("report") / "study"
    shutil.copytree(tiny_study_done, work, symlinks=True)
    return work, run_snakemake(work, "--cores", "2", check=True)


@pytest.fixture(scope="module")
def report_html(after_rule_all) -> Path:
    """The report of the tiny study after rule all made its figures, tables and verdicts."""
    work, _ = after_rule_all
    run_snakemake(work, "--report", "report.html", check=True)
    return work / "report.html"


def test_a_run_ends_with_the_answer_its_errors_and_the_verdicts(after_rule_all):
    work, proc = after_rule_all
    console = proc.stdout.splitlines()  # the summary is printed; Snakemake logs to stderr
    start = max(i for i, line in enumerate(console) if line.startswith("What this study says"))
    tail = console[start:]
    assert len(tail) <= 25, tail  # one screen
    recs = json.loads((work / "results/recommendations.json").read_text())["recommendations"]
    picks = [line for line in tail if line.startswith("  N ")]
    assert len(picks) == len(recs)
    for line, rec in zip(picks, recs):
        assert f"N {rec['budget']:,.0f}" in line and rec["baseline"]["name"] in line
        if rec["fastest_at_baseline_loss"]["name"] != rec["baseline"]["name"]:
            assert f"{rec['speedup_vs_baseline']:.3f}x" in line
    assert any("mean leave-one-out error" in line for line in tail)
    verdicts = json.loads((work / "results/fits/verdicts.json").read_text())
    n_supported = sum(f["verdict"] == "supported" for f in verdicts["findings"])
    assert any(line.startswith(f"verdicts (headline law form {verdicts['headline_form']}): "
                               f"{n_supported} supported") for line in tail), tail


def test_a_report_right_after_the_first_command_opens_on_the_answer(tiny_study_done,
                                                                    tmp_path):
    """`snakemake --report` before rule all has made the figures, tables and verdicts."""
    work = tmp_path / "study"
    shutil.copytree(tiny_study_done, work, symlinks=True)
    proc = run_snakemake(work, "--report", "report.html")
    assert proc.returncode == 0, proc.stderr[-3000:]
    page = (work / "report.html").read_text()
    assert "The answer" in page and "N (non-embedding)" in page
    assert "the verdicts are not built yet" in page
    assert "results/plots/training_curves.png" not in page  # not built, so not listed


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


def test_the_first_page_shows_the_answer_and_the_verdicts_without_a_click(browser, report_html,
                                                                           after_rule_all):
    from selenium.webdriver.common.by import By

    work, _ = after_rule_all
    browser.get(report_html.as_uri())
    heading = browser.find_element(By.XPATH, "//h1[normalize-space()='The answer']")
    assert heading.rect["y"] >= 0  # the page starts at its top, not scrolled past it
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "N (non-embedding)" in body and "speed-up" in body
    for finding in json.loads((work / "results/fits/verdicts.json").read_text())["findings"]:
        assert finding["statement"] in body
    assert "frontier.png" in body  # every result listed with its caption on the first page
    results = browser.execute_script("return results")
    tables = [r for r in results.values() if r["name"].endswith(".html")]
    assert {"pareto.html", "recommendations.html", "runs.html", "quality.html"} <= \
        {t["name"] for t in tables}
    assert all(t["mime_type"] == "text/html" for t in tables)
