"""Scored completions (`echo`, `logprobs`) against the model's own log-softmax and the
evaluator's multiple-choice score; the requests lm-evaluation-harness's `local-completions`
makes, replayed and parsed as it parses them; the `openai` client; token-id prompts,
max_tokens 0, /v1/models/{id}, stream_options and usage under a stop string."""

import pytest
import torch

from glm130b.evaluation.datasets import build_multiple_choice_sample
from glm130b.evaluation.inference import choice_log_probs
from glm130b.model import AttentionMask
from glm130b.serving import local_server
from helpers import events, request, tiny_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
CONTEXT, CHOICE = "The capital of France is", " Paris."


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("logprobs"))


@pytest.fixture(scope="module")
def server(setup):
    model, tokenizer, _ = setup
    with local_server(model, tokenizer, model_name="tiny") as srv:
        yield srv


def scored_by_hand(model, tokenizer, context, fill):
    sop = tokenizer.get_command("sop")
    tokens = torch.tensor([context + [sop] + fill])
    mask = AttentionMask(torch.arange(tokens.shape[1]).unsqueeze(0) < len(context))
    with torch.no_grad():
        logits = model(tokens, torch.arange(tokens.shape[1]).unsqueeze(0), mask)[0]
    rows = logits[len(context):len(context) + len(fill)].float().log_softmax(-1)
    return [float(rows[i, t]) for i, t in enumerate(fill)], logits[-1].float().log_softmax(-1)


def test_echo_logprobs_are_the_log_softmax_and_the_evaluators_choice_score(setup, server):
    model, tokenizer, _ = setup
    gmask = tokenizer.get_command("[gMASK]")
    context, fill = tokenizer.tokenize(CONTEXT) + [gmask], tokenizer.tokenize(CHOICE)
    status, answer = request(server.url, "/v1/completions",
                          dict(prompt=CONTEXT + "[gMASK]" + CHOICE, echo=True, logprobs=1,
                               max_tokens=1, temperature=0))
    assert status == 200
    lp = answer["choices"][0]["logprobs"]
    assert len(lp["token_logprobs"]) == len(context) + len(fill) + 1
    assert lp["token_logprobs"][:len(context)] == [None] * len(context)
    want, last = scored_by_hand(model, tokenizer, context, fill)
    got = lp["token_logprobs"][len(context):-1]
    assert got == pytest.approx(want, abs=1e-4)
    assert lp["token_logprobs"][-1] == pytest.approx(float(last.max()), abs=1e-4)  # greedy
    assert all(top for top in lp["top_logprobs"][len(context):])
    sample = build_multiple_choice_sample(context[:-1], [fill], False, gmask,
                                          tokenizer.get_command("sop"), use_task_mask=True)
    [[score]] = choice_log_probs(model, [sample])
    assert sum(got) == pytest.approx(score, abs=1e-4)
    text = answer["choices"][0]["text"]
    assert [text[o:o + len(t)] for o, t in zip(lp["text_offset"], lp["tokens"])] == lp["tokens"]

    # without a mask: a [gMASK] fill from nothing, the first token null
    status, answer = request(server.url, "/v1/completions",
                          dict(prompt=CONTEXT, echo=True, logprobs=0, max_tokens=0))
    ids = tokenizer.tokenize(CONTEXT)
    want, _ = scored_by_hand(model, tokenizer, [gmask], ids)
    lp = answer["choices"][0]["logprobs"]
    assert lp["token_logprobs"][0] is None
    assert lp["token_logprobs"][1:] == pytest.approx(want[1:], abs=1e-4)
    assert answer["usage"] == dict(prompt_tokens=len(ids), completion_tokens=0,
                                   total_tokens=len(ids))


def test_lm_evaluation_harness_local_completions_requests(setup, server):
    """The calls of lm_eval's RemoteTokenizer and LocalCompletionsAPI (0.4.x), parsed as
    `parse_logprobs` and `parse_generations` parse them."""
    model, tokenizer, _ = setup
    base = server.url  # lm-eval strips /v1/completions off base_url for the tokenizer
    status, info = request(base, "/tokenizer_info")
    assert status == 200 and info["eos_token"] and info["max_model_len"] == 64

    def encode(text):
        status, out = request(base, "/tokenize", {"prompt": text, "add_special_tokens": False})
        assert status == 200 and out["count"] == len(out["tokens"])
        return out["tokens"]

    assert encode(info["eos_token"])[0] == tokenizer.get_command("eos")
    assert encode(info["bos_token"]) == [tokenizer.get_command("[gMASK]")]
    assert encode("") == []
    context = CONTEXT + "[gMASK]"
    whole, context_enc = encode(context + CHOICE), encode(context)
    assert whole[:len(context_enc)] == context_enc
    continuation_enc = whole[len(context_enc):]
    assert continuation_enc == tokenizer.tokenize(CHOICE)
    assert request(base, "/detokenize", {"tokens": whole})[1]["prompt"].startswith(context)

    # loglikelihood: batch_size 1, the prompt as a list of token lists
    inputs = [context_enc + continuation_enc]
    status, out = request(base, "/v1/completions", {
        "model": "tiny", "prompt": inputs, "temperature": 0, "max_tokens": 1, "logprobs": 1,
        "seed": 1234, "echo": True})
    assert status == 200
    [choice] = sorted(out["choices"], key=lambda c: c["index"])
    ctxlen = len(context_enc)
    logprob = sum(choice["logprobs"]["token_logprobs"][ctxlen:-1])
    lp = choice["logprobs"]
    is_greedy = all(tok == max(top.values()) for tok, top in zip(
        lp["token_logprobs"][ctxlen:-1], lp["top_logprobs"][ctxlen:-1]))
    gmask, sop = tokenizer.get_command("[gMASK]"), tokenizer.get_command("sop")
    sample = build_multiple_choice_sample(context_enc[:-1], [continuation_enc], False, gmask, sop,
                                          use_task_mask=True)
    assert logprob == pytest.approx(choice_log_probs(model, [sample])[0][0], abs=1e-4)
    assert isinstance(is_greedy, bool)

    # an empty context: lm-eval's prefix token (bos, here [gMASK]) then the continuation
    status, out = request(base, "/v1/completions", {
        "model": "tiny", "prompt": [[gmask] + continuation_enc], "temperature": 0,
        "max_tokens": 1, "logprobs": 1, "seed": 1234, "echo": True})
    assert status == 200
    assert len(out["choices"][0]["logprobs"]["token_logprobs"]) == len(continuation_enc) + 2

    # generate_until: token ids, greedy, the task's `until` and the eos string as stops
    status, out = request(base, "/v1/completions", {
        "prompt": [encode(context)], "model": "tiny", "max_tokens": 8, "temperature": 0,
        "stop": ["\n\n", info["eos_token"]], "seed": 1234})
    assert status == 200
    texts = [None] * len(out["choices"])
    for c in out["choices"]:
        texts[c["index"]] = c["text"]
    assert isinstance(texts[0], str)


def test_the_openai_client(setup, server):
    openai = pytest.importorskip("openai")
    model, tokenizer, _ = setup
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    prompt = CONTEXT + "[gMASK]" + CHOICE
    scored = client.completions.create(model="tiny", prompt=prompt, echo=True, logprobs=1,
                                       max_tokens=0)
    lp = scored.choices[0].logprobs
    # the prompt as the tokenizer decodes it (a piece after a mask loses its leading space)
    assert scored.choices[0].text == "".join(lp.tokens)
    assert scored.choices[0].text.startswith(CONTEXT + "[gMASK]")
    one = client.completions.create(model="tiny", prompt=prompt, echo=True, logprobs=1,
                                    max_tokens=1, temperature=0)
    assert one.choices[0].logprobs.token_logprobs[:-1] == lp.token_logprobs
    assert len(one.choices[0].logprobs.tokens) == len(lp.tokens) + 1
    assert one.usage.completion_tokens == 1
    assert client.models.retrieve("tiny").id == "tiny"


def test_max_tokens_0_token_ids_models_stream_usage_and_stops(setup, server):
    model, tokenizer, _ = setup
    ids = tokenizer.tokenize(CONTEXT)
    path = "/v1/completions"
    status, by_text = request(server.url, path, dict(prompt=CONTEXT, seed=5, max_tokens=6))
    status, by_ids = request(server.url, path, dict(prompt=[ids], seed=5, max_tokens=6))
    assert status == 200 and by_ids["choices"][0]["text"] == by_text["choices"][0]["text"]
    assert request(server.url, "/v1/completions", dict(prompt=CONTEXT, max_tokens=0))[0] == 400
    status, zero = request(server.url, "/v1/completions", dict(prompt=ids, echo=True, max_tokens=0))
    assert status == 200 and zero["choices"][0]["logprobs"] is None
    assert zero["usage"]["completion_tokens"] == 0
    assert request(server.url, path, dict(prompt=[1] * 70, echo=True, max_tokens=0))[0] == 400
    assert request(server.url, "/v1/completions", dict(prompt=[10 ** 6], echo=True))[0] == 400

    assert request(server.url, "/v1/models/tiny")[1]["id"] == "tiny"
    assert request(server.url, "/v1/models/other")[0] == 404

    chunks = events(server.url, "/v1/completions", dict(
        prompt=CONTEXT, seed=5, max_tokens=6, stream_options={"include_usage": True}))
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] >= 1
    assert all(c["usage"] is None for c in chunks[:-1])

    # usage counts what was generated, also the token a stop string cut
    text = by_text["choices"][0]["text"]
    stop = text[1:3] if len(text) > 2 else text[-1:]
    status, stopped = request(server.url, "/v1/completions",
                              dict(prompt=CONTEXT, seed=5, max_tokens=6, stop=[stop]))
    assert stopped["choices"][0]["text"] == text[:text.index(stop)]
    assert stopped["usage"]["completion_tokens"] >= 1
