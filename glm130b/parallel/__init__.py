"""Megatron-style tensor parallelism: process groups, collectives and split layers."""
from .layers import (ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding,
                     parallel_lm_logits, shard)
from .state import (destroy_model_parallel, get_data_parallel_group,
                    get_data_parallel_rank, get_data_parallel_world_size,
                    get_tensor_model_parallel_group, get_tensor_model_parallel_rank,
                    get_tensor_model_parallel_world_size, initialize_model_parallel,
                    model_parallel_is_initialized)
