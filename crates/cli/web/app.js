// The page of `redoubt web` (docs/web.md): boots from /api/me, switches views, follows
// /api/events, and takes over the whole page when the device locks or is wiped.
//
// Each view is a module with the same shape:
//   init(ctx)   once, binds its controls;
//   show()      when it becomes the visible view (loads what it shows);
//   hide()      when another view is chosen;
//   clear()     on lock: forgets everything it shows;
//   onSync(ev)  on a `sync` event (and after the event stream reconnects).

import { api, deliverOutcome, setApiHooks, stopApi, isStopped, showError, clearError } from './util.js';
import * as chats from './chat.js';
import * as mail from './mail.js';
import * as calendar from './calendar.js';
import * as contacts from './contacts.js';
import * as devices from './devices.js';
import * as consoleView from './console.js';

const views = { chats, mail, calendar, contacts, devices, console: consoleView };
const ACTIVITY_INTERVAL_MS = 10_000;

const $ = (id) => document.getElementById(id);

const state = {
  me: null,
  view: null,
  locked: false,
  events: null,
  everConnected: false,
  streamDown: false,
  retryMs: 1000,
  lastActivity: 0,
};

// What views may ask of the page.
const ctx = {
  me: () => state.me,
  isVisible: (name) => !state.locked && state.view === name && document.visibilityState === 'visible',
  setChatsUnread(total) {
    const badge = $('chats-badge');
    badge.textContent = total > 99 ? '99+' : String(total);
    badge.hidden = total === 0;
  },
};

function viewFromHash() {
  const name = location.hash.replace(/^#\/?/, '').split('/')[0];
  return name in views ? name : 'chats';
}

function allowed(name) {
  return name !== 'console' || (state.me?.roles?.length ?? 0) > 0;
}

async function showView(name) {
  if (!allowed(name)) name = 'chats';
  const previous = state.view;
  if (previous && previous !== name) views[previous].hide?.();
  state.view = name;
  for (const button of document.querySelectorAll('nav.sections button')) {
    if (button.dataset.view === name) button.setAttribute('aria-current', 'page');
    else button.removeAttribute('aria-current');
  }
  for (const key of Object.keys(views)) $(`view-${key}`).hidden = key !== name;
  if (location.hash !== `#${name}`) history.replaceState(null, '', `#${name}`);
  await views[name].show();
}

function renderMe(me) {
  // A locked device answers only {locked, passcode} (and perhaps user).
  // The brand is shown already; an organisation left with the default name adds nothing.
  const org = me.org_name && me.org_name !== 'Redoubt' ? me.org_name : '';
  $('org-name').textContent = org;
  const who = me.display_name ? `${me.display_name} (${me.user})` : me.user ?? '';
  $('who').textContent = me.device_name ? `${who} · ${me.device_name}` : who;
  document.querySelector('nav.sections button[data-view="console"]').hidden = !(me.roles?.length > 0);
  document.title = org ? `Redoubt · ${org}` : 'Redoubt';
}

// ---- Lock, unlock, wipe, lost session ----

const LOCK_HINTS = {
  remote: 'Your organisation has locked this device. Enter its passcode once they unlock it.',
  inactivity: 'Locked after a while without activity. Enter this device’s passcode to continue.',
};

function lock(why) {
  $('lock-hint').textContent = LOCK_HINTS[why] ?? 'Enter this device’s passcode to continue.';
  if (state.locked || isStopped()) return;
  state.locked = true;
  $('app').hidden = true;
  for (const dialog of document.querySelectorAll('dialog[open]')) dialog.close();
  for (const view of Object.values(views)) view.clear();
  $('lock').hidden = false;
  clearError($('unlock-error'));
  $('passcode').value = '';
  $('passcode').focus();
}

// The unlock answer and the `unlocked` event both land here: one reload, not two.
let unlocking = null;
function unlocked() {
  unlocking ??= reopen().finally(() => {
    unlocking = null;
  });
  return unlocking;
}

async function reopen() {
  if (!state.locked) return;
  try {
    state.me = await api('/api/me');
  } catch {
    return; // still locked (423 is not possible here) or the page stopped
  }
  if (state.me.locked) return;
  state.locked = false;
  renderMe(state.me);
  $('lock').hidden = true;
  $('app').hidden = false;
  await showView(viewFromHash());
}

async function submitUnlock(event) {
  event.preventDefault();
  const slot = $('unlock-error');
  clearError(slot);
  const button = event.submitter ?? $('unlock-form').querySelector('button');
  button.disabled = true;
  try {
    await api('/api/unlock', { method: 'POST', body: { passcode: $('passcode').value } });
    $('passcode').value = '';
    await unlocked();
  } catch (e) {
    showError(slot, e);
    $('passcode').select();
  } finally {
    button.disabled = false;
  }
}

function pageMessage(title, text) {
  stopApi();
  state.events?.close();
  for (const dialog of document.querySelectorAll('dialog[open]')) dialog.close();
  $('app').remove();
  $('lock').remove();
  $('page-message-title').textContent = title;
  $('page-message-text').textContent = text;
  $('page-message').hidden = false;
  document.body.dataset.ready = '1';
}

function wiped() {
  pageMessage('This device has been wiped.', 'Its messages, mail and keys are gone from this computer. You can close this page.');
}

function sessionLost() {
  if (isStopped()) return;
  pageMessage('This session has ended.', 'Open the address that `redoubt web` printed (or run it again) to sign in.');
}

// ---- Events ----

function status(text, connected) {
  const line = $('status-line');
  line.textContent = text;
  line.dataset.connected = connected ? '1' : '0';
}

function syncAll() {
  const everything = { type: 'sync', conversations: null, mail: true, calendar: true, all: true };
  for (const view of Object.values(views)) view.onSync(everything);
}

function onEvent(message) {
  let event;
  try {
    event = JSON.parse(message.data);
  } catch {
    return;
  }
  switch (event.type) {
    case 'sync':
      if (!state.locked) for (const view of Object.values(views)) view.onSync(event);
      break;
    case 'outcome':
      deliverOutcome(event);
      break;
    case 'locked':
      lock(event.why);
      break;
    case 'unlocked':
      unlocked();
      break;
    case 'wiped':
      wiped();
      break;
    case 'status':
      status(event.text ?? (event.connected ? 'Connected' : 'Not connected'), event.connected);
      break;
    default:
      break;
  }
}

function connectEvents() {
  const events = new EventSource('/api/events');
  state.events = events;
  events.onmessage = onEvent;
  events.onopen = () => {
    // Whatever changed while the stream was down was not announced: refetch.
    if (state.everConnected && !state.locked) syncAll();
    if (state.streamDown) status('', true);
    state.streamDown = false;
    state.everConnected = true;
    state.retryMs = 1000;
  };
  events.onerror = () => {
    if (isStopped()) {
      events.close();
      return;
    }
    state.streamDown = true;
    status('Lost the connection to redoubt web; retrying…', false);
    // EventSource retries a dropped stream itself, but gives up on an HTTP error (a
    // restarted `redoubt web` answers 401): ask /api/me, which ends the page on a 401.
    if (events.readyState === EventSource.CLOSED) setTimeout(probe, state.retryMs);
  };
}

async function probe() {
  if (isStopped()) return;
  try {
    await api('/api/me');
    connectEvents();
  } catch {
    state.retryMs = Math.min(state.retryMs * 2, 30_000);
    if (!isStopped()) setTimeout(probe, state.retryMs);
  }
}

// ---- Activity (the inactivity lock counts from the last report) ----

function activity() {
  if (state.locked || isStopped()) return;
  const now = Date.now();
  if (now - state.lastActivity < ACTIVITY_INTERVAL_MS) return;
  state.lastActivity = now;
  api('/api/activity', { method: 'POST' }).catch(() => {});
}

// ---- Boot ----

async function boot() {
  setApiHooks({ locked: () => lock(), sessionLost });
  for (const button of document.querySelectorAll('nav.sections button')) {
    button.addEventListener('click', () => showView(button.dataset.view));
  }
  $('unlock-form').addEventListener('submit', submitUnlock);
  window.addEventListener('hashchange', () => {
    if (!state.locked && state.me) showView(viewFromHash());
  });
  document.addEventListener('keydown', activity, { capture: true, passive: true });
  document.addEventListener('pointerdown', activity, { capture: true, passive: true });
  // Dialogs: any [data-close] button closes its dialog (Escape does so natively).
  document.addEventListener('click', (e) => {
    const close = e.target.closest?.('[data-close]');
    if (close) close.closest('dialog')?.close();
  });
  for (const view of Object.values(views)) view.init(ctx);

  connectEvents();
  try {
    state.me = await api('/api/me');
  } catch (e) {
    if (!isStopped()) pageMessage('redoubt web is not answering.', String(e.message ?? e));
    return;
  }
  renderMe(state.me);
  if (state.me.locked) {
    lock();
  } else {
    $('app').hidden = false;
    await showView(viewFromHash());
  }
  document.body.dataset.ready = '1';
}

boot().catch((e) => {
  if (!isStopped()) pageMessage('The page failed to start.', String(e?.message ?? e));
});
