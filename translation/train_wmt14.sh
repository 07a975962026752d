#!/usr/bin/env bash
# fairseq-train command lines for WMT14: ResMLP with the paper's recipe, or the transformer baseline of
# Ott et al. 2018. Same settings as configs/fairseq/{resmlp,transformer}_wmt14_en_{de,fr}.yaml (see the
# comments there for what is published and what is not); tests/test_translation_recipes.py checks that
# both give fairseq the same configuration. Run from the repository root, on 8 GPUs (with G GPUs add
# --update-freq $((8 / G))); extra arguments go to fairseq-train:
#   bash translation/train_wmt14.sh resmlp en-de data/wmt14_en_de/data-bin
#   bash translation/train_wmt14.sh resmlp en-de data/wmt14_en_de/data-bin --encoder-layers 12 --decoder-layers 12
#   bash translation/train_wmt14.sh transformer en-fr data/wmt14_en_fr/data-bin
# DRY_RUN=1 prints the command instead of running it.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 {resmlp|transformer} {en-de|en-fr} DATA_BIN [fairseq-train args...]" >&2
    exit 2
fi
model=$1 pair=$2 data=$3
shift 3
case $pair in
    en-de) tgt=de ;;
    en-fr) tgt=fr ;;
    *) echo "expected the language pair en-de or en-fr, got '$pair'" >&2; exit 2 ;;
esac

common=(
    --task translation --source-lang en --target-lang "$tgt" --share-all-embeddings
    --max-source-positions 256 --max-target-positions 256
    --criterion label_smoothed_cross_entropy --label-smoothing 0.1
    --max-tokens 3584 --update-freq 1 --max-update 100000 --clip-norm 0.0 --fp16 --seed 1
    --save-dir "checkpoints/${model}_wmt14_en_${tgt}" --save-interval-updates 1000 --keep-interval-updates 10
    --log-format json --log-interval 100
    --user-dir translation/resmlp_mt  # the ResMLP model, and a batch for every sentence for both models
)
case $model in
    resmlp)
        # ResMLP-6; Adagrad lr 0.2, linear warm-up over 32k updates then constant; dropout 0.15 En-De, 0.1 En-Fr.
        if [ "$tgt" = de ]; then dropout=0.15; else dropout=0.1; fi
        recipe=(--arch resmlp_seq2seq --layerscale-init 0.2 --dropout "$dropout"
                --optimizer adagrad --weight-decay 0.0 --lr 0.2 --lr-scheduler fixed --warmup-updates 32000
                --fp16-no-flatten-grads) ;;  # fairseq's fp16 optimizer cannot flatten Adagrad's parameters
    transformer)
        # Transformer base; Adam (0.9, 0.98), lr 5e-4, inverse_sqrt with 4k warm-up; dropout 0.3 En-De, 0.1 En-Fr.
        if [ "$tgt" = de ]; then dropout=0.3; else dropout=0.1; fi
        recipe=(--arch transformer_wmt_en_de --dropout "$dropout"
                --optimizer adam --adam-betas '(0.9, 0.98)' --weight-decay 0.0
                --lr 0.0005 --lr-scheduler inverse_sqrt --warmup-updates 4000 --warmup-init-lr 1e-07) ;;
    *) echo "expected the model resmlp or transformer, got '$model'" >&2; exit 2 ;;
esac

command=(fairseq-train "$data" "${common[@]}" "${recipe[@]}" "$@")
if [ -n "${DRY_RUN:-}" ]; then
    printf '%q ' "${command[@]}"
    echo
else
    exec "${command[@]}"
fi
