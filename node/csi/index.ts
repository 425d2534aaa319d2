/** The Kubernetes CSI node plugin: an Ephemera /tmp for pods, as a CSI ephemeral inline volume. */
export { CsiNodePlugin } from './plugin';
export { csiMountId } from './node';
export { CsiConfigError, parseCsiConfig, loadCsiConfig } from './config';
export { podMemoryCgroup } from './cgroup';
export { parseInlineVolume } from './attributes';
export { CsiError } from './errors';
