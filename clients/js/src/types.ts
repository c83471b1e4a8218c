/** A device as sessiond describes it. */
export interface Device {
  id: string;
  name: string | null;
  type: 'desktop' | 'mobile' | 'tablet' | 'bot' | 'unknown';
  browser: string | null;
  os: string | null;
  trusted: boolean;
}

/** A session as sessiond returns it. */
export interface Session {
  id: string;
  user_id: string;
  tenant_id: string | null;
  device: Device;
  ip: string | null;
  user_agent: string | null;
  created_at: string;
  last_active_at: string;
  idle_expires_at: string;
  expires_at: string;
  revoked_at: string | null;
  revoke_reason: string | null;
  current?: boolean;
  /**
   * Only when some encrypted field of the stored session does not open (moved from another
   * row, altered, or sealed under an unknown key): the fields that read as `null` for that
   * reason rather than because they were never given.
   */
  unreadable?: Array<'device.name' | 'ip' | 'user_agent' | 'metadata'>;
}

/** The answer of `POST /v1/sessions` and `POST /v1/sessions/refresh` (no `refresh_token` by cookie). */
export interface TokenPair {
  access_token: string;
  token_type: string;
  expires_in: number;
  access_token_expires_at: string;
  refresh_token?: string;
  refresh_token_expires_at: string;
  session: Session;
}

/** The body of `POST /v1/sessions/refresh`. */
export interface RefreshRequest {
  refresh_token: string;
}

/** One message of `GET /v1/events`. */
export interface ServerEvent {
  type: string;
  cursor?: string;
  user_id?: string;
  /** Null for events that concern no one session. */
  session_id?: string | null;
  at?: string;
  reason?: string;
  [field: string]: unknown;
}
