"""What several test modules share: a small tokenizer and lively models made here, a tiny
checkpoint in the reference layout, the answer `fill_blanks` gives for one prompt, and tiny
training runs started as users start them."""
import json
import os
import subprocess
import urllib.error
import urllib.request
import sys
from pathlib import Path

import torch

from glm130b import GLM, GLMConfig, save_checkpoint
from glm130b.generation import BaseStrategy, build_prompt, end_tokens, fill_blanks, padding_slices
from glm130b.parallel import shard
from glm130b.tokenization import SentencePieceTokenizer
from glm130b.tokenization.train import train_tokenizer

FRANCE = "The capital of France is [MASK]."
TWO_BLANKS = "法国的首都是[MASK]。二加三等于[MASK]。"
NO_MASK = "Two plus three is"

SENTENCES = ["The capital of France is Paris.", "The capital of Japan is Tokyo.",
             "Two plus three is five.", "Red and blue are colours.", "A cat sat on a mat.",
             "法国的首都是巴黎。", "日本的首都是东京。", "二加三等于五。", "今天是星期几？"]


def make_tokenizer(folder) -> SentencePieceTokenizer:
    """A small sentencepiece model trained here, as tests/test_tokenization.py makes one."""
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(" ".join(SENTENCES[(i * 7 + j) % len(SENTENCES)]
                                         for j in range(3)) for i in range(200)) + "\n",
                      encoding="utf-8")
    return SentencePieceTokenizer(train_tokenizer([corpus], folder / "tok", vocab_size=400))


def lively_model(vocab_size=128, seed=0, max_sequence_length=64) -> GLM:
    """A small GLM whose greedy continuations vary with the context. At the usual init the
    DeepNorm residual dominates and an untrained model repeats its last token, which would let
    a padding bug pass unseen."""
    torch.manual_seed(seed)
    model = GLM(GLMConfig(num_layers=2, hidden_size=64, num_attention_heads=4,
                          inner_hidden_size=128, vocab_size=vocab_size,
                          max_sequence_length=max_sequence_length,
                          hidden_dropout=0.0, attention_dropout=0.0)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model


def copy_into_shards(model, single):
    """Give a tensor-parallel `model` the numbers of the single-process `single`, split."""
    full = dict(single.named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            piece = full[name]
            if getattr(p, "tensor_model_parallel", False):
                piece = shard(piece, p.partition_dim, p.partition_stride)
            p.copy_(piece)


CONTEXTS = [[5, 6, 7, 8, 121, 124],                         # text [gMASK] sop
            [9, 10, 121, 124],                              # shorter, [gMASK]
            [11, 12, 13, 120, 15, 16, 17, 18, 2, 124],      # text [MASK] text eos sop
            [30, 120, 31, 2, 124]]                          # [MASK] at index 1
MASK_POSITIONS = [None, None, 3, 1]


def tiny_checkpoint(folder):
    """A lively tiny model saved in the reference layout, its tokenizer, and the model
    arguments that load them."""
    tokenizer = make_tokenizer(folder)
    # padded past the tokenizer, to a size that splits over tensor-parallel ranks
    model = lively_model(vocab_size=-(-(tokenizer.num_tokens + 4) // 8) * 8)
    save_checkpoint(model, folder / "ckpt", iteration=1)
    c = model.config
    args = ["--num-layers", c.num_layers, "--hidden-size", c.hidden_size,
            "--num-attention-heads", c.num_attention_heads,
            "--inner-hidden-size", c.inner_hidden_size, "--vocab-size", c.vocab_size,
            "--max-sequence-length", c.max_sequence_length,
            "--tokenizer-type", "sentencepiece", "--tokenizer-model", folder / "tok.model",
            "--load", folder / "ckpt"]
    return model, tokenizer, [str(a) for a in args]


def expected_fill(model, tokenizer, text, max_tokens, seed, **options):
    """What fill_blanks gives for the prompt alone: generate.py's strategy, this seed."""
    options = dict(dict(top_k=0, top_p=0.0, temperature=1.0), **options)
    strategy = BaseStrategy(invalid_slices=padding_slices(tokenizer, model.config.vocab_size),
                            end_tokens=end_tokens(tokenizer), seed=seed, **options)
    prompt = build_prompt(text, tokenizer, model.config.max_sequence_length)
    return fill_blanks(model, tokenizer, [prompt], strategy, len(prompt.tokens) + 1 + max_tokens)[0]


def expected_fills(model, tokenizer, texts, strategy_class, **kw):
    """What `python -m glm130b.generate --seed 1234 --out-seq-length 40` fills for `texts`."""
    strategy = strategy_class(end_tokens=end_tokens(tokenizer), seed=1234,
                              invalid_slices=[slice(tokenizer.num_tokens, None)], **kw)
    prompts = [build_prompt(t, tokenizer, 64) for t in texts]
    return fill_blanks(model, tokenizer, prompts, strategy, out_seq_length=40)


# -- training runs as users run them (subprocesses, gloo on CPU), shared by the training tests

REPO = Path(__file__).resolve().parents[1]
TRAIN_ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
TRAIN_MODEL = dict(num_layers=2, hidden_size=64, num_attention_heads=4, inner_hidden_size=170,
                   vocab_size=1024, max_sequence_length=64, hidden_dropout=0.0,
                   attention_dropout=0.0)


def make_training_data(folder, tok_model):
    """(tokenizer model, token-file prefix) of the corpus the tokenizer was trained on."""
    from glm130b.data.preprocess import preprocess
    corpus = Path(tok_model).parent / "corpus.jsonl"
    preprocess([str(corpus)], str(folder / "text"), "sentencepiece", tok_model, workers=1)
    return tok_model, str(folder / "text")


def train_args(data, **overrides) -> list[str]:
    """glm130b.pretrain's arguments for a tiny run on `data`; keyword arguments are flags."""
    tok, prefix = data
    values = {**TRAIN_MODEL, "tokenizer_type": "sentencepiece", "tokenizer_model": tok,
              "data_path": prefix, "seq_length": 64, "length_per_sample": 60,
              "aggregated_samples_per_sequence": 2, "micro_batch_size": 2,
              "global_batch_size": 8, "train_iters": 4, "lr": 3e-3, "log_interval": 1,
              "zero_stage": 1, "clip_grad": 0.5, **overrides}
    argv = []
    for key, value in values.items():
        if value is None or value is False:
            continue
        argv.append("--" + key.replace("_", "-"))
        if value is not True:
            argv += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    return argv


def pretrain(argv, procs=1, check=True, module="glm130b.pretrain", **kw):
    """Run the trainer (under torchrun for several processes); `module` may be the fault
    injector, `python -m glm130b.tools.fault_drill inject ... --`."""
    launcher = (["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
                if procs > 1 else [])
    module = module.split()
    out = subprocess.run([sys.executable, *launcher, "-m", *module, *argv],
                         env=TRAIN_ENV, capture_output=True, text=True, timeout=240, **kw)
    if check:
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def losses(log) -> dict[int, float]:
    """iteration -> loss; a step logged again after a resume keeps its last value."""
    steps = {}
    for line in Path(log).read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            steps[record["iteration"]] = record["loss"]
    return steps


def logged_iterations(log) -> list[int]:
    """Every iteration with a loss in the log, in order, repeats included."""
    return [r["iteration"] for r in map(json.loads, Path(log).read_text().splitlines())
            if "loss" in r]


class Favouring(torch.nn.Module):
    """`model` with all its mass on `token` (e.g. `eod`, which models trained here emit where
    a document ends): whatever the context, `token` comes next."""

    def __init__(self, model, token: int):
        super().__init__()
        self.model, self.token, self.config = model, token, model.config
        self.calls = 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        logits = self.model(*args, **kwargs)
        logits[..., self.token] = logits.max() + 100.0
        return logits


def grow_cache(kv_cache, b: int, s: int) -> int:
    """For a scripted stand-in of the model: grow the cache by `s` positions, as a layer would,
    and return how many it held before (the decode batch reads the length from it)."""
    past = len(kv_cache)
    kv_cache.update(0, torch.zeros(b, 1, s, 1), torch.zeros(b, 1, s, 1))
    return past


class Emitting(torch.nn.Module):
    """A model that emits `tokens`, one per step after whatever context (one prompt at a
    time), then its last one again; with a GLM's `config`, so that it can be served."""

    def __init__(self, tokens, vocab_size: int, max_sequence_length: int = 64):
        super().__init__()
        self.tokens, self.width = list(tokens), 0
        self.config = GLMConfig(num_layers=1, hidden_size=8, num_attention_heads=1,
                                inner_hidden_size=16, vocab_size=vocab_size,
                                max_sequence_length=max_sequence_length)

    def forward(self, input_ids, position_ids=None, attention_mask=None, kv_cache=None,
                parallel_output=False):
        b, s = input_ids.shape
        past = grow_cache(kv_cache, b, s)
        if past == 0:
            self.width = s
        logits = torch.zeros(b, s, self.config.vocab_size)
        logits[:, -1, self.tokens[min(past + s - self.width, len(self.tokens) - 1)]] = 10.0
        return logits


def byte_pieces(tokenizer, char: str = "龍") -> list[int]:
    """The ids of a character outside the vocabulary: its UTF-8 bytes as byte pieces."""
    ids = tokenizer.tokenize(char)
    assert len(ids) == len(char.encode()) and tokenizer.incomplete_tail(ids[:1]) == 1
    return ids


# ---- talking to a server ----------------------------------------------------------------

def request(url, path, body=None, headers=None, data=None, method=None):
    """(status, parsed JSON) of one call; `data` sends raw bytes instead of `body`."""
    if data is None and body is not None:
        data = json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def events(url, path, body):
    """The server-sent events of a streamed call, parsed, up to [DONE]."""
    req = urllib.request.Request(url + path, data=json.dumps(dict(body, stream=True)).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        blocks = r.read().decode().split("\n\n")
    assert blocks[-2:] == ["data: [DONE]", ""]
    return [json.loads(b[len("data: "):]) for b in blocks[:-2]]
