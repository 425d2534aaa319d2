import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import path from 'node:path';
import type Docker from 'dockerode';
import { EngineError, dockerStatus, errorMessage } from './errors';
import { defaultStateDir, detectDebianMirror } from './config';
import { engineLog } from './log';

/**
 * An image is data: the tag is a hash of this object, so changing a package list or a step yields
 * a new tag and an old image is never mistaken for the new recipe.
 */
export interface ImageRecipe {
  /** Short name; the repository is `ephemera/<name>`. */
  name: string;
  /** `debootstrap`: a Debian minbase root; `busybox`: the host's busybox-static with its applets. */
  base: 'debootstrap' | 'busybox';
  /** Debian suite for `debootstrap`. */
  suite?: string;
  /** Debian packages added to the minbase root (ignored for `busybox`). */
  packages: string[];
  /** Shell commands run inside the new root (chroot) after the packages are in. */
  steps: string[];
  /** Environment baked into the image. */
  env?: Record<string, string>;
}

/** Bumped when the way a recipe is turned into an image changes (not the recipe itself). */
const BUILDER_VERSION = 1;

const FN_USER_STEPS = ['useradd --uid 1000 --user-group --create-home --shell /bin/sh fn'];
const CLEANUP_STEPS = ['apt-get clean', 'rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log', 'chmod 1777 /tmp'];
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The function image: python3, gzip, fio, coreutils and a non-root user `fn` (uid 1000). */
export const FUNCTION_RECIPE: ImageRecipe = {
  name: 'function',
  base: 'debootstrap',
  suite: 'bookworm',
  packages: ['python3', 'gzip', 'fio', 'coreutils', 'passwd'],
  steps: [...FN_USER_STEPS, ...CLEANUP_STEPS],
  env: { PATH: DEFAULT_PATH, LANG: 'C.UTF-8' },
};

/** A ~2 s image for fast tests: busybox-static and the same `fn` user. */
export const BUSYBOX_RECIPE: ImageRecipe = {
  name: 'busybox',
  base: 'busybox',
  packages: [],
  steps: [],
  env: { PATH: DEFAULT_PATH },
};

/** The bench adds its own recipes (e.g. `workloads`) with `registerRecipe`. */
const recipes = new Map<string, ImageRecipe>([
  [FUNCTION_RECIPE.name, FUNCTION_RECIPE],
  [BUSYBOX_RECIPE.name, BUSYBOX_RECIPE],
]);

export function registerRecipe(recipe: ImageRecipe): void {
  recipes.set(recipe.name, recipe);
}

export function listRecipes(): ImageRecipe[] {
  return [...recipes.values()];
}

export function getRecipe(name: string): ImageRecipe | undefined {
  return recipes.get(name);
}

export function recipeHash(recipe: ImageRecipe): string {
  const canonical = JSON.stringify({
    builder: BUILDER_VERSION,
    name: recipe.name,
    base: recipe.base,
    suite: recipe.suite ?? null,
    packages: [...recipe.packages].sort(),
    steps: recipe.steps,
    env: Object.entries(recipe.env ?? {}).sort(([a], [b]) => a.localeCompare(b)),
  });
  return createHash('sha256').update(canonical).digest('hex').slice(0, 12);
}

export function recipeTag(recipe: ImageRecipe): string {
  return `ephemera/${recipe.name}:${recipeHash(recipe)}`;
}

/** A recipe name (`function`) becomes its hashed tag; anything else is taken as a Docker reference. */
export function resolveImageRef(nameOrRef: string): string {
  const recipe = recipes.get(nameOrRef);
  return recipe ? recipeTag(recipe) : nameOrRef;
}

export interface ImageBuildResult {
  tag: string;
  /** False when an image with this recipe hash already existed. */
  built: boolean;
  buildMs: number;
}

export interface ImageBuildOptions {
  stateDir?: string;
  /** Rebuild even when the tag exists. */
  force?: boolean;
  onProgress?: (line: string) => void;
}

export async function imageExists(docker: Docker, tag: string): Promise<boolean> {
  try {
    await docker.getImage(tag).inspect();
    return true;
  } catch (err) {
    if (dockerStatus(err) === 404) return false;
    throw new EngineError('E_DOCKER', `inspecting image ${tag}: ${errorMessage(err)}`, { tag }, err);
  }
}

// Two concurrent test files asking for the same missing image must not both debootstrap it.
const inflightBuilds = new Map<string, Promise<ImageBuildResult>>();

/** Builds the recipe's image unless an image with the same recipe hash is already present. */
export function ensureImage(docker: Docker, recipe: ImageRecipe, options: ImageBuildOptions = {}): Promise<ImageBuildResult> {
  const tag = recipeTag(recipe);
  const pending = inflightBuilds.get(tag);
  if (pending) return pending;
  const build = (async () => {
    if (!options.force && (await imageExists(docker, tag))) return { tag, built: false, buildMs: 0 };
    const release = await acquireBuildLock(path.join(options.stateDir ?? defaultStateDir(), 'build', `${recipe.name}.lock`));
    try {
      // Another process may have built it while we waited for the lock.
      if (!options.force && (await imageExists(docker, tag))) return { tag, built: false, buildMs: 0 };
      return await buildImage(docker, recipe, options);
    } finally {
      await release();
    }
  })().finally(() => inflightBuilds.delete(tag));
  inflightBuilds.set(tag, build);
  return build;
}

/**
 * A cross-process lock (test files run in separate processes): a file created with O_EXCL holding
 * the owner's pid; a lock whose owner is dead is taken over.
 */
async function acquireBuildLock(lockFile: string, waitMs = 15 * 60_000): Promise<() => Promise<void>> {
  await mkdir(path.dirname(lockFile), { recursive: true });
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      await writeFile(lockFile, `${process.pid}\n`, { flag: 'wx' });
      return () => rm(lockFile, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = Number((await readFile(lockFile, 'utf8').catch(() => '')).trim());
    if (!Number.isInteger(owner) || owner <= 0 || !processAlive(owner)) {
      await rm(lockFile, { force: true });
      continue;
    }
    if (Date.now() > deadline) throw new EngineError('E_IMAGE_BUILD', `waited too long for ${lockFile} (held by pid ${owner})`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function buildImage(docker: Docker, recipe: ImageRecipe, options: ImageBuildOptions): Promise<ImageBuildResult> {
  const stateDir = options.stateDir ?? defaultStateDir();
  const tag = recipeTag(recipe);
  const progress = options.onProgress ?? ((line: string) => engineLog.info({ tag }, line));
  const started = performance.now();
  const buildRoot = path.join(stateDir, 'build');
  await mkdir(buildRoot, { recursive: true });
  const workDir = await mkdtemp(path.join(buildRoot, `${recipe.name}-`));
  const rootfs = path.join(workDir, 'rootfs');
  try {
    await mkdir(rootfs);
    if (recipe.base === 'debootstrap') await populateDebootstrap(recipe, rootfs, stateDir, progress);
    else await populateBusybox(rootfs);
    for (const step of recipe.steps) {
      progress(`step: ${step}`);
      await runTool('chroot', [rootfs, '/bin/sh', '-c', step]);
    }
    progress(`importing ${tag}`);
    await importRootfs(docker, rootfs, recipe, tag);
  } catch (err) {
    if (err instanceof EngineError) throw err;
    throw new EngineError('E_IMAGE_BUILD', `building ${tag}: ${errorMessage(err)}`, { tag }, err);
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
  const buildMs = Math.round(performance.now() - started);
  progress(`built ${tag} in ${(buildMs / 1000).toFixed(1)} s`);
  return { tag, built: true, buildMs };
}

async function populateDebootstrap(recipe: ImageRecipe, rootfs: string, stateDir: string, progress: (l: string) => void): Promise<void> {
  const suite = recipe.suite ?? 'bookworm';
  const mirror = detectDebianMirror(suite);
  // The .deb cache makes a rebuild (new recipe hash, same packages) download nothing.
  const cacheDir = path.join(stateDir, 'cache', 'debootstrap', suite);
  await mkdir(cacheDir, { recursive: true });
  const args = ['--variant=minbase', `--cache-dir=${cacheDir}`];
  if (recipe.packages.length > 0) args.push(`--include=${recipe.packages.join(',')}`);
  args.push(suite, rootfs, mirror);
  progress(`debootstrap ${args.join(' ')}`);
  await runTool('debootstrap', args);
}

async function populateBusybox(rootfs: string): Promise<void> {
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p));
  if (!busybox) throw new EngineError('E_IMAGE_BUILD', 'busybox not found on the host (apt-get install busybox-static)');
  for (const dir of ['bin', 'etc', 'tmp', 'home/fn', 'root', 'proc', 'sys', 'dev']) {
    await mkdir(path.join(rootfs, dir), { recursive: true });
  }
  await copyFile(busybox, path.join(rootfs, 'bin/busybox'));
  await chmod(path.join(rootfs, 'bin/busybox'), 0o755);
  const applets = (await runTool(busybox, ['--list'])).split('\n').filter((a) => a && a !== 'busybox');
  for (const applet of applets) await symlink('busybox', path.join(rootfs, 'bin', applet));
  // PATH lists /usr/bin too; `env` and friends are looked up there by many scripts.
  await mkdir(path.join(rootfs, 'usr'), { recursive: true });
  await symlink('../bin', path.join(rootfs, 'usr/bin'));
  await writeFile(path.join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nfn:x:1000:1000:fn:/home/fn:/bin/sh\n');
  await writeFile(path.join(rootfs, 'etc/group'), 'root:x:0:\nfn:x:1000:\n');
  await chmod(path.join(rootfs, 'tmp'), 0o1777);
  await runTool('chown', ['1000:1000', path.join(rootfs, 'home/fn')]);
}

async function importRootfs(docker: Docker, rootfs: string, recipe: ImageRecipe, tag: string): Promise<void> {
  const [repo, version] = tag.split(':') as [string, string];
  const tar = spawn('tar', ['-C', rootfs, '--numeric-owner', '--xattrs', '-cf', '-', '.'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let tarStderr = '';
  tar.stderr.on('data', (d: Buffer) => (tarStderr += d.toString()));
  const tarExit = new Promise<number>((resolve) => tar.on('close', (code) => resolve(code ?? -1)));
  const changes = [
    ...Object.entries(recipe.env ?? {}).map(([k, v]) => `ENV ${k}=${v}`),
    `LABEL ephemera.recipe=${recipe.name} ephemera.recipe-hash=${version}`,
    'CMD ["/bin/sh"]',
  ];
  const stream = await docker.importImage(tar.stdout, { repo, tag: version, changes });
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(stream, (err: Error | null, output: Array<{ error?: string }>) => {
      const failed = output?.find((o) => o.error);
      if (err || failed) reject(new EngineError('E_IMAGE_BUILD', `docker import ${tag}: ${err?.message ?? failed?.error}`));
      else resolve();
    });
  });
  const code = await tarExit;
  if (code !== 0) throw new EngineError('E_IMAGE_BUILD', `tar of ${rootfs} exited ${code}: ${tarStderr.trim()}`);
}

export interface EngineImage {
  tag: string;
  recipe: string | undefined;
  sizeBytes: number;
  created: Date;
}

export async function listEngineImages(docker: Docker): Promise<EngineImage[]> {
  const images = await docker.listImages({ filters: JSON.stringify({ label: ['ephemera.recipe'] }) });
  return images.flatMap((img) =>
    (img.RepoTags ?? []).map((tag) => ({
      tag,
      recipe: img.Labels?.['ephemera.recipe'],
      sizeBytes: img.Size,
      created: new Date(img.Created * 1000),
    })),
  );
}

/** Runs a host tool, resolving with its stdout; a failure carries the tool's stderr tail. */
export function runTool(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', (err) => reject(new Error(`${cmd}: ${err.message}`)));
    child.on('close', (code) => {
      if (code === 0) resolve(stdout);
      else reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr.trim().split('\n').slice(-5).join(' | ')}`));
    });
  });
}
