"""An analyst's day in a real headless Chromium (Debian's chromium + chromedriver, driven by
Selenium): sign in, open the queue, open an alert, disposition it; the label reaches
``risk.labels`` and a running trainer counts it, joined to what the scorer scored.

Every process is real: the desk (`riskstream run desk`: pages, intake from Kafka, relay), the
trainer (`riskstream run trainer`), Kafka, Redis and PostgreSQL. The run takes the screenshots
docs/desk.md shows; set DESK_SCREENSHOTS to a directory to keep them there too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from schemas import LabelEvent, LabelSource, Typology, decode, encode
from schemas.features import FEATURE_NAMES
from stream.desk.outbox import label_id_for, record_disposition
from stream.desk.tables import AlertRow, User
from stream.devenv import free_ports
from stream.pipeline.records import ScoredRecord, ScoredRecordStore
from stream.redis_client import connect
from stream.settings import Settings, TrainerSettings
from stream.trainer.store import MAX_UNJOINED, CaseStore

from .conftest import PASSWORD, DeskProcess, make_alert, produce, read_topic, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS_ENV = "DESK_SCREENSHOTS"

if True:  # selenium is imported here so a missing browser fails with the install hint below
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import Select


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    assert CHROMIUM.exists(), "no /usr/bin/chromium: run `riskstream dev install --test-tools`"
    assert CHROMEDRIVER.exists(), "no chromedriver: run `riskstream dev install --test-tools`"
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium try to download a driver
    profile = tempfile.mkdtemp(prefix="desk-chromium-")
    options = Options()
    options.binary_location = str(CHROMIUM)
    # Without the background-networking switches Chromium waits on refused connections to
    # Google's services on a machine with no internet.
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--window-size=1180,860",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver: WebDriver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"desk-{name}.png"
    driver.save_screenshot(str(path))
    keep = os.environ.get(SCREENSHOTS_ENV)
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    return path


def sign_in(driver: WebDriver, base: str, username: str) -> None:
    driver.get(f"{base}/login")
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "sign-in").click()
    wait_for(lambda: driver.current_url.endswith("/queue"), "the queue after signing in", 30)


def test_an_analyst_dispositions_an_alert_in_a_browser_and_the_trainer_counts_the_label(
    desk_settings: Settings,
    engine: Engine,
    users: dict[str, str],
    browser: WebDriver,
    start_desk: Callable[..., DeskProcess],
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    target = make_alert(
        0,
        customer="cust-4711",
        typology=Typology.MULE_FAN_IN_OUT,
        score=0.97,
        at=now - timedelta(hours=3),
    )
    kinds = [
        Typology.STRUCTURING,
        Typology.ACCOUNT_TAKEOVER,
        Typology.CARD_TESTING,
        Typology.MULE_FAN_IN_OUT,
        Typology.HIGH_RISK_JURISDICTION,
    ]
    others = [
        make_alert(
            i,
            customer=f"cust-{1000 + i % 6}",
            typology=kinds[i % 5],
            score=0.55 + (i * 7 % 40) / 100,
            at=now - timedelta(hours=30 - i),
            model_version="tiny-20260301" if i % 3 else "tiny-20260215",
        )
        for i in range(1, 15)
    ]
    history = [
        make_alert(
            i,
            customer="cust-4711",
            typology=Typology.MULE_FAN_IN_OUT,
            score=0.7 + i / 100,
            at=now - timedelta(days=3, hours=i),
        )
        for i in range(1, 4)
    ]

    # What the scorer kept about the event: the trainer joins the label to it.
    records = ScoredRecordStore(connect(desk_settings.redis), desk_settings.context.namespace, 600)
    event = target.event
    records.put_batch(
        [
            ScoredRecord(
                event_id=event.event_id,
                customer_id=event.customer_id,
                event_time_ms=int(event.event_time.timestamp() * 1000),
                event=event.model_dump(mode="json", exclude_none=True),
                narrative=target.narrative,
                clause_ids=("amount", "country"),
                features=tuple(float(i % 9) / 2 for i in range(len(FEATURE_NAMES))),
                score=target.score,
                typology=target.typology.value,
                model_version=target.model_version,
                narrative_version=target.narrative_version,
                alert_id=target.alert_id,
                scored_at_ms=int(target.scored_at.timestamp() * 1000),
                source="transactions[0]@7",
            )
        ]
    )

    desk_port, metrics_port = free_ports(2)
    settings = desk_settings.model_copy(
        update={
            "desk": desk_settings.desk.model_copy(update={"port": desk_port}),
            "trainer": TrainerSettings(
                group_id=f"trainer-{desk_settings.context.namespace}",
                min_labels_per_class=10_000,
                check_every_s=1.0,
                metrics_port=metrics_port,
            ),
        }
    )
    desk = start_desk(settings)
    trainer = start_desk(settings, command=("run", "trainer"))
    try:
        produce(
            settings.kafka, settings.topics.alerts, [encode(a) for a in [*history, *others, target]]
        )

        def stored() -> bool:
            with Session(engine) as db:
                return db.scalar(select(func.count()).select_from(AlertRow)) == 18

        wait_for(stored, "the intake to store the alerts", 120, desk.log)
        base = f"http://127.0.0.1:{desk_port}"
        sign_in(browser, base, "analyst")
        assert "18 alerts" in browser.find_element(By.TAG_NAME, "h1").text
        screenshot(browser, tmp_path, "queue")

        first = browser.find_elements(By.CSS_SELECTOR, "a.alert-link")[0]
        assert first.text == "0.970"  # sorted by score: the target first
        first.click()
        assert target.alert_id in browser.find_element(By.TAG_NAME, "h1").text
        marks = [m.text for m in browser.find_elements(By.CSS_SELECTOR, "#narrative mark")]
        assert marks == ["a transfer far above their usual amounts", "to a high-risk jurisdiction"]
        assert "amount_z" in browser.page_source or FEATURE_NAMES[0] in browser.page_source
        screenshot(browser, tmp_path, "alert")

        browser.find_element(By.ID, "verdict-suspicious").click()
        Select(browser.find_element(By.ID, "typology")).select_by_value("mule_fan_in_out")
        browser.find_element(By.ID, "note").send_keys("Fan-out to three new beneficiaries.")
        browser.find_element(By.ID, "submit-disposition").click()
        wait_for(lambda: "/cases/" in browser.current_url, "the case page", 30)
        assert "suspicious" in browser.find_element(By.ID, "case-alerts").text

        def published() -> list[LabelEvent]:
            found = [
                decode(LabelEvent, m.value())
                for m in read_topic(settings.kafka, settings.topics.labels, idle_s=1.0)
            ]
            return found

        labels = wait_for(published, "the label on risk.labels", 60, desk.log)
        assert isinstance(labels, list)
        (label,) = labels
        assert (label.label_id, label.alert_id, label.source, label.typology) == (
            label_id_for(target.alert_id),
            target.alert_id,
            LabelSource.ANALYST,
            Typology.MULE_FAN_IN_OUT,
        )
        cases = CaseStore(
            connect(settings.redis),
            settings.context.namespace,
            max_cases=100,
            ttl_s=600,
            max_unjoined=MAX_UNJOINED,
        )
        wait_for(
            lambda: cases.state().outcomes == {"joined": 1},
            "the trainer to count it",
            180,
            lambda: trainer.log(),
        )
        assert cases.state().suspicious == 1

        # The supervisor's view, with a few more dispositions to plot.
        with Session(engine) as db, db.begin():
            analyst = db.scalars(select(User).where(User.username == "analyst")).one()
            for n, alert in enumerate(others[:9]):
                verdict = "legitimate" if n % 3 == 0 else "suspicious"
                record_disposition(db, analyst, alert.alert_id, verdict, alert.typology.value, None)
        browser.find_element(By.CSS_SELECTOR, "header form.logout button").click()
        sign_in(browser, base, "supervisor")
        browser.get(f"{base}/supervisor")
        wait_for(
            lambda: all(
                browser.execute_script("return arguments[0].complete", img)
                for img in browser.find_elements(By.CSS_SELECTOR, "img.plot")
            ),
            "the plots",
            30,
        )
        assert browser.find_element(By.ID, "unsent").text == "0"
        screenshot(browser, tmp_path, "supervisor")
    finally:
        assert trainer.terminate() == 0, trainer.log()
    assert desk.terminate() == 0, desk.log()
