"""`python -m glm130b.serve`: answers against `python -m glm130b.generate` and `fill_blanks` on
the same prompts and seeds, streamed against plain, 32 concurrent clients, every kind of bad
request, a client leaving mid-stream, timeouts and a full queue, a failing request beside
good ones, and tensor parallelism under torchrun."""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from torch import nn

from glm130b.generate import main as generate_main
from glm130b.generation import (BaseStrategy, DecodeBatch, build_prompt, end_tokens, padding_slices)
from glm130b.serving import local_server
from glm130b.serving.scheduler import Choice, Scheduler, Request
from glm130b.tools.loadtest import Report, completion_bodies, run_load
from helpers import FRANCE, NO_MASK, TWO_BLANKS, events, expected_fill, request, tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def server(setup):
    model, tokenizer, _ = setup
    with local_server(model, tokenizer, model_name="tiny") as srv:
        yield srv


def budget(tokenizer, text, out_seq_length):
    """max_tokens that gives generate.py's --out-seq-length for this prompt."""
    return out_seq_length - len(build_prompt(text, tokenizer, 64).tokens) - 1


# ---- the same answers as generate.py -------------------------------------------------------

def test_seeded_requests_equal_python_m_glm130b_generate(setup, server, tmp_path):
    model, tokenizer, args = setup
    for text, strategy in [(TWO_BLANKS, ["--top_p", "0.7"]), (NO_MASK, ["--top_p", "0.7"]),
                           (FRANCE, ["--sampling-strategy", "BeamSearchStrategy", "--num-beams",
                                     "3", "--length-penalty", "1.0",
                                     "--no-repeat-ngram-size", "3"])]:
        source, out = tmp_path / "in.txt", tmp_path / f"out{len(text)}"
        source.write_text(f"q\t{text}\n", encoding="utf-8")
        assert generate_main(args + strategy + ["--input-source", str(source), "--with-id",
                                                "--output-path", str(out), "--seed", "1234",
                                                "--out-seq-length", "40"]) == 0
        lines = (out / "q.txt").read_text(encoding="utf-8").splitlines()
        max_tokens = budget(tokenizer, text, 40)
        if "BeamSearchStrategy" in strategy:
            status, answer = request(server.url, "/v1/fill", dict(
                text=text, sampling_strategy="BeamSearchStrategy", num_beams=3, seed=1234,
                max_tokens=max_tokens))
            assert status == 200, answer
            assert [o["text"] for o in answer["outputs"]] == lines and len(lines) == 3
            continue
        status, answer = request(server.url, "/v1/completions", dict(
            prompt=text, top_p=0.7, seed=1234, max_tokens=max_tokens, model="tiny"))
        assert status == 200, answer
        [choice] = answer["choices"]
        assert [choice["filled"]] == lines
        status, fill = request(server.url, "/v1/fill", dict(text=text, seed=1234,
                                                            max_tokens=max_tokens))
        assert [o["text"] for o in fill["outputs"]] == lines  # fill's defaults are generate.sh's
    # the [MASK] text has its blanks and segments; the whole text is the segments in order
    filled = expected_fill(model, tokenizer, TWO_BLANKS, budget(tokenizer, TWO_BLANKS, 40), 1234,
                      top_p=0.7)
    status, answer = request(server.url, "/v1/completions", dict(
        prompt=TWO_BLANKS, top_p=0.7, seed=1234, max_tokens=budget(tokenizer, TWO_BLANKS, 40)))
    choice = answer["choices"][0]
    assert choice["blanks"] == filled.blanks[0] and len(choice["blanks"]) == 2
    assert choice["text"] == "".join(filled.blanks[0])
    assert [s["text"] for s in choice["segments"]] == filled.pieces[0]
    assert [s["blank"] for s in choice["segments"]] == [None, 0, None, 1, None]
    assert answer["usage"]["prompt_tokens"] == len(build_prompt(TWO_BLANKS, tokenizer, 64).tokens)


def test_streamed_answers_equal_plain_ones_with_n_and_stop(setup, server):
    model, tokenizer, _ = setup
    body = dict(prompt=[FRANCE, TWO_BLANKS], n=2, seed=7, max_tokens=12, temperature=0.9)
    status, plain = request(server.url, "/v1/completions", body)
    assert status == 200
    assert [c["index"] for c in plain["choices"]] == [0, 1, 2, 3]
    for c in plain["choices"]:  # choice k of n draws from seed + k
        text = [FRANCE, TWO_BLANKS][c["index"] // 2]
        want = expected_fill(model, tokenizer, text, 12, 7 + c["index"], temperature=0.9)
        assert c["filled"] == want.answers[0] and c["blanks"] == want.blanks[0]
    assert plain["choices"][0]["text"] != plain["choices"][1]["text"]
    chunks = events(server.url, "/v1/completions", body)
    final = chunks[-1]
    streamed = {}
    for chunk in chunks[:-1]:
        [c] = chunk["choices"]
        assert c["finish_reason"] is None and c["text"]
        streamed.setdefault(c["index"], {}).setdefault(c["blank"], "")
        streamed[c["index"]][c["blank"]] += c["text"]
    for p, f in zip(plain["choices"], final["choices"]):
        assert {k: v for k, v in f.items() if k != "text"} == {k: v for k, v in p.items()
                                                               if k != "text"}
        assert [streamed[p["index"]].get(b, "") for b in range(len(p["blanks"]))] == p["blanks"]
    assert final["usage"] == plain["usage"]

    # a stop string ends the blank before it, streamed or not
    whole = plain["choices"][0]["text"]
    stop = whole[len(whole) // 2:len(whole) // 2 + 2]
    cut = whole[:whole.index(stop)]
    body = dict(prompt=FRANCE, seed=7, max_tokens=12, temperature=0.9, stop=[stop, "never"])
    status, stopped = request(server.url, "/v1/completions", body)
    assert stopped["choices"][0]["text"] == cut and stopped["choices"][0]["blanks"] == [cut]
    assert stopped["choices"][0]["finish_reason"] == "stop"
    chunks = events(server.url, "/v1/completions", body)
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == cut
    assert chunks[-1]["choices"][0]["blanks"] == [cut]

    # the fill view streams too, and ends with the whole answer
    chunks = events(server.url, "/v1/fill", dict(text=TWO_BLANKS, seed=3, max_tokens=10))
    final = chunks[-1]
    assert final["object"] == "fill" and final["mask"] == "[MASK]"
    blanks = final["outputs"][0]["blanks"]
    for b, blank in enumerate(blanks):
        assert "".join(c["text"] for c in chunks[:-1] if c["blank"] == b) == blank


def test_without_max_tokens_the_room_the_model_leaves(setup, server):
    model, tokenizer, _ = setup
    room = 64 - len(build_prompt(NO_MASK, tokenizer, 64).tokens) - 1  # the default 64 won't fit
    status, answer = request(server.url, "/v1/completions", dict(prompt=NO_MASK, seed=3))
    assert status == 200
    want = expected_fill(model, tokenizer, NO_MASK, room, 3)
    assert answer["choices"][0]["filled"] == want.answers[0]


def test_health_models_and_the_playground_page(server):
    status, health = request(server.url, "/health")
    assert status == 200 and health["status"] == "ok" and health["model"] == "tiny"
    status, models = request(server.url, "/v1/models")
    assert [m["id"] for m in models["data"]] == ["tiny"]
    with urllib.request.urlopen(server.url + "/") as r:
        page = r.read().decode()
    assert r.headers["Content-Type"].startswith("text/html") and 'id="prompt"' in page


# ---- batching ------------------------------------------------------------------------------

def test_32_concurrent_clients_each_get_their_answer_alone(setup):
    """Requests of different prompts, lengths and n join and leave the batch as they come; each
    answer is the one its prompt and seed give alone."""
    model, tokenizer, _ = setup
    prompts = [FRANCE, TWO_BLANKS, NO_MASK, "A [MASK] B [MASK] C [MASK]", "日本的首都是"]
    bodies = completion_bodies(prompts, 64, max_tokens=8, seed=100, top_p=0.9)
    for k, body in enumerate(bodies):
        body["max_tokens"] = 4 + k % 13
        body["n"] = 1 + (k % 3 == 0)
    with local_server(model, tokenizer, max_batch_size=32) as srv:
        report = run_load(srv.url, bodies, concurrency=32)
        stats = srv.scheduler.stats()
    assert not report.errors and len(report.latencies) == 64
    print(f"\n32 clients: {report.summary()}")
    assert stats["peak_rows"] > 8  # they did decode together
    for body, answer in zip(bodies, report.answers):
        for choice in answer["choices"]:
            want = expected_fill(model, tokenizer, body["prompt"], body["max_tokens"],
                            body["seed"] + choice["index"], top_p=0.9)
            assert choice["filled"] == want.answers[0]


class Slow(nn.Module):
    """The model, with a pause before every forward: requests that last."""

    def __init__(self, model, seconds):
        super().__init__()
        self.model, self.config, self.seconds, self.calls = model, model.config, seconds, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        time.sleep(self.seconds)
        return self.model(*args, **kwargs)


def wait_for(condition, seconds=10.0, state=lambda: None):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting; {state()}"
        time.sleep(0.02)


def test_load_report_percentiles_by_hand():
    report = Report([None] * 10, latencies=[0.1 * k for k in range(10, 0, -1)])
    assert report.percentile(50) == pytest.approx(0.5)   # the 5th of 10, nearest rank
    assert report.percentile(99) == pytest.approx(1.0)   # ceil(9.9) = the 10th
    assert Report([], latencies=list(range(1, 101))).percentile(99) == 99


def test_a_client_leaving_mid_stream_frees_its_place(setup):
    model, tokenizer, _ = setup
    with local_server(Slow(model, 0.2), tokenizer, max_batch_size=1) as srv:  # 8 s a request
        port, stats = int(srv.url.rsplit(":", 1)[1]), srv.scheduler.stats
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("POST", "/v1/completions", json.dumps(dict(
            prompt=NO_MASK, max_tokens=40, stream=True, seed=1)),
            {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.readline().startswith(b"data: ")  # generating
        assert stats()["running_rows"] == 1
        response.close()
        conn.close()  # gone, 39 tokens early
        wait_for(lambda: stats()["cancelled"] == 1, state=stats)
        wait_for(lambda: stats()["running_rows"] == 0, state=stats)
        status, answer = request(srv.url, "/v1/completions", dict(prompt=FRANCE, max_tokens=3,
                                                                  seed=2))
        assert status == 200
        want = expected_fill(model, tokenizer, FRANCE, 3, 2)
        assert answer["choices"][0]["filled"] == want.answers[0]

        # a client waiting for a whole answer that hangs up is noticed too
        wait_for(lambda: stats()["running_rows"] == 0, state=stats)  # the last one has left
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("POST", "/v1/completions", json.dumps(dict(  # seed 1 runs 40 tokens
            prompt=NO_MASK, max_tokens=40, seed=1)), {"Content-Type": "application/json"})
        wait_for(lambda: stats()["running_rows"] == 1, state=stats)
        conn.close()
        wait_for(lambda: stats()["cancelled"] == 2, state=stats)
        wait_for(lambda: stats()["running_rows"] == 0, state=stats)


@pytest.mark.slow
def test_timeouts_and_a_full_queue(setup):
    """One forward takes longer than the timeout: the running request and the one queued
    behind it both time out, a third finds the queue full; the server then goes on."""
    model, tokenizer, _ = setup
    slow = Slow(model, 3.0)  # leaves the second request ample time to queue behind it
    with local_server(slow, tokenizer, max_batch_size=1, max_queue=1,
                      request_timeout=1.0) as srv:
        results = {}

        def call(name):
            results[name] = request(srv.url, "/v1/completions", dict(prompt=NO_MASK, seed=1,
                                                                     max_tokens=8))

        threads = [threading.Thread(target=call, args=(name,)) for name in ("running", "waiting")]
        threads[0].start()
        wait_for(lambda: slow.calls == 1)  # in its first forward
        threads[1].start()
        wait_for(lambda: srv.scheduler.stats()["waiting"] == 1)
        status, full = request(srv.url, "/v1/completions", dict(prompt=NO_MASK, max_tokens=8))
        assert status == 503 and "server busy" in full["error"]["message"]
        for t in threads:
            t.join()
        assert results["running"] == (504, results["running"][1])
        assert results["running"][1]["error"]["message"] == "timed out after 1 s"
        assert results["waiting"][0] == 504
        assert results["waiting"][1]["error"]["message"] == ("timed out after 1 s waiting for a "
                                                             "place in the batch")
        slow.seconds = 0.0
        status, answer = request(srv.url, "/v1/completions", dict(prompt=FRANCE, max_tokens=3,
                                                                  seed=2))
        assert status == 200
        wait_for(lambda: srv.scheduler.stats()["running_rows"] == 0)


class Failing(BaseStrategy):
    def forward(self, logits, tokens, last=None, probs=None):
        if tokens.shape[1] > self.fail_at:
            raise RuntimeError("broken strategy")
        return super().forward(logits, tokens, last, probs)


def test_a_failing_request_does_not_disturb_the_others(setup):
    model, tokenizer, _ = setup
    scheduler = Scheduler(DecodeBatch(model), tokenizer, max_batch_size=8)
    worker = threading.Thread(target=scheduler.run)
    worker.start()
    heard = {}
    try:
        requests = []
        for k, text in enumerate([FRANCE, TWO_BLANKS, NO_MASK]):
            prompt = build_prompt(text, tokenizer, 64)
            strategy = (Failing if k == 1 else BaseStrategy)(
                invalid_slices=padding_slices(tokenizer, model.config.vocab_size),
                end_tokens=end_tokens(tokenizer), top_k=0, seed=k)
            strategy.fail_at = len(prompt.tokens) + 4
            choice = Choice(None, 0, prompt, strategy, len(prompt.tokens) + 1 + 10)
            requests.append(Request([choice], lambda kind, payload, k=k: heard.setdefault(
                k, []).append((kind, payload))))
            scheduler.submit(requests[-1])
        wait_for(lambda: all(r.finished for r in requests))
    finally:
        scheduler.stop()
        worker.join()
    assert heard[1][-1] == ("error", (500, "generation failed: broken strategy"))
    for k, text in [(0, FRANCE), (2, NO_MASK)]:
        assert heard[k][-1] == ("done", None)
        filled = requests[k].choices[0].filling.result(tokenizer)
        assert filled.answers == expected_fill(model, tokenizer, text, 10, k).answers


def test_a_blank_left_empty_for_want_of_budget_ends_the_choice_with_length(setup):
    model, tokenizer, _ = setup
    prompt = build_prompt(TWO_BLANKS, tokenizer, 64)
    strategy = BaseStrategy(end_tokens=end_tokens(tokenizer))
    choice = Choice(None, 0, prompt, strategy, len(prompt.tokens) + 1)
    assert choice.next_blank(tokenizer, next(model.parameters()).device)  # the second fits
    assert choice.finish_reason == "length" and choice.blank == 1


# ---- bad requests --------------------------------------------------------------------------

BAD = [  # body (or raw bytes), status, words of the message
    (b"{not json", 400, "invalid JSON"),
    (b"\xff\xfe", 400, "invalid JSON"),
    ([1, 2], 400, "must be a JSON object"),
    ({}, 400, "prompt: Field required"),
    ({"prompt": "x", "frequency_penalty": 1}, 400, "unknown field 'frequency_penalty'"),
    ({"prompt": 5}, 400, "prompt: "),
    ({"prompt": "x", "max_tokens": "8"}, 400, "max_tokens: Input should be a valid integer"),
    ({"prompt": "x", "max_tokens": 0}, 400,
     "max_tokens: Input should be greater than or equal to 1"),
    ({"prompt": "x", "max_tokens": 10 ** 6}, 400, "max_tokens: at most 64"),
    ({"prompt": "x", "temperature": 2.5}, 400,
     "temperature: Input should be less than or equal to 2"),
    ({"prompt": "x", "top_p": -0.1}, 400, "top_p: Input should be greater than or equal to 0"),
    ({"prompt": "x", "top_k": 10 ** 6}, 400, "top_k: must be below the vocabulary size"),
    ({"prompt": "x", "n": 0}, 400, "n: Input should be greater than or equal to 1"),
    ({"prompt": "x", "n": 33}, 400, "needs 33 rows"),
    ({"prompt": "x", "seed": -1}, 400, "seed: "),
    ({"prompt": "x", "stream": "yes"}, 400, "stream: Input should be a valid boolean"),
    ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop: at most 4"),
    ({"prompt": "x", "stop": [""]}, 400, "stop: at most 4 non-empty"),
    ({"prompt": []}, 400, "at least one prompt"),
    ({"prompt": "one two three " * 30}, 400, "prompt: text too long"),
    ({"prompt": "one two three " * 3, "max_tokens": 40}, 400, "exceeds the model's 64"),
    ({"prompt": "x", "model": "gpt-4"}, 404, "model 'gpt-4' is not served here"),
    (b"x" * 3000, 413, "exceeds the limit of 2048"),
]


@pytest.mark.parametrize("body, status, words", BAD, ids=[w for _, _, w in BAD])
def test_bad_completion_requests_get_a_4xx_with_one_clear_line(setup, bad_server, body, status,
                                                                words):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    got, answer = request(bad_server, "/v1/completions", data=data)
    assert got == status and words in answer["error"]["message"], answer
    assert "\n" not in answer["error"]["message"] and "Traceback" not in json.dumps(answer)


@pytest.fixture(scope="module")
def bad_server(setup):
    model, tokenizer, _ = setup
    with local_server(model, tokenizer, model_name="tiny", max_request_bytes=2048) as srv:
        yield srv.url


def test_bad_fill_requests_routes_and_keys(setup, bad_server):
    for body, words in [({"text": "x", "sampling_strategy": "Greedy"}, "sampling_strategy: "),
                        ({"text": "x", "sampling_strategy": "BeamSearchStrategy", "stream": True},
                         "neither stream nor stop"),
                        ({"text": "x", "sampling_strategy": "BeamSearchStrategy", "num_beams": 40},
                         "needs 40 rows"),
                        ({"text": "x", "prompt": "x"}, "unknown field 'prompt'")]:
        status, answer = request(bad_server, "/v1/fill", body)
        assert status == 400 and words in answer["error"]["message"], answer
    assert request(bad_server, "/v1/nothing", {})[0] == 404
    status, answer = request(bad_server, "/v1/completions", method="GET")
    assert status == 405 and answer["error"]["message"]
    model, tokenizer, _ = setup
    with local_server(model, tokenizer, api_key="sesame") as srv:
        body = dict(prompt=FRANCE, max_tokens=2)
        for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "sesame"}]:
            status, answer = request(srv.url, "/v1/completions", body, headers)
            assert status == 401 and "API key" in answer["error"]["message"]
        assert request(srv.url, "/v1/models")[0] == 401
        assert request(srv.url, "/health")[0] == 200  # for load balancers
        key = {"Authorization": "Bearer sesame"}
        assert request(srv.url, "/v1/completions", body, key)[0] == 200


# ---- the command, tensor parallel ----------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_tp2_server_under_torchrun_answers_as_one_process(setup, tmp_path):
    model, tokenizer, args = setup
    load = args.index("--load") + 1
    assert subprocess.run([sys.executable, "-m", "glm130b.checkpoint.convert_tp",
                           "--input-folder", args[load], "--output-folder", str(tmp_path / "tp2"),
                           "--target-tp", "2"], capture_output=True).returncode == 0
    args = args[:load] + [str(tmp_path / "tp2")] + args[load + 1:]
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node", "2", "-m", "glm130b.serve", *args,
                             "--model-parallel-size", "2", "--port", str(port),
                             "--model-name", "tiny-tp2"],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # its signals stay its own
    url = f"http://127.0.0.1:{port}"
    try:
        def up():
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            try:
                return request(url, "/health")[0] == 200
            except OSError:
                return False
        wait_for(up, 180)
        bodies = [dict(prompt=t, seed=5, max_tokens=8, top_p=0.7) for t in (FRANCE, TWO_BLANKS)]
        report = run_load(url, bodies * 2, concurrency=4)
        assert not report.errors, report.errors
        for body, answer in zip(bodies * 2, report.answers):
            want = expected_fill(model, tokenizer, body["prompt"], 8, 5, top_p=0.7)
            assert answer["choices"][0]["filled"] == want.answers[0]
    finally:
        proc.send_signal(signal.SIGTERM)  # as a cluster's scheduler stops a job
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
    # rank 0 finished serving and told rank 1 to stop: neither failed
    assert "Application shutdown complete" in out and "[rank" not in out, out[-3000:]


def test_a_blank_ends_at_eod_and_no_text_holds_part_of_a_character(setup):
    from helpers import Emitting, Favouring, byte_pieces
    model, tokenizer, _ = setup
    eod = tokenizer.get_command("eod")
    with local_server(Favouring(model, eod), tokenizer) as srv:
        status, answer = request(srv.url, "/v1/completions",
                                 dict(prompt="Two plus three is", max_tokens=8, temperature=0))
    assert status == 200 and answer["choices"][0]["text"] == ""
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] == 1  # eod, and nothing after it
    red, dragon = tokenizer.tokenize("red"), byte_pieces(tokenizer)
    emitting = Emitting(red + dragon[:1] + [eod], tokenizer.num_tokens)
    with local_server(emitting, tokenizer) as srv:
        chunks = events(srv.url, "/v1/completions",
                        dict(prompt="Two plus three is", max_tokens=8, temperature=0))
    texts = [c["choices"][0]["text"] for c in chunks[:-1]]
    assert "".join(texts) == "red" and "\ufffd" not in "".join(texts)
    final = chunks[-1]["choices"][0]
    assert final["blanks"] == ["red"] and "\ufffd" not in final["filled"]
