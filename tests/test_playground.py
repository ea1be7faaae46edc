"""The playground in a real browser: headless Chromium, driven over the DevTools protocol,
types a [MASK] text, clicks Generate and sees the blank filled with what the API gives for
that seed, highlighted as the reference highlights it. The screenshot is written to
test-artifacts/playground.png (or $GLM_TEST_ARTIFACTS)."""
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from glm130b.generation import (BeamSearchStrategy, build_prompt, end_tokens, fill_blanks,
                                padding_slices)
from glm130b.serving import local_server
from helpers import lively_model, make_tokenizer
from helpers import expected_fill

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed "
                                 "(scripts/test.sh installs Debian's chromium)"),
              pytest.mark.usefixtures("one_thread")]


class Browser:
    """Chromium with the DevTools protocol on a pipe (fds 3 and 4 of the child): commands
    and answers are JSON messages ended by a NUL byte."""

    def __init__(self, profile: str):
        to_child, self._commands = os.pipe()
        self._answers, from_child = os.pipe()

        def wire():
            up = fcntl.fcntl(to_child, fcntl.F_DUPFD, 10)
            down = fcntl.fcntl(from_child, fcntl.F_DUPFD, 10)
            os.dup2(up, 3)
            os.dup2(down, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-dev-shm-usage", "--window-size=1000,760",
             f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=wire, pass_fds=(3, 4), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self._buffer, self._id, self.session = b"", 0, None

    def send(self, method: str, params=None, timeout: float = 30.0) -> dict:
        self._id += 1
        message = dict(id=self._id, method=method, params=params or {})
        if self.session:
            message["sessionId"] = self.session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                answer = json.loads(raw)
                if answer.get("id") == self._id:
                    assert "error" not in answer, answer
                    return answer["result"]
            left = deadline - time.monotonic()
            assert left > 0, f"no answer to {method}"
            if select.select([self._answers], [], [], left)[0]:
                chunk = os.read(self._answers, 1 << 16)
                assert chunk, "Chromium closed the pipe"
                self._buffer += chunk

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget",
                                 {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.navigate", {"url": url})
        self.wait("document.readyState === 'complete' && "
                  "document.getElementById('model').textContent !== ''")

    def js(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.js(expression):
            assert time.monotonic() < deadline, f"waited in vain for {expression}"
            time.sleep(0.05)

    def type_into(self, element_id: str, text: str) -> None:
        """Focus the field, select what it holds, and type over it."""
        self.js(f"document.getElementById({element_id!r}).focus(); "
                f"document.getElementById({element_id!r}).select()")
        self.send("Input.insertText", {"text": text})

    def click(self, element_id: str) -> None:
        box = self.js(f"JSON.stringify(document.getElementById({element_id!r})"
                      ".getBoundingClientRect())")
        box = json.loads(box)
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y,
                                                   "button": "left", "clickCount": 1})

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot")["data"]))

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.close(self._commands)
        os.close(self._answers)


def test_playground_fills_a_mask_in_a_real_browser(tmp_path):
    tokenizer = make_tokenizer(tmp_path)
    model = lively_model(vocab_size=tokenizer.num_tokens + 4)
    text = "The capital of France is [MASK]. Japan's is [MASK]."
    want = expected_fill(model, tokenizer, text, 12, 42, top_p=0.7)
    prompt = build_prompt(text, tokenizer, 64)
    invalid = padding_slices(tokenizer, model.config.vocab_size)
    beam_search = BeamSearchStrategy(3, length_penalty=1.0, consider_end=True, seed=42,
                                     end_tokens=end_tokens(tokenizer), no_repeat_ngram_size=3,
                                     invalid_slices=invalid)
    [want_beams] = fill_blanks(model, tokenizer, [prompt], beam_search, len(prompt.tokens) + 13)
    artifacts = Path(os.environ.get("GLM_TEST_ARTIFACTS", REPO / "test-artifacts"))
    with local_server(model, tokenizer, model_name="glm-tiny-test") as srv, \
            tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        browser = Browser(profile)
        try:
            browser.open(srv.url + "/")
            browser.type_into("prompt", text)
            browser.type_into("max_tokens", "12")
            browser.type_into("seed", "42")
            browser.click("generate")
            browser.wait("document.getElementById('status').dataset.state !== 'running' && "
                         "document.getElementById('status').dataset.state !== 'idle'")
            status = browser.js("document.getElementById('status').textContent")
            blanks = browser.js("[...document.querySelectorAll('#output .blank')]"
                                ".map(e => e.textContent)")
            colour = browser.js("getComputedStyle(document.querySelector('#output .blank'))"
                                ".color")
            underline = browser.js("getComputedStyle(document.querySelector('#output .blank'))"
                                   ".textDecorationLine")
            shown = browser.js("document.getElementById('output').textContent")
            updates = int(browser.js("document.getElementById('output').dataset.updates"))
            browser.screenshot(artifacts / "playground.png")

            # beam search: every beam shown, each with its blanks
            browser.js("const s = document.getElementById('strategy'); "
                       "s.value = 'BeamSearchStrategy'; s.dispatchEvent(new Event('change'))")
            browser.type_into("num_beams", "3")
            browser.click("generate")
            browser.wait("document.getElementById('status').dataset.state === 'done'")
            beams = browser.js("[...document.querySelectorAll('#output .beam')].map(b => "
                               "[...b.querySelectorAll('.blank')].map(e => e.textContent))")
            browser.js("document.getElementById('strategy').value = 'BaseStrategy'")

            # a prompt too long for the model: the page says so in one line
            browser.type_into("prompt", "one two three " * 30)
            browser.click("generate")
            browser.wait("document.getElementById('status').dataset.state === 'error'")
            error = browser.js("document.getElementById('status').textContent")
        finally:
            browser.close()
    assert status.startswith("done:"), status
    assert blanks == want.blanks[0] and len(blanks) == 2
    assert updates >= 2  # the blanks grew as tokens streamed in
    assert beams == want_beams.blanks and len(beams) == 3
    assert colour == "rgb(17, 138, 46)" and underline == "underline"  # [MASK]: green, underlined
    # English: a space each side of a blank, as the reference's CLI shows it
    pieces = want.pieces[0]
    assert shown == f"{pieces[0]} {pieces[1]} {pieces[2]} {pieces[3]} {pieces[4]}"
    assert error.startswith("error: prompt: text too long")
    assert (artifacts / "playground.png").stat().st_size > 5000


NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed")
def test_the_playground_spaces_blanks_by_the_cli_rule():
    """One rule in two languages: the page's `spaced` and CLOSE_SCRIPT, run by Node, answer
    as filling.py's for Latin, CJK, kana, Hangul, full-width, spaces and the text's end."""
    import re
    from glm130b.generation.filling import CLOSE_SCRIPT, spaced
    page = (REPO / "glm130b" / "serving" / "playground.html").read_text(encoding="utf-8")
    script = re.search(r"^const CLOSE_SCRIPT = .*?;$", page, re.M).group() + "\n" + \
        re.search(r"^function spaced\(.*?^}$", page, re.M | re.S).group()
    chars = ["", "s", ".", " ", "\t", "是", "。", "あ", "カ", "한", "，", "!", "é", "1", "世"]
    out = subprocess.run([NODE, "-e", script + f"\nconsole.log(JSON.stringify("
                          f"{json.dumps(chars)}.map(spaced)))"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [spaced(c) for c in chars]
    assert CLOSE_SCRIPT.pattern.encode("unicode_escape").decode() in page.replace("\\\\", "\\")
