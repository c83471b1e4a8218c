import { indexedDbKeyValue, type KeyValue } from './store.js';

/**
 * DPoP (RFC 9449): a P-256 key pair that WebCrypto generates with a non-extractable private
 * key, and the proofs it signs. Kept in IndexedDB as `CryptoKey` objects, the key survives
 * reloads, is the same in every tab of the origin, and its private half can sign but never be
 * read, not even by this page's scripts: a stolen refresh or access token is useless without it.
 */
export interface DpopProofOptions {
  /** The access token the proof goes with (resource requests): its hash becomes `ath`. */
  accessToken?: string;
  /** The server's latest `DPoP-Nonce`. */
  nonce?: string;
  /** The time to put in `iat`, in milliseconds since the epoch (default: this machine's clock). */
  now?: number;
}

const encoder = new TextEncoder();

const base64url = (bytes: ArrayBuffer | Uint8Array): string =>
  btoa(String.fromCharCode(...new Uint8Array(bytes)))
    .replace(/\+/g, '-')
    .replace(/\//g, '_')
    .replace(/=+$/, '');

const json64 = (value: unknown) => base64url(encoder.encode(JSON.stringify(value)));

const sha256 = async (text: string) => base64url(await crypto.subtle.digest('SHA-256', encoder.encode(text)));

/** The `htu` of a request: its URL without query and fragment (RFC 9449 §4.2). */
export const proofUrl = (url: string | URL): string => {
  const parsed = new URL(url);
  return parsed.origin + parsed.pathname;
};

const KEY = 'dpop';

/** A DPoP key: signs proofs; its RFC 7638 thumbprint is what a session is bound to. */
export class DpopKey {
  private pair: Promise<CryptoKeyPair> | null = null;
  private publicJwk: Promise<{ jwk: JsonWebKey; thumbprint: string }> | null = null;

  /**
   * `kv`: where the key pair lives, shared by every tab (IndexedDB by default where there is
   * one); none, or a failing one, keeps the key in memory for this page's life.
   */
  constructor(private readonly kv: KeyValue | null = null) {}

  /** The key of database `name` in IndexedDB where the platform has it, else a key in memory. */
  static forOrigin(name: string): DpopKey {
    return new DpopKey(typeof indexedDB !== 'undefined' ? indexedDbKeyValue(name) : null);
  }

  private keys(): Promise<CryptoKeyPair> {
    if (!this.pair) {
      this.pair = (async () => {
        const stored = (await this.kv?.get(KEY).catch(() => undefined)) as CryptoKeyPair | undefined;
        if (stored?.privateKey) return stored;
        const fresh = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
        // Two tabs may generate at once: both keep the pair stored first.
        return this.kv ? ((await this.kv.putIfAbsent(KEY, fresh).catch(() => fresh)) as CryptoKeyPair) : fresh;
      })();
      this.pair.catch(() => (this.pair = null));
    }
    return this.pair;
  }

  private async publicKey() {
    if (!this.publicJwk) {
      this.publicJwk = (async () => {
        const { crv, kty, x, y } = await crypto.subtle.exportKey('jwk', (await this.keys()).publicKey);
        // RFC 7638: the required members only, in lexicographic order, no whitespace.
        const jwk = { crv, kty, x, y };
        return { jwk, thumbprint: await sha256(JSON.stringify(jwk)) };
      })();
      this.publicJwk.catch(() => (this.publicJwk = null));
    }
    return this.publicJwk;
  }

  /** The key's RFC 7638 SHA-256 thumbprint (base64url): the `dpop_jkt` to create a session with. */
  async thumbprint(): Promise<string> {
    return (await this.publicKey()).thumbprint;
  }

  /** The `DPoP` header value for `method` on `url` (its query and fragment are left out). */
  async proof(method: string, url: string | URL, options: DpopProofOptions = {}): Promise<string> {
    const [{ privateKey }, { jwk }] = await Promise.all([this.keys(), this.publicKey()]);
    const claims: Record<string, string | number> = {
      jti: base64url(crypto.getRandomValues(new Uint8Array(16))),
      htm: method.toUpperCase(),
      htu: proofUrl(url),
      iat: Math.floor((options.now ?? Date.now()) / 1000),
    };
    if (options.nonce) claims.nonce = options.nonce;
    if (options.accessToken) claims.ath = await sha256(options.accessToken);
    const input = `${json64({ typ: 'dpop+jwt', alg: 'ES256', jwk })}.${json64(claims)}`;
    // WebCrypto's ECDSA signature is r || s, 64 bytes: already the JWS form (RFC 7518 §3.4).
    const signature = await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, privateKey, encoder.encode(input));
    return `${input}.${base64url(signature)}`;
  }
}

/**
 * The latest `DPoP-Nonce` of each server (by origin). A server may ask for a nonce at any time;
 * the one it sent last is the one to use.
 */
export class NonceBook {
  private readonly nonces = new Map<string, string>();
  get(url: string | URL): string | undefined {
    return this.nonces.get(new URL(url).origin);
  }
  /** Keeps the `DPoP-Nonce` of `response`, if it has one. */
  note(url: string | URL, response: Response): void {
    const nonce = response.headers.get('dpop-nonce');
    if (nonce) this.nonces.set(new URL(url).origin, nonce);
  }
}

const bodyOf = (response: Response): Promise<{ error?: unknown; reason?: unknown } | null> =>
  response
    .clone()
    .json()
    .catch(() => null);

/** Whether sessiond refused a proof for its date (`stale`, `from_the_future`): a clock off. */
export async function refusedForClock(response: Response): Promise<boolean> {
  if (response.status !== 400 && response.status !== 401) return false;
  const body = await bodyOf(response);
  return body?.error === 'invalid_dpop_proof' && (body.reason === 'stale' || body.reason === 'from_the_future');
}

/**
 * Whether `response` asks for the request again with its `DPoP-Nonce` (RFC 9449 §8 and §9): a
 * resource server's 401 whose challenge says `use_dpop_nonce`, or sessiond's 400 of that code.
 */
export async function asksForNonce(response: Response): Promise<boolean> {
  if (!response.headers.has('dpop-nonce')) return false;
  if (response.status === 401) return /error="use_dpop_nonce"/.test(response.headers.get('www-authenticate') ?? '');
  return response.status === 400 && (await bodyOf(response))?.error === 'use_dpop_nonce';
}
