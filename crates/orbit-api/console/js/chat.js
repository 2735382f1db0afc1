// Chat: a session's history, a message sent and its turn watched as it streams (text, tool
// calls compact and expandable, approvals inline, cost and duration), abort, and a turn
// started elsewhere shown for what it is.

import { api, enc, stream } from './api.js';
import { h, clear, notice, pre, money, duration, title, when } from './ui.js';
import { approvalCard } from './approvals.js';

function bubble(role, ...content) {
  return h('div', { class: `msg ${role}` }, h('span', { class: 'who' }, role === 'user' ? 'You' : 'Agent'), h('div', { class: 'body' }, ...content));
}

function summarize(input) {
  if (!input || typeof input !== 'object') return '';
  const first = input.command ?? input.file_path ?? input.path ?? input.pattern ?? input.url ?? Object.values(input).find((v) => typeof v === 'string');
  const text = typeof first === 'string' ? first : '';
  return text.length > 80 ? `${text.slice(0, 77)}…` : text;
}

function resultText(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((c) => (c.type === 'text' ? c.text : `[${c.type}]`)).join('\n');
  return JSON.stringify(content);
}

/** One turn as it streams in. */
function turnView(agent, sessionId) {
  const body = h('div', { class: 'body' });
  const el = h('div', { class: 'msg assistant streaming' }, h('span', { class: 'who' }, 'Agent'), body);
  const footer = h('p', { class: 'turn-footer muted' }, 'working…');
  el.append(footer);
  const tools = new Map();
  let text = null;
  let sawDelta = false;
  let shownText = false;
  const addText = (t) => {
    if (!text) { text = h('p', { class: 'text' }); body.append(text); }
    text.textContent += t;
    shownText = true;
  };
  return {
    el,
    footer,
    handle(event) {
      switch (event.type) {
        case 'stream_event': {
          const delta = event.event?.delta;
          if (event.event?.type === 'content_block_delta' && delta?.type === 'text_delta') { sawDelta = true; addText(delta.text); }
          break;
        }
        case 'assistant':
          for (const block of event.message?.content || []) {
            if (block.type === 'text' && !sawDelta) addText(block.text);
            if (block.type === 'tool_use') {
              text = null;
              const status = h('span', { class: 'tool-status' }, 'running');
              const result = h('div', { class: 'tool-result' });
              const details = h('details', { class: 'tool' },
                h('summary', {}, h('strong', {}, block.name), ' ', h('code', {}, summarize(block.input)), ' ', status),
                h('p', { class: 'label' }, 'Input'), pre(block.input), result);
              tools.set(block.id, { status, result, details });
              body.append(details);
            }
          }
          break;
        case 'user':
          for (const block of event.message?.content || []) {
            if (block.type !== 'tool_result') continue;
            const tool = tools.get(block.tool_use_id);
            if (!tool) continue;
            tool.status.textContent = block.is_error ? 'failed' : 'done';
            tool.details.classList.add(block.is_error ? 'failed' : 'done');
            clear(tool.result, h('p', { class: 'label' }, 'Result'), pre(resultText(block.content)));
          }
          break;
        case 'permission_request': {
          const card = approvalCard({ ...event, agentName: agent, sessionId }, { showSession: false });
          body.append(card);
          break;
        }
        case 'system':
          if (event.subtype === 'orbit_resume_failed') body.append(h('p', { class: 'notice' }, event.message));
          break;
        case 'result':
          if (!shownText && event.result) addText(event.result);
          el.classList.remove('streaming');
          footer.textContent = `${event.is_error ? 'failed' : 'done'} in ${duration(event.duration_ms)}`;
          break;
        case 'error':
          el.classList.remove('streaming');
          body.append(h('p', { class: 'notice error' }, event.message));
          footer.textContent = 'failed';
          break;
        default:
          break;
      }
    },
    cost(usd) {
      if (usd !== undefined && usd !== null) footer.textContent += ` · cost ${money(usd)}`;
    },
    end() { el.classList.remove('streaming'); },
  };
}

export function chatPage(agent, sessionId) {
  const base = `/api/agents/${enc(agent)}/sessions/${enc(sessionId)}`;
  const note = notice();
  const heading = h('h1', {}, 'Session');
  const meta = h('p', { class: 'muted' });
  const log = h('div', { class: 'log', role: 'log', 'aria-live': 'polite', 'aria-label': 'Conversation' });
  const waiting = h('div', { class: 'stack' });
  const input = h('textarea', { name: 'message', rows: 3, required: true, placeholder: 'Message (Enter sends, Shift+Enter for a new line)', 'aria-label': 'Message' });
  const send = h('button', { type: 'submit', class: 'primary' }, 'Send');
  const abort = h('button', { type: 'button', class: 'danger', hidden: true }, 'Abort');
  const composer = h('form', { class: 'composer', id: 'composer' }, input, h('div', { class: 'actions' }, send, abort));
  let current = null; // the turn this page streams
  let controller = null;
  const pageGone = new AbortController();
  let elsewhere = false;

  // Keeps the newest part of the conversation in view while it streams, unless the person
  // scrolled up to read.
  function followBottom() {
    const slack = document.documentElement.scrollHeight - window.innerHeight - window.scrollY;
    if (slack < 400) window.scrollTo(0, document.documentElement.scrollHeight);
  }

  function setRunning(running) {
    send.disabled = running;
    abort.hidden = !running;
  }

  /** Reads the session; the log is redrawn from its messages unless `keepLog` (the turns
   * streamed here show more than the messages: tool calls, results, approvals). */
  async function loadHistory(keepLog = false) {
    try {
      const { session, messages } = await api('GET', base);
      heading.textContent = session.title || 'Untitled session';
      title(`${session.title || 'Session'} · ${agent}`);
      clear(meta, `${agent} · ${session.messageCount} messages · cost ${money(session.totalCostUsd)} · last message `, when(session.lastMessageAt),
        session.worktreeId ? ` · worktree ${session.worktreeId}` : '');
      if (current || keepLog) return;
      clear(log, messages.length ? messages.map((m) => bubble(m.role, h('p', { class: 'text' }, m.content))) : h('p', { class: 'empty' }, 'No messages yet. Say something below.'));
      followBottom();
    } catch (err) {
      note.error(err.status === 404 ? 'This session does not exist (it may have been deleted).' : err.message);
    }
  }

  async function loadApprovals() {
    try {
      const { approvals } = await api('GET', `/api/agents/${enc(agent)}/approvals`);
      const mine = approvals.filter((a) => a.sessionId === sessionId && !document.querySelector(`[data-request="${a.requestId}"]`));
      clear(waiting, mine.map((a) => approvalCard(a, { showSession: false })));
    } catch { /* shown on the approvals page */ }
  }

  async function submit(e) {
    e.preventDefault();
    const message = input.value;
    if (!message.trim()) return;
    if (current || elsewhere) {
      note.error('A turn is still running in this session: wait for it to end, or abort it. Your message is kept.');
      return;
    }
    note.clear();
    log.querySelector('.empty')?.remove();
    const mine = bubble('user', h('p', { class: 'text' }, message));
    log.append(mine);
    const turn = turnView(agent, sessionId);
    current = turn;
    setRunning(true);
    input.value = '';
    controller = new AbortController();
    let started = false;
    try {
      await stream('POST', '/api/chat', {
        body: { agentName: agent, sessionId, message },
        signal: controller.signal,
        onEvent: ({ data }) => {
          if (!started) { started = true; log.append(turn.el); }
          turn.handle(data);
          followBottom();
        },
      });
    } catch (err) {
      mine.remove();
      input.value = message;
      if (err.status === 409) note.error(`Not sent: ${err.message.replace(/\.?$/, '.')} (409: a turn is already running in this session, or the agent is inactive.)`);
      else if (err.status === 429) note.error(`Not sent: ${err.message}`);
      else note.error(err.message);
    } finally {
      turn.end();
      if (current === turn) current = null;
      setRunning(elsewhere);
      loadHistory(true);
    }
  }

  // Watches a turn this page did not start, where the server can stream it to a second
  // client (GET .../stream); a server without that route shows the turn when it ends.
  async function attach() {
    const turn = turnView(agent, sessionId);
    let shown = false;
    try {
      await stream('GET', `${base}/stream`, {
        signal: pageGone.signal,
        onEvent: ({ data }) => {
          if (!shown) { shown = true; log.append(turn.el); }
          turn.handle(data);
          followBottom();
        },
      });
    } catch { /* 404: not on this server; the history is reloaded at turn_ended */ }
    turn.end();
  }

  composer.addEventListener('submit', submit);
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); composer.requestSubmit(); }
  });
  abort.addEventListener('click', async () => {
    try {
      await api('POST', `${base}/abort`);
      note.ok('Abort requested.');
    } catch (err) {
      note.error(err.status === 404 ? 'Nothing is running in this session.' : err.message);
    }
  });

  loadHistory();
  loadApprovals();
  const el = h('section', { class: 'chat' },
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, 'Agents'), ' / ', h('a', { href: `#/agents/${enc(agent)}` }, agent), ' / '),
    heading, meta, log, waiting, note.el, composer);
  setTimeout(() => input.focus(), 0);
  return {
    el,
    reload() { loadHistory(); loadApprovals(); },
    onEvent(event) {
      if (event.sessionId !== sessionId || event.agentName !== agent) return;
      if (event.type === 'turn_started' && !current) {
        elsewhere = true;
        setRunning(true);
        note.ok(event.kind === 'task' ? 'A scheduled task is running a turn in this session.' : 'A turn started elsewhere is running in this session.');
        attach();
      }
      if (event.type === 'turn_ended') {
        if (current) current.cost(event.costUsd);
        if (elsewhere) { elsewhere = false; note.clear(); if (!current) setRunning(false); loadHistory(); }
      }
      if (event.type === 'approval_pending' && !current) loadApprovals();
      if (event.type === 'approval_settled') {
        const card = document.querySelector(`[data-request="${event.requestId}"]:not(.answered)`);
        if (card) { card.classList.add('answered'); clear(card, h('p', {}, `${event.settlement}: no longer waiting`)); }
      }
    },
    dispose() { /* the turn goes on on the server; only this view stops */ controller?.abort(); pageGone.abort(); },
  };
}
