// A blocking control-API call for code that must stay synchronous (the model test's reference
// hooks run between two synchronous file operations). A worker thread owns the socket; the caller
// waits on a SharedArrayBuffer with a timeout, so a daemon that never answers fails the test
// instead of hanging it.
import { Worker } from 'node:worker_threads';

const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const net = require('node:net');
const flag = new Int32Array(workerData.sab, 0, 1);
const size = new Int32Array(workerData.sab, 4, 1);
const out = Buffer.from(workerData.sab, 8);
const socket = net.createConnection(workerData.socket, () => parentPort.postMessage('connected'));
socket.on('error', (e) => parentPort.postMessage('error: ' + e.message));
let pending = '';
socket.on('data', (d) => {
  pending += d.toString();
  let i;
  while ((i = pending.indexOf('\\n')) >= 0) {
    const line = Buffer.from(pending.slice(0, i));
    pending = pending.slice(i + 1);
    const n = line.copy(out, 0);
    size[0] = n;
    Atomics.store(flag, 0, 1);
    Atomics.notify(flag, 0);
  }
});
parentPort.on('message', (line) => (line === 'close' ? socket.end() : socket.write(line + '\\n')));
`;

export class SyncControl {
  private readonly sab = new SharedArrayBuffer(8 + (1 << 20));
  private readonly flag = new Int32Array(this.sab, 0, 1);
  private readonly size = new Int32Array(this.sab, 4, 1);
  private constructor(private readonly worker: Worker) {}

  static async connect(socket: string): Promise<SyncControl> {
    const sc = new SyncControl(undefined as unknown as Worker);
    const worker = new Worker(WORKER, { eval: true, workerData: { socket, sab: sc.sab } });
    (sc as unknown as { worker: Worker }).worker = worker;
    await new Promise<void>((resolve, reject) => {
      worker.once('message', (m: string) => (m === 'connected' ? resolve() : reject(new Error(m))));
      worker.once('error', reject);
    });
    return sc;
  }

  call(message: Record<string, unknown>, timeoutMs = 20_000): Record<string, unknown> {
    Atomics.store(this.flag, 0, 0);
    this.worker.postMessage(JSON.stringify(message));
    if (Atomics.wait(this.flag, 0, 0, timeoutMs) === 'timed-out') throw new Error(`daemon did not answer ${JSON.stringify(message)} within ${timeoutMs} ms`);
    const reply = JSON.parse(Buffer.from(this.sab, 8, this.size[0]).toString()) as Record<string, unknown>;
    if (reply.ok !== true) throw new Error(`control call ${JSON.stringify(message)} failed: ${JSON.stringify(reply)}`);
    return reply;
  }

  async close(): Promise<void> {
    this.worker.postMessage('close');
    await this.worker.terminate();
  }
}
