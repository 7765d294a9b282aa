// Talking to this node, and only this node (the page's Content-Security-Policy
// allows nothing else): JSON calls with the session token, photo downloads with
// the token, uploads with progress, SHA-256 of a photo with WebCrypto.

const SESSION_KEY = 'edgenode.session';
/** Photos fetched at once; more wait their turn, so a long feed can't flood the node. */
const MEDIA_FETCHES_MAX = 4;

/** The node answered with an error: `{error: {code, message}}` and a status. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The request never got an answer: the node is off, or we are off its network. */
export class Unreachable extends Error {
  constructor() {
    super('The node did not answer.');
  }
}

let session = readSession();
const listeners = { unreachable: [], reachable: [], signedOut: [] };

function readSession() {
  try {
    const value = JSON.parse(localStorage.getItem(SESSION_KEY) || 'null');
    return value && typeof value.token === 'string' ? value : null;
  } catch {
    return null;
  }
}

/** `{token, user_id, handle, admin}` of whoever is signed in, or null. */
export function currentSession() {
  return session;
}

export function saveSession(value) {
  session = value;
  if (value) localStorage.setItem(SESSION_KEY, JSON.stringify(value));
  else localStorage.removeItem(SESSION_KEY);
}

const DEVICES_KEY = 'edgenode.devices';

/**
 * The `device` token this browser got when `handle` last signed in here, or
 * undefined. Sending it back lets the owner sign in even while someone else is
 * guessing their password (the node throttles guesses from unknown devices only).
 * Kept across sign-outs: it is not a session, only "this browser was used before".
 */
export function knownDevice(handle) {
  try {
    const devices = JSON.parse(localStorage.getItem(DEVICES_KEY) || '{}');
    return typeof devices[handle] === 'string' ? devices[handle] : undefined;
  } catch {
    return undefined;
  }
}

/** Remembers the `device` token a sign-in (or a new account) answered with. */
export function rememberDevice(handle, token) {
  if (typeof token !== 'string' || !token) return;
  let devices = {};
  try {
    devices = JSON.parse(localStorage.getItem(DEVICES_KEY) || '{}') || {};
  } catch {
    devices = {};
  }
  devices[handle] = token;
  localStorage.setItem(DEVICES_KEY, JSON.stringify(devices));
}

/** `on('unreachable' | 'reachable' | 'signedOut', handler)`. */
export function on(event, handler) {
  listeners[event].push(handler);
}

function emit(event, detail) {
  for (const handler of listeners[event]) handler(detail);
}

function authHeaders() {
  return session ? { Authorization: `Bearer ${session.token}` } : {};
}

/**
 * A token the node no longer takes: the session ended elsewhere (signed out, revoked,
 * expired) or an admin disabled the account. `error` (the answer's ApiError, when
 * read) goes to the `signedOut` listeners, so they can say why.
 */
function sessionEnded(response, sentToken, error) {
  const ended = response.status === 401 || (response.status === 403 && error && error.code === 'account_disabled');
  if (ended && sentToken && session && session.token === sentToken) {
    saveSession(null);
    emit('signedOut', error);
  }
}

/**
 * `fetch`, telling the listeners whether the node answered; a `background` request
 * (one the person did not ask for, e.g. the unread count's poll) tells them nothing,
 * so it never raises or hides the banner on its own.
 */
async function send(url, init, background = false) {
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    if (!background) emit('unreachable');
    throw new Unreachable();
  }
  if (!background) emit('reachable');
  return response;
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: fall back to the status line
  }
  const error = body && body.error;
  return new ApiError(
    response.status,
    (error && error.code) || 'http_' + response.status,
    (error && error.message) || `The node answered ${response.status} ${response.statusText}.`,
  );
}

/**
 * Calls the API: `api('GET', '/api/v1/feed', {query: {limit: 10}})`. Resolves to the
 * JSON body (null for 204); rejects with ApiError or Unreachable. `background`: see
 * `send` (a token the node refuses still signs out).
 */
export async function api(method, path, { body, query, signal, background = false } = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(name, value);
  }
  const headers = { Accept: 'application/json', ...authHeaders() };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const sentToken = session && session.token;
  const response = await send(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    credentials: 'omit',
    cache: 'no-store',
  }, background);
  if (!response.ok) {
    const error = await errorOf(response);
    sessionEnded(response, sentToken, error);
    throw error;
  }
  if (response.status === 204) return null;
  return response.json();
}

// Photo downloads go through fetch (not a plain <img src>) because followers-only
// and private photos need the token, which an <img> request can't carry. The bytes
// come back as a blob: URL; the browser's HTTP cache still keeps them (the node
// marks them private and immutable).
let mediaFetchesRunning = 0;
const mediaQueue = [];

function nextMediaFetch() {
  while (mediaFetchesRunning < MEDIA_FETCHES_MAX && mediaQueue.length) {
    const job = mediaQueue.shift();
    if (job.signal && job.signal.aborted) {
      job.reject(new DOMException('aborted', 'AbortError'));
      continue;
    }
    mediaFetchesRunning++;
    job.run().then(job.resolve, job.reject).finally(() => {
      mediaFetchesRunning--;
      nextMediaFetch();
    });
  }
}

/** A blob: URL of one variant (`thumb`, `display`) of a photo. */
export function mediaObjectUrl(mediaId, variant, signal) {
  return mediaPathObjectUrl(`/api/v1/media/${encodeURIComponent(mediaId)}/${variant}`, signal);
}

/**
 * A blob: URL of the photo at `path`, a URL of this node's that the API handed out
 * (`/api/v1/media/{id}/thumb` of a notification's post); rejects any other path.
 */
export function mediaPathObjectUrl(path, signal) {
  if (typeof path !== 'string' || !/^\/api\/v1\/media\/[0-9A-Za-z_-]+\/[a-z]+$/.test(path)) {
    return Promise.reject(new TypeError('not a photo URL of this node: ' + path));
  }
  return new Promise((resolve, reject) => {
    const run = async () => {
      const response = await send(path, { headers: authHeaders(), signal, credentials: 'omit' });
      if (!response.ok) throw await errorOf(response);
      return URL.createObjectURL(await response.blob());
    };
    mediaQueue.push({ run, resolve, reject, signal });
    nextMediaFetch();
  });
}

/** Hex SHA-256 of a file, or null where WebCrypto is missing (then the node hashes it). */
export async function sha256Hex(file) {
  if (!(globalThis.crypto && crypto.subtle)) return null;
  const digest = await crypto.subtle.digest('SHA-256', await file.arrayBuffer());
  return Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, '0')).join('');
}

/**
 * True when this user already has the photo with this hash on the node, so it needn't
 * be sent again: one byte of the original (served to its owners only).
 */
export async function alreadyUploaded(sha256) {
  try {
    const response = await send(`/api/v1/media/${sha256}/original`, {
      headers: { ...authHeaders(), Range: 'bytes=0-0' },
      credentials: 'omit',
      cache: 'no-store',
    });
    if (response.body) response.body.cancel().catch(() => {});
    return response.status === 200 || response.status === 206;
  } catch {
    return false;
  }
}

/**
 * The signed-in user's archive (`GET /api/v1/me/export`, docs/export.md) as
 * `{blob, name}`, `name` the file name the node suggests. Rejects with ApiError or
 * Unreachable.
 */
export async function downloadExport() {
  const sentToken = session && session.token;
  const response = await send('/api/v1/me/export', { headers: authHeaders(), credentials: 'omit', cache: 'no-store' });
  if (!response.ok) {
    sessionEnded(response, sentToken);
    throw await errorOf(response);
  }
  const named = /filename="([^"]+)"/.exec(response.headers.get('Content-Disposition') || '');
  return { blob: await response.blob(), name: named ? named[1] : 'edgenode-export.tar' };
}

/**
 * Uploads one photo with progress: PUT under its SHA-256 when known, else POST.
 * Returns `{promise, abort}`; the promise resolves to `{media, known}` (known: the
 * node had it already) and rejects with ApiError or Unreachable.
 */
export function uploadPhoto(file, sha256, onProgress) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open(sha256 ? 'PUT' : 'POST', sha256 ? `/api/v1/media/${sha256}` : '/api/v1/media');
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.setRequestHeader('Content-Type', file.type || 'application/octet-stream');
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.responseType = 'json';
    xhr.upload.addEventListener('progress', (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener('load', () => {
      emit('reachable');
      if (xhr.status === 200 || xhr.status === 201) {
        onProgress(1);
        resolve({ media: xhr.response, known: xhr.status === 200 });
        return;
      }
      const error = xhr.response && xhr.response.error;
      reject(
        new ApiError(
          xhr.status,
          (error && error.code) || 'http_' + xhr.status,
          (error && error.message) || `The node answered ${xhr.status}.`,
        ),
      );
    });
    xhr.addEventListener('error', () => {
      emit('unreachable');
      reject(new Unreachable());
    });
    xhr.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
    xhr.send(file);
  });
  return { promise, abort: () => xhr.abort() };
}
