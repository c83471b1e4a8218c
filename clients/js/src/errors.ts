/** An answer of sessiond that is not a success, or a request that got no answer at all. */
export class SessiondError extends Error {
  override readonly name = 'SessiondError';
  /** The HTTP status, or 0 when no answer arrived (network failure, timeout). */
  readonly status: number;
  /** The server's stable error code (`invalid_refresh_token`, `unauthenticated`, ...), or `network_error`. */
  readonly error: string;
  /** Why a refresh token was refused: `unknown`, `expired`, `revoked`, `reuse_detected` or `anomaly`. */
  readonly reason: string | undefined;
  /** The request id of the answer (body `request_id`, else the `x-request-id` header), for the server's logs. */
  readonly requestId: string | undefined;
  /** Seconds to wait before trying again (429, 503). */
  readonly retryAfter: number | undefined;

  constructor(
    status: number,
    error: string,
    message: string,
    fields: { reason?: string; requestId?: string; retryAfter?: number } = {},
  ) {
    super(message);
    this.status = status;
    this.error = error;
    this.reason = fields.reason;
    this.requestId = fields.requestId;
    this.retryAfter = fields.retryAfter;
  }
}

/** The error body every non-2xx `/v1` answer carries. */
export interface ErrorBody {
  error: string;
  message: string;
  reason?: string | null;
  request_id?: string | null;
  retry_after?: number | null;
}

const text = (value: unknown): string | undefined =>
  typeof value === 'string' && value ? value : undefined;

/** Reads a failed answer into a [`SessiondError`]; a body that is not sessiond's JSON still gives one. */
export async function errorFrom(response: Response): Promise<SessiondError> {
  let body: Partial<ErrorBody> = {};
  try {
    const parsed: unknown = await response.json();
    if (parsed && typeof parsed === 'object') body = parsed as Partial<ErrorBody>;
  } catch {
    // Not JSON (a proxy's page): the status alone speaks.
  }
  const header = Number(response.headers.get('retry-after'));
  const retryAfter =
    typeof body.retry_after === 'number' ? body.retry_after : header >= 0 && response.headers.has('retry-after') ? header : undefined;
  return new SessiondError(
    response.status,
    text(body.error) ?? `http_${response.status}`,
    text(body.message) ?? `HTTP ${response.status}`,
    {
      reason: text(body.reason),
      requestId: text(body.request_id) ?? response.headers.get('x-request-id') ?? undefined,
      retryAfter,
    },
  );
}

/** The error of a request that got no answer. */
export function networkError(cause: unknown): SessiondError {
  const timedOut = cause instanceof Error && cause.name === 'TimeoutError';
  return new SessiondError(0, timedOut ? 'timeout' : 'network_error', cause instanceof Error ? cause.message : String(cause));
}
