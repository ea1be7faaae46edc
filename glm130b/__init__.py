"""glm130b: GLM-130B in PyTorch — model, data, training, evaluation, generation.

From a notebook:

    from glm130b import GLM, GLMConfig, load_checkpoint
    model = GLM(GLMConfig.from_preset("glm-tiny")).eval()
    load_checkpoint(model, "checkpoints/glm-tiny")      # the folder holding `latest`
    logits = model(input_ids, position_ids=pos, attention_mask=mask)

Build large models under `torch.device("meta")`; loading then takes the checkpoint's tensors
without a second copy.
"""
import importlib

__version__ = "0.1.0"

# Resolved on first use, so that `python -m glm130b.<tool>` for tools that need no torch
# (corpus generation, tokenizer training) starts without importing it.
_EXPORTS = {
    "GLM": "glm130b.model", "AttentionMask": "glm130b.model", "KVCache": "glm130b.model",
    "GLMConfig": "glm130b.config", "PRESETS": "glm130b.config",
    "load_checkpoint": "glm130b.checkpoint", "save_checkpoint": "glm130b.checkpoint",
    "CheckpointError": "glm130b.errors", "get_tokenizer": "glm130b.tokenization",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'glm130b' has no attribute {name!r}")
