import { readFile, readdir } from 'node:fs/promises';

async function parentPids(): Promise<Map<number, number>> {
  const parents = new Map<number, number>();
  for (const entry of await readdir('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    try {
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
      // comm may contain spaces and parentheses; the fields after the last ')' are fixed.
      const after = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parents.set(pid, Number(after[1]));
    } catch {
      // Exited while we scanned.
    }
  }
  return parents;
}

function descendantsOf(root: number, parents: Map<number, number>): number[] {
  const found = [root];
  for (let i = 0; i < found.length; i++) {
    for (const [pid, ppid] of parents) if (ppid === found[i] && !found.includes(pid)) found.push(pid);
  }
  return found;
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Already gone.
  }
}

/**
 * Kills a host process and everything below it. The tree is frozen first (SIGSTOP, rescanned until
 * no new child appears) so nothing forks or gets re-parented to the container's init between the
 * scan and the kill; the container's own init is not in the tree and survives.
 */
export async function killProcessTree(rootPid: number): Promise<number> {
  const stopped = new Set<number>();
  for (let round = 0; round < 10; round++) {
    const tree = descendantsOf(rootPid, await parentPids());
    const fresh = tree.filter((pid) => !stopped.has(pid));
    if (fresh.length === 0) break;
    for (const pid of fresh) {
      signal(pid, 'SIGSTOP');
      stopped.add(pid);
    }
  }
  for (const pid of stopped) signal(pid, 'SIGKILL');
  return stopped.size;
}
