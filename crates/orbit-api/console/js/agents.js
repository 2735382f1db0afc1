// Agents: the list (status, model, mode, last activity, cost today), create, edit, delete.

import { api, enc } from './api.js';
import { h, clear, field, notice, select, confirmButton, attempt, money, when, empty, title, engaged } from './ui.js';

const MODES = ['safe', 'ask', 'allow-all'];

/**
 * What the agent's turns that ended today (UTC) cost: each session keeps the cost of its
 * turns of the latest day one ended (`dayCost`), so this is exact for the sessions that
 * still exist; a deleted session's cost goes with it.
 */
export async function costToday(name) {
  const { sessions } = await api('GET', `/api/agents/${enc(name)}/sessions`);
  const today = utcDay();
  return sessions
    .filter((s) => s.dayCost?.day === today)
    .reduce((sum, s) => sum + s.dayCost.costUsd, 0);
}

/** Today's UTC date, `YYYY-MM-DD` as `dayCost.day` spells it, by the one clock read here. */
export function utcDay(now = Date.now()) {
  return new Date(now).toISOString().slice(0, 10);
}

/** Milliseconds from `now` to the next UTC midnight. */
function untilUtcMidnight(now = Date.now()) {
  const day = new Date(now);
  return Date.UTC(day.getUTCFullYear(), day.getUTCMonth(), day.getUTCDate() + 1) - now;
}

const COST_TODAY = 'What the turns that ended today (UTC) cost, over the sessions that still exist.';

export function agentsPage() {
  title('Agents');
  const note = notice();
  const list = h('div', { class: 'rows', id: 'agent-list' });
  const name = h('input', { name: 'name', required: true, pattern: '[a-z0-9][a-z0-9_\\-]{0,63}', placeholder: 'researcher', autocomplete: 'off' });
  const model = h('input', { name: 'model', placeholder: 'default', autocomplete: 'off' });
  const mode = select('permissionMode', MODES, 'safe');
  const create = h('form', { class: 'card inline', id: 'create-agent' },
    h('h2', {}, 'New agent'),
    field('Name', name, h('small', {}, 'lower case letters, digits, - and _')),
    field('Model', model),
    field('Permission mode', mode),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Create agent')));
  create.addEventListener('submit', (e) => {
    e.preventDefault();
    attempt(note, async () => {
      const body = { name: name.value.trim(), permissionMode: mode.value };
      if (model.value.trim()) body.model = model.value.trim();
      await api('POST', '/api/agents', body);
      note.ok(`Agent ${body.name} created.`);
      name.value = '';
      model.value = '';
      reload();
    });
  });

  function row(agent) {
    const cost = h('span', { class: 'cost' }, '…');
    costToday(agent.name).then((usd) => { cost.textContent = money(usd); }, () => { cost.textContent = '—'; });
    const edit = h('button', { type: 'button', onclick: () => editRow() }, 'Edit');
    const el = h('article', { class: 'row agent', 'data-agent': agent.name },
      h('div', { class: 'main' },
        h('a', { class: 'name', href: `#/agents/${enc(agent.name)}` }, agent.name),
        h('span', { class: `pill ${agent.status}` }, agent.status)),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Model'), h('dd', {}, agent.model || 'default'),
        h('dt', {}, 'Mode'), h('dd', {}, agent.permissionMode),
        h('dt', {}, 'Last active'), h('dd', {}, when(agent.lastActiveAt)),
        h('dt', { title: COST_TODAY }, 'Cost today (UTC)'), h('dd', { title: COST_TODAY }, cost)),
      h('div', { class: 'actions' }, edit,
        confirmButton('Delete', () => attempt(note, async () => {
          await api('DELETE', `/api/agents/${enc(agent.name)}`);
          note.ok(`Agent ${agent.name} deleted.`);
          reload();
        }), { confirm: 'Delete agent and its sessions?' })));
    function editRow() {
      const m = h('input', { name: 'model', value: agent.model || '', placeholder: 'default' });
      const p = select('permissionMode', MODES, agent.permissionMode);
      const s = select('status', ['active', 'inactive'], agent.status);
      const form = h('form', { class: 'edit' }, field('Model', m), field('Mode', p), field('Status', s),
        h('div', { class: 'actions' },
          h('button', { type: 'submit', class: 'primary' }, 'Save'),
          h('button', { type: 'button', onclick: () => el.replaceWith(row(agent)) }, 'Cancel')));
      form.addEventListener('submit', (e) => {
        e.preventDefault();
        attempt(note, async () => {
          const body = { permissionMode: p.value, status: s.value };
          if (m.value.trim()) body.model = m.value.trim();
          const { agent: saved } = await api('PUT', `/api/agents/${enc(agent.name)}`, body);
          el.replaceWith(row(saved));
        });
      });
      el.querySelector('.actions').replaceWith(form);
      m.focus();
    }
    return el;
  }

  async function reload() {
    try {
      if (engaged(list)) { later(); return; }
      const { agents } = await api('GET', '/api/agents');
      if (engaged(list)) { later(); return; }
      clear(list, agents.length ? agents.map(row) : empty('No agents yet. Create one below.'));
    } catch (err) { note.error(err.message); }
  }
  let pending = null;
  // Asked again once the person is done with what they are doing in the list.
  const later = () => { clearTimeout(pending); pending = setTimeout(reload, 1000); };
  reload();
  // At UTC midnight "today" is another day: yesterday's costs leave the list. The timer is
  // checked against the date it was armed on, as a machine that slept may wake it late.
  let midnight = null;
  let drawnDay = utcDay();
  const atMidnight = () => {
    const day = utcDay();
    if (day !== drawnDay) { drawnDay = day; reload(); }
    midnight = setTimeout(atMidnight, Math.min(untilUtcMidnight() + 50, 3600e3));
  };
  midnight = setTimeout(atMidnight, Math.min(untilUtcMidnight() + 50, 3600e3));
  const el = h('section', {}, h('h1', {}, 'Agents'), note.el, list, create);
  return {
    el,
    reload,
    onEvent(event) {
      if (['agent_changed', 'turn_ended', 'session_created', 'session_deleted'].includes(event.type)) {
        clearTimeout(pending);
        pending = setTimeout(reload, 300);
      }
    },
    dispose() { clearTimeout(pending); clearTimeout(midnight); },
  };
}
