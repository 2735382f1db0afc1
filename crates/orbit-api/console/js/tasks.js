// Tasks: create (the schedule checked as it is typed, first here and then by the server's
// preview, which shows the next fire times or the API's reason for refusing it), pause, resume, run now, delete; each task's runs with status, duration, cost and
// a link to the run's session, updated live as runs start and finish.

import { api, enc } from './api.js';
import { h, clear, field, notice, select, confirmButton, attempt, money, duration, when, empty, title, engaged } from './ui.js';

const EXAMPLES = { cron: '0 9 * * 1-5', interval: '3600000', once: new Date(Date.now() + 3600e3).toISOString().replace(/\.\d+Z$/, 'Z') };

/** A first check of a schedule as it is typed; the server's preview is the one that counts. */
export function checkSchedule(type, value) {
  const v = value.trim();
  if (!v) return { ok: false, why: 'Enter a schedule.' };
  if (type === 'interval') {
    if (!/^\d+$/.test(v)) return { ok: false, why: 'An interval is a whole number of milliseconds, like 60000 for a minute.' };
    const ms = Number(v);
    if (ms < 1000) return { ok: false, why: 'An interval is at least 1000 ms.' };
    if (ms > 31622400000) return { ok: false, why: 'An interval is at most 366 days (31622400000 ms).' };
    return { ok: true, why: `Every ${duration(ms)}.` };
  }
  if (type === 'cron') {
    const fields = v.split(/\s+/);
    if (fields.length !== 5) return { ok: false, why: `A cron expression has 5 fields (minute hour day-of-month month day-of-week); this has ${fields.length}.` };
    if (fields.some((f) => !/^[0-9A-Za-z*/,\-?LW#]+$/.test(f))) return { ok: false, why: 'A cron field holds digits, names, * / , and - only.' };
    return { ok: true, why: 'Five fields; the server checks that it fires.' };
  }
  if (!/(Z|[+-]\d{2}:\d{2})$/i.test(v) || !/T/.test(v)) return { ok: false, why: 'A date, a time and an offset, like 2026-11-23T21:08:15Z.' };
  const at = Date.parse(v);
  if (Number.isNaN(at)) return { ok: false, why: 'That is not a date and time.' };
  if (at <= Date.now()) return { ok: false, why: 'That moment is past.' };
  return { ok: true, why: `Once, ${new Date(at).toLocaleString()}.` };
}

function createForm(agent, note, onCreated) {
  const name = h('input', { name: 'name', placeholder: 'optional', autocomplete: 'off' });
  const prompt = h('textarea', { name: 'prompt', rows: 2, required: true });
  const type = select('scheduleType', ['interval', 'cron', 'once'], 'interval');
  const value = h('input', { name: 'scheduleValue', required: true, value: EXAMPLES.interval, autocomplete: 'off', 'aria-describedby': 'schedule-check' });
  const timezone = h('input', { name: 'timezone', placeholder: 'UTC', autocomplete: 'off' });
  const context = select('contextMode', ['isolated', 'main'], 'isolated');
  const check = h('small', { id: 'schedule-check', class: 'check-result', 'aria-live': 'polite' });
  const upcoming = h('ol', { id: 'schedule-preview', class: 'upcoming', 'aria-label': 'Next runs' });
  const show = (ok, why) => {
    check.textContent = why;
    check.className = `check-result ${ok ? 'ok' : 'error'}`;
    value.setAttribute('aria-invalid', ok ? 'false' : 'true');
  };
  // Each keystroke asks the server once typing pauses; only the latest question's answer is
  // shown, so a slow answer to an older value never overwrites a newer one.
  let asked = 0;
  let timer = null;
  const recheck = () => {
    const result = checkSchedule(type.value, value.value);
    show(result.ok, result.why);
    clear(upcoming);
    clearTimeout(timer);
    const question = ++asked;
    if (!result.ok) return;
    timer = setTimeout(async () => {
      const body = { scheduleType: type.value, scheduleValue: value.value.trim(), count: 3 };
      if (timezone.value.trim()) body.timezone = timezone.value.trim();
      try {
        const { nextRuns } = await api('POST', '/api/schedules/preview', body);
        if (question !== asked) return;
        show(true, nextRuns.length === 1 ? 'Runs once:' : `Next ${nextRuns.length} runs:`);
        clear(upcoming, nextRuns.map((at) => h('li', {}, h('time', { datetime: at }, new Date(at).toLocaleString()), ' ', when(at))));
      } catch (err) {
        if (question !== asked) return;
        // The server's reason, as it would refuse the task.
        show(false, err.code === 'invalid_schedule' || err.code === 'invalid_input' ? err.message : `Not checked: ${err.message}`);
      }
    }, 250);
  };
  type.addEventListener('change', () => { value.value = EXAMPLES[type.value]; recheck(); });
  value.addEventListener('input', recheck);
  timezone.addEventListener('input', recheck);
  recheck();
  const form = h('form', { class: 'card inline', id: 'create-task' },
    h('h2', {}, 'New task'),
    field('Prompt', prompt), field('Name', name), field('Schedule', type), field('When', value, h('div', {}, check, upcoming)),
    field('Timezone (cron)', timezone), field('Context', context),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Create task')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    attempt(note, async () => {
      const body = { prompt: prompt.value, scheduleType: type.value, scheduleValue: value.value.trim(), contextMode: context.value };
      if (name.value.trim()) body.name = name.value.trim();
      if (timezone.value.trim()) body.timezone = timezone.value.trim();
      try {
        await api('POST', `/api/agents/${enc(agent)}/tasks`, body);
      } catch (err) {
        if (err.code === 'invalid_schedule') { check.textContent = err.message; check.className = 'check-result error'; }
        throw err;
      }
      prompt.value = '';
      name.value = '';
      note.ok('Task created.');
      onCreated();
    });
  });
  return form;
}

function runRow(agent, run) {
  return h('li', { class: `run ${run.status}`, 'data-run': run.id },
    h('span', { class: `pill ${run.status}` }, run.status),
    ' ', when(run.startedAt),
    ' · ', duration(run.durationMs),
    ' · ', money(run.costUsd),
    run.skippedSlots ? ` · ${run.skippedSlots} slot(s) skipped` : '',
    run.sessionId && run.status !== 'skipped' ? [' · ', h('a', { href: `#/agents/${enc(agent)}/sessions/${enc(run.sessionId)}` }, 'session')] : '',
    run.error ? h('div', { class: 'muted' }, run.error) : null);
}

function taskCard(task, note, reloadAll, showAgent) {
  const agent = task.agentName;
  const base = `/api/agents/${enc(agent)}/tasks/${enc(task.id)}`;
  const runs = h('ul', { class: 'runs', 'aria-label': 'Runs' });
  const loadRuns = async () => {
    try {
      const { runs: list } = await api('GET', `${base}/runs`);
      clear(runs, list.length ? list.slice(0, 10).map((r) => runRow(agent, r)) : h('li', { class: 'empty' }, 'No runs yet.'));
    } catch (err) { if (err.status !== 404) note.error(err.message); }
  };
  const act = (fn) => attempt(note, async () => { await fn(); reloadAll(); });
  const paused = task.status === 'paused';
  const el = h('article', { class: 'card task', 'data-task': task.id },
    h('header', {},
      h('strong', {}, task.name || (task.prompt.length > 80 ? `${task.prompt.slice(0, 77)}…` : task.prompt)),
      h('span', { class: `pill ${task.status}` }, task.status),
      showAgent ? h('a', { href: `#/agents/${enc(agent)}/tasks` }, agent) : null),
    task.name || task.prompt.length > 80 ? h('p', { class: 'text' }, task.prompt) : null,
    h('dl', { class: 'facts' },
      h('dt', {}, 'Schedule'), h('dd', {}, `${task.scheduleType} ${task.scheduleValue}${task.timezone ? ` (${task.timezone})` : ''}`),
      h('dt', {}, 'Context'), h('dd', {}, task.contextMode),
      h('dt', {}, 'Next run'), h('dd', {}, when(task.nextRun)),
      h('dt', {}, 'Last run'), h('dd', {}, when(task.lastRun))),
    h('div', { class: 'actions' },
      task.status === 'completed' ? null : h('button', { type: 'button', onclick: () => act(() => api('PUT', base, { status: paused ? 'active' : 'paused' })) }, paused ? 'Resume' : 'Pause'),
      h('button', { type: 'button', onclick: () => attempt(note, async () => { await api('POST', `${base}/run`); note.ok('Run started.'); loadRuns(); }) }, 'Run now'),
      confirmButton('Delete', () => act(async () => {
        const answer = await api('DELETE', base);
        note.ok(answer.worktreeKept ? 'Task deleted; its worktree was kept (uncommitted work).' : 'Task deleted.');
      }), { confirm: 'Delete this task?' })),
    h('h3', {}, 'Runs'), runs);
  loadRuns();
  return { el, loadRuns };
}

/** Tasks of one agent (`agent`) or of all (null). */
function tasksView(agent) {
  const note = notice();
  const list = h('div', { class: 'stack', id: 'task-list' });
  const cards = new Map();
  async function reload() {
    try {
      if (engaged(list)) { later(); return; }
      const { tasks } = await api('GET', agent ? `/api/agents/${enc(agent)}/tasks` : '/api/tasks');
      if (engaged(list)) { later(); return; }
      cards.clear();
      clear(list, tasks.length ? tasks.map((task) => {
        const card = taskCard(task, note, reload, !agent);
        cards.set(task.id, card);
        return card.el;
      }) : empty('No tasks yet.'));
    } catch (err) { note.error(err.message); }
  }
  let pending = null;
  // Asked again once the person is done with what they are doing in the list.
  const later = () => { clearTimeout(pending); pending = setTimeout(reload, 1000); };
  reload();
  return {
    note,
    list,
    reload,
    onEvent(event) {
      if (agent && event.agentName !== agent) return;
      if (event.type === 'run_started' || event.type === 'run_finished') cards.get(event.taskId)?.loadRuns();
      if (event.type === 'task_changed' || event.type === 'run_finished') {
        clearTimeout(pending);
        pending = setTimeout(reload, 300);
      }
    },
    dispose() { clearTimeout(pending); },
  };
}

export function tasksTab(agent) {
  const view = tasksView(agent);
  return { ...view, el: h('div', {}, view.note.el, view.list, createForm(agent, view.note, view.reload)) };
}

export function allTasksPage() {
  title('Tasks');
  const view = tasksView(null);
  return { ...view, el: h('section', {}, h('h1', {}, 'Tasks'), h('p', { class: 'muted' }, 'Every agent\'s tasks. Create one from its agent\'s Tasks tab.'), view.note.el, view.list) };
}
