// Talking to the Orbit API: the bearer token, errors in plain words, and server-sent events
// read with fetch (EventSource cannot send the Authorization header).

const TOKEN_KEY = 'orbit.token';

/** Whether `value` can be sent in the Authorization header: printable ASCII, no spaces. */
export function validToken(value) {
  return /^[\x21-\x7E]+$/.test(value);
}

// The token is kept for the tab only. localStorage would keep it for the origin, which on
// loopback is a host and a port that any later program serving a page there shares: that
// page could read it. A token an older console remembered there is forgotten.
localStorage.removeItem(TOKEN_KEY);

export function token() {
  const stored = sessionStorage.getItem(TOKEN_KEY) || '';
  // One a header cannot carry is not sent (fetch would throw): the server then asks anew.
  return validToken(stored) ? stored : '';
}

export function setToken(value) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
}

/** An API refusal: the HTTP status, Orbit's error code and its sentence. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The request's headers, with the token it is sent with (`sentWith`, '' for none). */
function headers(extra = {}) {
  const all = { Accept: 'application/json', ...extra };
  const sentWith = token();
  if (sentWith) all.Authorization = `Bearer ${sentWith}`;
  return { all, sentWith };
}

/** What a refusal means, for a person. */
export function explain(status, code, message) {
  switch (status) {
    case 401: return 'This server needs its API token.';
    case 409: return message || 'That conflicts with what is going on now.';
    case 429: return `All agent processes are busy (429). Try again in a moment.${message ? ' ' + message : ''}`;
    case 0: return 'The server cannot be reached. Is it running?';
    default: return message || `The server answered ${status}.`;
  }
}

async function refusal(response, sentWith) {
  let body = {};
  try { body = await response.json(); } catch { /* not JSON */ }
  const error = new ApiError(response.status, body.code || '', explain(response.status, body.code, body.error));
  // Says which token was refused: a late answer to a request sent with an older one says
  // nothing of the token in use now.
  if (response.status === 401) window.dispatchEvent(new CustomEvent('orbit:unauthorized', { detail: { token: sentWith } }));
  return error;
}

/** Sends a request; resolves to the JSON answer, or throws an ApiError. */
export async function api(method, path, body) {
  let response;
  const sent = headers(body === undefined ? {} : { 'Content-Type': 'application/json' });
  try {
    response = await fetch(path, {
      method,
      headers: sent.all,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'unreachable', explain(0));
  }
  if (!response.ok) throw await refusal(response, sent.sentWith);
  return response.json();
}

/**
 * Opens a server-sent event stream and calls onEvent({id, data}) for each event, data parsed
 * as JSON. Resolves when the stream ends; throws an ApiError for a refusal before it starts.
 */
export async function stream(method, path, { body, lastEventId, signal, onEvent } = {}) {
  const extra = { Accept: 'text/event-stream' };
  if (body !== undefined) extra['Content-Type'] = 'application/json';
  if (lastEventId) extra['Last-Event-ID'] = lastEventId;
  let response;
  const sent = headers(extra);
  try {
    response = await fetch(path, {
      method,
      headers: sent.all,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if (signal?.aborted) return;
    throw new ApiError(0, 'unreachable', explain(0));
  }
  if (!response.ok) throw await refusal(response, sent.sentWith);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, '');
        let id = null;
        const data = [];
        for (const line of frame.split(/\r?\n/)) {
          if (line.startsWith('id:')) id = line.slice(3).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
        if (data.length === 0) continue; // a keep-alive comment
        let parsed;
        try { parsed = JSON.parse(data.join('\n')); } catch { continue; }
        onEvent({ id, data: parsed });
      }
    }
  } catch (err) {
    if (signal?.aborted) return;
    throw new ApiError(0, 'disconnected', 'The connection to the server was lost.');
  }
}

/**
 * Follows GET /api/events for as long as the page lives: reconnects after a drop (with the
 * last id seen, so missed events are replayed), and reports each event, each resync and the
 * connection's state.
 */
export function followEvents({ onEvent, onResync, onState }) {
  let lastId = null;
  let stopped = false;
  let controller = null;
  let delay = 1000;
  async function loop() {
    while (!stopped) {
      controller = new AbortController();
      onState('connecting');
      try {
        await stream('GET', '/api/events', {
          lastEventId: lastId,
          signal: controller.signal,
          onEvent: ({ id, data }) => {
            if (id) lastId = id;
            delay = 1000;
            if (data.type === 'ready') onState('live');
            else if (data.type === 'resync') onResync();
            else onEvent(data);
          },
        });
      } catch (err) {
        if (err.status === 401) { onState('locked'); return; }
      }
      if (stopped) return;
      onState('offline');
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 15000);
      // Anything may have changed while away; the replay says what, or asks for a resync.
    }
  }
  loop();
  return { stop() { stopped = true; controller?.abort(); } };
}

export const enc = encodeURIComponent;
