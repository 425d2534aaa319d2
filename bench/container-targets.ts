import * as fs from 'node:fs';
import * as path from 'node:path';
import { Engine, PlainDirTmpProvider, type TmpMode } from '../engine/index';
import { EphemeraTmpProvider } from '../node/index';
import { BenchError, errorMessage } from './errors';
import { mountsUnder } from './host-targets';
import { runProcess, tail } from './proc';

/** The /tmp a function container gets, one set of names in every container suite. */
export const CONTAINER_TARGETS = ['ephemera', 'ephemera-noshare', 'ephemera-nohint', 'tmpfs', 'tmpfs-huge', 'overlay', 'disk'] as const;
export type ContainerTargetName = (typeof CONTAINER_TARGETS)[number];

/** What single-container suites run by default: ephemera-noshare would repeat ephemera there. */
export const SINGLE_CONTAINER_TARGETS: readonly ContainerTargetName[] = ['ephemera', 'tmpfs', 'tmpfs-huge', 'overlay', 'disk'];

export function isContainerTarget(name: string): name is ContainerTargetName {
  return (CONTAINER_TARGETS as readonly string[]).includes(name);
}

/** Throws E_UNKNOWN_TARGET for a name outside CONTAINER_TARGETS (e.g. the host-only ephemera-disk). */
export function checkContainerTargets(names: readonly string[], suite: string): ContainerTargetName[] {
  for (const t of names) {
    if (!isContainerTarget(t))
      throw new BenchError('E_UNKNOWN_TARGET', `unknown target ${t} for the ${suite} suite (container targets: ${CONTAINER_TARGETS.join(', ')})`);
  }
  return names as ContainerTargetName[];
}

export interface ContainerTarget {
  name: ContainerTargetName;
  /** The engine that starts this target's containers (its tmp provider creates their /tmp). */
  engine: Engine;
  tmp: TmpMode;
  /** The Ephemera provider behind ephemera targets (daemon stats per container). */
  ephemera?: EphemeraTmpProvider;
  /** Unmounts and stops what the target set up; returns problems, never throws. */
  close(): Promise<string[]>;
}

export interface ContainerTargetContext {
  /** A private directory on the root disk (createRunDir). */
  runDir: string;
  log: (line: string) => void;
  /** The function's largest file (profile F), passed to Ephemera as its placement hint. */
  sizeHintBytes?: number | null;
}

async function mountTool(args: string[]): Promise<void> {
  const outcome = await runProcess('mount', args, { timeoutMs: 30_000, timeoutCode: 'E_TARGET_SETUP' });
  if (outcome.exitCode !== 0) throw new BenchError('E_TARGET_SETUP', `mount ${args.join(' ')}: ${tail(outcome.stderr)}`);
}

async function unmountQuietly(dir: string): Promise<string[]> {
  if (mountsUnder(dir).length === 0) return [];
  const plain = await runProcess('umount', [dir], { timeoutMs: 30_000 }).catch(() => undefined);
  if (plain?.exitCode === 0) return [];
  const lazy = await runProcess('umount', ['-l', dir], { timeoutMs: 30_000 }).catch((err: unknown) => ({ exitCode: 1, stderr: errorMessage(err) }));
  return lazy.exitCode === 0 ? [] : [`umount ${dir}: ${tail(lazy.stderr)}`];
}

/**
 * Sets up one target for a whole suite run. Containers are then started with `target.engine` and
 * `target.tmp`; bind targets get a fresh directory per container from their provider.
 */
export async function openContainerTarget(name: ContainerTargetName, ctx: ContainerTargetContext): Promise<ContainerTarget> {
  const base = path.join(ctx.runDir, `target-${name}`);
  fs.mkdirSync(base, { recursive: true });
  switch (name) {
    case 'overlay':
    case 'tmpfs': {
      const engine = await Engine.connect();
      return { name, engine, tmp: name === 'tmpfs' ? { kind: 'tmpfs' } : { kind: 'overlay' }, close: async () => [] };
    }
    case 'disk': {
      const provider = await PlainDirTmpProvider.open(base);
      const engine = await Engine.connect({ tmpProvider: provider });
      return {
        name,
        engine,
        tmp: { kind: 'bind' },
        close: async () => {
          try {
            await provider.close();
            return [];
          } catch (err) {
            return [`disk target: ${errorMessage(err)}`];
          }
        },
      };
    }
    case 'tmpfs-huge': {
      // A host tmpfs with large folios, bind-mounted as each container's /tmp; pages are charged to
      // the memory cgroup of the process that first touches them (the function), as with --tmpfs.
      await mountTool(['-t', 'tmpfs', '-o', 'rw,nosuid,nodev,mode=1777,huge=within_size', 'eph-tmpfs-huge', base]);
      let provider: PlainDirTmpProvider | undefined;
      try {
        provider = await PlainDirTmpProvider.open(base);
        const engine = await Engine.connect({ tmpProvider: provider });
        const opened = provider;
        return {
          name,
          engine,
          tmp: { kind: 'bind' },
          close: async () => {
            const problems: string[] = [];
            await opened.close().catch((err: unknown) => problems.push(errorMessage(err)));
            problems.push(...(await unmountQuietly(base)));
            return problems;
          },
        };
      } catch (err) {
        await provider?.close().catch(() => undefined);
        await unmountQuietly(base);
        throw err;
      }
    }
    case 'ephemera':
    case 'ephemera-noshare':
    case 'ephemera-nohint': {
      // ephemera-nohint: Ephemera without the profile's size hint (every new file placed as unknown).
      let provider: EphemeraTmpProvider;
      try {
        provider = await EphemeraTmpProvider.start({
          stateDir: path.join(base, 'state'),
          sizeHintBytes: ctx.sizeHintBytes ?? null,
          ...(name === 'ephemera-nohint' ? { ignoreSizeHints: true } : {}),
        });
      } catch (err) {
        throw new BenchError('E_TARGET_SETUP', `${name}: starting the Ephemera node daemon: ${errorMessage(err)}`, { cause: err });
      }
      try {
        const engine = await Engine.connect({ tmpProvider: provider });
        return {
          name,
          engine,
          tmp: { kind: 'bind' },
          ephemera: provider,
          close: async () => {
            const problems: string[] = [];
            await provider.close().catch((err: unknown) => problems.push(`${name}: stopping the node daemon: ${errorMessage(err)}`));
            // The daemon leaves its shared mounts parent bound after stop; deepest mounts first.
            for (const m of mountsUnder(base).sort((a, b) => b.length - a.length)) problems.push(...(await unmountQuietly(m)));
            return problems;
          },
        };
      } catch (err) {
        await provider.close().catch(() => undefined);
        throw err;
      }
    }
  }
}
