"""Score translations of a whole test set: sacreBLEU (with signature) and compound-split tokenized BLEU.

    # translate with fairseq-generate (beam 4, every sentence kept), then score
    python translation/score.py --data-bin data/wmt14_en_de/data-bin --path checkpoints/checkpoint.avg10.pt \
        --user-dir translation/resmlp_mt --ref data/wmt14_en_de/test.ref.de --lang de --lenpen 0.6
    # score an existing fairseq-generate output or a file of detokenised hypotheses
    python translation/score.py --generate-output gen/generate-test.txt --ref data/wmt14_en_de/test.ref.de --lang de
    python translation/score.py --hyp hyp.de --ref data/wmt14_en_de/test.ref.de --lang de --json bleu.json

Fails unless there is exactly one hypothesis per reference line.
"""
import argparse
import json
from pathlib import Path

from resmlp_suite.cli import user_errors
from resmlp_suite.translation.bleu import compound_split_bleu, sacrebleu_score
from resmlp_suite.files import atomic_write_text, read_lines
from resmlp_suite.translation.generation import (
    GenerationSettings, hypotheses_in_order, read_hypotheses, translate,
)

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--hyp", type=Path, help="detokenised hypotheses, one per line")
    source.add_argument("--generate-output", type=Path, help="fairseq-generate output (D- lines)")
    source.add_argument("--path", type=Path, help="checkpoint to translate the test set with")
    parser.add_argument("--ref", type=Path, required=True, help="raw references, one per line")
    parser.add_argument("--lang", required=True, help="target language (Moses tokenizer of the tokenized BLEU)")
    parser.add_argument("--data-bin", type=Path, help="with --path: the binarised data")
    parser.add_argument("--user-dir", type=Path, help="with --path: fairseq --user-dir (e.g. translation/resmlp_mt)")
    parser.add_argument("--subset", default="test")
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--lenpen", type=float, default=1.0, help="Ott et al. use 0.6; unpublished for ResMLP")
    parser.add_argument("--results-dir", type=Path, default=Path("generate"), help="with --path: where to write")
    parser.add_argument("--json", type=Path, help="also write the scores here")
    args = parser.parse_args()

    references = read_lines(args.ref)
    if args.path is not None:
        if args.data_bin is None:
            parser.error("--path needs --data-bin")
        hypotheses = translate(args.data_bin, args.path, args.results_dir, len(references), args.subset,
                               GenerationSettings(beam=args.beam, lenpen=args.lenpen), args.user_dir)
    elif args.generate_output is not None:
        hypotheses = hypotheses_in_order(read_hypotheses(args.generate_output), len(references))
    else:
        hypotheses = read_lines(args.hyp)

    scores = {"sacrebleu": sacrebleu_score(hypotheses, references),
              "tokenized_compound_split": compound_split_bleu(hypotheses, references, args.lang)}
    for name, score in scores.items():
        print(f"{name}: {score.text}")
    if args.json is not None:
        atomic_write_text(args.json, json.dumps({k: v.as_dict() for k, v in scores.items()}, indent=1))


if __name__ == "__main__":
    with user_errors():
        main()
