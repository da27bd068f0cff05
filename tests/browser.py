"""Helpers for real-browser tests: a streamlit server on a free loopback port and Chromium."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager

import pytest

from tests.conftest import ROOT, chromium_path

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server():
    port = _free_port()
    env = {**os.environ, "VRD_DEVICE": "cpu"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.3)
        else:
            raise RuntimeError("streamlit did not start within 60 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def browser_page(width: int = 1400, height: int = 1000):
    exe = chromium_path()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI (tests/setup_browser.sh should have installed it)")
        pytest.skip("chromium is not installed (run tests/setup_browser.sh)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(90_000)
            yield page
        finally:
            browser.close()


def select_option(page, label: str, option: str) -> None:
    """Choose ``option`` in the streamlit selectbox labelled ``label``."""
    page.get_by_role("combobox", name=label, exact=True).filter(visible=True).first.click()
    page.locator('[role="option"]').filter(has_text=option).first.click()


def set_number(page, label: str, value: str) -> None:
    """Type ``value`` into the streamlit number input labelled ``label`` and commit it (Enter)."""
    box = page.locator('[data-testid="stNumberInput"]').filter(has_text=label).filter(visible=True).first
    inp = box.locator("input")
    inp.fill(value)
    inp.press("Enter")
    wait_idle(page)


def wait_idle(page, timeout_ms: int = 180_000) -> None:
    """Wait until the script run that an action started has finished: the running indicator
    appears (if the run is not already over) and then goes away."""
    running = page.locator('[data-testid="stStatusWidget"]').filter(has_text="Running")
    try:
        running.first.wait_for(timeout=3_000)
    except Exception:  # noqa: BLE001 - a short run may be over before we look
        pass
    running.first.wait_for(state="detached", timeout=timeout_ms)


def nav_to(page, title: str) -> None:
    """Follow the sidebar navigation link ``title`` (same session, client-side navigation)."""
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
