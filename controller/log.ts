import pino from 'pino';

/** Controller and agent logs go to stderr (stdout is for command output such as `controller status`). */
export function createLogger(name: string): pino.Logger {
  return pino({ name, level: process.env.EPHEMERA_LOG_LEVEL ?? 'info' }, pino.destination(2));
}
