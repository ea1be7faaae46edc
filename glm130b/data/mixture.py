"""Which sample comes k-th: datasets and objectives mixed as GLM-130B's pretraining mixes them
(reference §8.3: 95% self-supervised, of which 70% [gMASK] / 30% [MASK]; 5% instruction data).

Sample k is a pure function of (seed, k): a generator seeded from that pair picks the dataset,
the record (with replacement, as the reference's RandomMappingDataset does), the objective and
every random choice inside it. A run that has consumed k samples resumes at sample k without
replaying anything, and data-parallel ranks can each compute their own share.
"""
from __future__ import annotations

import argparse
import bisect
import itertools
from dataclasses import dataclass, field
from typing import Iterator, Optional, Sequence, Union

import numpy as np

from glm130b.data.indexed import DocumentSubset, IndexedDataset, TokenSamples
from glm130b.errors import TokenFileError
from glm130b.data.infilling import Infilling, InfillingConfig, Sample

INSTRUCTION_KEYS = ("input", "target")
PARTS = ("train", "valid", "test")  # preprocess with --json-keys input target
OBJECTIVES = ("gmask", "mask", "smask")


class InstructionPairs:
    """(input ids, target ids) records from PREFIX.input and PREFIX.target token files."""

    def __init__(self, prefix: str):
        self.inputs, self.targets = (IndexedDataset(f"{prefix}.{k}") for k in INSTRUCTION_KEYS)
        if len(self.inputs) != len(self.targets):
            raise TokenFileError(f"{prefix}: {len(self.inputs)} inputs but "
                                 f"{len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.inputs[i], self.targets[i]


Dataset = Union[TokenSamples, InstructionPairs]


@dataclass
class Source:
    name: str
    dataset: Dataset
    weight: float


class MixtureSampler:
    """`sampler[k]` is sample k; `sampler.samples(start)` yields samples start, start+1, ..."""

    def __init__(self, sources: list[Source], infilling: Infilling, seed: int = 1234,
                 gpt_prob: float = 0.7, sent_prob: float = 0.0):
        sources = [s for s in sources if s.weight > 0]
        if not sources:
            raise ValueError("no data source with a positive weight")
        for s in sources:
            if len(s.dataset) == 0:
                raise ValueError(f"{s.name} holds no sample (fewer tokens than one "
                                 "length_per_sample?)")
        bert_prob = 1.0 - gpt_prob - sent_prob
        if min(gpt_prob, sent_prob, bert_prob) < 0:
            raise ValueError(f"objective probabilities gpt {gpt_prob} + sent {sent_prob} "
                             "exceed 1")
        self.sources, self.infilling, self.seed = sources, infilling, seed
        self._source_cdf = _cdf([s.weight for s in sources])
        self._objective_cdf = _cdf([gpt_prob, bert_prob, sent_prob])

    def generator(self, k: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, k])

    def __getitem__(self, k: int) -> Sample:
        return self.sample(k)

    def sample(self, k: int, objective: str | None = None) -> Sample:
        """Sample k; `objective` forces one ("gmask", "mask", "smask" or "mip") for inspection."""
        if k < 0:
            raise IndexError(f"sample index must be >= 0, got {k}")
        rng = self.generator(k)
        sources, cdf = self.sources, self._source_cdf
        if objective is not None:
            mip = objective == "mip"
            sources = [s for s in sources if isinstance(s.dataset, InstructionPairs) == mip]
            if not sources:
                raise ValueError(f"no {'instruction' if mip else 'text'} data for {objective}")
            cdf = _cdf([s.weight for s in sources])
        data = sources[_pick(rng, cdf)].dataset
        if isinstance(data, InstructionPairs):
            chunks = self.infilling.config.aggregated_samples_per_sequence
            return self.infilling.instruction([data[int(i)]
                                               for i in rng.integers(len(data), size=chunks)])
        tokens = data[int(rng.integers(len(data)))]
        # Drawn even when forced, so that forcing the objective a sample has anyway keeps it.
        drawn = OBJECTIVES[_pick(rng, self._objective_cdf)]
        return getattr(self.infilling, objective or drawn)(tokens, rng)

    def samples(self, start: int = 0) -> Iterator[Sample]:
        return (self[k] for k in itertools.count(start))


def _cdf(weights) -> list[float]:
    total = float(sum(weights))
    return [c / total for c in itertools.accumulate(weights)]


def _pick(rng: np.random.Generator, cdf: list[float]) -> int:
    return min(bisect.bisect_right(cdf, rng.random()), len(cdf) - 1)


@dataclass
class DataConfig:
    """What the mixture is made of, under `add_data_args`' names. The seed is not here: one
    seed drives a run's initialisation and its data order alike, so `build_mixture` takes it
    from the run."""
    data_path: Sequence[str]  # PREFIX ... or WEIGHT PREFIX pairs, as `parse_data_path` reads
    multitask_data_path: Sequence[str] = field(default_factory=list)
    multitask_ratio: float = 0.05  # of instruction samples, when there is instruction data
    gpt_prob: float = 0.7          # [gMASK] share of text samples
    sent_prob: float = 0.0         # [sMASK] share; [MASK] gets the rest
    infilling: InfillingConfig = field(default_factory=InfillingConfig)
    split: Optional[str] = None    # "TRAIN,VALID,TEST" weights over documents; None: all train


def parse_split(split: Optional[str]) -> tuple[float, float, float]:
    """Megatron's --split: "949,50,1" (or "0.9/0.1"), the train, valid and test weights;
    missing ones are 0."""
    if not split:
        return 1.0, 0.0, 0.0
    try:
        weights = [float(w) for w in split.replace("/", ",").split(",")]
    except ValueError:
        weights = []
    if not 1 <= len(weights) <= 3 or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"--split takes up to three weights >= 0 such as 949,50,1, got {split!r}")
    weights += [0.0] * (3 - len(weights))
    return weights[0], weights[1], weights[2]


def split_documents(count: int, split: Optional[str], seed: int) -> dict[str, np.ndarray]:
    """Each part's documents (ascending): the documents shuffled by `seed`, then cut in
    proportion to the weights, so a document goes wholly to one part, the same every run."""
    weights = np.array(parse_split(split))
    bounds = np.round(np.cumsum(weights) / weights.sum() * count).astype(np.int64)
    order = np.random.default_rng([seed, count, 0x5B117]).permutation(count)
    cuts = np.split(order, bounds[:2])
    return {part: np.sort(docs) for part, docs in zip(PARTS, cuts)}


def text_part(prefix: str, config: DataConfig, seed: int, part: str):
    """`part`'s documents of the token files at `prefix`; without held-out parts the files
    themselves, so that a run without --split reads exactly what it always read."""
    data = IndexedDataset(prefix)
    if part == "train" and parse_split(config.split)[1:] == (0.0, 0.0):
        return data
    return DocumentSubset(data, split_documents(len(data), config.split, seed)[part])


def build_mixture(config: DataConfig, tokenizer, seed: int, part: str = "train") -> MixtureSampler:
    """The sampler of `config`'s data: text sources weighted as given (else by size), the
    instruction data sharing `multitask_ratio` by size. `part` "valid" or "test": the
    held-out documents of the text (instruction data trains only, and weights count sizes
    within the part)."""
    text = [(w, p, TokenSamples(text_part(p, config, seed, part),
                                config.infilling.length_per_sample))
            for w, p in parse_data_path(config.data_path)]
    instructions = [(p, InstructionPairs(p)) for p in config.multitask_data_path
                    if part == "train"]
    ratio = config.multitask_ratio if instructions else 0.0
    sources = _shares([(p, d, w if w is not None else len(d)) for w, p, d in text], 1 - ratio)
    sources += _shares([(p, d, len(d)) for p, d in instructions], ratio)
    return MixtureSampler(sources, Infilling(tokenizer, config.infilling), seed, config.gpt_prob,
                          config.sent_prob)


def _shares(items, total: float) -> list[Source]:
    weight_sum = sum(w for _, _, w in items) or 1.0
    return [Source(name, data, total * w / weight_sum) for name, data, w in items]


# ---- command line ---------------------------------------------------------------------------

def add_data_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The data arguments under the reference's names (LargeScale's GLM-130B run): a
    `DataConfig`, its `infilling` fields among the rest."""
    g = parser.add_argument_group("data")
    g.add_argument("--data-path", nargs="+", required=True, metavar="[WEIGHT] PREFIX",
                   help="token files from glm130b.data.preprocess; several as WEIGHT PREFIX "
                        "pairs (without weights: in proportion to their sizes)")
    g.add_argument("--multitask-data-path", nargs="+", default=[], metavar="PREFIX",
                   help="instruction data (PREFIX.input/.target, from --json-keys input target)")
    g.add_argument("--multitask-ratio", type=float, default=0.05,
                   help="share of instruction samples when --multitask-data-path is given")
    g.add_argument("--gpt-prob", type=float, default=0.7, help="[gMASK] share of text samples")
    g.add_argument("--sent-prob", type=float, default=0.0, help="[sMASK] share; [MASK] gets "
                   "the rest")
    g.add_argument("--split", help="train,valid,test weights over the documents of "
                   "--data-path, e.g. 949,50,1 (Megatron's); default: all for training")
    defaults = InfillingConfig()
    for name in ("seq_length", "length_per_sample", "aggregated_samples_per_sequence",
                 "mask_prob", "average_block_length", "single_span_prob", "short_seq_prob",
                 "min_gmask_ratio"):
        value = getattr(defaults, name)
        g.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    return parser


def parse_data_path(items: list[str]) -> list[tuple[float | None, str]]:
    """["a"] or ["0.3", "a", "0.7", "b"] -> [(weight or None, prefix)]."""
    def is_number(s):
        try:
            float(s)
            return True
        except ValueError:
            return False
    if not any(is_number(s) for s in items):
        return [(None, p) for p in items]
    if len(items) % 2 or not all(is_number(w) for w in items[::2]):
        raise ValueError(f"--data-path takes PREFIX ... or WEIGHT PREFIX pairs, got {items}")
    return [(float(w), p) for w, p in zip(items[::2], items[1::2])]

