"""python3 -m safesteer_analysis report RUN_DIR [--out report.html]
python3 -m safesteer_analysis demo OUT_DIR   (synthetic capture, vectors, clusters, sweep run)"""
import argparse
import sys

from . import loaders, report, synthetic


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m safesteer_analysis")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="write a self-contained HTML report of a sweep run")
    rep.add_argument("run_dir")
    rep.add_argument("--out", help="output file (default RUN_DIR/report.html)")
    rep.add_argument("--samples", type=int, default=2, help="generations shown per cell")
    demo = sub.add_parser("demo", help="write synthetic example artefacts (no model needed)")
    demo.add_argument("out_dir")
    args = parser.parse_args(argv)
    try:
        if args.command == "report":
            print(report.write(args.run_dir, args.out, args.samples))
        else:
            for name, path in synthetic.write_example(args.out_dir).items():
                print(f"{name}: {path}")
    except (OSError, KeyError, loaders.FormatError) as e:
        print(f"safesteer_analysis {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
