"""The web viewer in a real browser: `ns-viewer` serves a small trained checkpoint, headless Chromium
(Debian's package, driven by Playwright; no browser download) opens the page, the test switches the
"Modality" control to X-ray and checks from screenshots that the picture changed and is grey (an X-ray
has no colour), then to Cut-away. The screenshots stay in test-artifacts/viewer/ (or
$INSIDEOUT_TEST_ARTIFACTS).

Without Chromium the test is skipped, unless INSIDEOUT_REQUIRE_BROWSER=1 (CI sets it): then it fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from pictures import colourfulness

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("INSIDEOUT_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts")) / "viewer"
# what this sandbox's Chromium needs: no GPU (WebGL through SwiftShader), no network beyond localhost
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                 "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def viewer_url(trained, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("INSIDEOUT_REQUIRE_BROWSER") == "1":
            pytest.fail("INSIDEOUT_REQUIRE_BROWSER=1 but no chromium on PATH (Debian: apt install chromium)")
        pytest.skip("no chromium on PATH (Debian: apt install chromium)")
    _, config, _, _ = trained
    port = free_port()
    ns_viewer = Path(sys.executable).with_name("ns-viewer")
    log = open(tmp_path / "ns-viewer.log", "w")
    proc = subprocess.Popen([str(ns_viewer), "--load-config", str(config.get_base_dir() / "config.yml"),
                             "--viewer.websocket-port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"ns-viewer did not serve {url}:\n{(tmp_path / 'ns-viewer.log').read_text()[-3000:]}")
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def changed(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of the pixels whose colour differs by more than 20 levels in some channel."""
    return float((np.abs(a.astype(int) - b.astype(int)).max(-1) > 20).mean())


def wait_for_picture(page, path: Path, ready, timeout: float = 240.0) -> np.ndarray:
    """Screenshots of the page until the rendered picture (the 3D view left of the control panel)
    satisfies `ready(picture)` (the viewer renders on the CPU in the background); the last screenshot is
    kept at `path`."""
    import imageio.v3 as iio

    panel_left = int(page.get_by_text("Connected").bounding_box()["x"]) - 40  # the panel's icon and margin
    top = int(page.locator("canvas").first.bounding_box()["y"]) + 2  # below the page's header
    deadline = time.time() + timeout
    while True:
        page.screenshot(path=str(path))
        picture = iio.imread(path)[top:, :panel_left, :3].copy()
        picture[-110:, :110] = 0  # the viewer's coloured axes gizmo
        if ready(picture) or time.time() > deadline:
            return picture
        time.sleep(2)


@pytest.mark.slow
def test_modality_control_switches_the_picture_to_an_xray(viewer_url):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            page.goto(viewer_url, wait_until="domcontentloaded")
            page.get_by_text("Connected").wait_for(timeout=120_000)
            page.get_by_label("Modality").wait_for(timeout=60_000)  # our control, in "Custom Elements"
            # the viewer opens on the object, as the first photograph saw it: coloured, on a background, whole
            rgb = wait_for_picture(page, ARTIFACTS / "1_rgb.png", lambda im: colourfulness(im) > 8)
            assert colourfulness(rgb) > 8, f"the RGB picture should have colour ({colourfulness(rgb):.1f})"
            lit = rgb.max(-1) > 20
            assert 0.03 < lit.mean() < 0.8, f"the object should fill part of the picture, not all or none ({lit.mean():.2f})"
            assert not (lit[0].any() or lit[-1].any() or lit[:, 0].any() or lit[:, -1].any()), "the object is cut by the frame"

            page.get_by_label("Modality").click()
            page.get_by_role("option", name="X-ray", exact=True).click()
            changed_and_grey = lambda im: changed(im, rgb) > 0.01 and colourfulness(im) < 3  # noqa: E731
            xray = wait_for_picture(page, ARTIFACTS / "2_xray.png", changed_and_grey)
            assert changed(xray, rgb) > 0.01, "switching to X-ray did not change the picture"
            assert colourfulness(xray) < 3, f"the X-ray picture has colour ({colourfulness(xray):.1f})"
            assert xray.max() > 30 and xray.std() > 2, "the X-ray picture is empty"

            page.get_by_label("Modality").click()
            page.get_by_role("option", name="Cut-away", exact=True).click()
            page.get_by_text("Cut-away: plane (x radius)").wait_for(timeout=30_000)  # its controls appear
            cut = wait_for_picture(page, ARTIFACTS / "3_cutaway.png",
                                   lambda im: changed(im, xray) > 0.01 and colourfulness(im) > 8)
            assert changed(cut, xray) > 0.01 and colourfulness(cut) > 8
        finally:
            browser.close()
