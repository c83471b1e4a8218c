import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SessiondError, SseParser, errorFrom } from '../dist/index.js';

test("an error answer gives the server's code, reason and request id", async () => {
  const response = new Response(JSON.stringify({
    error: 'invalid_refresh_token', message: 'session has been revoked', reason: 'revoked', request_id: 'body-id',
  }), { status: 401, headers: { 'x-request-id': 'header-id' } });
  const error = await errorFrom(response);
  assert.ok(error instanceof SessiondError);
  assert.ok(error instanceof Error);
  assert.equal(error.status, 401);
  assert.equal(error.error, 'invalid_refresh_token');
  assert.equal(error.reason, 'revoked');
  assert.equal(error.message, 'session has been revoked');
  assert.equal(error.requestId, 'body-id');
});

test('the request id comes from x-request-id when the body has none', async () => {
  const response = new Response(JSON.stringify({ error: 'rate_limited', message: 'slow down' }), {
    status: 429, headers: { 'x-request-id': 'header-id', 'retry-after': '7' },
  });
  const error = await errorFrom(response);
  assert.equal(error.requestId, 'header-id');
  assert.equal(error.retryAfter, 7);
  assert.equal(error.reason, undefined);
});

test('an answer that is not JSON still gives an error named after its status', async () => {
  const error = await errorFrom(new Response('<html>bad gateway</html>', { status: 502 }));
  assert.equal(error.error, 'http_502');
  assert.equal(error.status, 502);
  assert.equal(error.requestId, undefined);
});

test('SSE: messages split across chunks, CRLF, comments, ids, retry and multi-line data', () => {
  const parser = new SseParser();
  assert.deepEqual(parser.push('retry: 1000\r\nid: 0.4'), []);
  assert.deepEqual(parser.push('2\r\ndata: {"type":\r'), []);
  assert.deepEqual(parser.push('\ndata: "x"}\r\n\r\n: heartbeat\n\n'), [{ id: '0.42', data: '{"type":\n"x"}' }]);
  assert.equal(parser.retry, 1000);
  assert.deepEqual(parser.push('data:no space\n\ndata: {}\n'), [{ data: 'no space' }]);
  assert.deepEqual(parser.push('\n'), [{ data: '{}' }]);
});
