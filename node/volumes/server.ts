import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { formatError } from '../../errors/index';
import { VolumeError, errorMessage } from './errors';
import { PLUGIN_CONTENT_TYPE, type PluginReply } from './protocol';

/** Docker finds legacy plugins by their socket here: `<dir>/<name>.sock`. */
export const DOCKER_PLUGIN_DIR = '/run/docker/plugins';
const MAX_BODY = 1 << 20;

export type PluginHandler = (endpoint: string, body: unknown) => Promise<{ status: number; reply: PluginReply }>;

/**
 * The plugin's HTTP server on a Unix socket (0600: only root, i.e. dockerd, may call it). Bodies
 * are JSON (Docker sends none, or `{}`, for Activate, Capabilities and List); a body that is not
 * JSON gets `{"Err"}` and changes nothing.
 */
export class PluginServer {
  private constructor(
    private readonly server: http.Server,
    readonly socketPath: string,
  ) {}

  static async listen(socketPath: string, handler: PluginHandler): Promise<PluginServer> {
    fs.mkdirSync(path.dirname(socketPath), { recursive: true, mode: 0o755 });
    if (fs.existsSync(socketPath)) {
      if (await answers(socketPath)) throw new VolumeError('E_SOCKET', `${socketPath} is served by another process: pick another --volume-driver name`);
      fs.rmSync(socketPath, { force: true }); // a dead driver's socket
    }
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_BODY) req.destroy();
        else chunks.push(c);
      });
      req.on('end', () => {
        const send = (status: number, reply: PluginReply) => res.writeHead(status, { 'content-type': PLUGIN_CONTENT_TYPE }).end(JSON.stringify(reply));
        if (req.method !== 'POST') return send(405, { Err: `${req.method} ${req.url}: the plugin API is POST only` });
        const text = Buffer.concat(chunks).toString('utf8').trim();
        let body: unknown = {};
        if (text !== '') {
          try {
            body = JSON.parse(text);
          } catch (e) {
            return send(400, { Err: `${req.url}: body is not JSON: ${errorMessage(e)}` });
          }
        }
        handler(req.url ?? '', body).then(
          ({ status, reply }) => send(status, reply),
          (e: unknown) => send(500, { Err: formatError(e) }),
        );
      });
    });
    const oldMask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(socketPath, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } finally {
      process.umask(oldMask);
    }
    return new PluginServer(server, socketPath);
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
    fs.rmSync(this.socketPath, { force: true });
  }
}

/** Whether something accepts connections on the socket (a live driver of the same name). */
function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.request({ socketPath, path: '/Plugin.Activate', method: 'POST', timeout: 2000 }, (res) => {
      res.resume();
      resolve(true);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => {
      req.destroy();
      resolve(true);
    });
    req.end();
  });
}
