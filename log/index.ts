import pino from 'pino';

/**
 * The process's loggers: JSON lines on stderr, because stdout carries command output
 * (`controller status`, `ephemera run`'s function output). EPHEMERA_LOG_LEVEL overrides each
 * logger's default level.
 */
export function createLogger(name: string, defaultLevel: pino.LevelWithSilent = 'info'): pino.Logger {
  return pino({ name, level: process.env.EPHEMERA_LOG_LEVEL ?? defaultLevel }, pino.destination(2));
}
