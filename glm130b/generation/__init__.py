"""Generation: decoding strategies and [MASK]/[sMASK]/[gMASK] blank filling (reference §6)."""
from .batch import DecodeBatch, pad_left
from .filling import Filled, Filling, Prompt, batch_filling_sequence, build_prompt, fill_blanks
from .strategies import (BaseStrategy, BeamSearchStrategy, SamplingConfig, build_strategy,
                         end_tokens, padding_slices, top_k_top_p_filter)
