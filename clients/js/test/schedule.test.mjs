import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoff, refreshDelay, singleFlight } from '../dist/index.js';

const MINUTE = 60_000;

test('a 15-minute token is refreshed 5 minutes before expiry, up to a minute earlier', () => {
  assert.equal(refreshDelay(15 * MINUTE, 15 * MINUTE, () => 0), 10 * MINUTE);
  assert.equal(refreshDelay(15 * MINUTE, 15 * MINUTE, () => 1), 9 * MINUTE);
});

test('a short-lived token is refreshed a third of its lifetime before expiry', () => {
  assert.equal(refreshDelay(30_000, 30_000, () => 0), 20_000);
  assert.equal(refreshDelay(30_000, 30_000, () => 1), 18_000);
  assert.equal(refreshDelay(30_000, 12_000, () => 0), 2_000, 'counted from what is left');
});

test('a token already inside its refresh window is refreshed at once, never after a negative delay', () => {
  assert.equal(refreshDelay(15 * MINUTE, MINUTE, () => 0.5), 0);
  assert.equal(refreshDelay(15 * MINUTE, -MINUTE, () => 0.5), 0);
});

test('the refresh lead can be shortened', () => {
  assert.equal(refreshDelay(15 * MINUTE, 15 * MINUTE, () => 0, MINUTE), 14 * MINUTE);
});

test('jitter spreads clients that got their tokens at the same moment', () => {
  const delays = Array.from({ length: 200 }, () => refreshDelay(15 * MINUTE, 15 * MINUTE));
  assert.ok(delays.every((delay) => delay > 9 * MINUTE - 1 && delay <= 10 * MINUTE));
  assert.ok(new Set(delays).size > 150, 'the delays differ');
  const spread = Math.max(...delays) - Math.min(...delays);
  assert.ok(spread > 30_000, `they spread over more than half a minute (${spread} ms)`);
});

test('backoff doubles with equal jitter and stops at the ceiling', () => {
  assert.equal(backoff(0, 1000, 30_000, () => 0), 500);
  assert.equal(backoff(0, 1000, 30_000, () => 1), 1000);
  assert.equal(backoff(3, 1000, 30_000, () => 0), 4000);
  assert.equal(backoff(3, 1000, 30_000, () => 1), 8000);
  assert.equal(backoff(50, 1000, 30_000, () => 1), 30_000);
  assert.equal(backoff(50, 1000, 30_000, () => 0), 15_000);
});

test('single flight: concurrent callers share one run, a later caller starts another', async () => {
  let runs = 0;
  let release;
  const shared = singleFlight(() => {
    runs++;
    return new Promise((resolve) => (release = resolve));
  });
  const callers = [shared(), shared(), shared()];
  assert.equal(runs, 1);
  release(runs);
  assert.deepEqual(await Promise.all(callers), [1, 1, 1]);
  const next = shared();
  assert.equal(runs, 2);
  release('again');
  assert.equal(await next, 'again');
});

test('single flight: a failure reaches every caller and does not stick', async () => {
  let runs = 0;
  const shared = singleFlight(async () => {
    runs++;
    if (runs === 1) throw new Error('refused');
    return 'ok';
  });
  const results = await Promise.allSettled([shared(), shared()]);
  assert.deepEqual(results.map((result) => result.status), ['rejected', 'rejected']);
  assert.equal(await shared(), 'ok');
  assert.equal(runs, 2);
});
