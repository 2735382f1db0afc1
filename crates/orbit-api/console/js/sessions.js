// An agent's page: its tabs (sessions, inbox, tasks, worktrees), and the sessions tab: list,
// create (optionally in a worktree with a branch), rename, delete.

import { api, enc } from './api.js';
import { h, clear, field, notice, confirmButton, attempt, money, when, empty, title, engaged } from './ui.js';
import { inboxTab } from './inbox.js';
import { tasksTab } from './tasks.js';
import { worktreesTab } from './worktrees.js';

const TABS = [['sessions', 'Sessions'], ['inbox', 'Inbox'], ['tasks', 'Tasks'], ['worktrees', 'Worktrees']];

export function agentPage(name, tab) {
  title(`${name} · ${tab}`);
  const make = { sessions: sessionsTab, inbox: inboxTab, tasks: tasksTab, worktrees: worktreesTab }[tab] || sessionsTab;
  const inner = make(name);
  const status = h('span', { class: 'muted' });
  api('GET', `/api/agents/${enc(name)}`).then(
    ({ agent }) => { status.textContent = `${agent.permissionMode} mode · ${agent.model || 'default model'} · ${agent.status}`; },
    (err) => { status.textContent = err.status === 404 ? 'This agent does not exist (yet): a session or chat makes it.' : err.message; });
  const el = h('section', {},
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, 'Agents'), ' / '),
    h('h1', {}, name, ' ', status),
    h('nav', { class: 'tabs', 'aria-label': 'Agent' },
      TABS.map(([key, label]) => h('a', { href: `#/agents/${enc(name)}/${key}`, 'aria-current': key === tab ? 'page' : null }, label))),
    inner.el);
  return { ...inner, el };
}

function sessionsTab(agent) {
  const note = notice();
  const list = h('div', { class: 'rows', id: 'session-list' });
  const titleInput = h('input', { name: 'title', placeholder: 'optional', autocomplete: 'off' });
  const worktree = h('input', { type: 'checkbox', name: 'worktree' });
  const branch = h('input', { name: 'branch', placeholder: 'new branch (optional)', autocomplete: 'off', disabled: true });
  worktree.addEventListener('change', () => { branch.disabled = !worktree.checked; });
  const create = h('form', { class: 'card inline', id: 'create-session' },
    h('h2', {}, 'New session'),
    field('Title', titleInput),
    h('label', { class: 'check' }, worktree, ' In its own git worktree'),
    field('Branch', branch),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Create session')));
  create.addEventListener('submit', (e) => {
    e.preventDefault();
    attempt(note, async () => {
      const body = {};
      if (titleInput.value.trim()) body.title = titleInput.value.trim();
      if (worktree.checked) {
        body.worktree = true;
        if (branch.value.trim()) body.branch = branch.value.trim();
      }
      const { session } = await api('POST', `/api/agents/${enc(agent)}/sessions`, body);
      location.hash = `#/agents/${enc(agent)}/sessions/${enc(session.id)}`;
    });
  });

  function row(session) {
    const link = h('a', { class: 'name', href: `#/agents/${enc(agent)}/sessions/${enc(session.id)}` }, session.title || 'Untitled session');
    const el = h('article', { class: 'row session', 'data-session': session.id },
      h('div', { class: 'main' }, link,
        session.worktreeId ? h('span', { class: 'pill' }, 'worktree') : null,
        session.releasedFrom ? h('span', { class: 'pill', title: `Its worktree was lost with node ${session.releasedFrom}` }, 'worktree lost') : null,
        session.lastMessage
          ? h('p', { class: 'snippet', title: session.lastMessage.text },
            h('span', { class: 'muted' }, session.lastMessage.role === 'user' ? 'You: ' : 'Agent: '), session.lastMessage.text)
          : null),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Last message'), h('dd', {}, when(session.lastMessageAt)),
        h('dt', {}, 'Messages'), h('dd', {}, String(session.messageCount)),
        h('dt', {}, 'Cost'), h('dd', {}, money(session.totalCostUsd))),
      h('div', { class: 'actions' },
        h('button', { type: 'button', onclick: () => rename() }, 'Rename'),
        confirmButton('Delete', () => attempt(note, async () => {
          const answer = await api('DELETE', `/api/agents/${enc(agent)}/sessions/${enc(session.id)}`);
          note.ok(answer.worktreeKept ? 'Session deleted; its worktree was kept because it holds uncommitted work.' : 'Session deleted.');
          reload();
        }), { confirm: 'Delete this session?' })));
    function rename() {
      const input = h('input', { name: 'title', value: session.title || '', 'aria-label': 'New title' });
      const form = h('form', { class: 'edit' }, input,
        h('button', { type: 'submit', class: 'primary' }, 'Save'),
        h('button', { type: 'button', onclick: () => el.replaceWith(row(session)) }, 'Cancel'));
      form.addEventListener('submit', (e) => {
        e.preventDefault();
        attempt(note, async () => {
          const { session: saved } = await api('PUT', `/api/agents/${enc(agent)}/sessions/${enc(session.id)}`, { title: input.value.trim() || 'Untitled session' });
          el.replaceWith(row(saved));
        });
      });
      link.replaceWith(form);
      input.focus();
    }
    return el;
  }

  async function reload() {
    try {
      if (engaged(list)) { later(); return; }
      const { sessions } = await api('GET', `/api/agents/${enc(agent)}/sessions`);
      if (engaged(list)) { later(); return; }
      clear(list, sessions.length ? sessions.map(row) : empty('No sessions yet.'));
    } catch (err) {
      note.error(err.status === 404 ? 'This agent does not exist.' : err.message);
    }
  }
  let pending = null;
  // Asked again once the person is done with what they are doing in the list.
  const later = () => { clearTimeout(pending); pending = setTimeout(reload, 1000); };
  reload();
  return {
    el: h('div', {}, note.el, list, create),
    reload,
    onEvent(event) {
      if (event.agentName === agent && ['session_created', 'session_deleted', 'turn_ended'].includes(event.type)) {
        clearTimeout(pending);
        pending = setTimeout(reload, 200);
      }
    },
    dispose() { clearTimeout(pending); },
  };
}
