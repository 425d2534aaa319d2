"""MapReduce word count: 2 mappers (processes), 1 reducer; input, intermediate and output files in /tmp.

The text is generated from a fixed vocabulary with a fixed seed (Zipf-like word frequencies).
Usage: mapreduce.py prepare DIR MIB | mapreduce.py run DIR
"""
import collections
import itertools
import json
import multiprocessing
import os
import random
import sys
import time

MAPPERS = 2


def prepare(d, mib):
    rnd = random.Random(42)
    vocab = ["w%d" % i for i in range(5000)]
    # Cumulative weights once: choices() would otherwise re-add all 5,000 weights on every call.
    cum = list(itertools.accumulate(1.0 / (i + 1) for i in range(len(vocab))))
    target = mib << 20
    with open(os.path.join(d, "input.txt"), "w") as f:
        written = 0
        while written < target:
            line = " ".join(rnd.choices(vocab, cum_weights=cum, k=16)) + "\n"
            f.write(line)
            written += len(line)
    print(json.dumps({"bytes": os.path.getsize(os.path.join(d, "input.txt"))}))


def mapper(args):
    d, index, start, end = args
    counts = collections.Counter()
    with open(os.path.join(d, "input.txt"), "rb") as f:
        f.seek(start)
        if start > 0:
            f.readline()  # the previous split owns the line that straddles the boundary
        while f.tell() <= end:
            line = f.readline()
            if not line:
                break
            counts.update(line.split())
    path = os.path.join(d, "map-%d.txt" % index)
    with open(path, "wb") as out:
        for word, n in counts.items():
            out.write(b"%s\t%d\n" % (word, n))
    return path


def run(d):
    t0 = time.monotonic()
    size = os.path.getsize(os.path.join(d, "input.txt"))
    splits = [(d, i, i * size // MAPPERS, (i + 1) * size // MAPPERS - 1) for i in range(MAPPERS)]
    with multiprocessing.Pool(MAPPERS) as pool:
        parts = pool.map(mapper, splits)
    t1 = time.monotonic()
    totals = collections.Counter()
    for p in parts:
        with open(p, "rb") as f:
            for line in f:
                word, n = line.rsplit(b"\t", 1)
                totals[word] += int(n)
    with open(os.path.join(d, "wordcount.txt"), "wb") as out:
        for word, n in totals.most_common():
            out.write(b"%s\t%d\n" % (word, n))
    t2 = time.monotonic()
    print(json.dumps({"seconds": t2 - t0, "map_s": t1 - t0, "reduce_s": t2 - t1, "words": sum(totals.values())}))


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(sys.argv[2], int(sys.argv[3]))
    else:
        run(sys.argv[2])
