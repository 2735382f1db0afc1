// One turn of a session, drawn from its events: live as they stream (the chat's own stream,
// or a turn watched through GET .../stream), or afterwards from the session's transcript.
// The assistant's text grows with its `text_delta` events, and the whole `assistant`
// message then replaces what the deltas built; tool calls and their results are compact
// and expandable; the turn's end says how it went, how long it took and what it cost.

import { h, clear, pre, money, duration } from './ui.js';
import { approvalCard } from './approvals.js';

export function bubble(role, ...content) {
  const who = { user: 'You', inbox: 'Inbox' }[role] || 'Agent';
  return h('div', { class: `msg ${role}` }, h('span', { class: 'who' }, who), h('div', { class: 'body' }, ...content));
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

/** An inbox message delivered to the model in a turn, from its transcript entry's data. */
export function inboxNote(data) {
  const from = data.fromAgent ? `from ${data.fromAgent}` : `from ${data.fromKind || 'someone'}`;
  return h('div', { class: 'inbox-note' },
    h('p', { class: 'label' }, `Inbox message ${from}`, data.messageType ? ` (${data.messageType})` : ''),
    h('p', { class: 'text' }, data.message ?? ''));
}

/**
 * A turn's view. `live`: its permission requests can be answered here (a past turn's are
 * shown as what they asked). `costs.last`: the CLI's running cost total at the end of the
 * session's previous turn (its `result` says the total over the CLI session, not the
 * turn's own cost); a past turn moves it on, a live one's cost is then told by turn_ended.
 */
export function turnView(agent, sessionId, { live = true, costs = { last: 0 } } = {}) {
  const body = h('div', { class: 'body' });
  const el = h('div', { class: `msg assistant${live ? ' streaming' : ''}` }, h('span', { class: 'who' }, 'Agent'), body);
  const footer = h('p', { class: 'turn-footer muted' }, live ? 'working…' : '');
  el.append(footer);
  const tools = new Map();
  // The paragraph the current message's deltas write into, until its `assistant` message
  // replaces them with its whole text.
  let streaming = null;
  let shownText = false;
  let ended = false;
  let denials = 0;
  let freshCli = false; // the CLI session began anew in this turn: its total starts at 0
  let outcome = '';
  let costText = '';
  let denialText = '';
  const showFooter = () => { footer.textContent = [outcome, costText, denialText].filter(Boolean).join(' · '); };

  const paragraph = (t) => {
    const p = h('p', { class: 'text' }, t);
    body.append(p);
    shownText = true;
    return p;
  };
  const finish = (text) => {
    ended = true;
    el.classList.remove('streaming');
    outcome = text;
    showFooter();
  };

  return {
    el,
    footer,
    handle(event) {
      switch (event.type) {
        case 'text_delta':
          if (!streaming) streaming = paragraph('');
          streaming.textContent += event.text;
          break;
        case 'assistant':
          for (const block of event.message?.content || []) {
            if (block.type === 'text') {
              // The whole text confirms the deltas' (or stands alone when none came).
              if (streaming) { streaming.textContent = block.text; streaming = null; } else paragraph(block.text);
            }
            if (block.type === 'tool_use') {
              streaming = null;
              const status = h('span', { class: 'tool-status' }, 'running');
              const result = h('div', { class: 'tool-result' });
              const details = h('details', { class: 'tool', 'data-tool': block.id },
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
        case 'permission_request':
          if (live) body.append(approvalCard({ ...event, agentName: agent, sessionId }, { showSession: false }));
          else {
            // A past request is told on its tool's line (its result says how it was answered).
            const tool = tools.get(event.toolUseId);
            if (tool) tool.details.querySelector('summary').append(' ', h('span', { class: 'asked muted' }, '· asked'));
            else body.append(h('p', { class: 'asked muted' }, `Asked to run ${event.toolName}`));
          }
          break;
        case 'system':
          if (event.subtype === 'orbit_resume_failed') {
            freshCli = true;
            if (!live) costs.last = 0;
            body.append(h('p', { class: 'notice' }, event.message));
          }
          if (event.subtype === 'orbit_events_dropped') body.append(h('p', { class: 'muted' }, `(${event.dropped} earlier events are no longer kept)`));
          break;
        case 'result': {
          streaming = null;
          if (!shownText && event.result) paragraph(event.result);
          denials = (event.permission_denials || []).length;
          for (const denial of event.permission_denials || []) {
            const tool = tools.get(denial.tool_use_id);
            if (tool) tool.status.textContent = 'denied';
          }
          const total = event.total_cost_usd;
          if (typeof total === 'number') {
            const base = freshCli ? 0 : costs.last;
            costText = `cost ${money(total >= base ? total - base : total)}`;
            if (!live) costs.last = total;
          }
          if (denials) denialText = `${denials} tool call${denials === 1 ? '' : 's'} denied`;
          finish(`${event.is_error ? 'failed' : 'done'} in ${duration(event.duration_ms)}`);
          break;
        }
        case 'error':
          streaming = null;
          body.append(h('p', { class: 'notice error' }, event.message));
          finish('failed');
          break;
        default:
          break;
      }
    },
    /** The turn's own cost, from turn_ended. */
    cost(usd) {
      if (usd === undefined || usd === null) return;
      costText = `cost ${money(usd)}`;
      showFooter();
    },
    end() {
      el.classList.remove('streaming');
      if (!ended) footer.textContent = live ? 'ended' : 'no result recorded';
    },
  };
}

/**
 * Draws transcript entries, turn by turn, as pages arrive. `placeTurn(uuid)` is asked at
 * each new turn where it goes, given the first CLI message id (`uuid`) among its events
 * (`null` when it has none): `null` when it is already on the page whole (shown live by
 * this page), else the element to draw it in (the log, or a group that took the place of a
 * turn watched live without its message). The entries before that id are held until then.
 */
export function transcriptRenderer(agent, sessionId, placeTurn) {
  const seen = new Set();
  const costs = { last: 0 };
  let turnId = null;
  let held = null; // the turn's entries while its place is not known yet
  let log = null; // where the turn goes; null: it is on the page already
  let view = null;
  // Deltas are collected and handled as one: a long past answer is not redrawn per word.
  let deltas = '';
  const flush = () => {
    if (deltas && view) view.handle({ type: 'text_delta', text: deltas });
    deltas = '';
  };
  const ensureView = () => {
    if (!view) {
      view = turnView(agent, sessionId, { live: false, costs });
      log.append(view.el);
    }
    return view;
  };
  const draw = (entry) => {
    if (!log) {
      // A turn shown live still moves the running cost total on.
      const data = entry.kind === 'event' ? entry.data || {} : {};
      if (data.type === 'result' && typeof data.total_cost_usd === 'number') costs.last = data.total_cost_usd;
      if (data.type === 'system' && data.subtype === 'orbit_resume_failed') costs.last = 0;
      return;
    }
    switch (entry.kind) {
      case 'user':
        flush();
        log.append(bubble('user', h('p', { class: 'text' }, entry.data?.text ?? '')));
        break;
      case 'inbox':
        flush();
        ensureView().el.querySelector('.body').append(inboxNote(entry.data || {}));
        break;
      case 'event':
        if (entry.data?.type === 'text_delta') { ensureView(); deltas += entry.data.text; break; }
        flush();
        ensureView().handle(entry.data || {});
        break;
      case 'omitted':
        flush();
        ensureView().el.querySelector('.body').append(h('p', { class: 'muted' }, `(${entry.data?.omitted ?? 'some'} further entries of this turn were too large to keep)`));
        break;
      default:
        break;
    }
  };
  const place = (uuid) => {
    const entries = held;
    held = null;
    log = placeTurn(uuid);
    for (const entry of entries) draw(entry);
  };
  const close = () => {
    if (held) place(null);
    flush();
    view?.end();
    view = null;
    log = null;
  };
  return {
    seen,
    costs,
    /** Adds a page's entries; entries of turns already drawn are passed over. */
    add(entries) {
      for (const entry of entries) {
        if (entry.turn !== turnId) {
          close();
          turnId = entry.turn;
          held = seen.has(turnId) ? null : [];
          seen.add(turnId);
        }
        if (held) {
          held.push(entry);
          if (entry.kind === 'event' && typeof entry.data?.uuid === 'string') place(entry.data.uuid);
          continue;
        }
        draw(entry);
      }
      // A page may end mid-turn; the next one goes on with the same view.
      flush();
    },
    /** The last turn is complete (the transcript was read to its end). */
    done() { close(); turnId = null; },
  };
}
