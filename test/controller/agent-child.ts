/**
 * A node agent in its own process, for tests that kill it (SIGKILL) mid-invocation. Run with
 * vite-node: `vite-node test/controller/agent-child.ts -- URL NAME LIMIT_MIB LABEL=VALUE`.
 */
import { NodeAgent } from '../../agent/index';
import { DockerTaskExecutor } from '../../node/index';
import { Engine } from '../../engine/index';

async function main(): Promise<void> {
  const args = process.argv.slice(2).filter((a) => a !== '--');
  const [url, name, limitMiB, label] = args;
  if (!url || !name || !limitMiB || !label) throw new Error(`usage: URL NAME LIMIT_MIB LABEL=VALUE (got ${args.join(' ')})`);
  const [key, value] = label.split('=') as [string, string];
  const engine = await Engine.connect();
  const agent = await NodeAgent.start({
    controllerUrl: url,
    name,
    limitBytes: Number(limitMiB) * 1024 * 1024,
    executor: new DockerTaskExecutor(engine, name, { [key]: value }),
    reconnectMinMs: 100,
    reconnectMaxMs: 500,
  });
  await agent.registered();
  process.stdout.write(`registered ${agent.instanceId}\n`);
  // Runs until the test kills it.
  setInterval(() => undefined, 1 << 30);
}

main().catch((err: unknown) => {
  process.stderr.write(`agent-child: ${String(err)}\n`);
  process.exit(1);
});
