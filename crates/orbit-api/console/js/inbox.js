// An agent's inbox: pending, claimed and dead messages (the API lists these), read and
// archived ones seen since the page opened, sending a message, archiving one.

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
  // Messages that left the pending list while the page was open, by id.
  const settled = new Map();
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
      await remember(message.id);
      reload();
    });
  }

  async function remember(id) {
    try {
      const { message } = await api('GET', `/api/agents/${enc(agent)}/inbox/${enc(id)}`);
      if (message.status !== 'pending') settled.set(id, message);
    } catch { /* gone */ }
  }

  async function reload() {
    try {
      const { messages } = await api('GET', `/api/agents/${enc(agent)}/inbox`);
      const pending = messages.filter((m) => !m.claimedBy);
      const claimed = messages.filter((m) => m.claimedBy);
      clear(sections.pending, pending.length ? pending.map(row) : empty('No pending messages.'));
      clear(sections.claimed, claimed.length ? claimed.map(row) : empty('No message is being handled now.'));
      const gone = [...settled.values()];
      const archived = gone.filter((m) => m.status === 'archived' || m.status === 'read');
      clear(sections.archived, archived.length ? archived.map(row) : empty('None since this page was opened.'));
      let dead;
      try {
        ({ messages: dead } = await api('GET', `/api/agents/${enc(agent)}/inbox/dead`));
      } catch (err) {
        // A server without the listing: those seen dying while the page was open.
        if (err.status !== 404) throw err;
        dead = gone.filter((m) => m.status === 'dead');
      }
      clear(sections.dead, dead.length ? dead.map(row) : empty('No dead messages.'));
    } catch (err) { note.error(err.message); }
  }
  reload();
  return {
    el: h('div', {}, form, note.el,
      h('h2', {}, 'Pending'), sections.pending,
      h('h2', {}, 'Claimed'), sections.claimed,
      h('h2', {}, 'Read or archived'), sections.archived,
      h('h2', {}, 'Dead'), h('p', { class: 'muted' }, 'Set aside after reaching the model three times without being handled.'), sections.dead),
    reload,
    async onEvent(event) {
      if (event.agentName !== agent || !event.type.startsWith('inbox_')) return;
      if (['inbox_read', 'inbox_dead', 'inbox_archived'].includes(event.type)) await remember(event.messageId);
      reload();
    },
  };
}
