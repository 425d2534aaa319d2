# A function that fills /tmp: writes files of the given MiB sizes with per-block distinct content,
# reads every one back and checks it; prints one JSON line. Exit 0 only if all data came back.
import hashlib, json, os, sys, time
root, sizes = sys.argv[1], [int(x) for x in sys.argv[2].split(',')]
MiB = 1 << 20
def block(name, i):
    return hashlib.sha256(f"{name}:{i}".encode()).digest() * (MiB // 32)
t0 = time.time()
for n, size in enumerate(sizes):
    name = f"f{n}"
    with open(os.path.join(root, name), "wb") as f:
        for i in range(size):
            f.write(block(name, i))
for n, size in enumerate(sizes):
    name = f"f{n}"
    with open(os.path.join(root, name), "rb") as f:
        for i in range(size):
            if f.read(MiB) != block(name, i):
                print(json.dumps({"ok": False, "file": name, "block": i})); sys.exit(2)
print(json.dumps({"ok": True, "seconds": time.time() - t0}))
