# The embedded default's pretraining: glm-tiny on the quickstart's corpus, on CPU, through the
# same trainer and launcher as the 130B run. QUICKSTART_DIR holds tokenizer.model and the
# token files text.bin/.idx (python -m glm130b.quickstart makes both).
QUICKSTART_DIR="${QUICKSTART_DIR:-quickstart-output}"
MODEL_ARGS="--preset glm-tiny \
            --hidden-dropout 0.0 \
            --attention-dropout 0.0 \
            --tokenizer-type sentencepiece \
            --tokenizer-model ${QUICKSTART_DIR}/tokenizer.model"
PARALLEL_ARGS="--model-parallel-size 1 --pipeline-model-parallel-size 1"
DATA_ARGS="--data-path ${QUICKSTART_DIR}/text \
           --seq-length 256 \
           --length-per-sample 240 \
           --aggregated-samples-per-sequence 4"
# Warm up over the first 10% of the decay (by default the whole run, from the --train-iters in
# force, yours included), then cosine decay to a tenth over the rest.
TRAIN_ARGS="--micro-batch-size 8 \
            --global-batch-size 16 \
            --train-iters ${TRAIN_ITERS:-300} \
            --lr 2e-3 \
            --min-lr 2e-4 \
            --lr-warmup-fraction 0.1 \
            --lr-decay-style cosine \
            --weight-decay 0.1 \
            --clip-grad 1.0 \
            --seed 1234"
DS_CONFIG="configs/ds_config_tiny.json"
SAVE_ARGS="--save ${SAVE:-${QUICKSTART_DIR}/checkpoints/pretrain} --save-interval 100 --keep-last 2 \
           --log-interval 20"
