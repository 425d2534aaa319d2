import { createLogger } from '../log/index';

/** Quieter than the control plane by default: `ephemera run` is a foreground command. */
export const engineLog = createLogger('engine', 'warn');
