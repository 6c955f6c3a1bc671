"""Page steps shared by the browser test and the browser benchmark (Playwright sync API).

Waits are for states (the app's script state, an element, a text), never fixed timings that
an assertion depends on.
"""
from __future__ import annotations

import re
import time

APP_IDLE = "[data-testid='stApp'][data-test-script-state='notRunning'][data-test-connection-state='CONNECTED']"
LONG = 240_000  # ms: a cold model load on 2 shared cores
#: The Read page's hung images (clickable: streamlit-image-coordinates), in hanging order.
READ_TILES = "[data-testid='stMain'] iframe[title*='streamlit_image_coordinates']"


def wait_idle(page, timeout: int = LONG) -> None:
    """Until the script run triggered by the last interaction has finished."""
    page.wait_for_timeout(250)  # let the rerun request reach the server before checking the state
    page.wait_for_selector(APP_IDLE, timeout=timeout)


def wait_text(page, text: str | re.Pattern, timeout: int = LONG):
    loc = page.get_by_text(text).first
    loc.wait_for(state="visible", timeout=timeout)
    return loc


def heading(page, text: str, timeout: int = LONG):
    loc = page.locator("h1", has_text=text).first
    loc.wait_for(state="visible", timeout=timeout)
    wait_idle(page, timeout)
    return loc


def nav(page, title: str) -> None:
    """Go to a page through the sidebar (keeps the session, unlike a new URL)."""
    page.locator("[data-testid='stSidebarNavLink']", has_text=title).first.click()
    wait_idle(page)


def select_option(page, label: str, option: str) -> None:
    """Pick ``option`` in the st.selectbox labelled ``label``."""
    page.get_by_role("combobox", name=label, exact=True).first.click()
    page.get_by_role("option", name=option, exact=True).first.click()
    wait_idle(page)


def button(page, name: str):
    """The button labelled ``name``. A button with a keyboard shortcut (``st.button(shortcut="L")``)
    shows its key, which joins its accessible name ("Label this patch Shortcut L")."""
    return page.get_by_role("button", name=re.compile(rf"^{re.escape(name)}( Shortcut \S+)?$")).first


def click_button(page, name: str) -> None:
    button(page, name).click()
    wait_idle(page)


def label_canvas(page):
    """The drawing canvas of the Label page (the top one of the component's stacked canvases)."""
    cv = page.locator("canvas.dc-canvas").last
    cv.wait_for(state="visible", timeout=LONG)
    return cv


def draw_polygon(page, fractions: list[tuple[float, float]]) -> None:
    """Click the vertices (fractions of the canvas box), then the first one again to close it."""
    box = label_canvas(page).bounding_box()
    pts = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in fractions]
    for x, y in pts + [pts[0]]:
        page.mouse.click(x, y)
        page.wait_for_timeout(120)  # Fabric handles each click before the next (not asserted on)


def open_first_patch(page, url: str, case_id: str) -> None:
    """Worklist -> open ``case_id`` -> Read -> first suspicious patch -> Label page."""
    page.goto(url)
    heading(page, "Worklist")
    select_option(page, "Case", case_id)
    click_button(page, "Open case")
    heading(page, f"Read · {case_id}")
    page.locator(READ_TILES).first.wait_for(state="visible", timeout=LONG)
    click_button(page, "Label this patch")
    heading(page, "Label concepts")


def sign_in(page, reader: str) -> None:
    box = page.get_by_label("Reader name")
    if box.count():
        box.fill(reader)
        box.press("Enter")
        wait_idle(page)
        click_button(page, "Start labeling")
        label_canvas(page)


def fill_number(page, label: str, value) -> None:
    box = page.get_by_label(label, exact=True).first
    box.fill(str(value))
    box.press("Enter")
    wait_idle(page)


def open_patch_at_point(page, image_label: str, x: int, y: int) -> None:
    """Read page: click the image ``image_label`` ("R CC", ...) at display point (x, y) (model-grid
    pixels of the shown image), which opens the patch centred there for labeling."""
    lat, view = image_label.split()
    frame = page.frame_locator(f"[class*='st-key-read_tile_{lat}{view}_'] iframe").first
    img = frame.locator("img").first
    img.wait_for(state="visible")
    natural, shown = img.evaluate("i => [i.naturalWidth, i.clientWidth]")
    scale = shown / max(natural, 1)
    img.click(position={"x": x * scale, "y": y * scale})
    heading(page, "Label concepts")


def shown_patch(page) -> tuple[int, int, int]:
    """(x0, y0, size) of the patch the Label page shows (model px), once the reader is signed in."""
    loc = wait_text(page, re.compile(r"patch \(-?\d+, -?\d+\) size \d+ model px"))
    m = re.search(r"patch \((-?\d+), (-?\d+)\) size (\d+) model px", loc.inner_text())
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


MEDIA_READY = """() => {
  const imgs = [...document.querySelectorAll("[data-testid='stMain'] img")];
  const plots = [...document.querySelectorAll("[data-testid='stPlotlyChart']")];
  return imgs.every(i => i.complete && i.naturalWidth > 0)
      && plots.every(p => p.querySelector('.main-svg'));
}"""


TEXT_SHOWN = """([src, flags]) => {
  const main = document.querySelector("[data-testid='stMain']");
  return !!main && new RegExp(src, flags).test(main.textContent);
}"""


def wait_js(page, predicate: str, arg=None, timeout: int = LONG) -> None:
    """Until the JS ``predicate`` holds, checked in the page on every animation frame.

    For timed steps: Playwright's selector and text waits re-check with a back-off that reaches
    one check per 0.5 s, so they end up to half a second after the state was reached."""
    page.wait_for_function(predicate, arg=arg, polling="raf", timeout=timeout)


def wait_text_shown(page, text: str | re.Pattern, timeout: int = LONG) -> None:
    """Until the main block's text contains ``text`` (a string or a JS-compatible pattern), checked
    on every animation frame (see ``wait_js``)."""
    pat = text if isinstance(text, re.Pattern) else re.compile(re.escape(text))
    wait_js(page, TEXT_SHOWN, [pat.pattern, "s" if pat.flags & re.DOTALL else ""], timeout)


def wait_app_idle(page, timeout: int = LONG) -> None:
    """Until the app reports its script run finished (no settling sleep: call it only once a text
    that the awaited run itself writes is shown)."""
    wait_js(page, f"() => !!document.querySelector({APP_IDLE!r})", timeout=timeout)


def settle(page, timeout: int = LONG) -> None:
    """Until the app is idle and every image and plotly chart on the page has rendered."""
    wait_idle(page, timeout)
    page.wait_for_function(MEDIA_READY, timeout=timeout)


def screenshot(page, path, width: int = 1440) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to fit it."""
    settle(page)
    height = page.evaluate("() => document.querySelector(\"[data-testid='stMain']\").scrollHeight")
    old = page.viewport_size
    page.set_viewport_size({"width": width, "height": int(min(max(height, 800), 4000))})
    settle(page)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(old)


def draw_polygon_timed(page, fractions: list[tuple[float, float]]) -> float:
    """``draw_polygon``, returning ``time.perf_counter()`` right after the closing click."""
    box = label_canvas(page).bounding_box()
    pts = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in fractions]
    for x, y in pts:
        page.mouse.click(x, y)
        page.wait_for_timeout(120)
    page.mouse.click(*pts[0])
    return time.perf_counter()
