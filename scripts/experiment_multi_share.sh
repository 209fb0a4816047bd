#!/usr/bin/env bash
# Issue 9 experiment (README ablation, footnote 3): the main job with 29% several-call requests instead of 14%.
# Trains, then evaluates the validation split and the hand-written set (grounded, calibrated).
set -e
python generate_dataset.py --seed 0 --parallel 300 --create-task 120 --list-tasks 70 --get-task 45 --cancel-task 45 --get-session-history 40 --playback-session 45 --discover-agents 30 --send-message 85 --no-call 260 --split 0.8,0.1,0.1 --output ${RUN:-runs/multi}/data/codetether.jsonl
python finetune.py --model_name_or_path gemma-3-270m-offline --bf16 --no-eval_before --train_file ${RUN:-runs/multi}/data/codetether.train.jsonl --val_file ${RUN:-runs/multi}/data/codetether.val.jsonl --output_dir ${RUN:-runs/multi}/model --epochs 2 --batch_size 16 --gradient_accumulation_steps 1 --learning_rate 1e-3 --eval_samples 104 --seed 0
python finetune.py --evaluate --model_path ${RUN:-runs/multi}/model --test_file ${RUN:-runs/multi}/data/codetether.val.jsonl --decoding grounded --batch_size 8 --output ${RUN:-runs/multi}/val_report.json
python finetune.py --evaluate --model_path ${RUN:-runs/multi}/model --test_file eval/handwritten.jsonl --decoding grounded --batch_size 8 --output ${RUN:-runs/multi}/handwritten_report.json
