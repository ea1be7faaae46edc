# The embedded default: a few-million-parameter GLM that the quickstart trains on CPU, with the
# sentencepiece tokenizer it trains on the generated corpus (4000 pieces + 8 specials < 4096).
MODEL_TYPE="glm-tiny"
QUICKSTART_DIR="${QUICKSTART_DIR:-quickstart-output}"
CHECKPOINT_PATH="${CHECKPOINT_PATH:-${QUICKSTART_DIR}/checkpoints/glm-tiny}"
MP_SIZE=1
MODEL_ARGS="--model-parallel-size ${MP_SIZE} \
            --num-layers 4 \
            --hidden-size 256 \
            --inner-hidden-size 682 \
            --vocab-size 4096 \
            --num-attention-heads 8 \
            --max-sequence-length 256 \
            --tokenizer-type sentencepiece \
            --tokenizer-model ${QUICKSTART_DIR}/tokenizer.model \
            --layernorm-order post \
            --load ${CHECKPOINT_PATH}"
