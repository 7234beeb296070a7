"""The page of `ipce serve` in a real headless Chromium (Debian's `chromium` and `chromium-driver`,
driven by selenium; no browser is ever downloaded): upload images, type the prompt, score, read the
scores shown and compare them with the API's, show a quality map, save a screenshot."""
from __future__ import annotations

import os
import re
import shutil

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"

pytest.importorskip("gradio", reason='the serve extra is not installed (pip install -e ".[serve]")')
pytest.importorskip("selenium", reason='selenium is not installed (pip install -e ".[test]")')
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(f"{CHROMIUM} or {CHROMEDRIVER} missing: apt-get install chromium chromium-driver (.ci/run does)",
                allow_module_level=True)

import httpx
import numpy as np
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import ipce
from ipce.serve.app import build_app
from ipce.demo.synthetic import degrade, render
from tests.conftest import tiny_checkpoint
from tests.test_serve import running

pytestmark = pytest.mark.slow
PROMPT = "two red circles on a blue background"


def chromium() -> webdriver.Chrome:
    """Headless Chromium with both paths given, so that Selenium Manager never looks for (or fetches) one."""
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1050",
                 "--disable-gpu"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def test_page_scores_ranks_and_maps_like_the_api(tmp_path):
    checkpoint = str(tiny_checkpoint(tmp_path / "tiny.safetensors", seed=5))
    rng = np.random.default_rng(0)
    picture = render({"count": 2, "colour": "red", "shape": "circle", "background": "blue"}, (384, 288), rng)
    paths = [tmp_path / "candidate_1.png", tmp_path / "candidate_2.png"]
    picture.save(paths[0])
    degrade(picture, "blur", 0.8, rng)[0].resize((320, 320)).save(paths[1])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    app = build_app(ipce.load_scorer(checkpoint, patches=4), [checkpoint], max_upload_bytes=2**20)
    with running(app) as url:
        api = httpx.post(f"{url}/api/score", data={"prompt": PROMPT},
                         files=[("images", (p.name, p.read_bytes())) for p in paths], timeout=120).json()["scores"]
        driver = chromium()
        try:
            wait = WebDriverWait(driver, 60)
            driver.get(url)
            upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#images input[type=file]"))
            upload.send_keys("\n".join(str(p) for p in [*paths, broken]))
            uploaded = [p.stem for p in [*paths, broken]]
            wait.until(lambda d: all(stem in d.find_element(By.ID, "images").text for stem in uploaded))
            driver.find_element(By.CSS_SELECTOR, "#prompt textarea").send_keys(PROMPT)
            driver.find_element(By.ID, "score").click()
            wait.until(lambda d: "Scored" in d.find_element(By.ID, "message").text)
            message = driver.find_element(By.ID, "message").text
            table = driver.find_element(By.ID, "scores").text
            shown = {name: float(score) for name, score in re.findall(r"(candidate_\d\.png)\s+(\d\.\d{4})", table)}
            driver.find_element(By.ID, "show-map").click()
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#map img"))
            driver.execute_script("window.scrollTo(0, 0)")
            driver.save_screenshot(str(tmp_path / "serve-page.png"))
        finally:
            driver.quit()
    assert shown == pytest.approx({p.name: s for p, s in zip(paths, api)}, abs=5e-5)  # shown with 4 decimals
    best = max(zip(api, [p.name for p in paths]))[1]
    assert table.index(best) < table.index(min(zip(api, [p.name for p in paths]))[1])  # ranked best first
    assert "broken.png: not an image file" in message  # a bad upload is named, the others scored
    assert (tmp_path / "serve-page.png").stat().st_size > 10_000
    keep = os.environ.get("IPCE_SERVE_SCREENSHOT")  # where to copy the screenshot (the README's docs/serve-page.png)
    if keep:
        shutil.copy(tmp_path / "serve-page.png", keep)


def test_page_behind_a_token_is_refused_then_scores_with_it(tmp_path):
    """Without the token the browser gets the 401 (and its login box); with the token as the browser
    sends it after that box (Basic, any user name), the page loads and scores like the API."""
    import base64

    from ipce.serve.auth import TokenAuth
    from tests.test_serve_auth import serving

    token = "s3cret-token-of-32-characters-xx"
    checkpoint = str(tiny_checkpoint(tmp_path / "tiny.safetensors", seed=5))
    path = tmp_path / "candidate.png"
    render({"count": 2, "colour": "red", "shape": "circle", "background": "blue"}, (256, 192),
           np.random.default_rng(0)).save(path)
    app = build_app(ipce.load_scorer(checkpoint, patches=4), [checkpoint], max_upload_bytes=2**20)
    with serving(TokenAuth(app, token)) as url:
        api = httpx.post(f"{url}/api/score", data={"prompt": PROMPT}, headers={"Authorization": f"Bearer {token}"},
                         files=[("images", (path.name, path.read_bytes()))], timeout=120).json()["scores"]
        driver = chromium()
        try:
            driver.get(url)  # no credentials: the 401 (headless Chrome cancels the login box), no page
            refused = driver.page_source.lower(), driver.find_elements(By.CSS_SELECTOR, "#images")
            driver.execute_cdp_cmd("Network.enable", {})
            basic = base64.b64encode(f"me:{token}".encode()).decode()
            driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {basic}"}})
            wait = WebDriverWait(driver, 60)
            driver.get(url)
            upload = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#images input[type=file]"))
            upload.send_keys(str(path))
            wait.until(lambda d: path.stem in d.find_element(By.ID, "images").text)
            driver.find_element(By.CSS_SELECTOR, "#prompt textarea").send_keys(PROMPT)
            driver.find_element(By.ID, "score").click()
            wait.until(lambda d: "Scored" in d.find_element(By.ID, "message").text)
            table = driver.find_element(By.ID, "scores").text
        finally:
            driver.quit()
            app.state.batcher.close()
    assert "gradio" not in refused[0] and not refused[1]
    shown = float(re.search(r"candidate\.png\s+(\d\.\d{4})", table).group(1))
    assert shown == pytest.approx(api[0], abs=5e-5)
