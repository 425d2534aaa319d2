import type WebSocket from 'ws';

export interface HeartbeatOptions {
  /** A ping every this many ms. */
  intervalMs: number;
  /** A pong must come back within this; otherwise the peer is taken for dead and the socket terminated. */
  timeoutMs: number;
}

export const DEFAULT_HEARTBEAT: HeartbeatOptions = { intervalMs: 5_000, timeoutMs: 5_000 };

/**
 * Both ends ping, each on its own schedule: a half-open TCP or Unix connection (the peer froze, or
 * its host lost power) is noticed by whichever side is still alive, without waiting for the kernel.
 */
export function startHeartbeat(ws: WebSocket, options: HeartbeatOptions, onDead: () => void): () => void {
  let pongTimer: NodeJS.Timeout | undefined;
  const onPong = (): void => {
    if (pongTimer) clearTimeout(pongTimer);
    pongTimer = undefined;
  };
  ws.on('pong', onPong);
  const interval = setInterval(() => {
    if (pongTimer) return;
    pongTimer = setTimeout(() => {
      stop();
      onDead();
      ws.terminate();
    }, options.timeoutMs);
    try {
      ws.ping();
    } catch {
      // A socket closing under us: the close handler does the rest.
    }
  }, options.intervalMs);
  const stop = (): void => {
    clearInterval(interval);
    if (pongTimer) clearTimeout(pongTimer);
    pongTimer = undefined;
    ws.off('pong', onPong);
  };
  return stop;
}
