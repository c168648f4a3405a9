"""What people read, in a real browser: Debian's Chromium through Playwright, against `ledger serve`.

- The subject report page, asked with an ID card after lookups made by phone: in Chinese no English
  code (no Latin letter at all, the platforms having Chinese names), every time in Beijing time and
  saying so, the glyphs drawn with a CJK font (the browser reports which platform font rendered the
  text), and in print on A4 nothing wider than the page. English with `?lang=en`.
- /docs (Swagger UI) and /docs/reference load and render with no request leaving 127.0.0.1; every
  request the browser made is recorded.

Screenshots and the A4 PDF go to build/screenshots/ (CI keeps the folder); look at them.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.config import Settings
from ledger.identity import id_card_check_digit
from ledger.services import platforms as platform_service
from ledger.services.runtime import Runtime
from tests.support import SHOTS, Recorder, ServedApp, incident_body, wait_for

PHONE = {"type": "phone", "value": "13800138000"}
ID_CARD = {"type": "id_card", "value": "11010519491231002" + id_card_check_digit("11010519491231002")}
# A4 is 210 mm wide; the page's @page margins are 14 mm a side: 182 mm at 96 px per inch.
A4_CONTENT_PX = int(182 / 25.4 * 96)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]


def post(served: ServedApp, path: str, key: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310 (served.base is http://127.0.0.1)
        served.base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (127.0.0.1 only)
        return int(response.status), json.loads(response.read())


@pytest.fixture
def served(settings: Settings, clean: None, worker: Any) -> Iterator[ServedApp]:
    app = ServedApp(settings, workers=1).start()
    yield app
    app.stop()


def rendering_fonts(page: Any, selector: str) -> set[str]:
    """The platform fonts Chromium actually drew the node's text with (DevTools protocol)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument")["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
    return {f["familyName"] for f in fonts}


def open_report(page: Any, served: ServedApp, key: str, lang: str) -> None:
    """Navigate to the HTML report: the browser's navigation becomes the API's POST with a JSON body."""
    url = f"{served.base}/v1/subjects/report/html?lang={lang}"
    body = json.dumps({"identifiers": [ID_CARD]})

    def as_post(route: Any) -> None:
        headers = {
            **route.request.headers,
            "authorization": f"Bearer {key}",
            "content-type": "application/json",
        }
        route.continue_(method="POST", post_data=body, headers=headers)

    page.route(url, as_post)
    response = page.goto(url)
    assert response is not None
    assert response.status == 200, response.text()
    page.unroute(url)


def shot(page: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"read-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def test_subject_report_page_reads_as_chinese_in_beijing_time(
    served: ServedApp, browser: Any, settings: Settings, rt: Runtime
) -> None:
    shop = platform_service.create_platform(rt, "jia", "甲商城", "report,lookup")
    market = platform_service.create_platform(rt, "yi", "乙优选", "report,lookup")
    operator = platform_service.create_platform(rt, "desk", "联盟消费者服务台", "dispute", operator=True)
    assert (
        post(served, "/v1/incidents", shop.key, incident_body("r-1", identifiers=[PHONE, ID_CARD]))[0] == 201
    )
    created = post(
        served,
        "/v1/incidents",
        market.key,
        incident_body(
            "r-2", category="chargeback_abuse", confirmation="court_or_police", identifiers=[PHONE]
        ),
    )
    assert created[0] == 201

    def scored() -> bool:
        return (
            post(served, "/v1/lookups", market.key, {"identifiers": [PHONE], "purpose": "refund_review"})[1][
                "decision"
            ]["score"]
            > 0
        )

    wait_for(scored, timeout=60, interval=0.3)
    assert (
        post(served, "/v1/disputes", operator.key, {"identifiers": [PHONE], "incident_id": created[1]["id"]})[
            0
        ]
        == 201
    )

    context = browser.new_context(viewport={"width": 900, "height": 1200}, locale="zh-CN")
    recorder = Recorder(context)
    page = context.new_page()
    open_report(page, served, operator.key, "zh")

    text = page.inner_text("body")
    assert "个人信用记录报告" in text
    assert not re.search(r"[A-Za-z]", text), (
        f"Latin letters in the Chinese page: {re.findall(r'[A-Za-z_]+', text)}"
    )
    for word in ("恶意拒付", "法院或公安机关认定", "申诉复核中", "退款审核", "甲商城", "乙优选"):
        assert word in text, word
    times = page.eval_on_selector_all("time", "nodes => nodes.map(n => n.textContent)")
    assert len(times) >= 6
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d 北京时间", t) for t in times), times
    # The lookups made by phone are listed although the report was asked with the ID card alone.
    assert page.locator("table.lookups tr").count() - 1 >= 1
    fonts = rendering_fonts(page, "h1")
    assert any("CJK" in f for f in fonts), f"the heading was drawn with {fonts}, not a CJK font"
    shot(page, "subject-report-zh")

    # Print: A4, nothing wider than the page between its margins.
    page.emulate_media(media="print")
    page.set_viewport_size({"width": A4_CONTENT_PX, "height": 1100})
    assert page.evaluate("document.documentElement.scrollWidth") <= A4_CONTENT_PX
    pdf = page.pdf(format="A4", prefer_css_page_size=True)
    (SHOTS / "read-subject-report-zh.pdf").write_bytes(pdf)
    assert pdf.startswith(b"%PDF")
    page.emulate_media(media="screen")

    english = context.new_page()
    english.set_viewport_size({"width": 900, "height": 1200})
    open_report(english, served, operator.key, "en")
    assert "Personal" in english.inner_text("h1") or "report" in english.inner_text("h1").lower()
    assert "Chargeback abuse" in english.inner_text("body")
    en_times = english.eval_on_selector_all("time", "nodes => nodes.map(n => n.textContent)")
    assert all(t.endswith(" Beijing time (UTC+8)") for t in en_times), en_times
    shot(english, "subject-report-en")
    assert recorder.outside(served.base) == []
    context.close()


def test_docs_load_with_no_request_leaving_the_machine(served: ServedApp, browser: Any) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    recorder = Recorder(context)
    page = context.new_page()
    page.goto(served.base + "/docs")
    page.wait_for_selector(".opblock", timeout=30_000)  # Swagger UI drew the operations
    assert page.locator(".opblock").count() >= 18
    page.wait_for_load_state("networkidle")
    shot(page, "swagger-ui")
    page.goto(served.base + "/docs/reference")
    page.wait_for_load_state("networkidle")
    assert page.locator("section.op").count() >= 18
    assert "`" not in page.inner_text("body").split("Schemas")[0].replace(
        page.inner_text("pre.curl >> nth=0"), ""
    )
    shot(page, "reference")
    page.goto(served.base + "/")
    assert page.locator('a[href="/docs/reference"]').count() == 1
    assert recorder.urls, "the recorder saw nothing"
    assert any("/static/vendor/swagger-ui-dist/swagger-ui-bundle.js" in u for u in recorder.urls)
    assert recorder.outside(served.base) == [], recorder.outside(served.base)
    context.close()
