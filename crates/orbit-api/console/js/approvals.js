// Approvals: every ask-mode tool call waiting for a person, answerable here; the count on
// every page.

import { api, enc } from './api.js';
import { h, clear, notice, pre, empty, title, when } from './ui.js';

let counting = null;

export async function refreshApprovalCount() {
  const badge = document.getElementById('approval-count');
  const run = (counting = api('GET', '/api/approvals').then((body) => body.approvals.length).catch(() => null));
  const count = await run;
  if (run !== counting || count === null) return;
  badge.textContent = String(count);
  badge.hidden = count === 0;
  badge.setAttribute('aria-label', `${count} pending`);
}

/**
 * The card shown for a permission request (`waiting`: only while unanswered), if any. The id
 * comes from the server, and is escaped all the same: a quote in it would otherwise end the
 * selector's string (a thrown SyntaxError, or another card matched).
 */
export function approvalCardOf(requestId, { waiting = false } = {}) {
  return document.querySelector(`.approval[data-request="${CSS.escape(String(requestId))}"]${waiting ? ':not(.answered)' : ''}`);
}

/** A card for one waiting tool call, with Allow / Deny and an optional message. */
export function approvalCard(approval, { showSession = true, onAnswered } = {}) {
  const message = h('input', { type: 'text', name: 'message', placeholder: 'Message to the agent (optional)', 'aria-label': 'Message to the agent' });
  const note = notice();
  const answer = async (allow) => {
    const path = `/api/agents/${enc(approval.agentName)}/sessions/${enc(approval.sessionId)}/permissions/${enc(approval.requestId)}`;
    const body = { allow };
    if (message.value.trim()) body.message = message.value.trim();
    for (const b of card.querySelectorAll('button')) b.disabled = true;
    try {
      await api('POST', path, body);
      card.classList.add('answered');
      clear(card, h('p', {}, `${allow ? 'Allowed' : 'Denied'}: ${approval.toolName}`));
      onAnswered?.(allow);
    } catch (err) {
      note.error(err.status === 404 ? 'This request is no longer waiting (answered elsewhere, or it timed out).' : err.message);
      for (const b of card.querySelectorAll('button')) b.disabled = false;
    }
  };
  const card = h('article', { class: 'card approval', 'data-request': approval.requestId },
    h('header', {},
      h('strong', { class: 'tool' }, approval.toolName),
      showSession ? h('a', { href: `#/agents/${enc(approval.agentName)}/sessions/${enc(approval.sessionId)}` }, `${approval.agentName} · session`) : null,
      approval.expiresAt ? h('span', { class: 'muted' }, 'denied ', when(approval.expiresAt), ' unless answered') : null),
    pre(approval.input),
    message,
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'primary', onclick: () => answer(true) }, 'Allow'),
      h('button', { type: 'button', class: 'danger', onclick: () => answer(false) }, 'Deny')),
    note.el);
  return card;
}

export function approvalsPage() {
  title('Approvals');
  const list = h('div', { class: 'stack' });
  const note = notice();
  const el = h('section', {}, h('h1', {}, 'Approvals'),
    h('p', { class: 'muted' }, 'Tool calls of agents in ask mode wait here for a person. Unanswered, they are denied when their time runs out.'),
    note.el, list);
  async function reload() {
    try {
      const { approvals } = await api('GET', '/api/approvals');
      const open = new Set([...list.querySelectorAll('.approval:not(.answered)')].map((c) => c.dataset.request));
      const wanted = new Set(approvals.map((a) => a.requestId));
      if (approvals.length === 0) return clear(list, empty('Nothing is waiting for an answer.'));
      // Keep cards being typed into; add new ones, drop settled ones.
      for (const card of [...list.children]) if (!wanted.has(card.dataset?.request)) card.remove();
      for (const approval of approvals) if (!open.has(approval.requestId)) list.append(approvalCard(approval));
    } catch (err) { note.error(err.message); }
  }
  reload();
  return { el, reload, onEvent: (e) => { if (e.type.startsWith('approval_')) reload(); } };
}
