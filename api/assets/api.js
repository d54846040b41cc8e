// The staff API client: sign-in, tokens, and JSON requests to /api/v1.
//
// Tokens live in sessionStorage (this tab only, gone when it closes) and in memory. The access
// token lasts 15 minutes; it is refreshed a minute before expiry, or once when a request is
// answered 401. Refresh tokens work once (each refresh rotates them), so at most one refresh
// is in flight: concurrent callers share it.

const store = window.sessionStorage;
const KEY = 'voxanne.session';

let session = load();
let refreshing = null;
const listeners = new Set();

function load() {
  try {
    return JSON.parse(store.getItem(KEY) || 'null');
  } catch {
    return null;
  }
}

function save(tokens) {
  session = {
    access: tokens.access_token,
    refresh: tokens.refresh_token,
    // Refresh a minute early (clocks differ; requests take time).
    expires: Date.now() + (tokens.expires_in - 60) * 1000,
    user: tokens.user,
  };
  store.setItem(KEY, JSON.stringify(session));
}

function clear() {
  session = null;
  store.removeItem(KEY);
  for (const f of listeners) f();
}

/** An error from the API: `status`, the stable `code`, a human `message`, and `details`. */
export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || [];
  }
}

/** Calls `f` whenever the session ends (signed out, or refresh refused). */
export function onSignedOut(f) {
  listeners.add(f);
}

export function signedIn() {
  return session !== null;
}

export function currentUser() {
  return session ? session.user : null;
}

async function errorOf(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch {
    // Not JSON (a proxy's page, a dropped connection): fall through to the status text.
  }
  const e = body && body.error;
  return new ApiError(
    resp.status,
    e ? e.code : 'http_' + resp.status,
    e ? e.message : `The server answered ${resp.status} ${resp.statusText}`.trim(),
    e ? e.details : [],
  );
}

async function post(path, body) {
  let resp;
  try {
    resp = await fetch('/api/v1' + path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'network', 'Cannot reach the server. Check the connection and try again.');
  }
  if (!resp.ok) throw await errorOf(resp);
  return resp.json();
}

export async function login(email, password) {
  save(await post('/auth/login', { email, password }));
}

function refresh() {
  if (!refreshing) {
    const token = session && session.refresh;
    refreshing = (async () => {
      if (!token) throw new ApiError(401, 'unauthorized', 'Please sign in.');
      try {
        save(await post('/auth/refresh', { refresh_token: token }));
      } catch (e) {
        if (e.status === 401) clear();
        throw e;
      }
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

/** A current access token (refreshed first if it is about to expire). */
export async function accessToken() {
  if (!session) throw new ApiError(401, 'unauthorized', 'Please sign in.');
  if (Date.now() >= session.expires) await refresh();
  return session.access;
}

/**
 * A request to `/api/v1{path}`. `body` is sent as JSON, or as-is when `raw` is set (with
 * `type`). Resolves to the JSON answer (null for 204); rejects with an ApiError.
 */
export async function api(path, { method = 'GET', body, raw, type } = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = { authorization: 'Bearer ' + (await accessToken()) };
    let payload;
    if (raw !== undefined) {
      payload = raw;
      headers['content-type'] = type || 'text/plain; charset=utf-8';
    } else if (body !== undefined) {
      payload = JSON.stringify(body);
      headers['content-type'] = 'application/json';
    }
    let resp;
    try {
      resp = await fetch('/api/v1' + path, { method, headers, body: payload });
    } catch {
      throw new ApiError(0, 'network', 'Cannot reach the server. Check the connection and try again.');
    }
    if (resp.status === 401 && attempt === 0) {
      await refresh();
      continue;
    }
    if (resp.status === 401) clear();
    if (!resp.ok) throw await errorOf(resp);
    if (resp.status === 204) return null;
    return resp.json();
  }
}

export async function logout() {
  try {
    if (session) await api('/auth/logout', { method: 'POST' });
  } catch {
    // Signed out here either way; the session expires on the server in time.
  } finally {
    clear();
  }
}
