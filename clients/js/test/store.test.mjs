import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EncryptedStore, FallbackStore, MemoryStore, defaultStore } from '../dist/index.js';

/** A KeyValue on a Map, with a turn of the event loop per call as IndexedDB has. */
function mapKeyValue(map = new Map()) {
  const tick = () => new Promise((resolve) => setTimeout(resolve, 0));
  return {
    map,
    async get(key) { await tick(); return map.get(key); },
    async put(key, value) { await tick(); map.set(key, value); },
    async delete(key) { await tick(); map.delete(key); },
    async putIfAbsent(key, value) {
      await tick();
      if (!map.has(key)) map.set(key, value);
      return map.get(key);
    },
  };
}

const SESSION = {
  access_token: 'eyJhbGciOiJFZERTQSJ9.eyJzaWQiOiJzIn0.sig', expires_at: 1_900_000_000_000, ttl: 900_000,
  session_id: '0b0c', refresh_token: 'sdr_secret-refresh-token-0123456789',
};

test('the encrypted store gives back what it was given', async () => {
  const store = new EncryptedStore(mapKeyValue());
  assert.equal(await store.load(), null);
  await store.save(SESSION);
  assert.deepEqual(await store.load(), SESSION);
  await store.clear();
  assert.equal(await store.load(), null);
});

test('what the encrypted store writes holds no plaintext and its key cannot be exported', async () => {
  const kv = mapKeyValue();
  await new EncryptedStore(kv).save(SESSION);
  const key = kv.map.get('key');
  assert.ok(key instanceof CryptoKey);
  assert.equal(key.extractable, false);
  assert.equal(key.algorithm.name, 'AES-GCM');
  await assert.rejects(crypto.subtle.exportKey('raw', key));
  const record = kv.map.get('session');
  const bytes = Buffer.from(record.data).toString('latin1');
  assert.ok(!bytes.includes('sdr_'));
  assert.ok(!bytes.includes(SESSION.access_token));
  assert.equal(record.iv.length, 12);
});

test('each save uses a fresh IV', async () => {
  const kv = mapKeyValue();
  const store = new EncryptedStore(kv);
  await store.save(SESSION);
  const first = kv.map.get('session');
  await store.save(SESSION);
  const second = kv.map.get('session');
  assert.notDeepEqual(first.iv, second.iv);
});

test('a tampered record or another key reads as nothing, not as garbage', async () => {
  const kv = mapKeyValue();
  await new EncryptedStore(kv).save(SESSION);
  new Uint8Array(kv.map.get('session').data)[0] ^= 1;
  assert.equal(await new EncryptedStore(kv).load(), null);
  const other = mapKeyValue();
  await new EncryptedStore(other).save(SESSION);
  kv.map.set('session', other.map.get('session'));
  assert.equal(await new EncryptedStore(kv).load(), null);
});

test('two tabs creating the key at once end up with one key and read each other', async () => {
  const kv = mapKeyValue();
  const tabs = [new EncryptedStore(kv), new EncryptedStore(kv)];
  await Promise.all([tabs[0].save(SESSION), tabs[1].load()]);
  await tabs[1].save({ ...SESSION, access_token: 'second' });
  assert.equal((await tabs[0].load()).access_token, 'second');
});

test('a failing store falls back to memory and keeps what it was given', async () => {
  const broken = { load: async () => { throw new Error('no IndexedDB'); }, save: async () => { throw new Error('no'); }, clear: async () => {} };
  const store = new FallbackStore(broken);
  await store.save(SESSION);
  assert.deepEqual(await store.load(), SESSION);
});

test('without IndexedDB (Node) the default store is memory', async () => {
  assert.ok(defaultStore('x') instanceof MemoryStore);
});
