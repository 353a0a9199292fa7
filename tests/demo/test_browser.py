"""A real headless Chromium (Debian's /usr/bin/chromium, driven by playwright) uses every tab of the app.

Screenshots go to tests/artifacts/demo/ (git-ignored). CI installs the browser with
`apt-get install -y chromium`; no browser is downloaded.
"""

import re
from pathlib import Path

import pytest

from .tiny_demo import GENERATED_WORD, HEARD_WORD

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 30_000

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def page(server):
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server["url"])
        page.get_by_role("tab", name="Match").wait_for()
        yield page
        browser.close()


def expect():
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=TIMEOUT_MS)
    return playwright_expect


def open_tab(page, name):
    page.get_by_role("tab", name=name).click()


def upload(page, elem_id, path):
    page.locator(f"#{elem_id} input[type=file]").first.set_input_files(str(path))


def fill(page, elem_id, text):
    page.locator(f"#{elem_id}").locator("textarea, input").first.fill(text)


def no_error_toast(page):
    expect()(page.locator(".toast-body.error")).to_have_count(0)


def test_match_tab(page, assets, artifacts):
    open_tab(page, "Match")
    upload(page, "match-image", assets["image"])
    expect()(page.locator("#match-image img").first).to_be_visible()
    fill(page, "match-captions", "a big red circle\na small blue square\ntwo green triangles")
    page.locator("#match-button").click()
    expect()(page.locator("#match-summary")).to_contain_text("Best caption")
    expect()(page.locator("#match-table")).to_contain_text("two green triangles")
    expect()(page.locator("#match-plot").locator("canvas, svg").first).to_be_visible()
    no_error_toast(page)
    page.screenshot(path=str(artifacts / "1_match.png"), full_page=True)


def test_search_tab(page, assets, artifacts):
    open_tab(page, "Search")
    fill(page, "search-query", "a big red circle")
    page.locator("#search-button").click()
    expect()(page.locator("#search-gallery img")).to_have_count(6)  # the k slider's default
    expect()(page.locator("#search-table")).to_contain_text("a ")
    upload(page, "captions-image", assets["image"])
    page.locator("#captions-button").click()
    expect()(page.locator("#captions-table")).to_contain_text(re.compile(r"a (big|small) \w+ (circle|square)"))
    no_error_toast(page)
    page.screenshot(path=str(artifacts / "2_search.png"), full_page=True)


def test_transcribe_and_caption_tab(page, assets, artifacts):
    open_tab(page, "Transcribe and caption")
    upload(page, "transcribe-audio", assets["speech"])
    page.locator("#transcribe-button").click()
    expect()(page.locator("#transcript textarea")).to_have_value(HEARD_WORD)  # the CTC head reads first
    page.locator("#transcribe-reader label", has_text="decoder").click()
    page.locator("#transcribe-button").click()
    written = re.compile(rf"^{GENERATED_WORD}( {GENERATED_WORD})+$")
    expect()(page.locator("#transcript textarea")).to_have_value(written)
    upload(page, "caption-image", assets["image"])
    page.locator("#caption-button").click()
    expect()(page.locator("#caption-output textarea")).to_have_value(written)
    no_error_toast(page)
    page.screenshot(path=str(artifacts / "3_transcribe_and_caption.png"), full_page=True)


def test_explain_tab(page, assets, artifacts):
    open_tab(page, "Explain")
    upload(page, "explain-image", assets["image"])
    fill(page, "explain-caption", "a big red circle")
    page.locator("#explain-button").click()
    expect()(page.locator("#explain-maps img")).to_have_count(5)  # the whole caption + 4 words
    expect()(page.locator("#explain-score")).to_contain_text("Matching score")
    page.locator("#similarity-button").click()
    expect()(page.locator("#similarity-heatmap img").first).to_be_visible()
    expect()(page.locator("#similarity-table")).to_contain_text("image 6")
    no_error_toast(page)
    page.screenshot(path=str(artifacts / "4_explain.png"), full_page=True)


def test_sync_tab(page, assets, artifacts):
    open_tab(page, "Sync")
    upload(page, "sync-video", assets["video"])
    upload(page, "sync-image", assets["square_frame"])
    page.locator("#sync-button").click()
    expect()(page.locator("#sync-summary")).to_contain_text("Best moment")
    expect()(page.locator("#sync-summary")).to_contain_text("Sound:")
    expect()(page.locator("#sync-plot").locator("canvas, svg").first).to_be_visible()
    expect()(page.locator("#sync-frame img").first).to_be_visible()
    no_error_toast(page)
    page.screenshot(path=str(artifacts / "5_sync.png"), full_page=True)


def test_model_tab(page, artifacts):
    open_tab(page, "Model")
    expect()(page.locator("#model-card")).to_contain_text("Tiny xmodal test model")
    expect()(page.locator("#metrics")).to_contain_text("test_recall@1_image_text")
    expect()(page.locator("#parameter-counts")).to_contain_text("total")
    expect()(page.locator("#data-credits")).to_contain_text("coloured shapes")
    page.screenshot(path=str(artifacts / "5_model.png"), full_page=True)


def test_a_bad_upload_shows_an_error_and_the_page_keeps_working(page, assets, artifacts):
    page.reload()  # empty inputs again
    open_tab(page, "Transcribe and caption")
    upload(page, "transcribe-audio", assets["corrupt_audio"])
    page.locator("#transcribe-button").click()
    expect()(page.locator(".toast-body.error").first).to_contain_text("Could not read corrupt.wav as audio")
    page.screenshot(path=str(artifacts / "6_error.png"), full_page=True)
    upload(page, "caption-image", assets["image"])
    page.locator("#caption-button").click()
    expect()(page.locator("#caption-output textarea")).to_have_value(re.compile(rf"^{GENERATED_WORD}"))
