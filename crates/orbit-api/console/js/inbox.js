// An agent's inbox: pending, claimed, filed (read or archived, newest first, a page at a
// time) and dead messages; sending a message, archiving one.

import { api, enc } from './api.js';
import { h, clear, field, notice, attempt, when, empty, select } from './ui.js';

export function inboxTab(agent) {
  const note = notice();
  const sections = {
    pending: h('div', { class: 'rows', id: 'inbox-pending' }),
    claimed: h('div', { class: 'rows', id: 'inbox-claimed' }),
    archived: h('div', { class: 'rows', id: 'inbox-archived' }),
    dead: h('div', { class: 'rows', id: 'inbox-dead' }),
  };
  const FILED_PAGE = 20;
  // The filed pages shown so far: reloads read as many as were shown.
  let filedShown = FILED_PAGE;
  const older = h('button', { type: 'button', id: 'inbox-older', hidden: true }, 'Show older');
  const from = h('input', { name: 'fromAgent', required: true, value: 'console', autocomplete: 'name' });
  const kind = select('fromKind', ['person', 'agent'], 'person');
  const text = h('textarea', { name: 'message', rows: 2, required: true });
  const form = h('form', { class: 'card inline', id: 'send-message' },
    h('h2', {}, 'Send a message'),
    field('From', from), field('Sender is a', kind), field('Message', text),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Send')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    attempt(note, async () => {
      await api('POST', `/api/agents/${enc(agent)}/inbox`, { fromAgent: from.value.trim(), fromKind: kind.value, message: text.value });
      text.value = '';
      note.ok('Message sent. The agent reads it at its next turn.');
      reload();
    });
  });

  function row(message) {
    const claimed = message.status === 'pending' && message.claimedBy;
    return h('article', { class: 'row message', 'data-message': message.id },
      h('div', { class: 'main' },
        h('strong', {}, message.fromAgent), h('span', { class: 'muted' }, ` (${message.fromKind})`), ' ', when(message.createdAt),
        h('span', { class: `pill ${message.status}` }, claimed ? 'claimed' : message.status)),
      h('p', { class: 'text' }, message.message),
      claimed ? h('p', { class: 'muted' }, 'Claimed by ', h('a', { href: `#/agents/${enc(agent)}/sessions/${enc(message.claimedBy)}` }, 'a session'), ' ', when(message.claimedAt)) : null,
      message.deliveries ? h('p', { class: 'muted' }, `Delivered ${message.deliveries} time(s) without being handled.`) : null,
      message.status === 'pending' ? h('div', { class: 'actions' }, h('button', { type: 'button', onclick: () => archive(message) }, 'Archive')) : null);
  }

  function archive(message) {
    attempt(note, async () => {
      await api('DELETE', `/api/agents/${enc(agent)}/inbox/${enc(message.id)}`);
      reload();
    });
  }

  /** The newest `count` filed messages, page by page; whether older ones remain. */
  async function filed(count) {
    const found = [];
    let cursor = null;
    while (found.length < count) {
      const query = `limit=${Math.min(FILED_PAGE, count - found.length)}${cursor ? `&cursor=${enc(cursor)}` : ''}`;
      const page = await api('GET', `/api/agents/${enc(agent)}/inbox/archive?${query}`);
      found.push(...page.messages);
      cursor = page.nextCursor;
      if (!cursor) break;
    }
    return { messages: found, more: Boolean(cursor) };
  }

  older.addEventListener('click', () => { filedShown += FILED_PAGE; reload(); });

  // Reloads may overlap (an action's, an event's) and their answers come back in any order:
  // only the latest one's are drawn, so an older read never paints over a newer one.
  let latest = 0;
  async function reload() {
    const mine = ++latest;
    try {
      const { messages } = await api('GET', `/api/agents/${enc(agent)}/inbox`);
      const archived = await filed(filedShown);
      const { messages: dead } = await api('GET', `/api/agents/${enc(agent)}/inbox/dead`);
      if (mine !== latest) return;
      const pending = messages.filter((m) => !m.claimedBy);
      const claimed = messages.filter((m) => m.claimedBy);
      clear(sections.pending, pending.length ? pending.map(row) : empty('No pending messages.'));
      clear(sections.claimed, claimed.length ? claimed.map(row) : empty('No message is being handled now.'));
      clear(sections.archived, archived.messages.length ? archived.messages.map(row) : empty('No read or archived messages.'));
      older.hidden = !archived.more;
      clear(sections.dead, dead.length ? dead.map(row) : empty('No dead messages.'));
    } catch (err) {
      if (mine === latest) note.error(err.message);
    }
  }
  // A burst of inbox events (a turn claiming many messages) is one reload.
  let pending = null;
  reload();
  return {
    el: h('div', {}, form, note.el,
      h('h2', {}, 'Pending'), sections.pending,
      h('h2', {}, 'Claimed'), sections.claimed,
      h('h2', {}, 'Read or archived'), h('p', { class: 'muted' }, 'Newest first.'), sections.archived, h('div', { class: 'actions' }, older),
      h('h2', {}, 'Dead'), h('p', { class: 'muted' }, 'Set aside after reaching the model three times without being handled.'), sections.dead),
    reload,
    onEvent(event) {
      if (event.agentName !== agent || !event.type.startsWith('inbox_')) return;
      clearTimeout(pending);
      pending = setTimeout(reload, 200);
    },
    dispose() { clearTimeout(pending); },
  };
}
