"""The floor: load the calibration data, run every model once over every sample, take the argmax.

What a competent user would write by hand, with no gate: default session
options, one pass per model. Run as its own process so imports count:

    python benchmarks/bare_onnxruntime.py DATA.npz MODEL.onnx [MODEL.onnx ...] [--mode batched|whole]
        [--batch-size 256] [--input input] [--key pixels]

--mode batched feeds slices of --batch-size samples (the gate's default batch
size), --mode whole feeds the whole array in one call.
"""

import argparse
import sys

import numpy as np
import onnxruntime as ort


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--mode", choices=("batched", "whole"), default="batched")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--input", default="input")
    parser.add_argument("--key", default="pixels")
    args = parser.parse_args(argv)

    with np.load(args.data) as archive:
        x = archive[args.key]
    n = len(x)
    step = args.batch_size if args.mode == "batched" else n
    preds = []
    for path in args.models:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        pred = np.empty(n, dtype=np.int64)
        for start in range(0, n, step):
            logits = session.run(None, {args.input: x[start:start + step]})[0]
            pred[start:start + step] = logits.argmax(axis=1)
        preds.append(pred)
    agree = float(np.mean(preds[0] == preds[-1]))
    print(f"{n} samples x {len(args.models)} models, {args.mode}; agreement first/last {agree:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
