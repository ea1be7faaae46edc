"""Megatron-style tensor parallelism: process groups, collectives, split layers, vocab-parallel
cross entropy and the per-rank random stream."""
from .cross_entropy import vocab_parallel_cross_entropy
from .layers import (ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding,
                     merge, parallel_lm_logits, shard)
from .launch import broadcast_object, initialize_distributed
from .rng import get_rng_tracker, model_parallel_manual_seed
from .state import (destroy_model_parallel, get_data_parallel_group,
                    get_data_parallel_rank, get_data_parallel_world_size,
                    get_pipeline_model_parallel_group, get_pipeline_model_parallel_rank,
                    get_pipeline_model_parallel_ranks, get_pipeline_model_parallel_world_size,
                    get_tensor_model_parallel_group, get_tensor_model_parallel_rank,
                    get_tensor_model_parallel_world_size, initialize_model_parallel,
                    is_rank0, model_parallel_is_initialized)
