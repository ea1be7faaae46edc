"""Cross entropy over logits split by vocabulary across the tensor-parallel group.

Gathering [b, s, 150528] logits to one rank would cost more memory than the model's largest
activation; instead each rank reduces its slice to three numbers per token (max, sum of
exponentials, the target's logit when it owns the target) and the group all-reduces those.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from .state import (get_tensor_model_parallel_group, get_tensor_model_parallel_rank,
                    get_tensor_model_parallel_world_size)


def _all_reduce(x: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
    if get_tensor_model_parallel_world_size() > 1:
        dist.all_reduce(x, op=op, group=get_tensor_model_parallel_group())
    return x


class _VocabParallelCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, target, ignore_index):
        local, logits_dtype = logits.shape[-1], logits.dtype
        start = get_tensor_model_parallel_rank() * local
        logits = logits.float()
        # Subtracting the global max keeps exp() finite; it cancels in the loss.
        logits = logits - _all_reduce(logits.max(dim=-1, keepdim=True)[0], dist.ReduceOp.MAX)

        ignored = target == ignore_index
        owned = (target >= start) & (target < start + local) & ~ignored
        local_target = torch.where(owned, target - start, torch.zeros_like(target))
        target_logit = logits.gather(-1, local_target.unsqueeze(-1)).squeeze(-1)
        target_logit = _all_reduce(target_logit * owned)

        exp = logits.exp_()
        sum_exp = _all_reduce(exp.sum(dim=-1))
        loss = (sum_exp.log() - target_logit).masked_fill(ignored, 0.0)

        ctx.save_for_backward(exp.div_(sum_exp.unsqueeze(-1)), owned, local_target, ignored)
        ctx.input_dtype = logits_dtype
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        softmax, owned, local_target, ignored = ctx.saved_tensors
        grad = softmax
        grad.scatter_add_(-1, local_target.unsqueeze(-1), -owned.unsqueeze(-1).to(grad.dtype))
        grad.mul_((grad_loss * ~ignored).unsqueeze(-1))
        return grad.to(ctx.input_dtype), None, None


def vocab_parallel_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                                 ignore_index: int = -100) -> torch.Tensor:
    """Per-token loss (float32, shape of `target`) from this rank's vocabulary slice of the
    logits (`GLM(..., parallel_output=True)`); equals `F.cross_entropy(gathered, target,
    reduction="none")`. Tokens equal to `ignore_index` get loss 0 and no gradient."""
    return _VocabParallelCrossEntropy.apply(logits, target, ignore_index)
