"""The chat page's picture in docs/images/chat-page.png: serve a checkpoint, ask in Debian's chromium, rate.

    python scripts/chat_screenshot.py runs/cars_qa "How thick is a new brake pad?" --fix "10 to 12 mm when new."
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("question")
    parser.add_argument("--fix", help="click 👎 and save this correction")
    parser.add_argument("--out", default=str(REPO / "docs" / "images" / "chat-page.png"))
    parser.add_argument("--browser", default="/usr/bin/chromium")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tempfile.mkdtemp()
    server = subprocess.Popen([sys.executable, "-m", "hftoolkit", "serve", args.checkpoint, "--port", str(port),
                               "--cache", "off", "--log", f"sqlite:///{log}/answers.db"],
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if urllib.request.urlopen(base + "/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.browser, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 900, "height": 560}, device_scale_factor=1)
            page.goto(base + "/")
            page.wait_for_function("!document.querySelector('[data-testid=model]').textContent.includes('loading')")
            page.get_by_test_id("question").fill(args.question)
            page.get_by_test_id("send").click()
            page.wait_for_selector("[data-testid=assistant-turn][data-done=true]", timeout=300_000)
            if args.fix:
                page.get_by_test_id("rate-bad").click()
                page.get_by_test_id("correction").fill(args.fix)
            page.screenshot(path=args.out)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
