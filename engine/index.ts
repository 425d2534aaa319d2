/** The container engine: images from Debian packages, function containers, invocations, profiling. */
export { Engine, FunctionContainer } from './engine';
export type { EngineOptions, StartOptions, InvokeOptions, InvocationResult, StartTimings } from './engine';
export { EngineError, isEngineError, errorMessage } from './errors';
export type { EngineErrorCode } from './errors';
export { parseFunctionSpec, FunctionSpecSchema, TmpModeSchema, MANAGED_LABEL } from './spec';
export type { FunctionSpec, FunctionSpecInput, TmpMode } from './spec';
export { PlainDirTmpProvider, isMountPoint, SIZE_HINT_LABEL } from './tmp-provider';
export type { TmpProvider, TmpCreateOptions } from './tmp-provider';
export {
  FUNCTION_RECIPE,
  BUSYBOX_RECIPE,
  registerRecipe,
  getRecipe,
  listRecipes,
  recipeHash,
  recipeTag,
  resolveImageRef,
  listEngineImages,
} from './images';
export type { ImageRecipe, ImageBuildResult, ImageBuildOptions, EngineImage } from './images';
export { readRssBytes, readOomKills, readMemoryStat, memoryCgroupOfPid, findMemoryMount, removeLeftoverCgroup, containerIdOfCgroup } from './cgroup';
export { profileFunction, profileKey, ProfileStore, largestFileUnder } from './profile';
export type { FunctionProfile, ProfileRunOptions, ProfileInputRun } from './profile';
export { defaultNodeStateDir, defaultStateDir, detectDebianMirror } from './config';
export { writeFileAtomic } from './atomic-file';
export { registerEngineCommands, type OpenEphemeraTmp } from './commands';
