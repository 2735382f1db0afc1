// Chat: a session's history from its transcript (read page by page, then only what is new
// at each turn's end), a message sent and its turn watched as it streams (see turn.js),
// abort, and a turn started elsewhere (another client, the scheduler) watched live.

import { api, enc, stream } from './api.js';
import { h, clear, notice, money, title, when } from './ui.js';
import { approvalCard, approvalCardOf } from './approvals.js';
import { bubble, turnView, transcriptRenderer } from './turn.js';

/** Transcript entries asked for per page. */
const PAGE = 500;

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
  let elsewhere = false; // a turn started elsewhere runs (watched, or announced)
  let watching = false; // a look for the running turn (GET .../stream) is open
  let watchingShown = false; // ...and found one
  let attachAgain = null; // a turn_started came while a look found nothing yet
  let onOtherNode = false; // the note says another node runs the turn

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

  // Turns shown live here (sent from this page, or watched) whose transcript is not read
  // yet, each with the CLI message ids (`uuid`) it showed: its transcript turn holds the
  // same. A turn sent here is on the page whole; a watched one lacks the message that
  // started it, so its transcript takes its place.
  const liveTurns = [];
  const renderer = transcriptRenderer(agent, sessionId, (uuid) => {
    const at = uuid ? liveTurns.findIndex((live) => live.uuids.has(uuid)) : -1;
    if (at < 0) return log;
    const [live] = liveTurns.splice(at, 1);
    if (live.own) return null;
    const group = h('div', { class: 'turn-group' });
    live.el.replaceWith(group);
    return group;
  });
  /** Notes a live event's CLI message id, by which its turn is known in the transcript. */
  const remember = (live, data) => { if (typeof data.uuid === 'string') live.uuids.add(data.uuid); };
  // Where the next transcript read starts: the last page's `nextCursor`, or (on a server
  // whose last page has none) the last page's own start, its turns already drawn skipped.
  let nextCursor = null;
  let pageStart = null;
  let transcriptMissing = false;
  let reads = Promise.resolve();

  /** Reads the session: the heading, and (`redraw`) the messages when there is no transcript. */
  async function loadSession(redraw) {
    try {
      const { session, messages } = await api('GET', base);
      heading.textContent = session.title || 'Untitled session';
      title(`${session.title || 'Session'} · ${agent}`);
      clear(meta, `${agent} · ${session.messageCount} messages · cost ${money(session.totalCostUsd)} · last message `, when(session.lastMessageAt),
        session.worktreeId ? ` · worktree ${session.worktreeId}` : '',
        session.releasedFrom ? ` · its worktree was lost with node ${session.releasedFrom}; turns run in the agent's working directory` : '');
      if (transcriptMissing && redraw && !current && !watching) {
        clear(log, messages.length ? messages.map((m) => bubble(m.role, h('p', { class: 'text' }, m.content))) : h('p', { class: 'empty' }, 'No messages yet. Say something below.'));
        followBottom();
      }
    } catch (err) {
      note.error(err.status === 404 ? 'This session does not exist (it may have been deleted).' : err.message);
    }
  }

  /** Reads the transcript from where the last read ended, drawing each page as it comes. */
  async function readTranscript() {
    let from = nextCursor ?? pageStart;
    for (;;) {
      const query = new URLSearchParams({ limit: String(PAGE) });
      if (from) query.set('cursor', from);
      const page = await api('GET', `${base}/transcript?${query}`);
      pageStart = from;
      if (page.entries.length) log.querySelector('.empty')?.remove();
      renderer.add(page.entries);
      nextCursor = page.nextCursor ?? null;
      if (!nextCursor || page.entries.length === 0) break;
      from = nextCursor;
      // Lets the browser draw this page before the next is read.
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    renderer.done();
  }

  /** Brings the log up to date; reads run one after another. */
  function refresh({ first = false, redraw = first } = {}) {
    reads = reads.then(async () => {
      if (!transcriptMissing) {
        try {
          await readTranscript();
          if (first && !log.children.length && !current && !watching) log.append(h('p', { class: 'empty' }, 'No messages yet. Say something below.'));
        } catch (err) {
          if (err.status === 404) transcriptMissing = true;
          else note.error(`The conversation could not be read: ${err.message}`);
        }
        followBottom();
      }
      await loadSession(redraw);
    });
    return reads;
  }

  async function loadApprovals() {
    try {
      const { approvals } = await api('GET', `/api/agents/${enc(agent)}/approvals`);
      const mine = approvals.filter((a) => a.sessionId === sessionId && !approvalCardOf(a.requestId));
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
    const turn = turnView(agent, sessionId, { costs: renderer.costs });
    current = turn;
    setRunning(true);
    input.value = '';
    controller = new AbortController();
    let started = false;
    const live = { own: true, uuids: new Set() };
    try {
      await stream('POST', '/api/chat', {
        body: { agentName: agent, sessionId, message },
        signal: controller.signal,
        onEvent: ({ data }) => {
          if (!started) { started = true; liveTurns.push(live); log.append(turn.el); }
          remember(live, data);
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
      refresh();
    }
  }

  // Watches the turn running in this session that this page did not start (another
  // client's, a scheduled run's), from its first event; none running is a 404, and nothing
  // is shown.
  async function attach(announce) {
    if (current) return;
    if (watching) {
      // A turn_started while the last look found nothing yet (its 404 may be on its way):
      // look again after it.
      if (!watchingShown) attachAgain = announce;
      return;
    }
    watching = true;
    watchingShown = false;
    const turn = turnView(agent, sessionId, { costs: renderer.costs });
    const live = { own: false, el: turn.el, uuids: new Set() };
    let shown = false;
    try {
      await stream('GET', `${base}/stream`, {
        signal: pageGone.signal,
        onEvent: ({ data }) => {
          if (!shown) {
            shown = true;
            watchingShown = true;
            elsewhere = true;
            setRunning(true);
            note.ok(announce);
            log.querySelector('.empty')?.remove();
            liveTurns.push(live);
            log.append(turn.el);
          }
          remember(live, data);
          turn.handle(data);
          followBottom();
        },
      });
    } catch (err) {
      // 404: no turn runs now; one that ended meanwhile is read at turn_ended. 409: another
      // node of the cluster runs it, and says which: its events are watched there.
      if (err.status === 409) { note.ok(err.message); onOtherNode = true; }
    }
    watching = false;
    turn.end();
    const again = attachAgain;
    attachAgain = null;
    if (shown) {
      elsewhere = false;
      note.clear();
      if (!current) setRunning(false);
      refresh();
    } else if (again) attach(again);
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

  // The history first, then the turn running now, if one is.
  refresh({ first: true }).then(() => attach('A turn is running in this session.'));
  loadApprovals();
  const el = h('section', { class: 'chat' },
    h('p', { class: 'crumbs' }, h('a', { href: '#/' }, 'Agents'), ' / ', h('a', { href: `#/agents/${enc(agent)}` }, agent), ' / '),
    heading, meta, log, waiting, note.el, composer);
  setTimeout(() => input.focus(), 0);
  return {
    el,
    reload() { refresh(); loadApprovals(); },
    onEvent(event) {
      if (event.sessionId !== sessionId || event.agentName !== agent) return;
      if (event.type === 'turn_started' && !current) {
        attach(event.kind === 'task' ? 'A scheduled task is running a turn in this session.' : 'A turn started elsewhere is running in this session.');
      }
      if (event.type === 'turn_ended') {
        if (current) current.cost(event.costUsd);
        if (onOtherNode) { onOtherNode = false; note.clear(); }
        // Only the pages after the last one read.
        refresh({ redraw: !current });
      }
      if (event.type === 'approval_pending' && !current) loadApprovals();
      if (event.type === 'approval_settled') {
        const card = approvalCardOf(event.requestId, { waiting: true });
        if (card) { card.classList.add('answered'); clear(card, h('p', {}, `${event.settlement}: no longer waiting`)); }
      }
    },
    dispose() { /* the turn goes on on the server; only this view stops */ controller?.abort(); pageGone.abort(); },
  };
}
