"""Write report.md and loss.png for a folder of language-model runs (``idinit run lm-pretrain``):

    python scripts/lm_report.py runs/lm-pretrain [--out results/lm-pretrain]
"""
import argparse
import sys

from idinit.lab.experiments.lm_pretrain import write_lm_report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--out", help="folder for the report (default: the run folder)")
    args = parser.parse_args(argv)
    print(write_lm_report(args.run_dir, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
