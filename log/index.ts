import pino from 'pino';

/**
 * The process's loggers: JSON lines on stderr, because stdout carries command output
 * (`controller status`, `ephemera run`'s function output). The level is the caller's explicit one
 * (a `--log-level` option), else EPHEMERA_LOG_LEVEL, else the logger's default.
 */
export function createLogger(name: string, defaultLevel: pino.LevelWithSilent = 'info', level?: string): pino.Logger {
  return pino({ name, level: level ?? process.env.EPHEMERA_LOG_LEVEL ?? defaultLevel }, pino.destination(2));
}
