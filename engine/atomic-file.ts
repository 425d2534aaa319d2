import { mkdir, open, rename } from 'node:fs/promises';
import path from 'node:path';

/**
 * Replaces `file` with `text` so that a crash leaves the old content or the new, never half: write
 * a temporary beside it, fsync, rename over, fsync the directory. Used for the durable state of
 * profiles (engine) and deployed functions and hashed tenant tokens (controller).
 */
export async function writeFileAtomic(file: string, text: string, mode = 0o644): Promise<void> {
  const dir = path.dirname(file);
  await mkdir(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  // `mode` is set at creation, so a private file (0600) is never readable by others, not even briefly.
  const handle = await open(tmp, 'w', mode);
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await rename(tmp, file);
  const dirHandle = await open(dir, 'r');
  try {
    await dirHandle.sync();
  } finally {
    await dirHandle.close();
  }
}
