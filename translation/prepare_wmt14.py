"""Prepare WMT14 En-De or En-Fr as in Ott et al. 2018 (see resmlp_suite.translation.wmt14).

    python translation/prepare_wmt14.py --pair en-de --raw-dir data/wmt14_raw --out-dir data/wmt14_en_de --download
    python translation/prepare_wmt14.py --pair en-fr --raw-dir /datasets/wmt14 --out-dir data/wmt14_en_fr

--raw-dir may hold the downloaded archives or their extracted files; without --download nothing is
fetched. Output: <out-dir>/data-bin (fairseq-preprocess --joined-dictionary), <out-dir>/spm.model,
<out-dir>/test.ref.<tgt> (the newstest2014 reference for sacreBLEU). Re-running resumes.
"""
import argparse
from pathlib import Path

from resmlp_suite.cli import user_errors
from resmlp_suite.translation.wmt14 import WMT14, prepare_wmt14

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", choices=sorted(WMT14), required=True)
    parser.add_argument("--raw-dir", type=Path, required=True, help="archives or extracted WMT files")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--download", action="store_true", help="fetch missing archives from statmt.org")
    parser.add_argument("--vocab-size", type=int, default=32000, help="joint sentencepiece vocabulary")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    prepare_wmt14(args.pair, args.raw_dir, args.out_dir, args.download, args.vocab_size, args.workers)


if __name__ == "__main__":
    with user_errors():
        main()
