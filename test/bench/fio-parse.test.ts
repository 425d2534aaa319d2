import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { fioArgs, parseFioOutput } from '../../bench/fio';

// Captured from fio-3.33 on this kind of machine (psync, 4 MiB file on tmpfs, 300 ms runs).
const fixture = (name: string): string => readFileSync(path.join(__dirname, 'fixtures', name), 'utf8');

describe('parseFioOutput', () => {
  it('reads the read side of a random-read job', () => {
    const figures = parseFioOutput(fixture('fio-3.33-randread-4k.json'));
    expect(figures.iops).toBeCloseTo(276362.126246, 4);
    expect(figures.bw_mibs).toBeCloseTo(1131979269 / 1048576, 6);
    expect(figures.lat_us).toBeCloseTo(3.239733269, 6);
  });

  it('reads the write side of a sequential-write job', () => {
    const figures = parseFioOutput(fixture('fio-3.33-seqwrite-1m.json'));
    expect(figures.iops).toBeCloseTo(10189.368771, 4);
    expect(figures.bw_mibs).toBeCloseTo(10684327548 / 1048576, 6);
    expect(figures.lat_us).toBeCloseTo(96.844867949, 6);
  });

  it('skips warnings fio prints before the JSON', () => {
    const noisy = `fio: file hash not empty on exit\n${fixture('fio-3.33-randread-4k.json')}`;
    expect(parseFioOutput(noisy).iops).toBeCloseTo(276362.126246, 4);
  });

  it('refuses output it does not understand, with stable codes', () => {
    expect(() => parseFioOutput('fio: engine psync not loadable\n')).toThrow(expect.objectContaining({ code: 'E_FIO_OUTPUT' }));
    expect(() => parseFioOutput('{"fio version":"fio-3.33","jobs":[]}')).toThrow(expect.objectContaining({ code: 'E_FIO_OUTPUT' }));
    const failed = JSON.parse(fixture('fio-3.33-randread-4k.json')) as { jobs: { error: number }[] };
    failed.jobs[0]!.error = 5;
    expect(() => parseFioOutput(JSON.stringify(failed))).toThrow(expect.objectContaining({ code: 'E_FIO' }));
    const idle = JSON.parse(fixture('fio-3.33-randread-4k.json')) as { jobs: { read: { io_bytes: number } }[] };
    idle.jobs[0]!.read.io_bytes = 0;
    expect(() => parseFioOutput(JSON.stringify(idle))).toThrow(/moved no bytes/);
  });
});

describe('fioArgs', () => {
  it('asks for psync, one job, time-based runs and the cache mode of the row', () => {
    const args = fioArgs({ name: 'randread-4k-cold', rw: 'randread', blockSize: '4k', filename: '/m/fio.dat', sizeMiB: 32, runtimeMs: 2000, invalidate: true });
    expect(args).toEqual(
      expect.arrayContaining(['--ioengine=psync', '--numjobs=1', '--rw=randread', '--bs=4k', '--size=32M', '--runtime=2000ms', '--time_based=1', '--invalidate=1', '--output-format=json', '--filename=/m/fio.dat']),
    );
  });
});
