"""The DeepSpeed engine around GLM: process groups, the model (plain, or a pipeline when PP > 1),
its initialisation, AdamW, and the DeepSpeed config assembled from a JSON file and the
`TrainingConfig`.
"""
from __future__ import annotations

import importlib
import json
import warnings
import zlib
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.distributed as dist

from ..checkpoint.convert_tp import check_sources, split_rule
from ..checkpoint.sat import load_state_dict, shard_paths
from ..errors import CheckpointError, UsageError
from ..config import GLMConfig
from ..model import GLM
from ..parallel import (get_data_parallel_group, get_data_parallel_rank,
                        get_data_parallel_world_size, get_tensor_model_parallel_group,
                        get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size,
                        initialize_distributed, is_rank0, merge, model_parallel_manual_seed,
                        shard, vocab_parallel_cross_entropy)
from ..checkpoint.deepspeed_layout import reference_name
from .options import TrainingConfig
from .pipeline import build_pipeline
from .recompute import recompute, recompute_layers


def initialize_training(tp: int, pp: int) -> torch.device:
    """The process groups (a group of one for a plain `python -m glm130b.pretrain`), handed to
    DeepSpeed's communication layer as well."""
    import deepspeed
    device = initialize_distributed(tp, pp, always=True)
    if device.type != "cuda":
        # DeepSpeed's CPU shared-memory all-reduce serves inference only; skip its JIT build.
        importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    deepspeed.init_distributed(dist_backend=dist.get_backend())
    return device


class TensorParallelUnit:
    """The process groups under the names DeepSpeed asks of an `mpu`; without a pipeline the
    model-parallel group is the tensor-parallel one."""
    get_model_parallel_rank = staticmethod(get_tensor_model_parallel_rank)
    get_model_parallel_world_size = staticmethod(get_tensor_model_parallel_world_size)
    get_model_parallel_group = staticmethod(get_tensor_model_parallel_group)
    get_tensor_model_parallel_rank = staticmethod(get_tensor_model_parallel_rank)
    get_tensor_model_parallel_world_size = staticmethod(get_tensor_model_parallel_world_size)
    get_tensor_model_parallel_group = staticmethod(get_tensor_model_parallel_group)
    get_data_parallel_rank = staticmethod(get_data_parallel_rank)
    get_data_parallel_world_size = staticmethod(get_data_parallel_world_size)
    get_data_parallel_group = staticmethod(get_data_parallel_group)


def lm_loss(logits: torch.Tensor, labels) -> torch.Tensor:
    """Cross entropy on the loss-mask tokens, averaged over them (reference §8.3), from this
    rank's vocabulary slice of the logits."""
    targets, loss_mask = labels
    losses = vocab_parallel_cross_entropy(logits.float(), targets)
    loss_mask = loss_mask.float()
    return (losses * loss_mask).sum() / loss_mask.sum().clamp(min=1.0)


def initialize_weights(model: torch.nn.Module, seed: int, name_of: Callable[[str], str]) -> None:
    """Draw every layer's weights from a generator seeded by (seed, its reference name), so a
    model is the same whatever its split into pipeline stages and tensor-parallel ranks."""
    for name, module in model.named_modules():
        if hasattr(module, "reset_parameters") and any(True for _ in module.parameters(False)):
            key = name_of(name)
            torch.manual_seed(zlib.crc32(f"{seed}:{key}".encode()))
            module.reset_parameters()


def load_reference_weights(model: torch.nn.Module, folder, name_of: Callable[[str], str]) -> str:
    """Fill this rank's parameters from a reference-layout checkpoint cut for any
    tensor-parallel degree: each tensor is merged from its shards and cut for this rank."""
    paths = shard_paths(folder)
    sources = [load_state_dict(p) for p in paths]  # memory-mapped
    check_sources(sources, [str(p) for p in paths], 1, False)
    world, rank = get_tensor_model_parallel_world_size(), get_tensor_model_parallel_rank()
    for name, param in model.named_parameters():
        key = name_of(name)
        if key not in sources[0]:
            raise CheckpointError(f"{paths[0]}: missing key {key}")
        pieces = [s[key] for s in sources]
        rule = split_rule(key)
        full = merge(pieces, *rule) if rule else pieces[0]
        local = shard(full, *rule, rank=rank, world=world) if rule else full
        if local.shape != param.shape:
            raise CheckpointError(f"{paths[0].parent}: {key} has shape {tuple(full.shape)}, "
                                  f"the model {tuple(param.shape)} per rank at tensor-parallel "
                                  f"size {world}")
        with torch.no_grad():
            param.copy_(local)
    return paths[0].parent.name


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: none on biases and LayerNorms (reference §8.2)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def deepspeed_config(training: TrainingConfig, global_batch: int) -> dict:
    """The JSON file's settings, with the run's batch sizes and explicit overrides."""
    config = {}
    if training.deepspeed_config:
        path = Path(training.deepspeed_config)
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}:{e.lineno}: not JSON ({e.msg})") from None
    micro, dp = training.micro_batch_size, get_data_parallel_world_size()
    if global_batch % (micro * dp):
        raise UsageError(f"global batch {global_batch} is not divisible by micro-batch "
                         f"{micro} x data-parallel size {dp}")
    config.update(train_batch_size=global_batch, train_micro_batch_size_per_gpu=micro,
                  gradient_accumulation_steps=global_batch // (micro * dp))
    config.setdefault("steps_per_print", 10 ** 9)  # the trainer prints its own progress
    config.setdefault("gradient_clipping", 1.0)
    if training.clip_grad is not None:
        config["gradient_clipping"] = training.clip_grad
    zero = config.setdefault("zero_optimization", {})
    if training.zero_stage is not None:
        zero["stage"] = training.zero_stage
    zero.setdefault("stage", 1)  # the reference's, and DeepSpeed's fp16 path trains well on it
    if training.fp16:
        config.pop("bf16", None)
        config["fp16"] = {"enabled": True, "loss_scale": 0,
                          "initial_scale_power": training.initial_loss_scale_power,
                          "loss_scale_window": training.loss_scale_window,
                          "hysteresis": training.hysteresis,
                          "min_loss_scale": training.min_loss_scale}
    if training.bf16:
        config.pop("fp16", None)
        config["bf16"] = {"enabled": True}
    if config.get("fp16", {}).get("enabled") and zero["stage"] == 0 and is_rank0():
        # Measured on an H100 (glm-tiny, 100 steps): loss 4.44 against 3.03 with ZeRO-1, bf16
        # or fp32; DeepSpeed's unfused fp16 optimizer is what runs here.
        warnings.warn("fp16 without ZeRO trains measurably slower than with ZeRO stage 1 "
                      "(DeepSpeed's unfused fp16 optimizer); prefer --zero-stage 1")
    return config


def build_engine(training: TrainingConfig, model_config: GLMConfig, global_batch: int,
                 reference_weights: Optional[str]):
    """(engine, is_pipeline). The weights come from `reference_weights`, a checkpoint in the
    reference layout at any tensor-parallel degree, else from the seeded initialisation (a
    training checkpoint is restored later, with everything else)."""
    import deepspeed
    from deepspeed.runtime.pipe.topology import PipeModelDataParallelTopology

    tp, pp = training.model_parallel_size, training.pipeline_model_parallel_size
    model_parallel_manual_seed(training.seed)
    if pp > 1:
        topology = PipeModelDataParallelTopology(num_pp=pp, num_mp=tp,
                                                 num_dp=get_data_parallel_world_size())
        model = build_pipeline(model_config, topology, lm_loss, training.partition_method,
                               training.recompute_activations, recompute)
        name_of = lambda n: reference_name(n, model_config.num_layers)  # noqa: E731
    else:
        model = GLM(model_config)
        if training.recompute_activations:
            recompute_layers(model)
        name_of = lambda n: n  # noqa: E731
    initialize_weights(model, training.seed, name_of)
    if reference_weights:
        load_reference_weights(model, reference_weights, name_of)
    # Dropout starts from the same state however the model was built.
    model_parallel_manual_seed(training.seed)
    optimizer = torch.optim.AdamW(decay_groups(model, training.weight_decay), lr=training.lr,
                                  betas=(training.adam_beta1, training.adam_beta2),
                                  eps=training.adam_eps, fused=torch.cuda.is_available() or None)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer,
                                      config=deepspeed_config(training, global_batch),
                                      mpu=None if pp > 1 else TensorParallelUnit())
    return engine, pp > 1


def batch_loss(engine, batch) -> torch.Tensor:
    """The loss of one collated micro-batch through the plain (non-pipeline) engine."""
    logits = engine(batch.tokens, position_ids=batch.position_ids,
                    attention_mask=batch.attention_mask, parallel_output=True)
    return lm_loss(logits, (batch.targets, batch.loss_mask))


def data_parallel_mean(loss: torch.Tensor) -> torch.Tensor:
    """This rank's mean loss averaged over the data-parallel ranks."""
    if get_data_parallel_world_size() > 1:
        dist.all_reduce(loss, group=get_data_parallel_group())
        loss /= get_data_parallel_world_size()
    return loss


def plain_step(engine, micro_batches) -> torch.Tensor:
    """One optimizer step of the plain (non-pipeline) engine over its micro-batches; the mean
    micro-batch loss, averaged over data-parallel ranks."""
    losses = []
    micro_batches = list(micro_batches)
    for m, batch in enumerate(micro_batches):
        engine.set_gradient_accumulation_boundary(m == len(micro_batches) - 1)
        loss = batch_loss(engine, batch)
        engine.backward(loss)
        losses.append(loss.detach())
        if m == len(micro_batches) - 1 and _unguarded(engine) and not _all_finite(losses):
            engine.set_gradient_accumulation_boundary(False)  # no optimizer step: skip it
            engine.step()
            engine.optimizer.zero_grad(set_to_none=True)
        else:
            engine.step()
    return data_parallel_mean(torch.stack(losses).mean())


def _unguarded(engine) -> bool:
    """fp32 without ZeRO is the one DeepSpeed setup that applies a NaN/inf step; ZeRO and the
    fp16/bf16 optimizers skip it themselves."""
    return engine.zero_optimization_stage() == 0 and not (engine.fp16_enabled()
                                                          or engine.bfloat16_enabled())


def _all_finite(losses: list[torch.Tensor]) -> bool:
    bad = torch.tensor([0.0 if torch.isfinite(torch.stack(losses)).all() else 1.0],
                       device=losses[0].device)
    dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    return not bad.item()
