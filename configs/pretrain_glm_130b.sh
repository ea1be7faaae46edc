# GLM-130B's pretraining recipe (reference §8): 768 GPUs as TP 4 x PP 8 x DP 24, ZeRO-1, FP16
# with dynamic loss scaling, activation checkpointing, 400 B tokens of bilingual text with 5%
# instruction data. DATA_PATH and MULTITASK_DATA_PATH hold token files from
# scripts/preprocess.sh (instruction data with --json-keys input target).
MODEL_ARGS="--num-layers 70 \
            --hidden-size 12288 \
            --inner-hidden-size 32768 \
            --num-attention-heads 96 \
            --vocab-size 150528 \
            --max-sequence-length 2048 \
            --hidden-dropout 0.1 \
            --attention-dropout 0.1 \
            --init-method-std 0.0052 \
            --shrink-embedding-gradient-alpha 0.1 \
            --shrink-logit-embedding-gradient \
            --tokenizer-type icetk-glm-130B"
# Stages are split by --partition-method's default, the reference's 'type:transformer|embedding'.
PARALLEL_ARGS="--model-parallel-size 4 \
               --pipeline-model-parallel-size 8 \
               --checkpoint-activations"
DATA_ARGS="--data-path ${DATA_PATH:-<your pile and wudao token files>} \
           --multitask-data-path ${MULTITASK_DATA_PATH:-<your instruction token files>} \
           --multitask-ratio 0.05 \
           --seq-length 2048 \
           --length-per-sample 2000 \
           --gpt-prob 0.7 \
           --min-gmask-ratio 0.2"
# Batch 4224 (176 micro-batches x DP 24), ramped from 192 in steps of 24 over 2.5% of the
# samples; LR warm-up over 0.5% and cosine decay to a tenth over 90% of 450 B tokens. Every
# count is a flag (the reference's exact samples), none computed here, so a flag of yours
# replaces the recipe's value, never a number derived from it.
TRAIN_ARGS="--micro-batch-size 1 \
            --global-batch-size 4224 \
            --rampup-batch-size 192 24 5493164 \
            --train-samples 219726562 \
            --lr 8e-5 \
            --min-lr 8e-6 \
            --lr-decay-style cosine \
            --lr-warmup-samples 1098632 \
            --lr-decay-samples 197753905 \
            --weight-decay 0.1 \
            --adam-beta1 0.9 --adam-beta2 0.95 --adam-eps 1e-8 \
            --clip-grad 1.0 \
            --fp16 --initial-loss-scale-power 16 --loss-scale-window 2000 --hysteresis 2 \
            --seed 1234"
# The run passed over the data of two loss spikes; add to TRAIN_ARGS to reproduce:
#   --skip-train-iteration-range 40701-40900 42401-42600
DS_CONFIG="configs/ds_config_glm_130b.json"
SAVE_ARGS="--save ${SAVE:-checkpoints/glm-130b} --save-interval 250 --log-interval 1"
