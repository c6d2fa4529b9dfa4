"""The runs page shows batches (issue 32) in a real browser: progress, and Cancel."""

import io
import json
import threading

import pytest

from chromium import NEEDS_CHROMIUM
from fake_lmstudio import Script

pytestmark = NEEDS_CHROMIUM
openai = pytest.importorskip("openai", reason="the openai package is not installed")


def test_a_running_batch_shows_its_progress_and_is_cancelled_by_its_button(browser, make_hub,
                                                                          fake):
    hub = make_hub({"batches": {"max_parallel_lines": 1}})
    api = openai.OpenAI(api_key="x", base_url=hub.url + "/v1", max_retries=0)
    held = threading.Event()
    fake.enqueue(Script(), Script(hold_first=held))
    lines = "".join(json.dumps({"custom_id": f"row-{n}", "method": "POST",
                                "url": "/v1/chat/completions",
                                "body": {"model": "m", "messages": [
                                    {"role": "user", "content": f"row {n}"}]}}) + "\n"
                    for n in range(1, 4))
    source = api.files.create(file=("in.jsonl", io.BytesIO(lines.encode())), purpose="batch")
    batch = api.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    assert fake.wait_requests(2, timeout=10)
    page = browser.open(hub.url + "/runs")
    row = f"#batches tr[data-batch=\"{batch.id}\"]"
    page.wait_for(f"(document.querySelector('{row}') || {{}}).textContent"
                  f"?.includes('1 / 3')")
    assert "in_progress" in page.text(row)
    page.click(f"{row} button.cancel")
    page.wait_for(f"document.querySelector('{row}').textContent.includes('cancelled')")
    held.set()
    assert api.batches.retrieve(batch.id).status == "cancelled"
