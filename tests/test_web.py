"""The dashboard (`emberkeep web`) driven in a real browser: Debian's chromium, headless,
through chromium-driver (Selenium), against the real server on a demo site with a month of
simulated history (EMBERKEEP_NOW), and a year of it for four sources for the load time.

The history is built quickly: a few real backups (the scheduler's ``run_job``, so real
snapshots and journal rows) at simulated times, and daily journal rows around them
(journal.record), some failed. The tests of one server run in file order: the overview
is looked at before "back up now" changes it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from emberkeep import clock
from emberkeep.journal import Entry, Journal, record

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
NOW = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)
SCREENSHOTS = os.environ.get("EMBERKEEP_SCREENSHOTS")  # a folder: also save them there


# -- the browser -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless chromium; missing, the test fails (scripts/setup --test installs it)."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not binary.exists():
            pytest.fail(
                f"{binary} is missing: run scripts/setup --test (chromium, chromium-driver)"
            )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing: pip install -e '.[test]' (scripts/setup --test)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--disable-gpu"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def _wait(driver: Any, condition: Any, timeout: float = 120) -> Any:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    ignored = (NoSuchElementException, StaleElementReferenceException)
    return WebDriverWait(driver, timeout, ignored_exceptions=ignored).until(condition)


# -- a demo site with simulated history --------------------------------------------------------


@dataclass
class DemoSite:
    root: Path
    config: Path
    sources: list[str]

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def cli(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "emberkeep", "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            env={**os.environ, clock.ENV_VAR: clock.iso(NOW)},
            timeout=300,
        )
        if ok:
            assert proc.returncode == 0, proc.stderr + proc.stdout
        return proc

    def snapshots(self, source: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = json.loads(
            self.cli("snapshots", "--source", source, "--json").stdout
        )
        return found

    def backups(self, source: str, since: datetime | None = None) -> int:
        """Finished backup rows of ``source`` in the journal since ``since``."""
        with Journal.open(self.state_dir) as journal:
            rows = journal.entries(kind="backup", source=source, since=since)
        return sum(1 for e in rows if e.outcome != "running")


def _make_site(root: Path, sources: dict[str, dict[str, str]]) -> DemoSite:
    """A demo shop's files (demo/sitegen.py) as files and git sources, one local target."""
    from emberkeep.demo.sitegen import generate
    from emberkeep.runner.setup import keygen

    shop = generate(root / "site", media_files=12)
    recipient = keygen(root / "identity.txt")
    paths = {
        "media": f'paths = ["{shop.media}"]',
        "config": f"paths = {json.dumps([str(p) for p in shop.config_files])}",
        "nginx": f'paths = ["{shop.nginx_enabled.parent}"]',
    }
    text = [
        f'[site]\nname = "candle-demo"\nstate_dir = "{root / "state"}"\n',
        f'[keys]\nrecipients = ["{recipient}"]\nidentity_file = "{root / "identity.txt"}"\n',
    ]
    for name, extra in sources.items():
        where = f'type = "git"\npath = "{shop.app}"' if name == "code" else (
            f'type = "files"\n{paths[name]}'
        )  # fmt: skip
        lines = [f'[[sources]]\nname = "{name}"\n{where}']
        lines += [f'{key} = {value}' for key, value in extra.items()]  # fmt: skip
        text.append("\n".join(lines) + "\n")
    text.append(f'[[targets]]\nname = "local"\nurl = "file://{root / "backups"}"\n')
    config = root / "emberkeep.toml"
    config.write_text("\n".join(text))
    site = DemoSite(root, config, list(sources))
    site.cli("init")
    return site


def _real_backup(site: DemoSite, source: str, at: datetime) -> None:
    """The scheduler's backup job at simulated time ``at``: a snapshot and a journal row."""
    from emberkeep import config
    from emberkeep.policy.schedule import Job
    from emberkeep.runner.scheduler import run_job
    from emberkeep.site import Site

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(clock.ENV_VAR, clock.iso(at))
        run_job(Site(config.load(str(site.config))), Job(f"backup:{source}", ""))


def _first_backup(site: DemoSite, source: str, at: datetime) -> Entry:
    """A real backup at ``at``, and its journal row: what the simulated days look like."""
    _real_backup(site, source, at)
    with Journal.open(site.state_dir) as journal:
        first = journal.last("backup", source=source, outcome="ok")
    assert first is not None and first.bytes
    return first


def _simulated_backups(site: DemoSite, like: Entry, days: range, *, hour: int = 2) -> int:
    """A journal row a day (``days`` back from NOW), sized like ``like``, every ninth
    failed, an anomaly on day 11; how many."""
    assert like.source and like.bytes
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(clock.ENV_VAR, clock.iso(NOW))  # rows are kept by the simulated clock
        with Journal.open(site.state_dir) as journal:
            for day in days:
                failed = day % 9 == 4
                grown = 1 - (day % 30) / 300  # a little smaller further back
                anomaly = [{"text": f"source {like.source}: 40% fewer files"}] if day == 11 else []
                journal.add(
                    Entry(
                        kind="backup",
                        source=like.source,
                        target="local",
                        started=NOW.replace(hour=hour, minute=0) - timedelta(days=day),
                        seconds=round(max(like.seconds or 0, 0.2) * (1 + (day * 7) % 23 / 23), 3),
                        outcome="failed" if failed else "ok",
                        error="the source cannot be read (simulated)" if failed else None,
                        bytes=None if failed else int(like.bytes * grown),
                        bytes_new=None if failed else int(like.bytes * (0.01 + day % 5 / 100)),
                        bytes_written=None if failed else int(like.bytes * 0.01),
                        files=None if failed else like.files,
                        details={"anomalies": anomaly} if anomaly else {},
                    )
                )
    return len(days)


def _drill(site: DemoSite, source: str, at: datetime, seconds: float) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(clock.ENV_VAR, clock.iso(NOW))
        record(site.state_dir, kind="drill", source=source, target="local", started=at,
               seconds=seconds, details={"rto_seconds": seconds, "rto_ok": True})  # fmt: skip


@dataclass
class Server:
    proc: subprocess.Popen[str]
    url: str
    log: list[str]

    def stop(self) -> str:
        self.proc.terminate()
        self.proc.wait(timeout=60)
        return "".join(self.log)


@contextlib.contextmanager
def _serving(site: DemoSite, *args: str, command: tuple[str, ...] = ()) -> Iterator[Server]:
    """`emberkeep web` (or ``command``) on a free loopback port, at the simulated NOW; its
    URL from stdout."""
    command = command or ("web", "--listen", "127.0.0.1:0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "emberkeep", "-c", str(site.config), *command, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, clock.ENV_VAR: clock.iso(NOW)},
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline()  # the server prints its URL once it listens
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    if "://" not in line:
        proc.kill()
        proc.wait()
        reader.join(5)
        pytest.fail(f"emberkeep web did not start: {line}{''.join(log)}")
    url = line.split(" at ", 1)[1].split()[0]
    server = Server(proc, url, log)
    try:
        yield server
    finally:
        if proc.poll() is None:
            server.stop()
        reader.join(5)


@dataclass
class _Answer:
    """A response with its body read (its connection is closed)."""

    status: int
    text: str
    response: http.client.HTTPResponse

    def getheader(self, name: str) -> str | None:
        return self.response.getheader(name)


def _request(
    url: str,
    method: str = "GET",
    *,
    headers: dict[str, str] | None = None,
    body: str = "",
    tls: ssl.SSLContext | None = None,
) -> _Answer:
    """One request, its body read into ``text``."""
    parts = urlsplit(url)
    assert parts.hostname, url
    conn: http.client.HTTPConnection
    if tls is not None:
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=60, context=tls)
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    conn.request(method, path or "/", body=body or None, headers=headers or {})
    response = conn.getresponse()
    text = response.read().decode()
    conn.close()
    return _Answer(response.status, text, response)


# -- the month-long demo site ---------------------------------------------------------------


SOURCES = {
    "media": {"schedule": '"0 2 * * *"', "objectives": '{ rpo = "24h", rto = "4h" }'},
    "config": {"schedule": '"0 3 * * 0"', "objectives": '{ rpo = "7d", rto = "15m" }'},
    # the last backup 3 days ago: breached; one day kept: prune removes the older ones
    "code": {"objectives": '{ rpo = "24h", rto = "30m" }', "retention": "{ daily = 1 }"},
}


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> DemoSite:
    site = _make_site(tmp_path_factory.mktemp("web-month"), SOURCES)
    first = {name: _first_backup(site, name, NOW - timedelta(days=40)) for name in SOURCES}
    _simulated_backups(site, first["media"], range(1, 31))
    _simulated_backups(site, first["config"], range(1, 31, 7), hour=3)
    _simulated_backups(site, first["code"], range(4, 31))
    _real_backup(site, "code", NOW - timedelta(days=3))
    _real_backup(site, "media", NOW - timedelta(hours=1))
    _real_backup(site, "config", NOW - timedelta(hours=1))
    for source, seconds in (("media", 95.0), ("config", 4.0), ("code", 40.0)):
        _drill(site, source, NOW - timedelta(days=2), seconds)
    return site


@pytest.fixture(scope="module")
def dashboard(month: DemoSite) -> Iterator[Server]:
    with _serving(month) as server:
        yield server


def test_the_overview_shows_each_source_status_in_words_and_colour(
    browser: Any, dashboard: Server, month: DemoSite, tmp_path: Path
) -> None:
    browser.get(dashboard.url)
    cards = {c.get_attribute("data-source"): c for c in _css(browser, "article.source")}
    assert set(cards) == set(SOURCES)
    status = json.loads(month.cli("status", "--json", ok=False).stdout)
    for source in status["sources"]:
        card = cards[source["name"]]
        state = source["rpo_state"]
        expected = {"ok": "ok", "late": "warning", "breached": "breached"}[state]
        assert expected in card.get_attribute("class").split()
        assert f"RPO {source['rpo']} {state}" in card.text
    assert "breached" in cards["code"].get_attribute("class").split()
    assert "RPO 24h breached" in cards["code"].text
    assert "ok" in cards["media"].get_attribute("class").split()
    assert "RPO 24h ok" in cards["media"].text and "RTO 4h ok" in cards["media"].text
    colour = browser.execute_script(
        "return getComputedStyle(arguments[0]).borderLeftColor", cards["code"]
    )
    assert colour == "rgb(207, 34, 46)"  # the breached red of dashboard.css
    _screenshot(browser, tmp_path, "dashboard-overview.png")


def test_a_breached_rpo_turns_the_top_line_red(browser: Any, dashboard: Server) -> None:
    browser.get(dashboard.url)
    verdict = _css(browser, "#verdict")[0]
    assert "breached" in verdict.get_attribute("class").split()
    assert "NOT PROTECTED" in verdict.text
    background = browser.execute_script(
        "return getComputedStyle(arguments[0]).backgroundColor", verdict
    )
    assert background == "rgb(207, 34, 46)"
    assert "source code: RPO 24h breached" in _css(browser, "#findings")[0].text


@pytest.mark.parametrize("range_key,days", [("30d", 30), ("7d", 7)])
def test_the_charts_have_one_point_per_journaled_backup_in_range(
    browser: Any, dashboard: Server, month: DemoSite, range_key: str, days: int, tmp_path: Path
) -> None:
    browser.get(f"{dashboard.url}?range={range_key}")
    since = NOW - timedelta(days=days)
    for source in SOURCES:
        expected = month.backups(source, since)
        assert expected > 0
        points = _css(browser, f"#chart-duration-{source} circle.point")
        assert len(points) == expected, (source, range_key)
        with Journal.open(month.state_dir) as journal:
            rows = journal.entries(kind="backup", source=source, since=since)
        ok = [e for e in rows if e.outcome == "ok" and e.bytes is not None]
        assert len(_css(browser, f"#chart-size-{source} circle.series-read")) == len(ok)
        failed = [e for e in rows if e.outcome == "failed"]
        assert len(_css(browser, f"#chart-duration-{source} circle.failed")) == len(failed)
        times = sorted(p.get_attribute("data-time") for p in points)
        assert times == sorted(clock.iso(e.started) for e in rows if e.started)
    if range_key == "30d":
        assert _css(browser, "#chart-duration-media circle.anomaly")  # day 11's anomaly
        assert len(_css(browser, "#chart-drills-media rect.bar")) == 1
        history = _css(browser, "#history-media")[0]
        _screenshot(browser, tmp_path, "dashboard-history.png", history)


def test_back_up_now_adds_a_journal_row_and_a_snapshot(
    browser: Any, dashboard: Server, month: DemoSite
) -> None:
    from selenium.webdriver.common.by import By

    rows, snapshots = month.backups("code"), len(month.snapshots("code"))
    browser.get(dashboard.url)
    old = _css(browser, "#job")[0].get_attribute("data-id")
    browser.find_element(By.CSS_SELECTOR, "#source-code button.backup-now").click()

    def finished(driver: Any) -> bool:
        job = driver.find_element(By.ID, "job")
        return job.get_attribute("data-id") != old and job.get_attribute("data-state") in (
            "ok",
            "failed",
        )

    _wait(browser, finished)
    job = _css(browser, "#job")[0]
    assert job.get_attribute("data-state") == "ok", job.text
    assert month.backups("code") == rows + 1
    after = month.snapshots("code")
    assert len(after) == snapshots + 1
    assert after[-1]["id"][:12] in job.text
    assert after[-1]["time"] == clock.iso(NOW)  # the job ran at the server's (simulated) time
    card = _css(browser, "#source-code")[0]  # reloaded: now within its RPO
    assert "ok" in card.get_attribute("class").split() and "RPO 24h ok" in card.text
    assert "breached" not in _css(browser, "#verdict")[0].get_attribute("class").split()
    api = json.loads(_get_body(f"{dashboard.url}api/job"))
    assert api["source"] == "code" and api["state"] == "ok"


def _run_from_page(browser: Any, url: str, button: str) -> Any:
    """Click ``button`` on the overview and wait for that job's outcome; the #job element."""
    from selenium.webdriver.common.by import By

    browser.get(url)
    old = _css(browser, "#job")[0].get_attribute("data-id")
    browser.find_element(By.CSS_SELECTOR, button).click()

    def finished(driver: Any) -> bool:
        job = driver.find_element(By.ID, "job")
        state = job.get_attribute("data-state")
        return job.get_attribute("data-id") != old and state in ("ok", "failed")

    _wait(browser, finished)
    return _css(browser, "#job")[0]


def test_drill_now_and_check_now_run_the_scheduler_jobs(
    browser: Any, dashboard: Server, month: DemoSite
) -> None:
    with Journal.open(month.state_dir) as journal:
        drills = len(journal.entries(kind="drill", source="media"))
        checks = len(journal.entries(kind="check", target="local"))
    job = _run_from_page(browser, dashboard.url, "#source-media button.drill-now")
    assert job.get_attribute("data-state") == "ok", job.text
    assert "media ok in" in job.text
    with Journal.open(month.state_dir) as journal:
        drill = journal.entries(kind="drill", source="media")
    assert len(drill) == drills + 1 and drill[-1].outcome == "ok"
    assert drill[-1].details["rto_ok"] is True
    assert f"last drill {clock.iso(NOW)}" in _css(browser, "#source-media")[0].text
    job = _run_from_page(browser, dashboard.url, "#target-local button.check-now")
    assert job.get_attribute("data-state") == "ok", job.text
    with Journal.open(month.state_dir) as journal:
        check = journal.entries(kind="check", target="local")
    assert len(check) == checks + 1 and check[-1].outcome == "ok"


def test_one_job_at_a_time_and_the_page_follows_it_live(
    browser: Any, month: DemoSite, tmp_path: Path
) -> None:
    """A backup held in its before hook (reading a FIFO the test writes to: no timing)
    shows as running, refuses a second job with 409, and the page reloads itself with the
    outcome when it ends."""
    from selenium.webdriver.common.by import By

    gate = tmp_path / "gate"
    os.mkfifo(gate)
    config = tmp_path / "emberkeep.toml"
    hook = f'hooks = {{ before_backup = "cat {gate} > /dev/null" }}'
    config.write_text(
        month.config.read_text().replace('name = "media"\n', f'name = "media"\n{hook}\n')
    )
    site = DemoSite(month.root, config, month.sources)
    rows = month.backups("media")
    with _serving(site) as server:
        page = _request(server.url)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        headers = {"X-CSRF-Token": csrf[1], "Accept": "application/json"}
        started = _request(f"{server.url}backup/media", "POST", headers=headers)
        assert started.status == 202 and json.loads(started.text)["state"] == "running"
        browser.get(server.url)
        job = browser.find_element(By.ID, "job")
        assert job.get_attribute("data-state") == "running" and "running since" in job.text
        assert all(not b.is_enabled() for b in _css(browser, ".actions button"))
        busy = _request(f"{server.url}drill/code", "POST", headers=headers)
        assert busy.status == 409 and "backup of media is still running" in busy.text
        opened = threading.Thread(target=lambda: gate.write_text("go\n"), daemon=True)
        opened.start()  # lets the hook, and so the backup, go on
        opened.join(120)
        assert not opened.is_alive(), "the before hook never read the gate"
        _wait(browser, lambda d: d.find_element(By.ID, "job").get_attribute("data-state") == "ok")
        assert all(b.is_enabled() for b in _css(browser, ".actions button"))
    assert month.backups("media") == rows + 1


def test_the_snapshots_page_says_what_the_next_prune_keeps(
    browser: Any, dashboard: Server, month: DemoSite, tmp_path: Path
) -> None:
    dry = json.loads(month.cli("prune", "--dry-run", "--json").stdout)["local"]["snapshots"]
    assert {d["action"] for d in dry} == {"keep", "remove"}  # code's older snapshots go
    browser.get(f"{dashboard.url}snapshots")
    rows = {r.get_attribute("data-id"): r for r in _css(browser, "#snapshots-local tbody tr")}
    assert {i: r.get_attribute("data-action") for i, r in rows.items()} == {
        d["id"]: d["action"] for d in dry
    }
    for d in dry:
        expected = f"kept: {d['reason']}" if d["action"] == "keep" else "the next prune removes it"
        assert expected in rows[d["id"]].text
    browser.get(f"{dashboard.url}snapshots?source=code")
    assert len(_css(browser, "#snapshots-local tbody tr")) == len(month.snapshots("code"))
    api = json.loads(_request(f"{dashboard.url}api/snapshots?source=code").text)
    assert [s["id"] for s in api[0]["snapshots"]] == [s["id"] for s in month.snapshots("code")]


def test_the_journal_page_filters_as_emberkeep_log_does(
    browser: Any, dashboard: Server, month: DemoSite
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(f"{dashboard.url}journal?source=media&kind=backup&since=7d")
    log = month.cli("log", "--source", "media", "--kind", "backup", "--since", "7d", "--json")
    expected = json.loads(log.stdout)
    rows = _css(browser, "#journal tbody tr")
    assert len(rows) == len(expected) > 0
    assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows] == [
        e["started"] for e in reversed(expected)
    ]  # newest first
    # the form: the failed backups of media in the last 30 days
    Select(browser.find_element(By.NAME, "outcome")).select_by_value("failed")
    since = browser.find_element(By.NAME, "since")
    since.clear()
    since.send_keys("30d")
    browser.find_element(By.CSS_SELECTOR, "#filters button").click()
    _wait(browser, lambda d: "outcome=failed" in d.current_url)
    failed = _css(browser, "#journal tbody tr")
    with Journal.open(month.state_dir) as journal:
        wanted = journal.entries(
            kind="backup", source="media", outcome="failed", since=NOW - timedelta(days=30)
        )
    assert len(failed) == len(wanted) > 0
    assert all("failed" in r.text for r in failed)
    assert _request(f"{dashboard.url}journal?since=yesterday").status == 400


def _get_body(url: str) -> str:
    parts = urlsplit(url)
    assert parts.hostname, url
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.request("GET", parts.path)
    body = conn.getresponse().read().decode()
    conn.close()
    return body


def test_every_response_is_no_store_with_a_content_security_policy(dashboard: Server) -> None:
    for path in ("", "api/status", "static/dashboard.css", "nothing-here"):
        response = _request(dashboard.url + path)
        assert response.getheader("Cache-Control") == "no-store"
        assert "default-src 'none'" in (response.getheader("Content-Security-Policy") or "")
        assert response.getheader("X-Frame-Options") == "DENY"


def test_a_post_without_the_csrf_token_is_refused(dashboard: Server, month: DemoSite) -> None:
    rows = month.backups("media")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert _request(f"{dashboard.url}backup/media", "POST", headers=form).status == 403
    wrong = _request(f"{dashboard.url}backup/media", "POST", headers=form, body="csrf=guess")
    assert wrong.status == 403
    assert month.backups("media") == rows  # nothing ran


def test_a_host_header_not_naming_loopback_is_refused(dashboard: Server) -> None:
    assert _request(dashboard.url, headers={"Host": "rebound.example:8470"}).status == 403
    assert _request(dashboard.url, headers={"Host": "localhost"}).status == 200


# -- the token ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_file(month: DemoSite) -> Path:
    path = month.root / "web-token"
    path.write_text("Zr8c0Jm1tq4V0dYkLw3pQ9sXo2nHfE7a\n")
    path.chmod(0o600)
    return path


def test_with_a_token_a_request_without_it_gets_401(
    browser: Any, month: DemoSite, token_file: Path
) -> None:
    token = token_file.read_text().strip()
    with _serving(month, "--token-file", str(token_file)) as server:
        for path in ("", "api/status", "api/job", "static/dashboard.js"):
            assert _request(server.url + path).status == 401
        assert _request(server.url, headers={"Authorization": "Bearer wrong-token"}).status == 401
        assert _request(f"{server.url}?token=wrong-token-0000").status == 401
        bearer = {"Authorization": f"Bearer {token}"}
        assert _request(f"{server.url}api/status", headers=bearer).status == 200
        # a POST with the token but no CSRF token: 403, not 401
        assert _request(f"{server.url}backup/media", "POST", headers=bearer).status == 403
        # once with ?token=: a cookie, and the address no longer shows the token
        login = _request(f"{server.url}?range=7d&token={token}")
        assert login.status == 303 and login.getheader("Location") == "/?range=7d"
        assert "HttpOnly" in (login.getheader("Set-Cookie") or "")
        away = _request(f"{server.url.rstrip('/')}//elsewhere.example/?token={token}")
        assert away.getheader("Location") == "/elsewhere.example/"  # stays on this server
        browser.delete_all_cookies()
        browser.get(f"{server.url}?token={token}")
        assert token not in browser.current_url
        assert _css(browser, "#verdict"), browser.page_source[:300]
        browser.get(f"{server.url}?range=1y")  # the cookie carries on
        assert _css(browser, "#verdict")
        log = server.stop()
    assert '"GET /" 303' in log and '"GET /" 401' in log
    assert token not in log


def test_a_token_file_others_can_read_is_refused(month: DemoSite, tmp_path: Path) -> None:
    loose = tmp_path / "token"
    loose.write_text("Zr8c0Jm1tq4V0dYkLw3pQ9sXo2nHfE7a\n")
    loose.chmod(0o644)
    proc = month.cli("web", "--token-file", str(loose), ok=False)
    assert proc.returncode == 2 and "chmod 600" in proc.stderr
    assert "Zr8c0Jm1" not in proc.stderr + proc.stdout


def test_a_token_that_does_not_fit_a_url_and_a_cookie_is_refused(
    month: DemoSite, tmp_path: Path
) -> None:
    bad = tmp_path / "token"
    bad.write_text("sixteen;chars;or=more\n")
    bad.chmod(0o600)
    proc = month.cli("web", "--token-file", str(bad), ok=False)
    assert proc.returncode == 2 and "letters, digits" in proc.stderr


def test_https_with_a_token(month: DemoSite, token_file: Path, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    token = token_file.read_text().strip()
    with _serving(month, "--token-file", str(token_file), "--tls-cert", str(cert),
                  "--tls-key", str(key)) as server:  # fmt: skip
        assert server.url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(cert))
        assert _request(server.url, tls=trust).status == 401
        bearer = {"Authorization": f"Bearer {token}"}
        status = _request(f"{server.url}api/status", headers=bearer, tls=trust)
        assert status.status == 200 and json.loads(status.text)["site"] == "candle-demo"
        login = _request(f"{server.url}?token={token}", tls=trust)
        assert "Secure" in (login.getheader("Set-Cookie") or "")
        with pytest.raises(ssl.SSLError):  # a client that does not trust it gets nothing
            _request(server.url, tls=ssl.create_default_context())
        assert _request(server.url, headers=bearer, tls=trust).status == 200  # still serving


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.now(UTC) - timedelta(days=1))
        .not_valid_after(datetime.now(UTC) + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def test_read_only_has_no_button_and_refuses_every_post(
    browser: Any, month: DemoSite, tmp_path: Path
) -> None:
    config = tmp_path / "emberkeep.toml"
    config.write_text(month.config.read_text() + "\n[web]\nactions = false\n")
    site = DemoSite(month.root, config, month.sources)
    rows = month.backups("media")
    with _serving(site) as server:
        browser.get(server.url)
        assert len(_css(browser, "article.source")) == len(SOURCES)
        assert not _css(browser, "button.backup-now")
        refused = _request(f"{server.url}backup/media", "POST")
        assert refused.status == 403 and "read-only" in refused.text
    assert month.backups("media") == rows


def test_no_page_shows_a_secret_from_the_config(
    browser: Any, month: DemoSite, tmp_path: Path
) -> None:
    """A target URL with a password (unreachable here: port 1) is shown redacted, as the
    CLI shows it, on every page and in every JSON answer."""
    config = tmp_path / "emberkeep.toml"
    remote = "s3://shop?endpoint=http://backup:Sup3r-s3cret-pass@127.0.0.1:1&timeout=2"
    config.write_text(
        month.config.read_text() + f'\n[[targets]]\nname = "remote"\nurl = "{remote}"\n'
    )
    site = DemoSite(month.root, config, month.sources)
    with _serving(site) as server:
        browser.get(server.url)
        card = _css(browser, "#target-remote")[0]
        assert "breached" in card.get_attribute("class").split()  # unreachable
        assert "unreachable" in card.text and "s3://shop" in card.text
        for path in ("", "snapshots", "journal", "api/status", "api/snapshots", "api/journal"):
            answer = _request(server.url + path)
            assert answer.status == 200, (path, answer.text[:300])
            assert "Sup3r-s3cret-pass" not in answer.text, path
        assert "Sup3r-s3cret-pass" not in browser.page_source
        log = server.stop()
    assert "Sup3r-s3cret-pass" not in log


def test_a_non_loopback_listen_without_a_token_is_refused_at_start(
    month: DemoSite, tmp_path: Path
) -> None:
    proc = month.cli("web", "--listen", "0.0.0.0:0", ok=False)
    assert proc.returncode == 2, proc.stderr
    assert "refusing to listen on 0.0.0.0 without a token" in proc.stderr
    assert "Traceback" not in proc.stderr
    # the same from the config's [web] table
    config = tmp_path / "emberkeep.toml"
    config.write_text(month.config.read_text() + '\n[web]\nlisten = "0.0.0.0:8470"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "emberkeep", "-c", str(config), "web"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "refusing to listen on 0.0.0.0" in proc.stderr
    # with a token, but plain HTTP: refused too unless --insecure-http says a proxy does TLS
    token = tmp_path / "token"
    token.write_text("Zr8c0Jm1tq4V0dYkLw3pQ9sXo2nHfE7a\n")
    token.chmod(0o600)
    proc = month.cli("web", "--listen", "0.0.0.0:0", "--token-file", str(token), ok=False)
    assert proc.returncode == 2 and "over plain HTTP" in proc.stderr
    assert "--insecure-http" in proc.stderr


def test_run_web_serves_the_dashboard_while_the_scheduler_waits(month: DemoSite) -> None:
    """`emberkeep run --web`: the same dashboard; its backup runs beside the scheduler."""
    rows = month.backups("media")
    with _serving(month, command=("run", "--web", "127.0.0.1:0")) as server:
        page = _request(server.url)
        assert page.status == 200 and 'id="source-media"' in page.text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf, page.text[:500]
        headers = {"X-CSRF-Token": csrf[1], "Accept": "application/json"}
        started = _request(f"{server.url}backup/media", "POST", headers=headers)
        assert started.status == 202, started.text
        job = json.loads(started.text)
        deadline = time.monotonic() + 120
        while job["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.1)  # polls a condition, bounded: the backup ends when it ends
            job = json.loads(_request(f"{server.url}api/job").text)
        assert job["state"] == "ok", job
        server.proc.send_signal(signal.SIGTERM)  # the scheduler stops, then the dashboard
        assert server.proc.wait(timeout=120) == 0, "".join(server.log)
    assert month.backups("media") == rows + 1


# -- a year of daily history for four sources ---------------------------------------------------


def test_the_page_shows_a_year_of_daily_history_for_four_sources(
    browser: Any, tmp_path: Path
) -> None:
    daily = {"schedule": '"0 2 * * *"', "objectives": '{ rpo = "24h", rto = "1h" }'}
    site = _make_site(tmp_path, {name: daily for name in ("media", "config", "nginx", "code")})
    for source in site.sources:
        _simulated_backups(site, _first_backup(site, source, NOW - timedelta(days=400)),
                           range(1, 365))  # fmt: skip
        _real_backup(site, source, NOW - timedelta(hours=2))
        for week in range(52):
            _drill(site, source, NOW - timedelta(days=7 * week + 3), 20.0 + week % 5)
    with _serving(site) as server:
        browser.get(server.url)  # warm: the first collection opens the repository
        loads = {key: [_load(browser, f"{server.url}?range={key}") for _ in range(5)]
                 for key in ("30d", "1y")}  # fmt: skip
        for source in site.sources:  # the 1y page, loaded last: every backup of the year
            points = _css(browser, f"#chart-duration-{source} circle.point")
            assert len(points) == site.backups(source, NOW - timedelta(days=365)) == 365
    shown = "; ".join(
        f"range {key}: median {sorted(times)[2] * 1000:.0f} ms, best {min(times) * 1000:.0f} ms"
        for key, times in loads.items()
    )
    print(
        "\ndashboard page load, 4 sources x 1 year of daily backups (1460 rows, 208 drills): "
        + shown
    )  # printed, not asserted: a test must not depend on the machine's speed (CONTRIBUTING)
    assert all(len(times) == 5 and min(times) > 0 for times in loads.values())


def _load(browser: Any, url: str) -> float:
    """Seconds from the request to the load event (Navigation Timing), in the browser."""
    browser.get(url)
    duration: float = browser.execute_script(
        "return performance.getEntriesByType('navigation')[0].duration"
    )
    return duration / 1000


def _screenshot(browser: Any, tmp_path: Path, name: str, element: Any = None) -> None:
    """A PNG of the page (or one element), kept in EMBERKEEP_SCREENSHOTS when set (docs/)."""
    path = tmp_path / name
    if element is None:
        height = browser.execute_script("return document.body.scrollHeight")
        browser.set_window_size(1280, min(max(height, 800), 1400))
        browser.save_screenshot(str(path))
        browser.set_window_size(1280, 1000)
    else:  # chromedriver crops the viewport: the element must be all in it
        height = browser.execute_script(
            "return arguments[0].getBoundingClientRect().height", element
        )
        assert height > 100, f"{name}: the element is {height}px high"
        browser.set_window_size(1280, min(int(height) + 200, 2000))
        browser.execute_script("arguments[0].scrollIntoView({block: 'start'})", element)
        element.screenshot(str(path))
        browser.set_window_size(1280, 1000)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if SCREENSHOTS:
        shutil.copy(path, Path(SCREENSHOTS) / name)
