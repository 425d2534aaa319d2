// `ephemera node --csi-config FILE` as the DaemonSet runs it (no dockerd needed): the registration
// and CSI sockets appear where the config puts them and answer; SIGTERM removes them; a bad config
// stops the command before anything starts, naming the key.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO, mountUnavailableReason } from '../support/mount';
import { call, decode, text } from './wire';
import { removeNodeDaemonState } from '../support/node-state';

const why = mountUnavailableReason() ?? undefined;
if (why) console.warn(`\n!!! SKIPPING CSI node plugin CLI tests: ${why}\n`);
const CLI = path.join(REPO, 'bin', 'ephemera.js');
const DRIVER = 'cli.csi.ephemera.io';

describe.skipIf(why !== undefined)('ephemera node --csi-config', () => {
  let dir: string;
  let child: ChildProcess | undefined;
  let killer: NodeJS.Timeout | undefined;
  let out = '';
  const socketDir = () => path.join(dir, 'kubelet');
  const config = () => ({
    driverName: DRIVER,
    nodeId: 'cli-node',
    namespaces: { default: null },
    csiSocket: path.join(socketDir(), 'plugins', DRIVER, 'csi.sock'),
    registrationDir: path.join(socketDir(), 'plugins_registry'),
  });

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join('/var/tmp', 'ephemera-t16-csi-cli-'));
    fs.writeFileSync(path.join(dir, 'csi.json'), JSON.stringify(config()));
    child = spawn(process.execPath, [CLI, 'node', '--name', 'cli-node', '--state-dir', path.join(dir, 'state'), '--no-volume-driver', '--no-sharing', '--tmp-size', '64', '--csi-config', path.join(dir, 'csi.json')], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // A node that never stops on its own must not outlive the suite.
    killer = setTimeout(() => child?.kill('SIGKILL'), 120_000);
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    const end = Date.now() + 30_000;
    while (!out.includes('CSI node plugin')) {
      if (Date.now() > end || child.exitCode !== null) throw new Error(`ephemera node did not start the CSI plugin: ${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }, 60_000);

  afterAll(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await new Promise((r) => child!.once('exit', r));
    }
    clearTimeout(killer);
    if (dir) {
      removeNodeDaemonState(path.join(dir, 'state'), dir);
    }
  }, 60_000);

  it('serves registration and CSI where the config says; SIGTERM stops it and removes both sockets', async () => {
    const c = config();
    expect(out).toContain(`CSI node plugin "${DRIVER}" on ${c.csiSocket}`);
    const reg = new grpc.Client(`unix://${path.join(c.registrationDir, `${DRIVER}-reg.sock`)}`, grpc.credentials.createInsecure());
    const csi = new grpc.Client(`unix://${c.csiSocket}`, grpc.credentials.createInsecure());
    try {
      // message PluginInfo { string type = 1; string name = 2; string endpoint = 3; repeated string supported_versions = 4; }
      const info = await call(reg, '/pluginregistration.Registration/GetInfo');
      expect(info.code, info.details).toBe(grpc.status.OK);
      expect([text(info.body, 1), text(info.body, 2), text(info.body, 3)]).toEqual([['CSIPlugin'], [DRIVER], [c.csiSocket]]);
      // message ProbeResponse { .google.protobuf.BoolValue ready = 1; }
      const probe = await call(csi, '/csi.v1.Identity/Probe');
      expect(probe.code, probe.details).toBe(grpc.status.OK);
      expect(decode(probe.body.get(1)![0] as Buffer).get(1)).toEqual([1]);
      // message NodeGetInfoResponse { string node_id = 1; … }
      expect(text((await call(csi, '/csi.v1.Node/NodeGetInfo')).body, 1)).toEqual(['cli-node']);
    } finally {
      reg.close();
      csi.close();
    }
    const exited = new Promise<number | null>((r) => child!.once('exit', (code) => r(code)));
    child!.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(fs.existsSync(c.csiSocket)).toBe(false);
    expect(fs.existsSync(path.join(c.registrationDir, `${DRIVER}-reg.sock`))).toBe(false);
  }, 60_000);

  it('a bad config: exit 1 with E_BAD_CONFIG naming the key, and no node daemon started', async () => {
    const bad = path.join(dir, 'bad.json');
    fs.writeFileSync(bad, JSON.stringify({ ...config(), namespaces: { default: 'not a tenant!' } }));
    const state = path.join(dir, 'state-bad');
    const r = await new Promise<{ code: number; stderr: string }>((resolve) =>
      execFile(process.execPath, [CLI, 'node', '--state-dir', state, '--no-volume-driver', '--csi-config', bad], { timeout: 30_000 }, (err, _o, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stderr: String(stderr) }),
      ),
    );
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('E_BAD_CONFIG');
    expect(r.stderr).toContain('namespaces.default');
    expect(fs.existsSync(state)).toBe(false);
  }, 60_000);
});
