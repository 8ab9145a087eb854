"""The web page at `/`, driven in headless Chromium against a real server: prompt in, a played clip
with sound out, the job in the list, and the server's errors shown next to the form."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from serve_util import KEY, Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
# OPENSEEDANCE_SCREENSHOT=1 pytest tests/test_serve_web.py refreshes the screenshot kept in docs/
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "web-page.png"
PROMPT = "a red circle bounces and a bell rings"

pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="needs chromium and chromedriver on PATH")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("web") / "srv").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1280,900"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    chrome = driver.execute_script("return [outerWidth - innerWidth, outerHeight - innerHeight]")
    driver.set_window_size(1280 + chrome[0], 900 + chrome[1])  # a 1280x900 page, as the screenshot shows
    yield driver
    driver.quit()


def open_page(browser, server, key: str = KEY):
    browser.get(server.url + "/")
    browser.execute_script("localStorage.clear()")
    browser.get(server.url + "/")
    fill(browser, "api-key", key)
    return browser


def fill(browser, element_id: str, text: str) -> None:
    field = browser.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(text)


def error_after_generate(browser) -> str:
    """Click Generate and return the text of the error box it fills."""
    browser.execute_script("document.getElementById('error').hidden = true")
    browser.find_element(By.ID, "generate").click()
    box = browser.find_element(By.ID, "error")
    WebDriverWait(browser, 15).until(lambda _: box.is_displayed())
    return box.text


def test_prompt_to_played_clip(server, browser, tmp_path):
    open_page(browser, server)
    fill(browser, "prompt", PROMPT)
    fill(browser, "duration", "2")
    browser.find_element(By.ID, "generate").click()

    task_id = WebDriverWait(browser, 15).until(lambda d: d.find_element(By.ID, "task-id").text.strip())
    assert task_id.startswith("cgt-")
    ready = "const v = document.getElementById('player'); return !!v.getAttribute('src') && v.readyState >= 2;"
    WebDriverWait(browser, 120, poll_frequency=0.5).until(lambda d: d.execute_script(ready))
    assert browser.find_element(By.ID, "status").text.startswith("Done")
    assert browser.find_element(By.ID, "progress").get_attribute("value") == "100"

    played = browser.execute_async_script("""
        const done = arguments[arguments.length - 1], v = document.getElementById('player');
        v.muted = true;
        const start = v.currentTime;
        v.play().then(() => setTimeout(() => { v.pause(); done({start, now: v.currentTime, duration: v.duration,
            audioBytes: v.webkitAudioDecodedByteCount, videoBytes: v.webkitVideoDecodedByteCount}); }, 800),
            e => done({error: String(e)}));
    """)
    assert "error" not in played, played
    assert played["now"] > played["start"]
    assert played["duration"] == pytest.approx(2.0, abs=0.2)
    assert played["videoBytes"] > 0 and played["audioBytes"] > 0  # both streams decode

    row = WebDriverWait(browser, 20).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, f'#jobs li[data-id="{task_id}"][data-status="succeeded"]')
    )[0]
    assert PROMPT in row.text

    browser.execute_script("window.scrollTo(0, 0)")
    shot = DOCS_SCREENSHOT if os.environ.get("OPENSEEDANCE_SCREENSHOT") else tmp_path / "web-page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


def test_server_errors_are_shown(server, browser):
    open_page(browser, server, key="not-the-key")
    fill(browser, "prompt", PROMPT)
    message = error_after_generate(browser)
    assert "not valid" in message and "401" in message

    fill(browser, "api-key", KEY)
    fill(browser, "prompt", "@image3 spins slowly")
    message = error_after_generate(browser)
    assert "cites @image3 but no reference images were given" in message and "400" in message


def test_reference_chips(server, browser, tmp_path):
    picture = tmp_path / "red.png"
    Image.fromarray(np.full((32, 32, 3), (200, 30, 30), np.uint8)).save(picture)
    open_page(browser, server)
    browser.find_element(By.ID, "add-image").send_keys(str(picture))
    chip = browser.find_element(By.CSS_SELECTOR, "#refs li")
    assert chip.get_attribute("data-tag") == "@image1"

    fill(browser, "prompt", "the ball from")
    chip.find_element(By.CSS_SELECTOR, ".chip-tag").click()
    assert browser.find_element(By.ID, "prompt").get_attribute("value") == "the ball from @image1 "

    # the image goes to the server as a data: URL: citing a second one is refused with the count it saw
    browser.find_element(By.ID, "prompt").send_keys("meets @image2")
    assert "only 1 reference image" in error_after_generate(browser)

    Select(chip.find_element(By.TAG_NAME, "select")).select_by_value("first_frame")
    assert browser.find_element(By.CSS_SELECTOR, "#refs li").get_attribute("data-tag") == "first_frame"
    browser.find_element(By.CSS_SELECTOR, "#refs li .remove").click()
    assert browser.find_elements(By.CSS_SELECTOR, "#refs li") == []


def test_cancel_a_queued_job(browser, tmp_path):
    idle = Server(tmp_path / "srv", args=("--workers", "0")).start()  # no workers: a task stays queued
    try:
        open_page(browser, idle)
        fill(browser, "prompt", PROMPT)
        browser.find_element(By.ID, "generate").click()
        task_id = WebDriverWait(browser, 15).until(lambda d: d.find_element(By.ID, "task-id").text.strip())
        WebDriverWait(browser, 15).until(lambda d: d.find_element(By.ID, "status").text.startswith("Queued"))
        row = f'#jobs li[data-id="{task_id}"]'
        WebDriverWait(browser, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, row + '[data-status="queued"]'))
        browser.find_element(By.CSS_SELECTOR, f'{row} button[aria-label="Cancel {task_id}"]').click()
        WebDriverWait(browser, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, row + '[data-status="cancelled"]'))
        WebDriverWait(browser, 15).until(lambda d: d.find_element(By.ID, "status").text == "Cancelled.")
    finally:
        idle.stop()


def test_live_stream_plays_while_it_is_made(server, browser, tmp_path):
    """Go live, watch the video's clock advance while the job still runs, steer it, stop it, and get the
    finished file, which verifies like any generated clip."""
    import httpx

    from openseedance import provenance

    auth = {"Authorization": f"Bearer {KEY}"}
    open_page(browser, server)
    fill(browser, "live-prompt", "a red circle bounces")
    browser.find_element(By.ID, "live-start").click()
    job_id = WebDriverWait(browser, 15).until(lambda d: d.find_element(By.ID, "live-id").text.strip())
    assert job_id.startswith("live_")
    clock = "return document.getElementById('live-player').currentTime"
    WebDriverWait(browser, 90).until(lambda d: d.execute_script(clock) > 0.5)
    status = httpx.get(f"{server.url}/api/live/{job_id}", headers=auth, timeout=10).json()
    assert status["status"] == "running"  # playing before the job ends
    fill(browser, "live-next", "a blue square slides left")
    browser.find_element(By.ID, "live-send").click()

    def steered(_):
        job = httpx.get(f"{server.url}/api/live/{job_id}", headers=auth, timeout=10).json()
        return [p["prompt"] for p in job["prompts"]] == ["a red circle bounces", "a blue square slides left"]

    WebDriverWait(browser, 60).until(steered)
    assert browser.execute_script(clock) > 1.0
    browser.find_element(By.ID, "live-stop").click()
    link = browser.find_element(By.ID, "live-download")
    WebDriverWait(browser, 60).until(lambda _: link.is_displayed())
    assert "Ended (stopped)" in browser.find_element(By.ID, "live-status").text
    finished = tmp_path / "live.mp4"
    finished.write_bytes(httpx.get(link.get_attribute("href"), timeout=30).content)
    report = provenance.verify(finished)
    assert report.video.found and report.audio.found and report.manifest.intact
