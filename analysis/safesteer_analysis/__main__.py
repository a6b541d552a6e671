"""python3 -m safesteer_analysis report RUN_DIR [--out report.html] [--samples N]
    [--max-perplexity-ratio R] [--max-distinct2-drop D] [--max-relevance-drop D] [--min-n N]
python3 -m safesteer_analysis demo OUT_DIR   (synthetic capture, vectors, clusters, sweep run)"""
import argparse
import sys

from . import loaders, report, synthetic
from .selection import QualityBounds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m safesteer_analysis")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="write a self-contained HTML report of a sweep run")
    rep.add_argument("run_dir")
    rep.add_argument("--out", help="output file (default RUN_DIR/report.html)")
    rep.add_argument("--samples", type=int, default=2, help="generations shown per cell")
    q = QualityBounds()
    rep.add_argument("--max-perplexity-ratio", type=float, default=q.max_perplexity_ratio,
                     help="best cell: perplexity at most this times the baseline's "
                          "(default %(default)g)")
    rep.add_argument("--max-distinct2-drop", type=float, default=q.max_distinct2_drop,
                     help="best cell: distinct-2 at most this below the baseline's "
                          "(default %(default)g)")
    rep.add_argument("--max-relevance-drop", type=float, default=q.max_relevance_drop,
                     help="best cell: relevance at most this below the baseline's "
                          "(default %(default)g)")
    rep.add_argument("--min-n", type=int, default=report.MIN_N,
                     help="flag cells with fewer generations than this (default %(default)d)")
    demo = sub.add_parser("demo", help="write synthetic example artefacts (no model needed)")
    demo.add_argument("out_dir")
    args = parser.parse_args(argv)
    try:
        if args.command == "report":
            bounds = QualityBounds(args.max_perplexity_ratio, args.max_distinct2_drop,
                                   args.max_relevance_drop)
            print(report.write(args.run_dir, args.out, args.samples, bounds, args.min_n))
        else:
            for name, path in synthetic.write_example(args.out_dir).items():
                print(f"{name}: {path}")
    except (OSError, KeyError, loaders.FormatError) as e:
        print(f"safesteer_analysis {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
