// An agent's git worktrees: list, remove (one with uncommitted work is reported, and removed
// only when asked again, explicitly).

import { api, enc } from './api.js';
import { h, clear, notice, attempt, empty, confirmButton, engaged } from './ui.js';

export function worktreesTab(agent) {
  const note = notice();
  const list = h('div', { class: 'rows', id: 'worktree-list' });

  function row(worktree) {
    const actions = h('div', { class: 'actions' });
    const el = h('article', { class: 'row worktree', 'data-worktree': worktree.id },
      h('div', { class: 'main' }, h('code', {}, worktree.id), worktree.branch ? h('span', { class: 'pill' }, worktree.branch) : null),
      h('p', { class: 'muted path' }, worktree.path),
      worktree.sessionId ? h('p', {}, 'Session ', h('a', { href: `#/agents/${enc(agent)}/sessions/${enc(worktree.sessionId)}` }, worktree.sessionId)) : null,
      worktree.taskId ? h('p', {}, `Task ${worktree.taskId}`) : null,
      actions);
    const remove = (force) => attempt(note, async () => {
      try {
        await api('DELETE', `/api/agents/${enc(agent)}/worktrees/${enc(worktree.id)}${force ? '?force=true' : ''}`);
        note.ok(`Worktree ${worktree.id} removed.`);
        reload();
      } catch (err) {
        if (err.status === 409 && !force && /uncommitted/i.test(err.message)) {
          note.error(`Not removed: ${err.message}`);
          clear(actions, confirmButton('Remove anyway, losing the changes', () => remove(true), { confirm: 'Really lose the uncommitted changes?' }));
          return;
        }
        throw err;
      }
    });
    // A worktree whose session or task exists goes with it (the API refuses it alone).
    if (worktree.sessionId || worktree.taskId) actions.append(h('span', { class: 'muted' }, `goes with its ${worktree.sessionId ? 'session' : 'task'}`));
    else actions.append(h('button', { type: 'button', onclick: () => remove(false) }, 'Remove'));
    return el;
  }

  let pending = null;
  async function reload() {
    clearTimeout(pending);
    // Not while a removal waits for its confirmation.
    if (engaged(list)) { pending = setTimeout(reload, 1000); return; }
    try {
      const { worktrees } = await api('GET', `/api/agents/${enc(agent)}/worktrees`);
      clear(list, worktrees.length ? worktrees.map(row) : empty('No worktrees. Create a session or a task with "worktree" to get one.'));
    } catch (err) { note.error(err.message); }
  }
  reload();
  return {
    el: h('div', {}, h('p', { class: 'muted' }, 'A worktree goes with its session or task; one holding uncommitted work is kept and reported.'), note.el, list),
    reload,
    dispose() { clearTimeout(pending); },
    onEvent(event) { if (event.agentName === agent && ['session_created', 'session_deleted', 'task_changed', 'run_started'].includes(event.type)) reload(); },
  };
}
