"""Headless Chromium for the web page's tests and screenshots: Debian's `chromium` and
`chromium-driver`, driven by Selenium, never a downloaded browser or driver."""

from __future__ import annotations

import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver",)


def find(names: tuple[str, ...]) -> str | None:
    for n in names:
        p = shutil.which(n) or (f"/usr/bin/{n}" if os.path.exists(f"/usr/bin/{n}") else None)
        if p:
            return p
    return None


def missing() -> str | None:
    """Why the browser cannot run here, or None."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    if find(CHROMIUM) is None:
        return "no Chromium (apt-get install chromium chromium-driver)"
    if find(DRIVER) is None:
        return "no chromedriver (apt-get install chromium-driver)"
    return None


def driver(width: int = 1400, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not download anything
    opts = webdriver.ChromeOptions()
    opts.binary_location = find(CHROMIUM)
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--window-size={width},{height}", "--hide-scrollbars", "--no-first-run",
              "--disable-extensions", "--lang=en-US"):
        opts.add_argument(a)
    return webdriver.Chrome(options=opts, service=Service(find(DRIVER)))


@contextmanager
def served(runs: Path, token: str, poll_ms: int = 500) -> Iterator[str]:
    """The app on a free port of 127.0.0.1 in a thread; yields its base address."""
    from werkzeug.serving import make_server

    from scientist.web.app import create_app

    app = create_app(runs, token, poll_ms=poll_ms)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
