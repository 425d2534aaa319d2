import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { Option } from 'commander';

/** Where the engine keeps its durable state (profiles, the debootstrap package cache). */
export function defaultStateDir(): string {
  return process.env.EPHEMERA_STATE_DIR ?? '/var/lib/ephemera';
}

/** `ephemera node`'s state (node daemon records, spill dirs, tenant manager sockets). */
export function defaultNodeStateDir(): string {
  return path.join(defaultStateDir(), 'node');
}

/**
 * `--state-dir`, defaulting to `ephemera node`'s: every command that finds the node's sockets and
 * records (node, manager, volume-driver) takes the same option, described for its use.
 */
export function nodeStateDirOption(description: string): Option {
  return new Option('--state-dir <dir>', description).default(defaultNodeStateDir());
}

const APT_DIR = '/etc/apt';

/**
 * The Debian mirror apt uses on this machine. Nothing else is reachable here, so debootstrap must be
 * pointed at the same URI (deb.debian.org is only reachable through whatever apt is configured for).
 * Reads both the one-line `.list` format and the deb822 `.sources` format.
 */
export function detectDebianMirror(suite: string, aptDir = APT_DIR): string {
  const override = process.env.EPHEMERA_DEBIAN_MIRROR;
  if (override) return override;
  const files: string[] = [];
  try {
    files.push(path.join(aptDir, 'sources.list'));
    for (const name of readdirSync(path.join(aptDir, 'sources.list.d')).sort()) {
      if (name.endsWith('.list') || name.endsWith('.sources')) files.push(path.join(aptDir, 'sources.list.d', name));
    }
  } catch {
    // A missing sources.list.d is normal on minimal systems.
  }
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      continue;
    }
    const uri = file.endsWith('.sources') ? mirrorFromDeb822(text, suite) : mirrorFromOneLine(text, suite);
    if (uri) return uri;
  }
  return 'http://deb.debian.org/debian';
}

function mirrorFromOneLine(text: string, suite: string): string | undefined {
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    // deb [options] URI suite components…
    const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line);
    if (m && m[2] === suite) return m[1];
  }
  return undefined;
}

function mirrorFromDeb822(text: string, suite: string): string | undefined {
  for (const stanza of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    for (const raw of stanza.split('\n')) {
      if (raw.startsWith('#')) continue;
      const m = /^([A-Za-z-]+):\s*(.*)$/.exec(raw);
      if (m && m[1] && m[2] !== undefined) fields.set(m[1].toLowerCase(), m[2].trim());
    }
    if (fields.get('enabled')?.toLowerCase() === 'no') continue;
    if (!(fields.get('types') ?? '').split(/\s+/).includes('deb')) continue;
    if (!(fields.get('suites') ?? '').split(/\s+/).includes(suite)) continue;
    const uri = (fields.get('uris') ?? '').split(/\s+/)[0];
    if (uri) return uri;
  }
  return undefined;
}
