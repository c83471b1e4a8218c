/** The longest lead a refresh takes on expiry. */
export const REFRESH_AHEAD_MAX_MS = 5 * 60_000;

/**
 * Milliseconds until a token of lifetime `ttlMs`, with `remainingMs` left, should be refreshed:
 * `aheadMs` (5 minutes) before expiry, or a third of the lifetime when that is shorter, and up
 * to a fifth of that lead earlier still, at random, so that clients given their tokens at the
 * same moment do not all come back at the same moment.
 */
export function refreshDelay(
  ttlMs: number,
  remainingMs: number,
  random: () => number = Math.random,
  aheadMs: number = REFRESH_AHEAD_MAX_MS,
): number {
  const ahead = Math.min(aheadMs, ttlMs / 3);
  return Math.max(0, Math.floor(remainingMs - ahead - random() * ahead * 0.2));
}

/** Backoff with equal jitter: half of the doubled delay for sure, the other half at random. */
export function backoff(
  attempt: number,
  minMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  const base = Math.min(maxMs, minMs * 2 ** Math.min(attempt, 30));
  return Math.floor(base / 2 + (random() * base) / 2);
}

/**
 * Wraps `work` so that callers arriving while it runs share its promise instead of starting it
 * again; the next call after it settles starts it afresh.
 */
export function singleFlight<T>(work: () => Promise<T>): () => Promise<T> {
  let running: Promise<T> | null = null;
  return () => {
    if (!running) {
      running = work().finally(() => {
        running = null;
      });
    }
    return running;
  };
}
