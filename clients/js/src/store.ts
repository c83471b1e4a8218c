/** What a client keeps between page loads and shares between tabs. */
export interface StoredSession {
  access_token: string;
  /** When the access token expires, in milliseconds since the epoch (this machine's clock). */
  expires_at: number;
  /** The access token's lifetime in milliseconds. */
  ttl: number;
  session_id: string;
  /** Token mode only: in cookie mode the refresh token never reaches scripts. */
  refresh_token?: string;
}

/** Where a client keeps its session. Implementations must be safe to share between tabs. */
export interface TokenStore {
  load(): Promise<StoredSession | null>;
  save(session: StoredSession): Promise<void>;
  clear(): Promise<void>;
}

/** A store for one process or tab: nothing survives a reload. */
export class MemoryStore implements TokenStore {
  private session: StoredSession | null = null;
  async load(): Promise<StoredSession | null> {
    return this.session && { ...this.session };
  }
  async save(session: StoredSession): Promise<void> {
    this.session = { ...session };
  }
  async clear(): Promise<void> {
    this.session = null;
  }
}

/** The few key-value operations [`EncryptedStore`] needs, so it can sit on IndexedDB or anything else. */
export interface KeyValue {
  get(key: string): Promise<unknown>;
  put(key: string, value: unknown): Promise<void>;
  /** Stores `value` unless `key` has one; resolves to whichever value `key` ends up with, atomically. */
  putIfAbsent(key: string, value: unknown): Promise<unknown>;
  delete(key: string): Promise<void>;
}

const KEY = 'key';
const SESSION = 'session';
const AAD = new TextEncoder().encode('sessiond-client session v1');

/**
 * A store that encrypts the session (refresh token included) with AES-256-GCM under a key that
 * WebCrypto generates as non-extractable: the key is kept in the same key-value store as a
 * `CryptoKey`, so scripts can use it through WebCrypto but never read its bytes, and nothing
 * in storage is ever the plaintext token.
 */
export class EncryptedStore implements TokenStore {
  private key: Promise<CryptoKey> | null = null;

  constructor(
    private readonly kv: KeyValue,
    private readonly subtle: SubtleCrypto = globalThis.crypto.subtle,
  ) {}

  private cryptoKey(): Promise<CryptoKey> {
    if (!this.key) {
      this.key = (async () => {
        const existing = await this.kv.get(KEY);
        if (existing) return existing as CryptoKey;
        const fresh = await this.subtle.generateKey({ name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
        // Two tabs may generate at once: both keep the one that got stored first.
        return (await this.kv.putIfAbsent(KEY, fresh)) as CryptoKey;
      })();
      this.key.catch(() => (this.key = null));
    }
    return this.key;
  }

  async load(): Promise<StoredSession | null> {
    const record = (await this.kv.get(SESSION)) as { iv: Uint8Array<ArrayBuffer>; data: ArrayBuffer } | undefined;
    if (!record) return null;
    try {
      const plain = await this.subtle.decrypt(
        { name: 'AES-GCM', iv: record.iv, additionalData: AAD },
        await this.cryptoKey(),
        record.data,
      );
      return JSON.parse(new TextDecoder().decode(plain)) as StoredSession;
    } catch {
      // Another key, or tampered with: as good as nothing.
      return null;
    }
  }

  async save(session: StoredSession): Promise<void> {
    const iv = globalThis.crypto.getRandomValues(new Uint8Array(12));
    const data = await this.subtle.encrypt(
      { name: 'AES-GCM', iv, additionalData: AAD },
      await this.cryptoKey(),
      new TextEncoder().encode(JSON.stringify(session)),
    );
    await this.kv.put(SESSION, { iv, data });
  }

  async clear(): Promise<void> {
    await this.kv.delete(SESSION);
  }
}

const done = <T>(request: IDBRequest<T>): Promise<T> =>
  new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });

/** A [`KeyValue`] on an IndexedDB database `name` with one object store. */
export function indexedDbKeyValue(name: string): KeyValue {
  let opened: Promise<IDBDatabase> | null = null;
  const database = () => {
    if (!opened) {
      const request = indexedDB.open(name, 1);
      request.onupgradeneeded = () => request.result.createObjectStore('kv');
      opened = done(request);
    }
    return opened;
  };
  const store = async (mode: IDBTransactionMode) => (await database()).transaction('kv', mode).objectStore('kv');
  return {
    get: async (key) => done((await store('readonly')).get(key)),
    put: async (key, value) => void (await done((await store('readwrite')).put(value, key))),
    delete: async (key) => void (await done((await store('readwrite')).delete(key))),
    async putIfAbsent(key, value) {
      // One read-write transaction, so tabs doing this at once are serialized by IndexedDB.
      const objects = await store('readwrite');
      const existing = await done(objects.get(key));
      if (existing !== undefined) return existing;
      await done(objects.put(value, key));
      return value;
    },
  };
}

/**
 * A store that starts on `primary` and, the first time `primary` fails (IndexedDB refused in a
 * private window, for one), carries on in memory for the rest of the page's life.
 */
export class FallbackStore implements TokenStore {
  private memory: MemoryStore | null = null;
  constructor(private readonly primary: TokenStore) {}
  private async run<T>(work: (store: TokenStore) => Promise<T>, carry?: StoredSession): Promise<T> {
    if (!this.memory) {
      try {
        return await work(this.primary);
      } catch {
        this.memory = new MemoryStore();
        if (carry) await this.memory.save(carry);
      }
    }
    return work(this.memory);
  }
  load() {
    return this.run((store) => store.load());
  }
  save(session: StoredSession) {
    return this.run((store) => store.save(session), session);
  }
  clear() {
    return this.run((store) => store.clear());
  }
}

/** Encrypted IndexedDB where the platform has it (browsers), memory elsewhere (Node). */
export function defaultStore(name: string): TokenStore {
  return typeof indexedDB !== 'undefined' && globalThis.crypto?.subtle
    ? new FallbackStore(new EncryptedStore(indexedDbKeyValue(name)))
    : new MemoryStore();
}
