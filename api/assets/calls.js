// The call list (filters, cursor pages, outcome badges) and the call page (summary, recording,
// transcript with per-turn latency, events).

import { api } from './api.js';
import { h, fill, field, select, errorBox, badge, tag, when, clock, duration, phone, OUTCOMES, outcomeLabel, dayStart, loading } from './ui.js';

const FILTERS = ['from', 'to', 'status', 'direction', 'outcome', 'caller', 'q'];
const STATUSES = ['queued', 'initiated', 'ringing', 'in-progress', 'completed', 'busy', 'failed', 'no-answer', 'canceled'];

/** The API query for the page's filters (dates are local days; `to` includes its day). */
function apiQuery(query, cursor) {
  const q = new URLSearchParams();
  for (const k of FILTERS) {
    const v = (query.get(k) || '').trim();
    if (!v) continue;
    if (k === 'from') q.set('from', dayStart(v).toISOString());
    else if (k === 'to') q.set('to', dayStart(v, 1).toISOString());
    else q.set(k, v);
  }
  q.set('limit', '25');
  if (cursor) q.set('cursor', cursor);
  return q.toString();
}

export async function callsPage(main, _params, query) {
  const input = (name, type, attrs = {}) => h('input', { name, type, value: query.get(name) || '', ...attrs });
  const form = h(
    'form',
    {
      class: 'filters',
      role: 'search',
      'aria-label': 'Filter calls',
      onsubmit: (ev) => {
        ev.preventDefault();
        const q = new URLSearchParams();
        for (const [k, v] of new FormData(form)) if (String(v).trim()) q.set(k, String(v).trim());
        const s = q.toString();
        location.hash = '#/calls' + (s ? '?' + s : '');
      },
    },
    field('Words said', input('q', 'search', { placeholder: 'e.g. cleaning' })),
    field('Caller', input('caller', 'tel', { placeholder: '+44…', autocomplete: 'off' })),
    field('From', input('from', 'date')),
    field('To', input('to', 'date')),
    field('Outcome', select('outcome', [['', 'Any'], ...OUTCOMES.map((o) => [o, outcomeLabel(o)])], query.get('outcome') || '')),
    field('Direction', select('direction', [['', 'Any'], ['inbound', 'Inbound'], ['outbound', 'Outbound']], query.get('direction') || '')),
    field('Status', select('status', [['', 'Any'], ...STATUSES.map((s) => [s, s])], query.get('status') || '')),
    h(
      'div',
      { class: 'filter-actions' },
      h('button', { type: 'submit', class: 'primary' }, 'Filter'),
      h('a', { href: '#/calls', class: 'button' }, 'Clear'),
    ),
  );
  const body = h('tbody');
  const table = h(
    'table',
    { class: 'calls' },
    h('caption', { class: 'visually-hidden' }, 'Calls, newest first'),
    h(
      'thead',
      {},
      h('tr', {}, ['Started', 'Caller', 'Direction', 'Length', 'Outcome', 'Status'].map((c) => h('th', { scope: 'col' }, c))),
    ),
    body,
  );
  const status = h('div', { class: 'list-status', role: 'status' });
  const more = h('button', { type: 'button', hidden: true }, 'Show more calls');
  let cursor = null;
  const page = async () => {
    more.disabled = true;
    fill(status, 'Loading…');
    try {
      const r = await api('/calls?' + apiQuery(query, cursor));
      for (const c of r.items) body.append(row(c));
      cursor = r.next_cursor;
      more.hidden = !cursor;
      const n = body.rows.length;
      fill(status, n === 0 ? 'No calls match.' : `${n} call${n === 1 ? '' : 's'} shown${cursor ? '' : ', no more'}.`);
    } catch (e) {
      fill(status, errorBox(e, 'Could not load the calls.'));
    } finally {
      more.disabled = false;
    }
  };
  more.addEventListener('click', page);
  // On a phone the filters fold away unless some are in use.
  const active = FILTERS.filter((k) => (query.get(k) || '').trim()).length;
  const box = h(
    'details',
    { class: 'filters-box', open: active > 0 || window.matchMedia('(min-width: 641px)').matches },
    h('summary', {}, active ? `Filters (${active} in use)` : 'Filters'),
    form,
  );
  fill(main, h('h1', {}, 'Calls'), box, h('div', { class: 'table-wrap' }, table), status, more);
  await page();
}

function row(c) {
  const who = c.direction === 'outbound' ? c.to : c.from;
  return h(
    'tr',
    {},
    h('td', { 'data-label': 'Started' }, h('a', { href: '#/calls/' + encodeURIComponent(c.sid), class: 'call-link' }, when(c.started_at))),
    h('td', { 'data-label': 'Caller' }, who || 'Unknown'),
    h('td', { 'data-label': 'Direction' }, c.direction === 'outbound' ? 'Outbound' : 'Inbound'),
    h('td', { 'data-label': 'Length' }, duration(c.duration_ms)),
    h('td', { 'data-label': 'Outcome' }, badge(c.outcome)),
    h('td', { 'data-label': 'Status' }, c.status || '—'),
  );
}

const LATENCY = [
  ['voice_to_voice_ms', 'voice to voice'],
  ['endpointing_ms', 'end of turn'],
  ['stt_ms', 'transcription'],
  ['brain_first_token_ms', 'first token'],
  ['tts_first_audio_ms', 'first audio'],
];

function latency(l) {
  if (!l) return null;
  const parts = LATENCY.filter(([k]) => l[k] !== null && l[k] !== undefined);
  if (!parts.length) return null;
  return h(
    'dl',
    { class: 'latency', 'aria-label': 'Latency' },
    parts.map(([k, label]) => h('div', {}, h('dt', {}, label), h('dd', {}, `${l[k]} ms`))),
  );
}

function eventDetail(d) {
  if (d === null || d === undefined || d === '') return '';
  if (typeof d === 'string') return d;
  return JSON.stringify(d);
}

export async function callPage(main, [sid]) {
  loading(main);
  const d = await api('/calls/' + encodeURIComponent(sid));
  const c = d.call;
  const audio = d.recording
    ? h('audio', { controls: true, preload: 'metadata', src: d.recording.url, id: 'recording' }, 'Your browser cannot play this recording.')
    : null;
  const seek = (ms) => {
    if (!audio) return;
    audio.currentTime = ms / 1000;
    audio.play().catch(() => {});
  };
  let recording;
  if (d.recording) {
    const both = h('input', { type: 'radio', name: 'mix', value: 'both', checked: true, id: 'mix-both' });
    const mono = h('input', { type: 'radio', name: 'mix', value: 'mono', id: 'mix-mono' });
    const change = () => {
      // A recording played to its end starts the other mix from the beginning.
      const at = audio.ended ? 0 : audio.currentTime;
      const playing = !audio.paused;
      audio.src = mono.checked ? d.recording.mono_url : d.recording.url;
      audio.currentTime = at;
      if (playing) audio.play().catch(() => {});
    };
    both.addEventListener('change', change);
    mono.addEventListener('change', change);
    const problem = h('p', { role: 'alert' });
    audio.addEventListener('error', () => {
      // Recording links are signed for an hour: past that, the page needs new ones.
      fill(problem, h('span', { class: 'error-text' }, 'The recording could not be loaded. '), h('button', { type: 'button', onclick: () => window.dispatchEvent(new HashChangeEvent('hashchange')) }, 'Reload the call'));
    });
    recording = h(
      'section',
      { class: 'card', 'aria-labelledby': 'rec-h' },
      h('h2', { id: 'rec-h' }, 'Recording'),
      audio,
      problem,
      h(
        'fieldset',
        { class: 'mix' },
        h('legend', {}, 'Listen to'),
        h('label', { for: 'mix-both' }, both, ' Both channels (caller left, receptionist right)'),
        h('label', { for: 'mix-mono' }, mono, ' Mono mix'),
      ),
      h('p', { class: 'muted' }, `${duration(d.recording.duration_ms)}, ${d.recording.channels} channels, ${d.recording.sample_rate / 1000} kHz. `,
        h('a', { href: d.recording.url, download: `${c.sid}.wav` }, 'Download')),
    );
  } else {
    recording = h('section', { class: 'card' }, h('h2', {}, 'Recording'), h('p', { class: 'muted' }, 'No recording for this call.'));
  }

  const turns = h(
    'ol',
    { class: 'transcript' },
    d.turns.map((t) => {
      const heard = t.role !== 'caller' && t.heard_text !== null && t.heard_text !== undefined && t.heard_text !== t.text;
      return h(
        'li',
        { class: 'turn turn-' + (t.role === 'caller' ? 'caller' : 'agent') },
        h(
          'div',
          { class: 'turn-head' },
          h('span', { class: 'who' }, t.role === 'caller' ? 'Caller' : 'Receptionist'),
          audio && t.start_ms !== null
            ? h('button', { type: 'button', class: 'link at', 'aria-label': `Play from ${clock(t.start_ms)}`, onclick: () => seek(t.start_ms) }, clock(t.start_ms))
            : h('span', { class: 'at' }, clock(t.start_ms)),
          t.interrupted ? tag('interrupted', 'warn') : null,
        ),
        h('p', { class: 'said' }, heard ? [h('span', { class: 'visually-hidden' }, 'Meant to say: '), h('del', {}, t.text)] : t.text),
        heard ? h('p', { class: 'heard' }, h('span', { class: 'label' }, 'Caller heard: '), t.heard_text || '(nothing)') : null,
        latency(t.latency),
      );
    }),
  );

  const events = d.events.length
    ? h(
        'div',
        { class: 'table-wrap' },
        h(
          'table',
          { class: 'events' },
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'At'), h('th', { scope: 'col' }, 'Event'), h('th', { scope: 'col' }, 'Detail'))),
          h(
            'tbody',
            {},
            d.events.map((e) =>
              h('tr', {}, h('td', {}, clock(e.at_ms)), h('td', {}, e.kind), h('td', {}, h('code', { class: 'detail' }, eventDetail(e.detail)))),
            ),
          ),
        ),
      )
    : h('p', { class: 'muted' }, 'No events.');

  const related = [];
  for (const a of d.appointments) {
    related.push(h('li', {}, 'Appointment: ', a.service, ', ', when(a.starts_at), ' for ', a.name, ' (', a.status, ')'));
  }
  for (const m of d.messages) {
    related.push(h('li', {}, m.urgent ? tag('urgent', 'urgent') : null, ' Message from ', m.name || 'caller', ': ', m.reason, ' (', m.status, ')'));
  }

  fill(
    main,
    h('p', { class: 'crumbs' }, h('a', { href: '#/calls' }, '← All calls')),
    h('h1', {}, c.direction === 'outbound' ? `Call to ${c.to}` : `Call from ${c.from || 'unknown'}`),
    h(
      'section',
      { class: 'card summary', 'aria-label': 'Summary' },
      h('p', { class: 'summary-text' }, badge(c.outcome), ' ', c.summary || ''),
      h(
        'dl',
        { class: 'facts' },
        h('dt', {}, 'Started'), h('dd', {}, when(c.started_at)),
        h('dt', {}, 'Length'), h('dd', {}, duration(c.duration_ms)),
        h('dt', {}, 'From'), h('dd', {}, phone(c.from)),
        h('dt', {}, 'To'), h('dd', {}, phone(c.to)),
        h('dt', {}, 'Direction'), h('dd', {}, c.direction),
        h('dt', {}, 'Status'), h('dd', {}, c.status || '—'),
        h('dt', {}, 'Ended because'), h('dd', {}, c.end_reason || '—'),
        h('dt', {}, 'Call id'), h('dd', {}, h('code', {}, c.sid)),
      ),
      related.length ? h('ul', { class: 'related' }, related) : null,
    ),
    recording,
    h('section', { class: 'card', 'aria-labelledby': 'tr-h' }, h('h2', { id: 'tr-h' }, 'Transcript'), d.turns.length ? turns : h('p', { class: 'muted' }, 'Nobody spoke.')),
    h('section', { class: 'card', 'aria-labelledby': 'ev-h' }, h('h2', { id: 'ev-h' }, 'Events'), events),
  );
  return () => {
    if (audio) audio.pause();
  };
}
