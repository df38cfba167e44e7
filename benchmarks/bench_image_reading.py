"""Reading a very large photo: Pillow's full decode (what every command did before) vs ``petal_peft.images.read_image``.

A synthetic photo (smooth random colours, no face data) is written once as JPEG at ``--side`` pixels square
(default 12000: 144 megapixels, the size a user's camera photo had when align took 15 s per image) and as PNG at
``--png-side`` (default 8000: 64 MP; a PNG cannot be decoded at a reduced scale, so one over the 80 MP cap is
refused rather than read). For each format, interleaved within each repeat: ``Image.open(p).convert("RGB")``
(the full image decoded) and ``read_image(p)`` (JPEG decoded at a reduced scale, PNG decoded then reduced; both
to at most 16 megapixels). Printed: the decoded size, the median time of each, and the median of the per-repeat
ratio. The time is the decode alone; what it saves later (face detection on 16 instead of 144 megapixels) comes
on top.

Usage: python benchmarks/bench_image_reading.py [--side 12000] [--png-side 8000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from petal_peft.images import read_image


def _photo(side: int) -> Image.Image:
    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    return coarse.resize((side, side), Image.Resampling.BICUBIC)


def _full_decode(path: Path) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            return image.convert("RGB")


def _time(fn, path: Path) -> tuple[float, tuple[int, int]]:
    start = time.perf_counter()
    image = fn(path)
    return time.perf_counter() - start, image.size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=12000, help="photo width and height in pixels")
    parser.add_argument("--png-side", type=int, default=8000, help="PNG width and height in pixels")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per reader and format")
    args = parser.parse_args()
    print(f"synthetic photos (not faces), {args.repeats} repeats, medians; ratio = full decode time / read_image time")
    print(f"{'format':14}{'reader':34}{'decoded to':>14}{'time (s)':>10}{'ratio':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, suffix, side in (("JPEG", ".jpg", args.side), ("PNG", ".png", args.png_side)):
            path = Path(tmp) / f"photo{suffix}"
            _photo(side).save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 1}))
            fmt = f"{fmt} {side**2 / 1e6:.0f} MP"
            times: dict[str, list[float]] = {"full": [], "read_image": []}
            sizes = {}
            for _ in range(args.repeats):
                for name, fn in (("full", _full_decode), ("read_image", read_image)):
                    seconds, sizes[name] = _time(fn, path)
                    times[name].append(seconds)
            ratio = statistics.median(f / r for f, r in zip(times["full"], times["read_image"]))
            for name, label in (("full", 'Image.open().convert("RGB")'), ("read_image", "petal_peft read_image")):
                size = f"{sizes[name][0]}x{sizes[name][1]}"
                cell = f"{ratio:7.1f}x" if name == "read_image" else ""
                print(f"{fmt:14}{label:34}{size:>14}{statistics.median(times[name]):10.2f}{cell:>8}")


if __name__ == "__main__":
    main()
