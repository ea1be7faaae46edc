"""Generation: decoding strategies and [MASK]/[sMASK]/[gMASK] blank filling (reference §6)."""
from .batch import DecodeBatch, pad_left
from .filling import (Filled, Filling, Prompt, Shown, batch_filling_sequence, blank_ids,
                      build_prompt, fill_blanks, settled)
from .strategies import (BaseStrategy, BeamSearchStrategy, SamplingConfig, build_strategy,
                         end_tokens, padding_slices, top_k_top_p_filter)
