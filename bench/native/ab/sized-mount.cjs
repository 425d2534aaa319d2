// node sized-mount.cjs WORKTREE MOUNTPOINT MEMDIR : an ephemera mount as `ephemera node` makes one
// (own memory-tier tmpfs sized to a 1 GiB quota, memoryTierSized), served until SIGTERM.
const [root, mnt, memdir] = process.argv.slice(2);
const { SizedMemoryTier } = require(`${root}/dist/fusefs/daemon/memory-tier.js`);
const { EphemeraMount } = require(`${root}/dist/fusefs/mount.js`);
(async () => {
  const quota = 1 << 30;
  const tier = SizedMemoryTier.create(memdir, quota);
  const m = await EphemeraMount.open({ mountpoint: mnt, sharedMemoryDir: tier.dir, sizeQuota: quota, memoryTierSized: true, allowOther: true, transport: process.env.T || 'auto' });
  console.log(JSON.stringify({ event: 'ready', pid: process.pid, transport: m.info.transport, mode: m.info.mode }));
  const stop = async () => { await m.close(); tier.close(); process.exit(0); };
  process.on('SIGTERM', stop); process.on('SIGINT', stop);
})().catch((e) => { console.error(e); process.exit(1); });
