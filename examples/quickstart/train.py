"""A stand-in training script for the README's first commands: prints a loss per epoch."""

import argparse
import math
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=1)
args = parser.parse_args()
for epoch in range(1, args.epochs + 1):
    print(f"epoch {epoch}/{args.epochs}: loss {math.exp(-epoch):.4f}", flush=True)
print("checkpoint: not written (this is an example)", file=sys.stderr)
