"""Attachments on the chat page as the anchors show them (issue 30 point 7): a text file is
a chip, then a folded file under its name in the sent message, not its text in the bubble;
a PDF's text is read in the browser (plain and FlateDecode streams) or the PDF is refused
with the reason; an image's chip is a thumbnail; the page knows which models see images."""

import zlib
from pathlib import Path

from chromium import NEEDS_CHROMIUM

pytestmark = NEEDS_CHROMIUM
SHOTS = Path(__file__).resolve().parent / "screenshots"
IDLE = "!document.querySelector('#send').disabled && !document.querySelector('.msg.live')"
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360f8cf00000301010018dd8db00000"
                    "000049454e44ae426082")
TEXT_OPS = (b"BT /F1 12 Tf 72 720 Td (Hello \\(PDF\\) world) Tj 0 -14 Td "
            b"[(Second) -250 (line)] TJ T* <7468697264> Tj ET")


def pdf(content: bytes, flate: bool = False, encrypted: bool = False) -> bytes:
    """A one-page PDF whose page draws `content` (a content stream), as a writer makes it."""
    data = zlib.compress(content) if flate else content
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
               b"/Resources << /Font << /F1 5 0 R >> >> >>",
               b"<< /Length %d%s >>\nstream\n" % (len(data), b" /Filter /FlateDecode"
                                                  if flate else b"") + data + b"\nendstream",
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 6\n0000000000 65535 f \n" + b"".join(b"%010d 00000 n \n" % o
                                                         for o in offsets)
    out += b"trailer\n<< /Size 6 /Root 1 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (
        b" /Encrypt 6 0 R" if encrypted else b"", xref)
    return out


def attach(page, *paths) -> None:
    """Choose files in the hidden file input, as the file dialog would."""
    document = page.send("DOM.getDocument")["root"]["nodeId"]
    node = page.send("DOM.querySelector", {"nodeId": document, "selector": "#file"})["nodeId"]
    page.send("DOM.setFileInputFiles", {"nodeId": node, "files": [str(p) for p in paths]})


def chips(page) -> list:
    return page.evaluate("[...document.querySelectorAll('#attachments .chip')].map(c => "
                         "c.querySelector('.chip-name').textContent + ' | ' + "
                         "c.querySelector('.chip-size').textContent)")


def test_a_text_file_is_a_chip_then_a_folded_file_not_text_in_the_bubble(browser, make_hub,
                                                                          fake, tmp_path):
    hub = make_hub()
    page = browser.fresh(hub.url)
    notes = tmp_path / "notes.txt"
    notes.write_text("\n".join(f"line {i} of the notes" for i in range(60)), encoding="utf-8")
    attach(page, notes)
    page.wait_for("document.querySelectorAll('#attachments .chip').length === 1")
    assert chips(page) == ["notes.txt | 60 lines"]
    assert "line 0 of the notes" in page.evaluate(
        "document.querySelector('#attachments .chip').title")          # a preview on hover
    page.type("#input", "Summarise this")
    page.click("#send")
    page.wait_for(IDLE + " && document.querySelectorAll('.msg').length === 2")
    sent = fake.chat_requests()[-1].body["messages"][-1]["content"]
    assert sent.startswith("Summarise this\n\n````notes.txt\nline 0") and "line 59" in sent

    def bubble():
        page.wait_for("document.querySelector('.msg.user details.file')")
        return page.evaluate("""(() => { const m = document.querySelector('.msg.user');
          const f = m.querySelector('details.file');
          return {words: m.querySelector('.body').textContent, open: f.open,
                  name: f.querySelector('summary').textContent,
                  height: m.getBoundingClientRect().height}; })()""")
    shown = bubble()
    assert shown["words"] == "Summarise this" and not shown["open"]
    assert shown["name"] == "notes.txt60 lines" and shown["height"] < 200
    page.goto(page.evaluate("location.href"))           # as stored, after a reload: the same
    assert bubble()["name"] == "notes.txt60 lines"
    page.click(".msg.user details.file summary")          # unfolded: the file's text
    page.wait_for("document.querySelector('.msg.user details.file').open")
    assert "line 59 of the notes" in page.text(".msg.user details.file pre")


def test_a_pdfs_text_is_read_in_the_browser_or_the_pdf_is_refused_saying_why(
        browser, make_hub, fake, tmp_path):
    hub = make_hub()
    page = browser.fresh(hub.url)
    files = {"plain.pdf": pdf(TEXT_OPS), "packed.pdf": pdf(TEXT_OPS, flate=True),
             "scan.pdf": pdf(b"q 612 0 0 792 0 0 cm /Im1 Do Q", flate=True),
             "locked.pdf": pdf(TEXT_OPS, encrypted=True)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    attach(page, tmp_path / "plain.pdf", tmp_path / "packed.pdf")
    page.wait_for("document.querySelectorAll('#attachments .chip').length === 2")
    assert chips(page) == ["plain.pdf | PDF, 3 lines of text", "packed.pdf | PDF, 3 lines of text"]
    attach(page, tmp_path / "scan.pdf")
    page.wait_for("document.querySelector('#problems').textContent.includes('scan.pdf has no "
                  "text this page can read')")
    attach(page, tmp_path / "locked.pdf")
    page.wait_for("document.querySelector('#problems').textContent.includes('locked.pdf is "
                  "encrypted')")
    assert len(chips(page)) == 2                          # the refused ones are not attached
    page.type("#input", "Compare")
    page.click("#send")
    page.wait_for(IDLE + " && document.querySelectorAll('.msg').length === 2")
    sent = fake.chat_requests()[-1].body["messages"][-1]["content"]
    assert sent == ("Compare\n\n````plain.pdf\nHello (PDF) world\nSecond line\nthird\n````"
                    "\n\n````packed.pdf\nHello (PDF) world\nSecond line\nthird\n````")
    assert page.evaluate("document.querySelectorAll('.msg.user details.file').length") == 2


def test_an_images_chip_is_a_thumbnail_and_the_page_knows_who_sees_images(browser, make_hub,
                                                                         tmp_path):
    hub = make_hub()
    page = browser.fresh(hub.url)
    (tmp_path / "dot.png").write_bytes(PNG)
    attach(page, tmp_path / "dot.png")
    page.wait_for("document.querySelector('#attachments .chip img.thumb')?.complete")
    assert page.evaluate("document.querySelector('#attachments .chip img.thumb')"
                         ".naturalWidth") == 1
    assert chips(page) == [f"dot.png | {len(PNG)} B"]
    (tmp_path / "notes.md").write_text("# Notes\nsecond line\n", encoding="utf-8")
    attach(page, tmp_path / "notes.md")
    page.wait_for("document.querySelectorAll('#attachments .chip').length === 2")
    assert chips(page)[1] == "notes.md | 2 lines"       # a last newline ends a line
    SHOTS.mkdir(exist_ok=True)                  # the composer's chips, for a person to see
    page.screenshot(SHOTS / "attachments-composer.png")
    assert page.evaluate("state.models.filter(takesImages).map(m => m.id)") == [
        "qwen3-vl-4b-instruct"]
