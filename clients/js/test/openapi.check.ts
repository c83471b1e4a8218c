// Compile-time check that the client's hand-written wire types agree with sessiond's OpenAPI
// document (crates/server/openapi.json), from which scripts/check-openapi.mjs generates
// .openapi/schema.d.ts. What the server sends must fit the client's types; what the client
// sends must fit the server's.
import type { components } from '../.openapi/schema.js';
import type { ErrorBody } from '../src/errors.js';
import type { Device, RefreshRequest, ServerEvent, Session, TokenPair } from '../src/types.js';

type Schemas = components['schemas'];
type Fits<From extends To, To> = [From, To];
// Every field the server documents is one the client's type names, optional ones included
// (`Fits` alone lets a type leave an optional field out).
type Names<Server extends keyof Client, Client> = [Server, Client];

export type Checks = [
  Fits<Schemas['TokenPair'], TokenPair>,
  Fits<Schemas['CookieTokenPair'], TokenPair>,
  Fits<Schemas['Session'], Session>,
  Fits<Session, Schemas['Session']>,
  Names<keyof Schemas['Session'], Session>,
  Names<keyof Schemas['Device'], Device>,
  Fits<Schemas['Device'], Device>,
  Fits<Schemas['Error'], ErrorBody>,
  Fits<Schemas['StreamEvent'], ServerEvent>,
  Fits<RefreshRequest, Schemas['RefreshRequest']>,
];
