"""`riskstream alerts tail` on the real broker, as a child process: --json output parses and
validates against the published alert JSON Schema, filters, start positions, duplicate copies,
invalid messages, independent subscribers; and the README's kcat recipe, run for real."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from datetime import timedelta

import jsonschema
import orjson
import pytest

from schemas import Alert, Typology, decode
from stream.devenv.redis_server import ensure_debian_tool
from stream.settings import Settings

from .conftest import (
    ALERT_SCHEMA,
    REPO_ROOT,
    T0,
    child_env,
    encoded,
    make_alert,
    produce,
    tail_args,
)

pytestmark = pytest.mark.integration

ALERTS = [
    make_alert(1, score=0.91, typology=Typology.STRUCTURING, customer="cus-a"),
    make_alert(2, score=0.62, typology=Typology.STRUCTURING, customer="cus-a"),
    make_alert(3, score=0.85, typology=Typology.MULE_FAN_IN_OUT, customer="cus-b"),
    make_alert(4, score=0.97, typology=Typology.MULE_FAN_IN_OUT, customer="cus-a"),
    make_alert(5, score=0.88, typology=Typology.CARD_TESTING, customer="cus-a", currency="JPY"),
    make_alert(6, score=0.55, typology=Typology.PASS_THROUGH, customer="cus-c", currency="BHD"),
]


def validator() -> jsonschema.Draft202012Validator:
    schema = orjson.loads(ALERT_SCHEMA.read_bytes())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def json_lines(stdout: bytes) -> list[bytes]:
    return [line for line in stdout.splitlines() if line.strip()]


def test_tail_json_parses_and_validates_and_subscribers_read_independently(
    test_settings: Settings, new_topic: Callable[..., str]
) -> None:
    topic = new_topic(3, "alerts")
    values = encoded(ALERTS)
    # one redelivered copy (at-least-once) and one message that is not an alert
    produce(test_settings.kafka, topic, [*values, values[2], b'{"not": "an alert"}'])

    # two subscribers at once: each reads every alert, neither takes any from the other
    env = child_env(test_settings)
    processes = [
        subprocess.Popen(
            tail_args(topic, "--json", "--from", "beginning", *extra),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for extra in ((), ("--all-copies",))
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [e.decode() for _, e in outputs]
    (once, once_err), (copies, _) = outputs

    lines = json_lines(once)
    assert sorted(lines) == sorted(values)  # each alert once, byte for byte as produced
    check = validator()
    for line in lines:
        document = orjson.loads(line)
        check.validate(document)  # raises with the failing path if invalid
        assert decode(Alert, line).alert_id == document["alert_id"]
    assert len(json_lines(copies)) == len(values) + 1  # --all-copies keeps the redelivery
    assert "skipped an invalid alert message" in once_err.decode()
    # per partition (per customer), the order is the order produced
    for customer in ("cus-a", "cus-b", "cus-c"):
        produced = [v for v in values if orjson.loads(v)["event"]["customer_id"] == customer]
        shown = [v for v in lines if orjson.loads(v)["event"]["customer_id"] == customer]
        assert shown == produced


def test_tail_filters_by_score_typology_and_customer(
    test_settings: Settings,
    new_topic: Callable[..., str],
    run_tail: Callable[..., tuple[bytes, str]],
) -> None:
    topic = new_topic(1, "alerts")
    produce(test_settings.kafka, topic, encoded(ALERTS))
    out, _ = run_tail(
        topic,
        "--json", "--from", "beginning", "--min-score", "0.8",
        "--typology", "structuring", "--typology", "mule_fan_in_out", "--customer", "cus-a",
    )  # fmt: skip
    # cus-a with score >= 0.8 and one of the two typologies: alerts 1 (0.91) and 4 (0.97);
    # 2 scores 0.62, 3 is cus-b, 5 is card testing
    shown = [orjson.loads(line)["event"]["event_id"] for line in json_lines(out)]
    assert shown == ["ev-0001", "ev-0004"]
    out, _ = run_tail(topic, "--json", "--from", "beginning", "--limit", "2")
    assert len(json_lines(out)) == 2


def test_tail_starts_from_a_time_or_from_now(
    test_settings: Settings,
    new_topic: Callable[..., str],
    run_tail: Callable[..., tuple[bytes, str]],
) -> None:
    topic = new_topic(2, "alerts")
    kafka = test_settings.kafka
    t0_ms = int(T0.timestamp() * 1000)
    produce(kafka, topic, encoded(ALERTS[:3]), timestamp_ms=t0_ms)
    produce(kafka, topic, encoded(ALERTS[3:]), timestamp_ms=t0_ms + 3_600_000)
    later = (T0 + timedelta(minutes=30)).isoformat()
    out, _ = run_tail(topic, "--json", "--from", later)
    assert sorted(json_lines(out)) == sorted(encoded(ALERTS[3:]))

    # From now: nothing already on the topic, only what arrives after the reader started.
    # New alerts are produced until the reader shows one, so the test does not depend on
    # how quickly the child process starts.
    reader = subprocess.Popen(
        tail_args(topic, "--json", "--from", "now", "--limit", "1", idle_timeout=60),
        env=child_env(test_settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    fresh = []
    try:
        deadline = time.monotonic() + 90
        while reader.poll() is None and time.monotonic() < deadline:
            alert = make_alert(100 + len(fresh), score=0.7, typology=Typology.STRUCTURING,
                               customer="cus-new")  # fmt: skip
            fresh.append(alert)
            produce(kafka, topic, encoded([alert]))
            time.sleep(0.5)
        out, err = reader.communicate(timeout=30)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert reader.returncode == 0, err.decode()
    (line,) = json_lines(out)
    assert line in encoded(fresh)


def test_tail_prints_alerts_for_people(
    test_settings: Settings,
    new_topic: Callable[..., str],
    run_tail: Callable[..., tuple[bytes, str]],
) -> None:
    topic = new_topic(1, "alerts")
    produce(test_settings.kafka, topic, encoded(ALERTS[:1]))
    out, _ = run_tail(topic, "--from", "beginning")
    text = out.decode()
    assert "score 0.910" in text
    assert "structuring" in text
    assert "customer cus-a" in text
    assert "1,250.00 EUR" in text
    assert "why: a transfer far above their usual amounts; to a high-risk jurisdiction" in text


def _readme_kcat_recipe() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, flags=re.DOTALL)
    recipes = [b for b in blocks if "kcat" in b and "alert.schema.json" in b]
    assert recipes, "README.md should show how to read and validate alerts with kcat"
    return recipes[0]


def test_the_readme_kcat_recipe_reads_and_validates_the_alert_topic(
    test_settings: Settings, new_topic: Callable[..., str]
) -> None:
    ensure_debian_tool("kcat", "kcat")  # `riskstream dev install` put it there already
    topic = new_topic(3, "alerts")
    produce(test_settings.kafka, topic, encoded(ALERTS))
    recipe = (
        _readme_kcat_recipe()
        .replace("127.0.0.1:9092", test_settings.kafka.bootstrap_servers)
        .replace("risk.alerts", topic)
    )
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", recipe],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**child_env(test_settings), "PATH": f"{REPO_ROOT / '.venv' / 'bin'}:/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert f"{len(ALERTS)} alerts valid" in done.stdout

    # and it fails loudly on a message that breaks the contract
    produce(test_settings.kafka, topic, [b'{"alert_id": "x"}'])
    broken = subprocess.run(
        ["bash", "-o", "pipefail", "-c", recipe],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**child_env(test_settings), "PATH": f"{REPO_ROOT / '.venv' / 'bin'}:/usr/bin:/bin"},
    )
    assert broken.returncode != 0
    assert "required property" in broken.stderr
