/** The Kubernetes CSI node plugin: an Ephemera /tmp for pods, as a CSI ephemeral inline volume. */
export { CsiNodePlugin, type CsiNodePluginOptions, type RegistrationState } from './plugin';
export { CsiNode, csiMountId, type PublishRequest, type UnpublishRequest, type PublishedVolume } from './node';
export { CsiConfigError, parseCsiConfig, loadCsiConfig, CsiConfigSchema, type CsiConfig, DEFAULT_DRIVER_NAME, KUBELET_REGISTRY_DIR, KUBELET_PLUGINS_DIR, DEFAULT_CGROUP_ROOT } from './config';
export { podMemoryCgroup, podCgroupCandidates } from './cgroup';
export { parseInlineVolume, type InlineVolume, K8S_EPHEMERAL, K8S_POD_UID, K8S_POD_NAME, K8S_POD_NAMESPACE } from './attributes';
export { CsiError } from './errors';
