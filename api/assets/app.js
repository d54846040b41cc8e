// The dashboard's shell: the hash router (`#/calls`, `#/calls/CA…`, `#/live`, …), the header,
// sign-in and sign-out. Each page is `async (main, params, query) => cleanup?`; a page's
// cleanup (closing a live stream) runs when another page opens.

import { api, login, logout, signedIn, currentUser, onSignedOut } from './api.js';
import { h, fill, field, errorBox, announce } from './ui.js';
import { callsPage, callPage } from './calls.js';
import { livePage } from './live.js';
import { appointmentsPage, messagesPage, knowledgePage, clinicPage, chatPage } from './pages.js';

// CSP violations are recorded where the browser test reads them (and logged for people).
window.voxanneCspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.voxanneCspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
  console.error('CSP violation', e.violatedDirective, e.blockedURI);
});

const PAGES = {
  calls: { title: 'Calls', render: callsPage },
  call: { title: 'Call', render: callPage, nav: 'calls' },
  live: { title: 'Live calls', render: livePage },
  appointments: { title: 'Appointments', render: appointmentsPage },
  messages: { title: 'Messages', render: messagesPage },
  knowledge: { title: 'Knowledge', render: knowledgePage },
  clinic: { title: 'Clinic settings', render: clinicPage },
  chat: { title: 'Try the receptionist', render: chatPage },
};

let cleanup = null;
let generation = 0;

/** `#/calls/CA1?outcome=booked` → `{ name: 'call', params: ['CA1'], query }`. */
function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, qs] = raw.split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const query = new URLSearchParams(qs || '');
  if (parts[0] === 'calls' && parts[1]) return { name: 'call', params: [parts[1]], query };
  return { name: parts[0] || 'calls', params: parts.slice(1), query };
}

async function route() {
  const gen = ++generation;
  if (cleanup) {
    try {
      cleanup();
    } catch (e) {
      console.error(e);
    }
    cleanup = null;
  }
  const main = document.getElementById('main');
  const top = document.getElementById('top');
  const { name, params, query } = parseHash();
  if (!signedIn() || name === 'signin') {
    top.hidden = true;
    signInPage(main, name === 'signin' ? '' : location.hash);
    return;
  }
  top.hidden = false;
  const user = currentUser();
  fill(document.getElementById('who'), user ? user.name || user.email : '');
  const page = PAGES[name];
  for (const a of document.querySelectorAll('[data-nav]')) {
    const current = a.dataset.nav === (page && (page.nav || name));
    if (current) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!page) {
    document.title = 'Not found · Voxanne';
    fill(main, h('h1', { tabindex: '-1' }, 'Not found'), h('p', {}, h('a', { href: '#/calls' }, 'Go to the calls')));
    focusHeading(main);
    return;
  }
  document.title = `${page.title} · Voxanne`;
  fill(main);
  try {
    const c = await page.render(main, params, query);
    if (gen !== generation) {
      // The user moved on while this page loaded.
      if (typeof c === 'function') c();
      return;
    }
    cleanup = typeof c === 'function' ? c : null;
  } catch (e) {
    if (gen !== generation) return;
    if (e.status === 401) return; // onSignedOut shows the sign-in form.
    fill(main, h('h1', { tabindex: '-1' }, page.title), errorBox(e, 'Could not load this page.'));
  }
  if (gen === generation) focusHeading(main);
}

let firstRoute = true;
function focusHeading(main) {
  // Move focus to the new page's heading (screen readers read where they are), except on the
  // very first load, where focus stays at the top for the skip link.
  if (firstRoute) {
    firstRoute = false;
    return;
  }
  const h1 = main.querySelector('h1');
  if (h1) {
    h1.setAttribute('tabindex', '-1');
    h1.focus();
  }
}

function signInPage(main, next) {
  document.title = 'Sign in · Voxanne';
  const email = h('input', { type: 'email', name: 'email', autocomplete: 'username', required: true });
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const status = h('div', { class: 'form-status' });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h(
    'form',
    {
      class: 'signin',
      id: 'signin',
      onsubmit: async (ev) => {
        ev.preventDefault();
        button.disabled = true;
        fill(status, h('p', { role: 'status' }, 'Signing in…'));
        try {
          await login(email.value.trim(), password.value);
          go(next && next !== '#/signin' ? next : '#/calls');
        } catch (e) {
          fill(status, errorBox(e, 'Could not sign in.'));
          password.select();
        } finally {
          button.disabled = false;
        }
      },
    },
    h('h1', {}, 'Sign in'),
    h('p', { class: 'muted' }, 'Voxanne: your clinic’s receptionist.'),
    field('Email', email),
    field('Password', password),
    status,
    button,
  );
  fill(main, h('div', { class: 'signin-wrap' }, form));
  email.focus();
}

// The skip link moves focus to the page's content; following its `#main` would be a route.
document.querySelector('.skip').addEventListener('click', (ev) => {
  ev.preventDefault();
  document.getElementById('main').focus();
});

document.getElementById('signout').addEventListener('click', async () => {
  await logout();
  announce('Signed out');
});

onSignedOut(() => go('#/signin'));

/** Opens `hash` (also when it is already the current one). */
function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

window.addEventListener('hashchange', route);
route();

// The API confirms who we are (and that the session still works) once per load.
if (signedIn()) api('/me').catch(() => {});
