"""The web app in a real browser: headless Chromium loads ``lightsr serve``'s page, uploads a sample, waits for
the result and saves a screenshot (the one in docs/web.md).

    apt-get install chromium chromium-driver && pip install selenium ".[web]"
    python scripts/browser_check.py [--image examples/sample.png] [--out docs/img/serve.png]

Exits with status 1 when the page does not show a result within ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", default=str(ROOT / "examples" / "sample.png"))
    p.add_argument("--out", default=str(ROOT / "docs" / "img" / "serve.png"))
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    p.add_argument("--timeout", type=float, default=300)
    args = p.parse_args()

    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from lightsr.serve import start

    server = start(host="127.0.0.1", port=_free_port(), block=False, device="cpu")
    opts = webdriver.ChromeOptions()
    opts.binary_location = args.chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1050"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=args.chromedriver))
    try:
        t0 = time.perf_counter()
        driver.get(server.url)
        wait = WebDriverWait(driver, args.timeout)
        upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[type=file]")))
        upload.send_keys(str(Path(args.image).resolve()))
        # The file is listed once Gradio has uploaded it; then the button starts the job.
        wait.until(lambda d: Path(args.image).name in d.page_source)
        driver.find_element(By.ID, "upscale-button").click()
        stem = Path(args.image).stem
        wait.until(lambda d: f"{stem}_x" in d.page_source and d.find_elements(By.CSS_SELECTOR, "img"))
        time.sleep(2)  # let the slider's images finish drawing
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(args.out)
        print(f"page loaded, {Path(args.image).name} upscaled and shown in {time.perf_counter() - t0:.1f} s; "
              f"wrote {args.out}")
        return 0
    except Exception as e:  # a timeout or a missing element: say what the page shows
        print(f"browser check failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
              file=sys.stderr)
        return 1
    finally:
        driver.quit()
        server.close()


if __name__ == "__main__":
    sys.exit(main())
