// Appointments by day, messages to call back, knowledge, clinic settings and the chat.

import { api, currentUser } from './api.js';
import { h, fill, field, select, errorBox, tag, when, phone, isoDay, dayStart, formatDay, announce, loading } from './ui.js';

export async function appointmentsPage(main, _params, query) {
  const day = /^\d{4}-\d{2}-\d{2}$/.test(query.get('day') || '') ? query.get('day') : isoDay(new Date());
  const go = (d) => {
    location.hash = '#/appointments?day=' + d;
  };
  const picker = h('input', { type: 'date', name: 'day', value: day, onchange: (e) => e.target.value && go(e.target.value) });
  const nav = h(
    'div',
    { class: 'day-nav' },
    h('button', { type: 'button', onclick: () => go(isoDay(dayStart(day, -1))) }, '← Previous day'),
    field('Day', picker),
    h('button', { type: 'button', onclick: () => go(isoDay(new Date())) }, 'Today'),
    h('button', { type: 'button', onclick: () => go(isoDay(dayStart(day, 1))) }, 'Next day →'),
  );
  const list = h('div');
  fill(main, h('h1', {}, 'Appointments'), nav, h('h2', { class: 'day-title' }, formatDay(dayStart(day))), list);
  loading(list);
  const q = new URLSearchParams({ from: dayStart(day).toISOString(), to: dayStart(day, 1).toISOString() });
  try {
    const r = await api('/appointments?' + q);
    const items = r.items.slice().sort((a, b) => a.starts_at.localeCompare(b.starts_at));
    if (!items.length) {
      fill(list, h('p', { class: 'muted' }, 'No appointments this day.'));
      return;
    }
    fill(
      list,
      h(
        'ul',
        { class: 'cards' },
        items.map((a) =>
          h(
            'li',
            { class: 'card appt' + (a.status === 'cancelled' ? ' cancelled' : '') },
            h('p', { class: 'appt-time' }, when(a.starts_at, 'time'), '–', when(a.ends_at, 'time')),
            h('p', {}, h('strong', {}, a.name || 'Unnamed patient'), ' · ', a.service),
            h('p', {}, phone(a.phone), ' ', a.status !== 'booked' ? tag(a.status, a.status === 'cancelled' ? 'warn' : '') : null),
            a.call_sid ? h('p', {}, h('a', { href: '#/calls/' + encodeURIComponent(a.call_sid) }, 'The call that booked it')) : null,
          ),
        ),
      ),
    );
  } catch (e) {
    fill(list, errorBox(e, 'Could not load the appointments.'));
  }
}

export async function messagesPage(main, _params, query) {
  const status = ['open', 'done', 'all'].includes(query.get('status')) ? query.get('status') : 'open';
  const filter = select('status', [['open', 'To call back'], ['done', 'Done'], ['all', 'All']], status);
  filter.addEventListener('change', () => {
    location.hash = '#/messages?status=' + filter.value;
  });
  const list = h('div');
  const show = field('Show', filter);
  show.classList.add('narrow');
  fill(main, h('h1', {}, 'Messages'), h('p', { class: 'muted' }, 'Callers who asked to be called back. Urgent ones first.'), show, list);
  loading(list);
  const r = await api('/messages?status=' + status);
  // Urgent first, then oldest first (who has waited longest), as the API orders open ones.
  const items = r.items.slice().sort((a, b) => (b.urgent - a.urgent) || a.created_at.localeCompare(b.created_at));
  if (!items.length) {
    fill(list, h('p', { class: 'muted' }, status === 'open' ? 'Nobody is waiting for a call back.' : 'No messages.'));
    return;
  }
  fill(
    list,
    h(
      'ul',
      { class: 'cards' },
      items.map((m) => {
        const done = h('button', { type: 'button', class: 'primary' }, 'Mark done');
        const note = h('span', { role: 'status' });
        const li = h(
          'li',
          { class: 'card message' + (m.urgent ? ' urgent' : '') },
          h('p', {}, m.urgent ? tag('Urgent', 'urgent') : null, ' ', h('strong', {}, m.name || 'Caller'), ' · ', phone(m.phone)),
          h('p', { class: 'reason' }, m.reason),
          h('p', { class: 'muted' }, 'Taken ', when(m.created_at), m.call_sid ? [' · ', h('a', { href: '#/calls/' + encodeURIComponent(m.call_sid) }, 'the call')] : null),
          m.status === 'done' ? h('p', {}, tag('Done')) : h('p', {}, done, ' ', note),
        );
        done.addEventListener('click', async () => {
          done.disabled = true;
          try {
            await api(`/messages/${encodeURIComponent(m.id)}/done`, { method: 'POST' });
            fill(li.lastChild, tag('Done'));
            li.classList.add('is-done');
            announce(`Marked done: ${m.name || 'caller'}`);
          } catch (e) {
            done.disabled = false;
            fill(note, errorBox(e, 'Not saved.'));
          }
        });
        return li;
      }),
    ),
  );
}

export async function knowledgePage(main) {
  const r = await api('/knowledge');
  fill(
    main,
    h('h1', {}, 'Knowledge'),
    h('p', { class: 'muted' }, 'What the receptionist knows and answers from. ', 'It is part of the clinic file: edit the ', h('code', {}, '[[knowledge]]'), ' entries in ', h('a', { href: '#/clinic' }, 'Clinic settings'), '.'),
    r.items.length
      ? h(
          'ul',
          { class: 'cards one-col' },
          r.items.map((k) => h('li', { class: 'card' }, h('details', {}, h('summary', {}, k.title || k.id), h('p', { class: 'pre' }, k.text)))),
        )
      : h('p', { class: 'muted' }, 'No knowledge yet.'),
  );
}

export async function clinicPage(main) {
  const r = await api('/clinic');
  const admin = (currentUser() || {}).role === 'admin';
  const text = h('textarea', { name: 'toml', rows: 20, spellcheck: false, class: 'code', readOnly: !admin });
  text.value = r.toml || '';
  const status = h('div', { class: 'form-status' });
  const save = h('button', { type: 'submit', class: 'primary', disabled: !admin }, 'Save');
  const numbers = await api('/numbers').catch(() => ({ items: [] }));
  const form = h(
    'form',
    {
      onsubmit: async (ev) => {
        ev.preventDefault();
        save.disabled = true;
        fill(status, h('p', { role: 'status' }, 'Saving…'));
        try {
          const res = await api('/clinic', { method: 'PUT', raw: text.value, type: 'application/toml' });
          const k = res.knowledge || {};
          fill(
            status,
            h('p', { role: 'status', class: 'ok' }, res.changed ? 'Saved. ' : 'Saved (nothing changed). ',
              `Knowledge: ${k.embedded || 0} embedded, ${k.kept || 0} kept, ${k.removed || 0} removed.`),
          );
        } catch (e) {
          const box = errorBox(e, 'Not saved.');
          fill(status, box);
          box.focus();
        } finally {
          save.disabled = false;
        }
      },
    },
    field('Clinic file (TOML)', text, admin ? 'Hours, services, staff, prompts and knowledge. Checked before it is saved; problems are listed below.' : 'Only an admin can change the clinic file.'),
    status,
    save,
  );
  fill(
    main,
    h('h1', {}, 'Clinic settings'),
    numbers.items.length ? h('p', {}, 'Phone numbers: ', numbers.items.map((n) => n.e164).join(', ')) : null,
    r.toml === null ? h('p', { class: 'muted' }, 'No clinic file yet.') : null,
    form,
  );
}

export async function chatPage(main) {
  const log = h('ol', { class: 'chat-log', role: 'log', 'aria-live': 'polite', 'aria-label': 'Conversation' });
  const input = h('input', { type: 'text', name: 'text', autocomplete: 'off', maxlength: 1000, required: true });
  const send = h('button', { type: 'submit', class: 'primary' }, 'Send');
  const status = h('div', { class: 'form-status' });
  let session = null;
  const say = (who, text) => {
    log.append(h('li', { class: 'msg msg-' + who }, h('span', { class: 'visually-hidden' }, who === 'you' ? 'You: ' : 'Receptionist: '), text));
    log.lastChild.scrollIntoView({ block: 'nearest' });
  };
  const turn = async (text) => {
    send.disabled = true;
    fill(status);
    try {
      const r = await api('/chat', { method: 'POST', body: session ? { session, text } : {} });
      session = r.session;
      for (const line of r.reply) say('agent', line);
      if (r.done) {
        input.disabled = true;
        fill(status, h('p', { role: 'status' }, 'The receptionist ended the conversation. Start again to have another.'));
      }
    } catch (e) {
      fill(status, errorBox(e, 'No reply.'));
    } finally {
      send.disabled = input.disabled;
    }
  };
  const restart = h('button', { type: 'button', onclick: () => {
    session = null;
    fill(log);
    input.disabled = false;
    turn(null);
    input.focus();
  } }, 'Start again');
  const form = h(
    'form',
    {
      class: 'chat-form',
      onsubmit: (ev) => {
        ev.preventDefault();
        const text = input.value.trim();
        if (!text || !session) return;
        input.value = '';
        say('you', text);
        turn(text);
      },
    },
    field('Say something to the receptionist', input),
    send,
  );
  fill(
    main,
    h('h1', {}, 'Try the receptionist'),
    h('p', { class: 'muted' }, 'Chat with the receptionist as a caller would, with this clinic’s settings. Bookings and messages made here are real.'),
    log,
    status,
    form,
    h('p', {}, restart),
  );
  await turn(null);
}
