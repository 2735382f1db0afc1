// The console's shell: the token gate, the router (#/...), the live event stream that every
// page listens to, and the count of pending approvals shown on every page.

import { api, followEvents, setToken, token, validToken } from './api.js';
import { h, clear, field, notice, title } from './ui.js';
import { agentsPage } from './agents.js';
import { agentPage } from './sessions.js';
import { chatPage } from './chat.js';
import { approvalsPage, refreshApprovalCount } from './approvals.js';
import { allTasksPage } from './tasks.js';

const main = document.getElementById('main');
const live = document.getElementById('live');
let page = null;
let events = null;

// What a route part may be: the API's agent names and ULIDs. Anything else (`..` above all,
// which the browser would resolve in the API path built from it) is no page.
const AGENT_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const ULID = /^[0-9A-HJKMNP-TV-Z]{26}$/i;
const TABS = ['sessions', 'inbox', 'tasks', 'worktrees'];

function notFound() {
  title('Not found');
  return { el: h('section', { id: 'not-found' }, h('h1', {}, 'Not found'),
    h('p', {}, 'There is no such page. ', h('a', { href: '#/' }, 'Back to the agents.'))) };
}

/** The hash's parts, decoded; null when one is not valid percent-encoding. */
function routeParts() {
  // Not a route (the skip link's #main): the home page.
  if (!location.hash.startsWith('#/')) return [];
  try {
    return location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    return null;
  }
}

/** #/path/parts -> a page. */
function route() {
  const parts = routeParts();
  const nav = parts?.[0] === 'approvals' ? 'approvals' : parts?.[0] === 'tasks' ? 'tasks' : 'agents';
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (link.dataset.nav === nav) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (!parts) return notFound();
  if (parts.length === 0) return agentsPage();
  if (parts[0] === 'approvals' && parts.length === 1) return approvalsPage();
  if (parts[0] === 'tasks' && parts.length === 1) return allTasksPage();
  if (parts[0] !== 'agents') return notFound();
  if (parts.length === 1) return agentsPage();
  const [, agent, tab = 'sessions', session] = parts;
  if (!AGENT_NAME.test(agent) || !TABS.includes(tab) || parts.length > 4) return notFound();
  if (session !== undefined) return tab === 'sessions' && ULID.test(session) ? chatPage(agent, session) : notFound();
  return agentPage(agent, tab);
}

function show() {
  page?.dispose?.();
  try {
    page = route();
  } catch {
    // A page that cannot be made from this route is none: said so, not left half drawn.
    page = notFound();
  }
  clear(main, page.el);
  main.focus({ preventScroll: true });
}

function broadcast(event) {
  if (event.type.startsWith('approval_')) refreshApprovalCount();
  page?.onEvent?.(event);
}

function start() {
  events?.stop();
  events = followEvents({
    onEvent: broadcast,
    onResync: () => { refreshApprovalCount(); page?.reload?.(); },
    onState: (state) => {
      live.textContent = { live: 'live', connecting: 'connecting', offline: 'offline, retrying', locked: 'locked' }[state];
      live.dataset.state = state;
      // Back after a drop: lists may be stale if no replay covered the gap.
      if (state === 'live') refreshApprovalCount();
    },
  });
  refreshApprovalCount();
  show();
}

/** Asks for the token; resolves once the server accepts one. */
function askToken(reason) {
  events?.stop();
  live.textContent = 'locked';
  live.dataset.state = 'locked';
  page?.dispose?.();
  page = null;
  title('Token');
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'current-password', required: true });
  const note = notice();
  if (reason) note.error(reason);
  const form = h('form', { class: 'card narrow', id: 'token-form' },
    h('h1', {}, 'Connect to Orbit'),
    h('p', {}, 'This server needs its API token (the value of ORBIT_API_TOKEN or of the token file it was started with).'),
    field('API token', input),
    h('p', { class: 'muted' }, 'It is kept for this tab only, and asked for again in a new one.'),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Connect')),
    note.el);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const value = input.value.trim();
    // A header cannot carry it (fetch would throw, and look like a server that is down).
    if (!validToken(value)) {
      note.error('That is not a token this server can be sent: a token is printable ASCII without spaces. '
        + 'Yours holds another character (a curly quote, an invisible one, a letter outside ASCII?): paste it again as plain text.');
      return;
    }
    setToken(value);
    try {
      await api('GET', '/api/agents');
      start();
    } catch (err) {
      if (err.status === 401) {
        // Only if no other token was entered meanwhile.
        if (token() === value) setToken('');
        note.error('That token was refused. Check it and try again.');
      } else note.error(err.message);
    }
  });
  clear(main, form);
  input.focus();
}

window.addEventListener('orbit:unauthorized', (event) => {
  if (document.getElementById('token-form')) return;
  // A late refusal of a request sent with another token (one entered before the current
  // one) says nothing of the current token: it is kept.
  if ((event.detail?.token ?? '') !== token()) return;
  // A refused token is of no use and is not kept.
  const refused = Boolean(token());
  setToken('');
  askToken(refused ? 'The token was refused. Enter it again.' : '');
});
// The skip link (#main) moves the focus, not the page.
window.addEventListener('hashchange', () => { if (page && (location.hash === '' || location.hash.startsWith('#/'))) show(); });

// Without a token on loopback the first request simply succeeds; with one, it asks.
api('GET', '/api/agents').then(start, (err) => {
  if (err.status !== 401) start();
});
