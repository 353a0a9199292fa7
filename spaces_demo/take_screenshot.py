"""Retakes screenshot.png (the README's picture) from a running demo: the Match tab with its results.

    xmodal demo &                       # or: python spaces_demo/app.py
    python spaces_demo/take_screenshot.py [--url http://127.0.0.1:7860] [--image IMAGE] [--captions "a\\nb"]

Uses Debian's chromium (/usr/bin/chromium) through playwright; no browser is downloaded.
"""

import argparse
import io
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:7860/")
    parser.add_argument("--image", default=None, help="image to match (default: the app's first example)")
    parser.add_argument("--captions", default=None, help="captions, one per line (default: the example's)")
    parser.add_argument("--out", default=str(HERE / "screenshot.png"))
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.goto(args.url)
        page.get_by_role("tab", name="Match").wait_for()
        if args.image:
            page.locator("#match-image input[type=file]").first.set_input_files(args.image)
        else:
            page.locator("table tbody tr").first.click()  # the first example
        if args.captions:
            page.locator("#match-captions textarea").fill(args.captions.replace("\\n", "\n"))
        page.locator("#match-button").click()
        expect(page.locator("#match-summary")).to_contain_text("Best caption", timeout=60_000)
        page.wait_for_timeout(1000)  # the bar chart animates in
        page.evaluate("window.scrollTo(0, 0)")
        png = page.screenshot()
        browser.close()
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    image.save(args.out, optimize=True)  # a palette PNG: small enough to keep in git
    print(f"{args.out}: {image.size[0]}x{image.size[1]}, {Path(args.out).stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
