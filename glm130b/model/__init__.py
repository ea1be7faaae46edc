"""The GLM-130B transformer."""
from .attention import KVCache
from .glm import GLM
from .masks import AttentionMask, multiple_choice_mask, position_ids
