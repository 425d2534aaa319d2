# What ordinary programs do to /tmp, one pattern per sub-command; each prints one JSON line and
# exits 0 only if every byte it wrote came back. Run in a memory cgroup by test/store and `ephemera bench ordinary`.
#   append DIR MIB [PAUSE_AT]  a log closed, reopened and appended to, 1 MiB per reopen (`>>` in a
#                        loop); pauses 2.5 s after PAUSE_AT MiB (the store may promote it meanwhile)
#   sqlite DIR MIB       a database created (8 MiB), closed, left 2.5 s (the store may promote it),
#                        reopened and grown to MIB
#   mapclose FILE MIB    map a file MAP_SHARED, close it, wait for "go" on stdin, write through the
#                        mapping, munmap, then read the file back through a new open
import hashlib, json, os, sqlite3, sys, time

MiB = 1 << 20

def block(tag, i):
    return hashlib.sha256(f"{tag}:{i}".encode()).digest() * (MiB // 32)

def out(**kw):
    print(json.dumps(kw), flush=True)

def append(root, mib, pause_at):
    path = os.path.join(root, "app.log")
    t0 = time.time()
    for i in range(mib):
        if i == pause_at:
            time.sleep(2.5)
        with open(path, "ab") as f:
            f.write(block("log", i))
    with open(path, "rb") as f:
        for i in range(mib):
            if f.read(MiB) != block("log", i):
                out(ok=False, block=i); sys.exit(2)
        if f.read(1):
            out(ok=False, error="longer than written"); sys.exit(2)
    out(ok=True, seconds=time.time() - t0)

def sqlite(root, mib):
    path = os.path.join(root, "app.db")
    t0 = time.time()
    db = sqlite3.connect(path)
    db.execute("pragma journal_mode=delete")
    db.execute("create table t (i integer primary key, v blob)")
    rows_per_mib = 16  # 64 KiB blobs
    blob = lambda i: hashlib.sha256(str(i).encode()).digest() * 2048
    n = 0
    with db:
        for _ in range(8 * rows_per_mib):
            db.execute("insert into t values (?, ?)", (n, blob(n))); n += 1
    db.close()
    time.sleep(2.5)
    db = sqlite3.connect(path)  # reopened and grown past memory
    while n < mib * rows_per_mib:
        with db:
            for _ in range(rows_per_mib * 4):
                db.execute("insert into t values (?, ?)", (n, blob(n))); n += 1
    db.close()
    db = sqlite3.connect(path)
    check = db.execute("pragma integrity_check").fetchone()[0]
    bad = 0
    for i, v in db.execute("select i, v from t"):
        if v != blob(i): bad += 1
    count = db.execute("select count(*) from t").fetchone()[0]
    db.close()
    ok = check == "ok" and bad == 0 and count == n
    out(ok=ok, integrity=check, rows=count, bad=bad, bytes=os.path.getsize(path), seconds=time.time() - t0)
    sys.exit(0 if ok else 2)

def mapclose(path, mib):
    # libc's mmap through ctypes: Python's mmap module dups the fd, and the point is a mapping
    # that outlives every fd of the file.
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.msync.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    size = mib * MiB
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.ftruncate(fd, size)
    addr = libc.mmap(None, size, 3, 1, fd, 0)  # PROT_READ | PROT_WRITE, MAP_SHARED
    if addr in (None, ctypes.c_void_p(-1).value):
        out(ok=False, error=os.strerror(ctypes.get_errno())); sys.exit(2)
    os.close(fd)
    for i in range(mib):
        ctypes.memmove(addr + i * MiB, block("first", i), MiB)
    out(event="mapped")
    sys.stdin.readline()  # the test moves (or tries to move) the file meanwhile
    for i in range(mib):
        ctypes.memmove(addr + i * MiB, block("second", i), MiB)
    libc.msync(addr, size, 4)  # MS_SYNC
    libc.munmap(addr, size)
    with open(path, "rb") as f:
        for i in range(mib):
            if f.read(MiB) != block("second", i):
                out(ok=False, block=i); sys.exit(2)
    out(ok=True)

cmd = sys.argv[1]
if cmd == "append": append(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else -1)
elif cmd == "sqlite": sqlite(sys.argv[2], int(sys.argv[3]))
elif cmd == "mapclose": mapclose(sys.argv[2], int(sys.argv[3]))
else: sys.exit(f"unknown command {cmd}")
