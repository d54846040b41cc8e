// Small DOM helpers. Text is always set as text (never parsed as HTML), so nothing the API
// returns can inject markup.

/**
 * `h('a', {href: '#/x', class: 'btn'}, 'text', child)`: an element. Attributes starting with
 * `on` are listeners; `false`/`null` attributes are left out; children may be strings, nodes,
 * arrays or null.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

/** Replaces `el`'s children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Says `text` to screen readers (the page's polite live region). */
export function announce(text) {
  const region = document.getElementById('announce');
  region.textContent = '';
  // A change after a tick is announced even when the text repeats.
  setTimeout(() => {
    region.textContent = text;
  }, 50);
}

/** An error box for `e` (an ApiError or any Error), with validation details as a list. */
export function errorBox(e, title) {
  const details = (e && e.details) || [];
  // With details (validation problems), the list says it all; the message repeats them.
  const message = details.length ? `${details.length === 1 ? 'One problem' : details.length + ' problems'}:` : (e && e.message) || String(e);
  return h(
    'div',
    { class: 'error', role: 'alert', tabindex: '-1' },
    h('p', {}, h('strong', {}, title || 'Something went wrong.'), ' ', message),
    details.length ? h('ul', {}, details.map((d) => h('li', {}, d))) : null,
  );
}

const OUTCOME_LABELS = {
  in_progress: 'In progress',
  booked: 'Booked',
  transferred: 'Transferred',
  message: 'Message',
  escalated: 'Escalated',
  answered: 'Answered',
  abandoned: 'Abandoned',
};
export const OUTCOMES = Object.keys(OUTCOME_LABELS);

export function outcomeLabel(o) {
  return OUTCOME_LABELS[o] || o || 'Unknown';
}

/** A coloured outcome badge (the word is always shown, colour is never the only signal). */
export function badge(outcome) {
  return h('span', { class: 'badge badge-' + (OUTCOME_LABELS[outcome] ? outcome : 'other') }, outcomeLabel(outcome));
}

export function tag(text, kind) {
  return h('span', { class: 'tag' + (kind ? ' tag-' + kind : '') }, text);
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: 'short' });
const dayLong = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long', year: 'numeric' });

/** A `<time>` for an ISO timestamp. */
export function when(iso, style = 'datetime') {
  if (!iso) return '—';
  const d = new Date(iso);
  const f = style === 'time' ? timeOnly : style === 'day' ? dayLong : dateTime;
  return h('time', { datetime: iso }, f.format(d));
}

export function formatDay(d) {
  return dayLong.format(d);
}

/** `83000` → `1:23`. */
export function clock(ms) {
  if (ms === null || ms === undefined) return '—';
  const s = Math.max(0, Math.round(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

export function duration(ms) {
  if (ms === null || ms === undefined) return '—';
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

/** The local calendar day of `d` as `YYYY-MM-DD`. */
export function isoDay(d) {
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
}

/** Local midnight of `YYYY-MM-DD` (plus `days`), as a Date. */
export function dayStart(day, days = 0) {
  const [y, m, d] = day.split('-').map(Number);
  return new Date(y, m - 1, d + days);
}

export function phone(number) {
  if (!number) return '—';
  return h('a', { href: 'tel:' + number }, number);
}

/** A labelled form field: `field('Email', input)`. */
export function field(label, control, hint) {
  const id = control.id || 'f-' + Math.random().toString(36).slice(2, 9);
  control.id = id;
  let hintEl = null;
  if (hint) {
    hintEl = h('small', { id: id + '-hint', class: 'hint' }, hint);
    control.setAttribute('aria-describedby', hintEl.id);
  }
  return h('div', { class: 'field' }, h('label', { for: id }, label), control, hintEl);
}

export function select(name, options, value) {
  return h(
    'select',
    { name },
    options.map(([v, label]) => h('option', { value: v, selected: v === value }, label)),
  );
}

/** Shows "Loading…" in `el` while `promise` runs (announced only if it takes a while). */
export function loading(el) {
  fill(el, h('p', { class: 'muted', role: 'status' }, 'Loading…'));
}
