"""Average the parameters of fairseq checkpoints (fairseq's scripts/average_checkpoints.py, weights-only loading).

    python translation/average_checkpoints.py --inputs checkpoints/resmlp_wmt14_en_de \
        --num-epoch-checkpoints 10 --output checkpoints/resmlp_wmt14_en_de/checkpoint.avg10.pt
    python translation/average_checkpoints.py --inputs a.pt b.pt --output avg.pt
"""
import argparse
from pathlib import Path

from resmlp_suite.cli import user_errors
from resmlp_suite.translation.average_checkpoints import average_checkpoints, last_checkpoints, save_checkpoint

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=Path, nargs="+", required=True,
                        help="checkpoint files, or one folder with --num-*-checkpoints")
    parser.add_argument("--output", type=Path, required=True)
    count = parser.add_mutually_exclusive_group()
    count.add_argument("--num-epoch-checkpoints", type=int, help="average the last N checkpointE.pt")
    count.add_argument("--num-update-checkpoints", type=int, help="average the last N checkpoint_E_U.pt")
    parser.add_argument("--checkpoint-upper-bound", type=int, help="ignore checkpoints after this epoch/update")
    args = parser.parse_args()

    inputs = args.inputs
    number = args.num_epoch_checkpoints or args.num_update_checkpoints
    if number is not None:
        if len(inputs) != 1 or not inputs[0].is_dir():
            parser.error("--num-*-checkpoints takes exactly one folder as --inputs")
        inputs = last_checkpoints(inputs[0], number, args.num_update_checkpoints is not None,
                                  args.checkpoint_upper_bound)
    elif args.checkpoint_upper_bound is not None:
        parser.error("--checkpoint-upper-bound needs --num-epoch-checkpoints or --num-update-checkpoints")
    print("averaging", *map(str, inputs))
    save_checkpoint(average_checkpoints(inputs), args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    with user_errors():
        main()
