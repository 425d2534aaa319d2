"""Image processing (FunctionBench's image_processing): read an image from /tmp, greyscale it, write it back.

The input is generated (a PIL gradient with noise) in a prepare step, so nothing is downloaded.
Usage: image.py prepare DIR SIZE_PX COUNT | image.py run DIR COUNT
"""
import json
import os
import sys
import time

from PIL import Image


def prepare(d, size, count):
    noise = Image.effect_noise((size, size), 64)
    grad = Image.linear_gradient("L").resize((size, size))
    img = Image.merge("RGB", (noise, grad, grad.transpose(Image.Transpose.ROTATE_90)))
    for i in range(count):
        img.save(os.path.join(d, f"in{i}.png"))
    print(json.dumps({"bytes": sum(os.path.getsize(os.path.join(d, f"in{i}.png")) for i in range(count))}))


def run(d, count):
    t0 = time.monotonic()
    for i in range(count):
        with Image.open(os.path.join(d, f"in{i}.png")) as img:
            grey = img.convert("L")
            grey.save(os.path.join(d, f"out{i}.png"))
    print(json.dumps({"seconds": time.monotonic() - t0, "images": count}))


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        run(sys.argv[2], int(sys.argv[3]))
