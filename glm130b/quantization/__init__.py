"""Weight-only INT8 / INT4 quantisation (reference §5): layers, packing, kernels, model and
checkpoint conversion."""
from .kernels import (cpu_int8_available, cpu_int8_matmul, fused_available, fused_matmul,
                      pure_matmul, quantized_matmul)
from .quantized_linear import (QuantizedColumnParallelLinear, QuantizedRowParallelLinear,
                               quantize_linear)
from .packing import dequantize_weight, pack_int4, quantize_weight, unpack_int4, unpack_weight
from .quantize import (QUANTIZED_LINEARS, add_quantization_args, check_quantization_args,
                       quantize_model, quantize_state_dict)
