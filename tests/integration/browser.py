"""The checks the MLflow UI tests make in headless Chromium (the `browser` fixture). Every
wait is explicit: MLflow's pages render after their own API calls, slowly under load."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

WAIT = 90  # seconds; generous, the machine is shared


def page_text(driver: Any, containing: str, timeout: float = WAIT) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def text(d: Any) -> str | bool:
        found: str = d.find_element(By.TAG_NAME, "body").text
        return found if containing in found else False

    return str(WebDriverWait(driver, timeout).until(text))


def _run_links(driver: Any) -> dict[str, Any]:
    """The runs table's rows by run id: each row's name cell links to its run."""
    from selenium.webdriver.common.by import By

    links = driver.find_elements(By.CSS_SELECTOR, 'div[role="row"] a[href*="/runs/"]')
    return {link.get_attribute("href").rsplit("/runs/", 1)[1].split("?")[0]: link
            for link in links}


def check_nested(driver: Any, run_url: str, parent: str, children: list[str]) -> None:
    """Open the experiment of `run_url` (a sweep's mlflow_url, its parent run's page) in the
    runs table, narrowed to the sweep's runs; the parent is one row with an expander, and
    expanding it shows every child run in the rows under it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    ids = ", ".join(f"'{run_id}'" for run_id in [parent, *children])
    experiment = run_url.split("/runs/")[0]
    driver.get(f"{experiment}/runs?workflowType=machine_learning"
               f"&searchFilter={quote(f'attributes.run_id IN ({ids})')}")
    page_text(driver, f"{len(children) + 1} matching runs")
    wait = WebDriverWait(driver, WAIT)
    wait.until(lambda d: parent in _run_links(d))
    assert set(_run_links(driver)) == {parent}, "the trials show before the parent is expanded"

    row = driver.find_element(
        By.XPATH, f'//div[@role="row"][.//a[contains(@href, "/runs/{parent}")]]')
    row.find_element(By.CSS_SELECTOR, 'button[data-component-id$="runnamecellrenderer.tsx_46"]'
                     ).click()  # the expander MLflow draws on a run that has children
    wait.until(lambda d: set(_run_links(d)) == {parent, *children})

    def position(run_id: str) -> int:
        row = driver.find_element(
            By.XPATH, f'//div[@role="row"][.//a[contains(@href, "/runs/{run_id}")]]')
        return int(row.get_attribute("row-index"))

    assert all(position(child) > position(parent) for child in children)
