"""``edge-bench``: stage timing of the daemon's hot path, A/B comparisons, offline accuracy, and the report.

    edge-bench [--source SRC] [--backend onnx|hailo] [--threads N] [--detector DIR] [--classifier DIR]
               [--input-size WxH] [--warmup N] [--repeat N] [--json] [--config SPEC] [--compare A B]
               [--pipeline-seconds S]
    edge-bench eval cls  --csv FILE --project-root DIR | --dir FOLDER   [--classifier DIR] [--positive LABEL]
    edge-bench eval e2e  --csv splits.csv --project-root DIR            [--detector DIR --classifier DIR]
    edge-bench eval wider --images WIDER_val/images --gt GT_DIR [--pred-dir DIR]
    edge-bench eval ap50 --images DIR --gt boxes.json
    edge-bench report
    edge-bench hailo-sim [--arch hailo8|hailo8l] [--pcie gen2x1|gen3x1] [--host-scale X] [--source SRC] [--no-sim]

See docs/bench.md for the configuration syntax of ``--compare``, the result files and every metric.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from edge_agent.backends.base import BackendError
from edge_agent.manifest import ManifestError

log = logging.getLogger("edge_agent.bench")

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _speed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default=None,
                   help="video file, camera index or /dev/videoN, image folder, sample:NAME or synthetic:N "
                        "(default: sample:single_face.mp4)")
    p.add_argument("--backend", choices=("onnx", "hailo"), default="onnx")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads per model (0 = default)")
    p.add_argument("--detector", type=Path, default=None, help="detector model directory (manifest.json)")
    p.add_argument("--classifier", type=Path, default=None, help="classifier model directory (manifest.json)")
    p.add_argument("--input-size", default=None, help="detector input WxH, e.g. 640x384 (dynamic models only)")
    p.add_argument("--reference", action="store_true", help="time the straightforward reference pipeline")
    p.add_argument("--warmup", type=int, default=10, help="untimed frames first (default 10)")
    p.add_argument("--repeat", type=int, default=200, help="timed frames (default 200)")
    p.add_argument("--max-frames", type=int, default=64, help="distinct frames decoded from the source and cycled")
    p.add_argument("--block", type=int, default=10, help="--compare: frames per block before switching A/B")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                   help='two configurations as key=value[,key=value] over the flags, e.g. '
                        '"detector=models/detector/acwface-dcn" "detector=models/detector/retinaface-mnet025"')
    p.add_argument("--config", default=None, metavar="SPEC",
                   help='key=value[,key=value] applied over the flags before anything else (the --compare syntax), '
                        'e.g. "mode=fast,full_every=10" for the fast detection mode')
    p.add_argument("--pipeline-seconds", type=float, default=10.0,
                   help="seconds of the pipelined daemon run for end-to-end fps/latency (0 = skip)")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    p.add_argument("--out-dir", type=Path, default=None, help="result folder (default benchmarks/results)")
    p.add_argument("--note", default="", help="free text stored in the result file (e.g. other load)")
    p.add_argument("--no-efficiency", action="store_true", help="skip the GFLOP count and GEMM peak")
    p.add_argument("--quiet", action="store_true", help="no progress display")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edge-bench", description=__doc__.split("\n\n")[0] if __doc__ else "",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _speed_args(parser)
    parser.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    sub = parser.add_subparsers(dest="command")
    ev = sub.add_parser("eval", help="offline accuracy evaluation")
    evs = ev.add_subparsers(dest="eval_kind", required=True)

    cls = evs.add_parser("cls", help="classifier on face crops (CSV or class folders)")
    src = cls.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", type=Path, help="CSV with path + label_en/orig_kor/label (seed 001 schema)")
    src.add_argument("--dir", type=Path, help="folder with one sub-folder of images per class")
    cls.add_argument("--project-root", type=Path, default=Path("."), help="CSV paths are relative to this")
    cls.add_argument("--label-map", type=Path, default=None, help="JSON {csv label: model label}")
    cls.add_argument("--classifier", dest="eval_classifier", type=Path, default=None)
    cls.add_argument("--positive", default=None, metavar="LABEL",
                     help="positive class for precision/recall/F1, AP and the PR curve (default for a 2-label "
                          "model: its second label; a model with more labels: none unless named, one-vs-rest)")
    cls.add_argument("--name", default=None, help="result name (default: the CSV/folder name)")
    cls.add_argument("--out-dir", dest="eval_out", type=Path, default=None)

    e2e = evs.add_parser("e2e", help="detector + classifier on original images with GT boxes (face-api metric)")
    e2e.add_argument("--csv", type=Path, required=True, help="splits CSV: path, label, minX,minY,maxX,maxY")
    e2e.add_argument("--project-root", type=Path, default=Path("."))
    e2e.add_argument("--label-map", type=Path, default=None)
    e2e.add_argument("--iou", type=float, default=0.30, help="match threshold (seed 001: 0.30)")
    e2e.add_argument("--detector", dest="eval_detector", type=Path, default=None)
    e2e.add_argument("--classifier", dest="eval_classifier", type=Path, default=None)
    e2e.add_argument("--input-size", dest="eval_input_size", default=None)
    e2e.add_argument("--positive", default=None, metavar="LABEL",
                     help="positive class for precision/recall/F1, AP and the PR curve (default for a 2-label "
                          "model: its second label; a model with more labels: none unless named, one-vs-rest)")
    e2e.add_argument("--name", default=None)
    e2e.add_argument("--out-dir", dest="eval_out", type=Path, default=None)

    wd = evs.add_parser("wider", help="WIDER FACE val easy/medium/hard AP (official protocol)")
    wd.add_argument("--gt", type=Path, required=True, help="folder with wider_face_val.mat and wider_*_val.mat")
    wd.add_argument("--images", type=Path, default=None, help="WIDER_val/images (to run our detector)")
    wd.add_argument("--pred-dir", type=Path, default=None,
                    help="existing predictions (WIDER txt format) to evaluate; with --images, where ours go")
    wd.add_argument("--detector", dest="eval_detector", type=Path, default=None)
    wd.add_argument("--input-size", dest="eval_input_size", default=None)
    wd.add_argument("--score-threshold", type=float, default=0.02, help="detector threshold for the PR curve")
    wd.add_argument("--name", default=None)
    wd.add_argument("--out-dir", dest="eval_out", type=Path, default=None)

    ap = evs.add_parser("ap50", help="COCO-style AP at IoU 0.5 on your own annotated images")
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--gt", type=Path, required=True, help="boxes.json (schema in docs/bench.md)")
    ap.add_argument("--detector", dest="eval_detector", type=Path, default=None)
    ap.add_argument("--input-size", dest="eval_input_size", default=None)
    ap.add_argument("--score-threshold", type=float, default=0.02)
    ap.add_argument("--name", default=None)
    ap.add_argument("--out-dir", dest="eval_out", type=Path, default=None)

    rp = sub.add_parser("report", help="Markdown page + charts from the result files")
    rp.add_argument("--results", type=Path, default=None, help="result folder (default benchmarks/results)")
    rp.add_argument("--output", type=Path, default=None, help="Markdown file (default <results>/REPORT.md)")

    from edge_agent.bench.hailo_simcmd import add_parser as add_hailo_sim

    add_hailo_sim(sub)
    return parser


def _print(data: dict[str, Any], text: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        print(text)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from edge_agent.bench.inputs import BenchSourceError
    from edge_agent.bench.runner import ConfigSpecError

    try:
        if args.command == "eval":
            from edge_agent.bench.evalcmd import run_eval

            data, text = run_eval(args)
            _print(data, text, args.json)
            return EXIT_OK
        if args.command == "hailo-sim":
            from edge_agent.bench.hailo_simcmd import run_hailo_sim

            data, text = run_hailo_sim(args)
            _print(data, text, args.json)
            return EXIT_OK
        if args.command == "report":
            from edge_agent.bench.report import results_dir, write_report

            out = write_report(args.results or results_dir(), args.output)
            print(f"wrote {out}")
            return EXIT_OK
        from edge_agent.bench.speedcmd import run_speed_command

        data, text = run_speed_command(args)
        _print(data, text, args.json)
        return EXIT_OK
    except (ConfigSpecError, ValueError) as exc:
        print(f"edge-bench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ManifestError, BackendError, BenchSourceError, FileNotFoundError, RuntimeError) as exc:
        print(f"edge-bench: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("edge-bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
