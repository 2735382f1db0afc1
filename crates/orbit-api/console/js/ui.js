// Small DOM helpers: elements are built with text, never from HTML strings.

/** h('div', {class: 'x', onclick: fn}, 'text', child, ...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function when(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  const seconds = Math.round((Date.now() - date.getTime()) / 1000);
  const future = seconds < 0;
  const s = Math.abs(seconds);
  let text;
  if (s < 45) text = future ? 'in a moment' : 'just now';
  else if (s < 3600) text = `${Math.round(s / 60)} min`;
  else if (s < 86400) text = `${Math.round(s / 3600)} h`;
  else text = `${Math.round(s / 86400)} d`;
  if (s >= 45) text = future ? `in ${text}` : `${text} ago`;
  return h('time', { datetime: iso, title: date.toLocaleString() }, text);
}

export function money(usd) {
  if (usd === undefined || usd === null) return '—';
  return `$${usd < 0.01 && usd > 0 ? usd.toFixed(4) : usd.toFixed(2)}`;
}

export function duration(ms) {
  if (ms === undefined || ms === null) return '—';
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

/** A message area: error(text), ok(text), clear(). */
export function notice() {
  const el = h('p', { class: 'notice', role: 'status', 'aria-live': 'polite', hidden: true });
  const show = (kind, text) => {
    el.className = `notice ${kind}`;
    el.textContent = text;
    el.hidden = !text;
  };
  return {
    el,
    error: (text) => show('error', text),
    ok: (text) => show('ok', text),
    clear: () => show('', ''),
  };
}

/** A button that asks "sure?" on the first press and acts on the second. */
export function confirmButton(label, action, { confirm = 'Press again to confirm', danger = true } = {}) {
  let armed = false;
  let timer;
  const button = h('button', { type: 'button', class: danger ? 'danger' : '' }, label);
  const disarm = () => { armed = false; button.textContent = label; delete button.dataset.armed; };
  button.addEventListener('click', async () => {
    if (!armed) {
      armed = true;
      button.textContent = confirm;
      // Marked, so that a list redrawn by an event waits rather than take the question away.
      button.dataset.armed = '';
      timer = setTimeout(disarm, 4000);
      return;
    }
    clearTimeout(timer);
    disarm();
    button.disabled = true;
    try { await action(); } finally { button.disabled = false; }
  });
  return button;
}

/**
 * Whether a person is in the middle of something in `el` (an edit form open, a "press again"
 * asked): a list redrawn now would throw it away, so its redraw waits.
 */
export function engaged(el) {
  return Boolean(el.querySelector('form.edit, [data-armed]'));
}

/** Runs an action that may fail, showing its failure in `note`. */
export async function attempt(note, action) {
  note.clear();
  try {
    return await action();
  } catch (err) {
    note.error(err.message || String(err));
    return undefined;
  }
}

export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2)}`;
  input.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hint || null);
}

export function select(name, options, value) {
  return h('select', { name }, options.map((o) => h('option', { value: o, selected: o === value }, o)));
}

export function pre(value) {
  return h('pre', { class: 'json' }, typeof value === 'string' ? value : JSON.stringify(value, null, 2));
}

export function empty(text) {
  return h('p', { class: 'empty' }, text);
}

export function title(text) {
  document.title = text ? `${text} · Orbit` : 'Orbit';
}
