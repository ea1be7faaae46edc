# GLM-130B as released: 8-way tensor parallel, fp16, icetk tokenizer (reference configs/model_glm_130b.sh).
MODEL_TYPE="glm-130b"
CHECKPOINT_PATH="${CHECKPOINT_PATH:-<your checkpoint path>}"
MP_SIZE="${MP_SIZE:-8}"  # 4 after convert_tp --target-tp 4
MODEL_ARGS="--model-parallel-size ${MP_SIZE} \
            --num-layers 70 \
            --hidden-size 12288 \
            --inner-hidden-size 32768 \
            --vocab-size 150528 \
            --num-attention-heads 96 \
            --max-sequence-length 2048 \
            --tokenizer-type icetk-glm-130B \
            --layernorm-order post \
            --load ${CHECKPOINT_PATH} \
            --skip-init \
            --fp16"
