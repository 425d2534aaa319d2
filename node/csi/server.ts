import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import type { Logger } from 'pino';
import { CsiError, errorMessage } from './errors';

/** The .proto files live in node/csi/proto/ of the source tree; the built code runs from dist/node/csi/. */
function protoFile(name: string): string {
  for (const dir of [path.join(__dirname, 'proto'), path.resolve(__dirname, '..', '..', '..', 'node', 'csi', 'proto')]) {
    const file = path.join(dir, name);
    if (fs.existsSync(file)) return file;
  }
  throw new Error(`${name} not found beside ${__dirname}`);
}

/** Proto field names as written (snake_case), enums as names, unset fields filled with defaults. */
const LOADER: protoLoader.Options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

type ServiceDef = grpc.ServiceDefinition;

export function loadServices(): { identity: ServiceDef; node: ServiceDef; registration: ServiceDef } {
  const csi = grpc.loadPackageDefinition(protoLoader.loadSync(protoFile('csi.proto'), LOADER)) as unknown as {
    csi: { v1: { Identity: { service: ServiceDef }; Node: { service: ServiceDef } } };
  };
  const reg = grpc.loadPackageDefinition(protoLoader.loadSync(protoFile('pluginregistration.proto'), LOADER)) as unknown as {
    pluginregistration: { Registration: { service: ServiceDef } };
  };
  return { identity: csi.csi.v1.Identity.service, node: csi.csi.v1.Node.service, registration: reg.pluginregistration.Registration.service };
}

export type Handlers = Record<string, (request: never) => Promise<object>>;

/**
 * One method's handler: a CsiError becomes its gRPC status with the message as details; any
 * other failure is INTERNAL (and logged, since it is ours).
 */
function unary(log: Logger, method: string, fn: (request: never) => Promise<object>): grpc.handleUnaryCall<unknown, object> {
  return (call, callback) => {
    fn(call.request as never).then(
      (reply) => callback(null, reply),
      (e: unknown) => {
        const code = e instanceof CsiError ? e.code : grpc.status.INTERNAL;
        if (!(e instanceof CsiError)) log.error({ method, err: errorMessage(e) }, 'CSI call failed');
        else log.info({ method, code: grpc.status[code], reason: e.message }, 'CSI call refused');
        callback({ code, details: errorMessage(e) });
      },
    );
  };
}

/** A gRPC server on one unix socket (CSI and kubelet's registration speak only over unix sockets). */
export class UnixGrpcServer {
  private constructor(
    private readonly server: grpc.Server,
    readonly socketPath: string,
  ) {}

  static async listen(socketPath: string, services: Array<{ definition: ServiceDef; handlers: Handlers }>, log: Logger): Promise<UnixGrpcServer> {
    fs.mkdirSync(path.dirname(socketPath), { recursive: true, mode: 0o750 });
    removeStaleSocket(socketPath);
    const server = new grpc.Server();
    for (const s of services) {
      const impl: grpc.UntypedServiceImplementation = {};
      for (const [method, fn] of Object.entries(s.handlers)) impl[method] = unary(log, method, fn);
      server.addService(s.definition, impl);
    }
    await new Promise<void>((resolve, reject) => {
      server.bindAsync(`unix://${socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(new Error(`cannot listen on ${socketPath}: ${err.message}`)) : resolve()));
    });
    // Only root (kubelet) may call: the plugin mounts and binds cgroups for whoever asks.
    fs.chmodSync(socketPath, 0o600);
    return new UnixGrpcServer(server, socketPath);
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, 5_000);
      this.server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
    removeStaleSocket(this.socketPath);
  }
}

function removeStaleSocket(socketPath: string): void {
  try {
    if (fs.lstatSync(socketPath).isSocket()) fs.unlinkSync(socketPath);
    else throw new Error(`${socketPath} exists and is not a socket: refusing to replace it`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}
