"""The gallery in a real browser: Debian's chromium, headless, driven by Selenium through
Debian's chromium-driver, against the real server (random weights) and its gateway.

Skipped, saying why, where chromium, chromium-driver or selenium are missing
(.ci/run installs them)."""

import shutil
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.processes import ServerProcess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FILTERS = 6
SELECTION = {
    "model": "vgg16",
    "layer": "block1_conv2",
    "preset": "classic",
    "filters": f"0:{FILTERS}",
    "seed": "3",
    "size": "32",
    "steps": "2",
}


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("chromium and chromium-driver are not installed (apt-get install them)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.add_argument("--window-size=1200,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def drawn_photos(folder: Path, count: int = 6) -> Path:
    """`count` pictures of stripes and blobs, a dataset whose examples the gallery shows."""
    rng = np.random.default_rng(2)
    folder.mkdir()
    for n in range(count):
        pixels = rng.integers(0, 255, (160, 200, 3), dtype=np.uint8)
        pixels[:, :: 2 + n] = 255 * (n % 2)
        Image.fromarray(pixels).save(folder / f"drawn_{n}.png")
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gallery")
    photos = drawn_photos(folder / "photos")
    process = ServerProcess(
        "--cache",
        str(folder / "cache"),
        "--precision",
        "float32",
        "--dataset",
        f"photos={photos}",
        log_dir=folder,
        http=True,
    ).wait_serving()
    yield process
    process.stop()


def wait_done(driver) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    progress = driver.find_element(By.ID, "progress")
    WebDriverWait(driver, 120).until(lambda _: progress.text.startswith("Done"))
    return progress.text


def errors(driver) -> list:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_pictures_appear_open_and_come_back_from_the_cache(browser, server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url = f"{server.http_url}/?{urllib.parse.urlencode(SELECTION)}"
    browser.get(url)
    assert f"{FILTERS} of {FILTERS} filters" in wait_done(browser)
    tiles = browser.find_elements(By.CSS_SELECTOR, ".tile")
    assert len(tiles) == FILTERS
    assert [t.get_attribute("data-index") for t in tiles] == [str(i) for i in range(FILTERS)]
    names = [
        (img.get_attribute("alt") or "")
        for img in browser.find_elements(By.CSS_SELECTOR, ".tile img")
    ]
    assert names and all(n.startswith("vgg16 block1_conv2 filter ") for n in names)
    assert all(t.get_attribute("data-cached") == "false" for t in tiles)

    # Keyboard: focus moves with the arrows, Enter opens a picture, Escape closes it.
    tiles[0].send_keys(Keys.ARROW_RIGHT)
    focused = browser.switch_to.active_element
    assert focused.get_attribute("data-index") == "1"
    focused.send_keys(Keys.ENTER)
    dialog = browser.find_element(By.ID, "detail")
    assert dialog.get_attribute("open") is not None
    assert browser.find_element(By.ID, "detail-title").text == "vgg16 block1_conv2 filter 1"
    numbers = browser.find_element(By.ID, "detail-numbers").text
    assert "Loss" in numbers and "Cached\nno" in numbers
    assert browser.find_element(By.ID, "detail-link").get_attribute("href").startswith("blob:")
    dialog.send_keys(Keys.ESCAPE)
    WebDriverWait(browser, 30).until(lambda _: dialog.get_attribute("open") is None)

    # The URL holds the selection: the same link again comes from the cache.
    assert urllib.parse.parse_qs(urllib.parse.urlparse(browser.current_url).query)["layer"] == [
        "block1_conv2"
    ]
    browser.get(browser.current_url)
    assert f"{FILTERS} from the cache" in wait_done(browser)
    tiles = browser.find_elements(By.CSS_SELECTOR, ".tile")
    assert all(t.get_attribute("data-cached") == "true" for t in tiles)
    assert errors(browser) == []


def test_a_bad_selection_is_shown_not_thrown(browser, server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{server.http_url}/?{urllib.parse.urlencode({**SELECTION, 'size': '4'})}")
    alert = browser.find_element(By.ID, "error")
    WebDriverWait(browser, 60).until(lambda _: alert.is_displayed())
    assert "size=4 is out of range" in alert.text
    # The refused request is the page's only complaint: the 400 the browser logs.
    logged = errors(browser)
    assert logged and all("400" in entry["message"] for entry in logged)


VISUALIZE_TOKEN = "gallery-visualize-0123456789"
READ_TOKEN = "gallery-reader-0123456789ab"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A server whose every call but health needs a bearer token."""
    folder = tmp_path_factory.mktemp("guarded")
    tokens = folder / "tokens"
    tokens.write_text(f"painter {VISUALIZE_TOKEN}\nlooker {READ_TOKEN} read\n")
    process = ServerProcess(
        "--auth-tokens-file", str(tokens), "--precision", "float32", log_dir=folder, http=True
    ).wait_serving()
    yield process
    process.stop()


def show_with_token(driver, token: str) -> None:
    """Type a token under More and press Show, as a visitor told to would."""
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.ID, "show").click()


def test_a_token_entered_after_the_first_401_shows_the_pictures(browser, guarded) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{guarded.http_url}/?{urllib.parse.urlencode(SELECTION)}")
    alert = browser.find_element(By.ID, "error")
    WebDriverWait(browser, 60).until(lambda _: alert.is_displayed())
    assert "bearer token" in alert.text and "enter a token under More" in alert.text
    assert browser.find_element(By.ID, "token").is_displayed(), "More did not open"
    show_with_token(browser, VISUALIZE_TOKEN)
    assert f"{FILTERS} of {FILTERS} filters" in wait_done(browser)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".tile")) == FILTERS
    assert not alert.is_displayed()
    stored = browser.execute_script(
        "return JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie"
    )
    assert VISUALIZE_TOKEN not in stored and VISUALIZE_TOKEN not in browser.current_url


def test_a_read_only_token_is_told_why_show_is_refused(browser, guarded) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{guarded.http_url}/?{urllib.parse.urlencode(SELECTION)}")
    alert = browser.find_element(By.ID, "error")
    WebDriverWait(browser, 60).until(lambda _: alert.is_displayed())
    show_with_token(browser, READ_TOKEN)  # lists the models, may not visualize
    WebDriverWait(browser, 60).until(lambda _: "visualize role" in alert.text)
    assert "may not call VisualizeFilters" in alert.text
    assert browser.find_elements(By.CSS_SELECTOR, ".tile") == []
    assert browser.find_element(By.ID, "model").get_attribute("value") == "vgg16"


def test_objectives_and_diversity_show_one_row_per_objective(browser, server) -> None:
    from selenium.webdriver.common.by import By

    selection = {
        **SELECTION,
        "preset": "robust",
        "objective": "block1_conv2:3@center; 2*layer(block1_conv2)",
        "diversity": "2",
    }
    browser.get_log("browser")  # what earlier tests left there
    browser.get(f"{server.http_url}/?{urllib.parse.urlencode(selection)}")
    assert "4 of 4 filters" in wait_done(browser)
    captions = [c.text for c in browser.find_elements(By.CSS_SELECTOR, ".tile .caption")]
    assert captions[0].startswith("block1_conv2:3@(") and captions[1].startswith("block1_conv2:3@(")
    assert " #1 · " in captions[1] and captions[2].startswith("2*layer(block1_conv2)")
    rows = browser.find_elements(By.CSS_SELECTOR, "#tiles li.row-start")
    assert len(rows) == 2  # each objective's group starts its own row
    tops = [li.location["y"] for li in browser.find_elements(By.CSS_SELECTOR, "#tiles li")]
    assert tops[0] == tops[1] < tops[2] == tops[3]
    assert not errors(browser)


def test_an_objective_the_page_cannot_read_is_shown(browser, server) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{server.http_url}/?{urllib.parse.urlencode({**SELECTION, 'objective': 'b:1 *'})}")
    error = browser.find_element(By.ID, "error")
    assert "expected + or -" in error.text and error.is_displayed()


def test_a_dropped_photo_shows_its_channels_and_accentuates_one(browser, server, tmp_path) -> None:
    import base64
    import io

    import numpy as np
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the photos")
    photo = skimage_data.chelsea()
    path = tmp_path / "chelsea.jpg"
    Image.fromarray(photo).save(path, quality=90)
    not_a_photo = tmp_path / "notes.txt"
    not_a_photo.write_text("not an image")
    browser.get_log("browser")  # what earlier tests left there
    browser.get(f"{server.http_url}/?{urllib.parse.urlencode(SELECTION)}")
    wait_done(browser)
    chooser = browser.find_element(By.ID, "photo-file")
    status = browser.find_element(By.ID, "photo-status")
    chooser.send_keys(str(not_a_photo))
    WebDriverWait(browser, 30).until(lambda _: "not a PNG or JPEG" in status.text)
    chooser.send_keys(str(path))
    WebDriverWait(browser, 60).until(lambda _: "channels it excites most" in status.text)
    cards = browser.find_elements(By.CSS_SELECTOR, "#photo-channels .channel")
    assert len(cards) == 8 and "block1_conv2" in status.text
    assert all(c.find_element(By.TAG_NAME, "img").get_attribute("src") for c in cards)
    channel = cards[1].find_element(By.CSS_SELECTOR, ".accentuate")
    chosen = channel.get_attribute("data-channel")
    channel.click()
    assert "1 of 1 filters" in wait_done(browser)
    tile = browser.find_element(By.CSS_SELECTOR, ".tile")
    assert tile.get_attribute("data-index") == chosen
    assert browser.find_element(By.ID, "photo-start").is_selected()
    data = tile.find_element(By.TAG_NAME, "img").get_attribute("src").split(",", 1)[1]
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("L"), float)
    seen = np.asarray(Image.fromarray(photo).convert("L").resize((48, 32)), float)[:, 8:40]
    # two steps from the photo: still the photo (a picture from noise would not correlate)
    assert np.corrcoef(picture.ravel(), seen.ravel())[0, 1] > 0.8
    assert not errors(browser)


def test_a_dataset_shows_its_examples_under_each_picture(browser, server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get_log("browser")  # what earlier tests left there
    selection = {**SELECTION, "dataset": "photos"}
    browser.get(f"{server.http_url}/?{urllib.parse.urlencode(selection)}")
    wait_done(browser)
    status = browser.find_element(By.ID, "examples-status")
    WebDriverWait(browser, 120).until(lambda _: "that excite each filter most" in status.text)
    assert "photos: the 4 images of 6" in status.text
    items = browser.find_elements(By.CSS_SELECTOR, "#tiles li")
    strips = [item.find_elements(By.CSS_SELECTOR, ".examples img") for item in items]
    assert [len(strip) for strip in strips] == [4] * FILTERS
    assert all(img.get_attribute("src").startswith("data:image/png") for s in strips for img in s)
    assert "drawn_" in strips[0][0].get_attribute("title")
    assert not errors(browser)


def test_tiles_animate_while_they_form_and_the_detail_draws_the_loss_curve(browser, server) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get_log("browser")
    selection = {**SELECTION, "steps": "30", "filters": "0:2", "seed": "11"}
    browser.get(f"{server.http_url}/?{urllib.parse.urlencode(selection)}")
    wait_done(browser)
    # Watch the grid from here on, then run again: every forming picture is recorded.
    browser.execute_script(
        """
        window.seenFrames = [];
        new MutationObserver((changes) => {
          for (const change of changes) {
            const img = change.target.closest && change.target.closest("li.forming")
              ? change.target : null;
            if (img && img.tagName === "IMG") window.seenFrames.push(img.alt);
          }
        }).observe(document.getElementById("tiles"),
                   {subtree: true, attributes: true, attributeFilter: ["src"]});
        """
    )
    browser.find_element(By.ID, "seed").clear()
    browser.find_element(By.ID, "seed").send_keys("12")  # new pictures: not from the cache
    browser.find_element(By.ID, "show").click()
    WebDriverWait(browser, 120).until(
        lambda _: (
            browser.find_element(By.ID, "progress").text.startswith("Done")
            and "seed=12" in browser.current_url
        )
    )
    frames = browser.execute_script("return window.seenFrames")
    assert any("forming: step 10" in f for f in frames), frames
    assert not browser.find_elements(By.CSS_SELECTOR, "li.forming"), "finals replaced them"
    tile = next(
        t
        for t in browser.find_elements(By.CSS_SELECTOR, ".tile")
        if "dead" not in (t.get_attribute("class") or "")
    )
    tile.click()
    curve = browser.find_element(By.CSS_SELECTOR, "#detail-curve polyline")
    assert len(curve.get_attribute("points").split()) == 30  # one point per step
    assert not errors(browser)


def test_a_first_visit_shows_robust_pictures_forming_without_choosing_anything(
    browser, server
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get_log("browser")
    browser.get(f"{server.http_url}/")
    assert browser.find_element(By.ID, "preset").get_attribute("value") == "robust"
    # No click: the default layer's pictures start forming (previews every 10 steps).
    WebDriverWait(browser, 240).until(
        lambda _: browser.find_elements(By.CSS_SELECTOR, "li.forming img[src^='data:image/png']")
    )
    assert browser.find_element(By.ID, "layer").get_attribute("value") == "block5_conv1"
    browser.find_element(By.ID, "stop").click()  # the server stops computing them
    assert not errors(browser)
