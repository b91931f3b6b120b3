// The HTTP client: the session token, JSON requests, and the server's errors turned into
// readable messages (`{"error": {"kind", "message", "field"}}`, see the server's README).

const TOKEN_KEY = "vinfra-api-session-id";
const REQUEST_TIMEOUT_MS = 20_000;

/** An API answer that was not a success, with the server's words when it gave some. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly kind?: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

let token: string | null = sessionStorage.getItem(TOKEN_KEY);
let onUnauthorized: () => void = () => {};

/** Called when the server answers 401 (the session expired or was ended elsewhere). */
export function setUnauthorizedHandler(handler: () => void): void {
  onUnauthorized = handler;
}

function setToken(value: string | null): void {
  token = value;
  if (value === null) sessionStorage.removeItem(TOKEN_KEY);
  else sessionStorage.setItem(TOKEN_KEY, value);
}

async function errorFrom(response: Response): Promise<ApiError> {
  const text = await response.text().catch(() => "");
  let body: unknown = undefined;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    // Not JSON (a proxy's page, a panic): fall back to the status line below.
  }
  const error = (body as { error?: unknown } | undefined)?.error;
  if (error && typeof error === "object") {
    const e = error as { kind?: string; message?: string; field?: string };
    const message = e.message ?? e.kind ?? `request failed (${response.status})`;
    const withField = e.field && !message.includes(e.field) ? `${message} (field: ${e.field})` : message;
    return new ApiError(withField, response.status, e.kind, e.field);
  }
  if (typeof error === "string") return new ApiError(error, response.status);
  if (response.status === 404) return new ApiError("not found on the server (404)", 404);
  const line = `${response.status} ${response.statusText}`.trim();
  return new ApiError(text && text.length < 200 ? `${line}: ${text}` : line, response.status);
}

async function send(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<Response> {
  const all: Record<string, string> = { Accept: "application/json", ...headers };
  if (token && !("Authorization" in all)) all["vinfra-api-session-id"] = token;
  if (body !== undefined) all["Content-Type"] = "application/json";
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
  try {
    return await fetch(path, {
      method,
      headers: all,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      signal: abort.signal,
    });
  } catch (e) {
    const why = abort.signal.aborted ? `no answer within ${REQUEST_TIMEOUT_MS / 1000} s` : "the server cannot be reached";
    throw new ApiError(`${method} ${path}: ${why}`, 0);
  } finally {
    clearTimeout(timer);
  }
}

async function json<T>(response: Response): Promise<T> {
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  if (!text) return undefined as T;
  try {
    return JSON.parse(text) as T;
  } catch {
    return text as T;
  }
}

/** One request; the parsed JSON body, or an `ApiError`. */
export async function request<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
  const response = await send(method, path, body);
  if (response.status === 401 && !path.startsWith("/api/session")) {
    setToken(null);
    onUnauthorized();
  }
  if (!response.ok) throw await errorFrom(response);
  return json<T>(response);
}

export const get = <T = unknown>(path: string) => request<T>("GET", path);
export const post = <T = unknown>(path: string, body?: unknown) => request<T>("POST", path, body);
export const patch = <T = unknown>(path: string, body?: unknown) => request<T>("PATCH", path, body);
export const del = <T = unknown>(path: string) => request<T>("DELETE", path);

/** `POST /api/session` with Basic auth; keeps the token it answers. */
export async function login(user: string, password: string): Promise<void> {
  // btoa takes Latin-1: encode as UTF-8 bytes first so any password works.
  const basic = btoa(String.fromCharCode(...new TextEncoder().encode(`${user}:${password}`)));
  const response = await send("POST", "/api/session", undefined, { Authorization: `Basic ${basic}` });
  if (response.status === 401) throw new ApiError("wrong user name or password", 401);
  if (!response.ok) throw await errorFrom(response);
  const body = await json<unknown>(response);
  // vSphere answers the token as a JSON string; accept an object with a token field too.
  const value =
    typeof body === "string"
      ? body
      : ((body as Record<string, unknown> | undefined)?.token ??
        (body as Record<string, unknown> | undefined)?.value ??
        (body as Record<string, unknown> | undefined)?.session);
  setToken(typeof value === "string" ? value : null);
}

/** `DELETE /api/session`; forgets the token whatever the server says. */
export async function logout(): Promise<void> {
  try {
    await send("DELETE", "/api/session");
  } finally {
    setToken(null);
  }
}

/** A task id from a `202 {"task": "<id>"}` answer. */
export function taskId(answer: unknown): string | undefined {
  const t = (answer as { task?: unknown } | undefined)?.task;
  return t === undefined || t === null ? undefined : String(t);
}

export const enc = encodeURIComponent;
