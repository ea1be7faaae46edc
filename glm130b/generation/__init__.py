"""Generation: decoding strategies and [MASK]/[sMASK]/[gMASK] blank filling (reference §6)."""
from .batch import DecodeBatch, pad_left
from .filling import (Filled, Filling, Prompt, PromptError, batch_filling_sequence, build_prompt,
                      end_tokens, fill_blanks, padding_slices)
from .strategies import BaseStrategy, BeamSearchStrategy, top_k_top_p_filter
