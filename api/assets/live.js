// Live calls: the organisation's calls in progress, their transcripts growing turn by turn.
//
// EventSource cannot send an Authorization header, so the stream is opened with the access
// token as `?access_token=` (accepted on /api/v1/live only; the server logs paths, not query
// strings). The token is checked when the stream opens; on any error the page closes the stream
// and opens a new one with a current token, backing off to 15 s. The new stream resumes after
// the last event seen (`?last_event_id=`: a new EventSource cannot send Last-Event-ID), so the
// server replays what was missed; if that is too old, it starts with a snapshot of the calls in
// progress (their turns so far). A call on screen as live that the snapshot no longer lists
// ended meanwhile: its record is fetched and it is shown as ended, not dropped.

import { accessToken, api } from './api.js';
import { h, fill, badge, tag, when, announce } from './ui.js';

const MAX_ENDED = 10;

export async function livePage(main) {
  const state = h('p', { class: 'conn', role: 'status' }, 'Connecting…');
  const list = h('div', { class: 'live-calls', id: 'live-calls' });
  const empty = h('p', { class: 'muted', id: 'live-empty' }, 'No calls in progress. New calls appear here as they start.');
  fill(
    main,
    h('h1', {}, 'Live calls'),
    h('p', { class: 'muted' }, 'Calls in progress, with what is said as it is said.'),
    state,
    empty,
    list,
  );

  const calls = new Map(); // sid → { el, turns (ol), ended }
  let es = null;
  let closed = false;
  let retry = 1000;
  let timer = null;
  let lastId = null; // the id of the last event received, to resume after it

  const refreshEmpty = () => {
    empty.hidden = calls.size > 0;
  };

  const card = (c) => {
    let entry = calls.get(c.sid);
    if (entry) return entry;
    const turns = h('ol', { class: 'transcript live', 'aria-live': 'polite', 'aria-relevant': 'additions', 'aria-label': 'Transcript' });
    const badgeSlot = h('span', { class: 'live-state' }, tag('live', 'live'));
    const foot = h('div', { class: 'live-foot' });
    const el = h(
      'article',
      { class: 'card live-call', 'data-sid': c.sid, 'aria-labelledby': 'lc-' + c.sid },
      h(
        'header',
        { class: 'live-head' },
        h('h2', { id: 'lc-' + c.sid }, c.direction === 'outbound' ? `To ${c.to}` : `From ${c.from || 'unknown'}`),
        badgeSlot,
        h('span', { class: 'muted' }, 'since ', when(c.started_at, 'time')),
      ),
      turns,
      foot,
    );
    entry = { el, turns, badgeSlot, foot, ended: false, seqs: new Map() };
    calls.set(c.sid, entry);
    list.prepend(el);
    refreshEmpty();
    return entry;
  };

  const addTurn = (entry, t) => {
    const li = h(
      'li',
      { class: 'turn turn-' + (t.role === 'caller' ? 'caller' : 'agent'), 'data-seq': String(t.seq) },
      h('div', { class: 'turn-head' }, h('span', { class: 'who' }, t.role === 'caller' ? 'Caller' : 'Receptionist'), t.interrupted ? tag('interrupted', 'warn') : null),
      h('p', { class: 'said' }, t.text),
    );
    const old = entry.seqs.get(t.seq);
    if (old) old.replaceWith(li);
    else entry.turns.append(li);
    entry.seqs.set(t.seq, li);
  };

  const addEvent = (entry, kind, detail) => {
    let text = kind.replace(/_/g, ' ');
    try {
      const d = JSON.parse(detail);
      if (d && d.name) text += ': ' + d.name;
    } catch {
      // Plain text detail.
    }
    entry.turns.append(h('li', { class: 'turn turn-event' }, h('span', { class: 'muted' }, text)));
  };

  const end = (sid, ev) => {
    const entry = calls.get(sid);
    if (!entry || entry.ended) return;
    entry.ended = true;
    entry.el.classList.add('ended');
    fill(entry.badgeSlot, tag('ended'), ' ', badge(ev.outcome));
    fill(entry.foot, h('p', {}, ev.summary || ''), h('a', { href: '#/calls/' + encodeURIComponent(sid) }, 'Open the call'));
    announce('A call ended: ' + (ev.summary || ev.outcome));
    // Keep the last few ended calls on screen; forget older ones.
    const ended = [...calls].filter(([, e]) => e.ended);
    for (const [s, e] of ended.slice(0, Math.max(0, ended.length - MAX_ENDED))) {
      e.el.remove();
      calls.delete(s);
    }
    refreshEmpty();
  };

  const handlers = {
    snapshot: (d) => {
      // A call shown as live that is no longer in progress ended while we were away: shown
      // as ended, from its record (dropped only if that cannot be read).
      for (const [sid, e] of calls) {
        if (!e.ended && !d.calls.some((c) => c.sid === sid)) {
          api('/calls/' + encodeURIComponent(sid))
            .then((r) => end(sid, { outcome: r.call.outcome, summary: r.call.summary }))
            .catch(() => {
              if (calls.get(sid) === e && !e.ended) {
                e.el.remove();
                calls.delete(sid);
                refreshEmpty();
              }
            });
        }
      }
      for (const c of d.calls) {
        const entry = card(c);
        for (const t of c.turns || []) addTurn(entry, t);
      }
      refreshEmpty();
    },
    'call.started': (d) => {
      card(d);
      announce(`A call started from ${d.from || 'an unknown number'}`);
    },
    'call.turn': (d) => {
      const entry = calls.get(d.sid) || card({ sid: d.sid, from: '', to: '', direction: 'inbound', started_at: d.at });
      addTurn(entry, d);
    },
    'call.event': (d) => {
      const entry = calls.get(d.sid);
      if (entry) addEvent(entry, d.kind, d.detail);
    },
    'call.ended': (d) => end(d.sid, d),
  };

  const connect = async () => {
    timer = null;
    if (closed) return;
    let token;
    try {
      token = await accessToken();
    } catch (e) {
      fill(state, 'Not connected: ', e.message);
      if (e.status !== 401) schedule();
      return;
    }
    if (closed) return;
    const resume = lastId === null ? '' : '&last_event_id=' + encodeURIComponent(lastId);
    es = new EventSource('/api/v1/live?access_token=' + encodeURIComponent(token) + resume);
    es.addEventListener('open', () => {
      retry = 1000;
      state.className = 'conn ok';
      fill(state, 'Connected. Updates appear as they happen.');
    });
    for (const [name, f] of Object.entries(handlers)) {
      es.addEventListener(name, (m) => {
        if (m.lastEventId) lastId = m.lastEventId;
        try {
          f(JSON.parse(m.data));
        } catch (e) {
          console.error('live event', name, e);
        }
      });
    }
    es.addEventListener('lagged', () => reconnect());
    es.addEventListener('error', () => reconnect());
  };

  const schedule = () => {
    if (closed || timer) return;
    timer = setTimeout(connect, retry);
    retry = Math.min(retry * 2, 15000);
  };

  const reconnect = () => {
    if (es) es.close();
    es = null;
    if (closed) return;
    state.className = 'conn bad';
    fill(state, `Connection lost; reconnecting in ${Math.round(retry / 1000)} s…`);
    schedule();
  };

  await connect();
  return () => {
    closed = true;
    if (timer) clearTimeout(timer);
    if (es) es.close();
  };
}
