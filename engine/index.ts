/** The container engine: images from Debian packages, function containers, invocations, profiling. */
export { Engine, FunctionContainer } from './engine';
export type { EngineOptions, InvokeOptions, InvocationResult } from './engine';
export { EngineError, isEngineError, errorMessage } from './errors';
export type { EngineErrorCode } from './errors';
export { parseFunctionSpec } from './spec';
export type { FunctionSpec, TmpMode } from './spec';
export { PlainDirTmpProvider, SIZE_HINT_LABEL } from './tmp-provider';
export type { TmpProvider, TmpCreateOptions } from './tmp-provider';
export { FUNCTION_RECIPE, BUSYBOX_RECIPE, registerRecipe, getRecipe, recipeHash } from './images';
export type { ImageRecipe } from './images';
export { readOomKills, readMemoryStat, memoryCgroupOfPid, findMemoryMount, removeLeftoverCgroup, containerIdOfCgroup } from './cgroup';
export { profileFunction, ProfileStore, largestFileUnder } from './profile';
export { defaultNodeStateDir, detectDebianMirror, nodeStateDirOption } from './config';
export { writeFileAtomic } from './atomic-file';
export { registerEngineCommands } from './commands';
