#!/usr/bin/env bash
# An issue-9 experiment: train one recipe, then score it on a validation split, grounded and calibrated. The
# recipe is the previous main job's (batch 16, 2 epochs, fp32 base, LoRA dropout 0.05), which the README's
# ablation rows were trained with; TRAIN_ARGS overrides it (the flags given last win), e.g. the main job's now:
# "--dtype bfloat16 --lora_dropout 0 --batch_size 8 --epochs 3 --no-prefix_grad". Validation chooses between
# recipes; the test sets are only for the recipe chosen.
#   RUN        where the experiment lands (default runs/experiment)
#   DATA       a directory with codetether.{train,val}.jsonl to reuse (default: generate into $RUN/data)
#   GEN_ARGS   generate_dataset.py counts when DATA is not given (default: the main job's mix)
#   VAL        the validation file scored at the end (default: $DATA/codetether.val.jsonl), so that recipes trained
#              on different mixes can be compared on one validation set
#   TRAIN_ARGS extra finetune.py flags, e.g. "--lora_target_modules q_proj k_proj v_proj o_proj gate_proj up_proj down_proj"
# Example (README ablation): the 29% several-call mix, scored on the main job's validation split:
#   RUN=runs/multi GEN_ARGS="--parallel 300 --create-task 120 --list-tasks 70 --get-task 45 --cancel-task 45 \
#     --get-session-history 40 --playback-session 45 --discover-agents 30 --send-message 85" \
#     VAL=runs/main/data/codetether.val.jsonl bash scripts/experiment.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/experiment}
if [[ -z "${DATA:-}" ]]; then
  DATA=$RUN/data
  # shellcheck disable=SC2086
  python generate_dataset.py --seed 0 --no-call 260 ${GEN_ARGS:-} --split 0.8,0.1,0.1 --output "$DATA/codetether.jsonl"
fi
VAL=${VAL:-$DATA/codetether.val.jsonl}
# shellcheck disable=SC2086
python finetune.py --model_name_or_path gemma-3-270m-offline --bf16 --no-eval_before \
  --train_file "$DATA/codetether.train.jsonl" --val_file "$DATA/codetether.val.jsonl" --output_dir "$RUN/model" \
  --epochs 2 --batch_size 16 --gradient_accumulation_steps 1 --learning_rate 1e-3 --eval_samples 104 --seed 0 \
  ${TRAIN_ARGS:-}
python finetune.py --evaluate --model_path "$RUN/model" --test_file "$VAL" --decoding grounded --batch_size 8 \
  --output "$RUN/val_report.json"
