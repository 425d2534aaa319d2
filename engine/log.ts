import pino from 'pino';

/** Engine logs go to stderr so that `ephemera run` keeps stdout for the function's own output. */
export const engineLog = pino(
  { name: 'engine', level: process.env.EPHEMERA_LOG_LEVEL ?? 'warn' },
  pino.destination(2),
);
