// Chats: the conversation list with unread counts, one open conversation whose messages
// arrive live (only what changed is refetched), sending, attachments, read receipts,
// members and their devices, and search of this device's message history.

import {
  api, enc, upload, h, openDialog, showError, clearError, splitList, shortTime, timeEl,
  formatBytes, fingerprint,
} from './util.js';

/** Shortest time between two read reports of one conversation. */
const READ_REPORT_MS = 1000;
const $ = (id) => document.getElementById(id);

// An answer this long may be one page of a longer history: ask again from its end.
const PAGE_GUESS = 500;
// Own messages not yet read are rechecked for receipts only this far back.
const TICK_WINDOW = 200;
// A long history: this many newest messages are drawn at once, the rest in chunks.
const FIRST_DRAWN = 200;
const BACKLOG_CHUNK = 500;

let ctx;

// The conversation list, keyed by id; entries keep their DOM so updates are in place.
const list = { items: new Map(), data: new Map(), loading: false, again: false };

// The open conversation, replaced whole when another opens, so a fetch that returns
// after a switch sees it is stale (`s !== open`).
let open = null;

function newSession(conversation) {
  return {
    id: conversation.id,
    conversation,
    lastSeq: null, // highest seq shown
    lastOtherSeq: null, // highest seq sent by someone else
    items: new Map(), // seq → {li, ticks, state}, for messages drawn
    backlog: null, // older messages of the first batch still to draw
    waiting: new Map(), // seq → message, for those
    pending: new Set(), // seqs of my messages not yet read
    busy: false,
    again: false,
    readPosted: null, // highest seq reported read
    membersLoaded: false,
  };
}

// ---- Conversation list ----

function sortConversations(conversations) {
  return [...conversations].sort((a, b) => {
    const at = a.last?.at_unix_s ?? -Infinity;
    const bt = b.last?.at_unix_s ?? -Infinity;
    if (at !== bt) return bt - at;
    return String(a.name).localeCompare(String(b.name));
  });
}

function conversationEntry(c) {
  const name = h('span', { class: 'conv-name' });
  const unread = h('span', { class: 'unread' });
  const when = h('span', { class: 'when', 'aria-hidden': 'true' });
  const preview = h('span', { class: 'preview', id: `preview-${c.id}`, 'aria-hidden': 'true' });
  const button = h(
    'button',
    { type: 'button', class: 'conv', 'aria-describedby': preview.id, onclick: () => openConversation(c.id) },
    h('span', { class: 'conv-top' }, name, ' ', unread, when),
    preview,
  );
  return { li: h('li', null, button), button, name, unread, when, preview, key: '' };
}

function updateEntry(entry, c) {
  const unread = c.id === open?.id && open.readPosted != null && open.readPosted >= (open.lastOtherSeq ?? -1) ? 0 : c.unread ?? 0;
  const key = JSON.stringify([c.name, c.removed, unread, c.last, c.direct]);
  entry.button.classList.toggle('current', c.id === open?.id);
  if (c.id === open?.id) entry.button.setAttribute('aria-current', 'true');
  else entry.button.removeAttribute('aria-current');
  if (entry.key === key) return;
  entry.key = key;
  entry.name.textContent = c.removed ? `${c.name} (left)` : c.name;
  entry.button.classList.toggle('removed', Boolean(c.removed));
  entry.unread.replaceChildren();
  if (unread > 0) entry.unread.append(h('span', { class: 'count', text: String(unread) }), h('span', { class: 'vh', text: ' unread' }));
  entry.unread.hidden = unread === 0;
  entry.when.textContent = c.last ? shortTime(c.last.at_unix_s) : '';
  entry.preview.textContent = c.last ? `${c.last.sender}: ${c.last.text}` : c.direct ? 'Direct conversation' : 'Group';
}

function renderList(conversations) {
  const ul = $('conversations');
  const focused = ul.contains(document.activeElement) ? document.activeElement : null;
  const seen = new Set();
  let previous = null;
  let total = 0;
  for (const c of sortConversations(conversations)) {
    seen.add(c.id);
    list.data.set(c.id, c);
    let entry = list.items.get(c.id);
    if (!entry) {
      entry = conversationEntry(c);
      list.items.set(c.id, entry);
    }
    updateEntry(entry, c);
    total += entry.unread.hidden ? 0 : c.unread ?? 0;
    const wanted = previous ? previous.nextSibling : ul.firstChild;
    if (wanted !== entry.li) ul.insertBefore(entry.li, wanted);
    previous = entry.li;
  }
  for (const [id, entry] of list.items) {
    if (!seen.has(id)) {
      entry.li.remove();
      list.items.delete(id);
      list.data.delete(id);
    }
  }
  // Moving a focused button blurs it; give the keyboard user their place back.
  if (focused && focused.isConnected && document.activeElement !== focused) focused.focus({ preventScroll: true });
  $('conversations-empty').hidden = list.items.size > 0;
  ctx.setChatsUnread(total);
  if (open && list.data.has(open.id)) {
    open.conversation = list.data.get(open.id);
    renderHeader(open);
  }
}

async function refreshList() {
  if (list.loading) {
    list.again = true;
    return;
  }
  list.loading = true;
  try {
    do {
      list.again = false;
      const conversations = await api('/api/conversations');
      clearError($('conversations-error'));
      renderList(conversations);
    } while (list.again);
  } catch (e) {
    showError($('conversations-error'), e);
  } finally {
    list.loading = false;
  }
}

// ---- Messages ----

const timeCache = new Map(); // minute → text, so 10,000 messages format a few times only

function messageTime(unixS) {
  const minute = Math.floor(unixS / 60);
  let text = timeCache.get(minute);
  if (text === undefined) {
    text = shortTime(unixS);
    if (timeCache.size > 10_000) timeCache.clear();
    timeCache.set(minute, text);
  }
  const el = document.createElement('time');
  el.dateTime = new Date(unixS * 1000).toISOString();
  el.textContent = text;
  return el;
}

const TICKS = {
  sent: ['', 'Sent'],
  delivered: ['✓', 'Delivered'],
  read: ['✓✓', 'Read'],
};

function setTicks(entry, state) {
  const [text, label] = TICKS[state] ?? TICKS.sent;
  entry.state = state;
  entry.ticks.textContent = text;
  entry.ticks.dataset.state = state;
  entry.ticks.setAttribute('aria-label', label);
  entry.ticks.title = label;
}

/** One message as a list item; the hot path of a 10,000-message conversation. */
function messageItem(m) {
  const li = document.createElement('li');
  // Explicit: its parent is a segment <div>, not the list itself.
  li.setAttribute('role', 'listitem');
  li.dataset.seq = m.seq;
  li.dataset.id = m.id;
  const entry = { li, ticks: null, state: null };
  if (m.event) {
    li.className = 'msg event';
    const text = document.createElement('span');
    text.textContent = m.text;
    li.append(text, ' ', messageTime(m.at_unix_s));
    return entry;
  }
  li.className = m.mine ? 'msg mine' : 'msg';
  const meta = document.createElement('div');
  meta.className = 'meta';
  const sender = document.createElement('span');
  sender.className = 'sender';
  sender.textContent = m.sender;
  meta.append(sender, ' ', messageTime(m.at_unix_s));
  if (m.history) {
    const tag = document.createElement('span');
    tag.className = 'tag';
    tag.textContent = 'history';
    tag.title = 'Transferred from another of your devices';
    meta.append(' ', tag);
  }
  if (m.mine) {
    entry.ticks = document.createElement('span');
    entry.ticks.className = 'ticks';
    entry.ticks.setAttribute('role', 'img');
    setTicks(entry, m.state);
    meta.append(' ', entry.ticks);
  }
  li.append(meta);
  if (m.text && m.text !== m.attachment?.name) {
    const text = document.createElement('div');
    text.className = 'text';
    text.textContent = m.text;
    li.append(text);
  }
  if (m.attachment) {
    const a = document.createElement('a');
    a.className = 'file';
    a.href = `/api/messages/${enc(m.id)}/file`;
    a.download = m.attachment.name;
    a.textContent = `↓ ${m.attachment.name} (${formatBytes(m.attachment.bytes)})`;
    li.append(a);
  }
  return entry;
}

function nearBottom(el) {
  return el.scrollHeight - el.scrollTop - el.clientHeight < 120;
}

function scrollToBottom(el) {
  el.scrollTop = el.scrollHeight;
  // Once more after the frame: late layout (fonts, wrapping) can add height.
  requestAnimationFrame(() => {
    el.scrollTop = el.scrollHeight;
  });
}

// The list holds its messages in segments (<div>s of at most SEGMENT <li>s): the browser
// lays out a block by walking all its children, so appending to one flat list of 10,000
// costs tens of milliseconds, and appending to a segment almost nothing.
const SEGMENT = 250;

function newSegment() {
  const segment = document.createElement('div');
  segment.className = 'segment';
  return segment;
}

/** Appends message items at the end, filling the last segment first. */
function appendItems(ul, items) {
  let segment = ul.lastElementChild;
  let room = segment ? SEGMENT - segment.childElementCount : 0;
  let fragment = document.createDocumentFragment();
  for (const li of items) {
    if (room <= 0) {
      segment?.append(fragment);
      segment = newSegment();
      ul.append(segment);
      fragment = document.createDocumentFragment();
      room = SEGMENT;
    }
    fragment.append(li);
    room -= 1;
  }
  segment?.append(fragment);
}

/** Prepends message items (in order) as new segments above the first. */
function prependItems(ul, items) {
  const fragment = document.createDocumentFragment();
  for (let i = 0; i < items.length; i += SEGMENT) {
    const segment = newSegment();
    segment.append(...items.slice(i, i + SEGMENT));
    fragment.append(segment);
  }
  ul.prepend(fragment);
}

function insertInOrder(ul, li, seq) {
  const shown = ul.querySelectorAll('li[data-seq]');
  for (let i = shown.length - 1; i >= 0; i -= 1) {
    if (Number(shown[i].dataset.seq) < seq) {
      shown[i].after(li);
      return;
    }
  }
  if (ul.firstElementChild) ul.firstElementChild.prepend(li);
  else appendItems(ul, [li]);
}

/** Records a message's receipts and sender before (or without) drawing it. */
function note(s, m) {
  if (m.event) return;
  if (m.mine) {
    if (m.state === 'read') s.pending.delete(m.seq);
    else s.pending.add(m.seq);
  } else {
    s.lastOtherSeq = Math.max(s.lastOtherSeq ?? -1, m.seq);
  }
}

/**
 * Draws a batch from the server: new messages at the end, receipts of known ones in
 * place. A long first batch (a 10,000-message history) shows its newest messages at
 * once and draws the older ones above them in small chunks, so the page answers
 * meanwhile (scroll anchoring keeps the view where it is).
 */
function applyBatch(s, batch) {
  if (!batch.length) return;
  const ul = $('messages');
  const first = s.lastSeq == null;
  const stick = first || nearBottom(ul);
  if (batch.some((m, i) => i > 0 && m.seq < batch[i - 1].seq)) batch = [...batch].sort((a, b) => a.seq - b.seq);
  if (first && batch.length > FIRST_DRAWN) {
    s.backlog = batch.slice(0, batch.length - FIRST_DRAWN);
    for (const m of s.backlog) {
      s.waiting.set(m.seq, m);
      note(s, m);
    }
    batch = batch.slice(-FIRST_DRAWN);
    setTimeout(() => drawBacklog(s), 0);
  } else if (first) {
    ul.dataset.complete = '1';
  }
  const fresh = [];
  const late = [];
  for (const m of batch) {
    note(s, m);
    const known = s.items.get(m.seq);
    if (known) {
      if (known.ticks && known.state !== m.state) setTicks(known, m.state);
      continue;
    }
    const waiting = s.waiting.get(m.seq);
    if (waiting) {
      waiting.state = m.state; // drawn later with its newest receipts
      continue;
    }
    const entry = messageItem(m);
    s.items.set(m.seq, entry);
    if (s.lastSeq == null || m.seq > s.lastSeq) {
      fresh.push(entry.li);
      s.lastSeq = m.seq;
    } else {
      late.push([entry.li, m.seq]); // e.g. transferred history older than what is shown
    }
  }
  appendItems(ul, fresh);
  for (const [li, seq] of late) insertInOrder(ul, li, seq);
  if (s.lastSeq != null) ul.dataset.loadedSeq = String(s.lastSeq);
  if (stick) scrollToBottom(ul);
}

/** Draws the next chunk of older messages above the first one shown. */
function drawBacklog(s, all = false) {
  if (s !== open || !s.backlog?.length) return;
  const ul = $('messages');
  const take = all ? s.backlog.length : Math.min(BACKLOG_CHUNK, s.backlog.length);
  const chunk = s.backlog.splice(s.backlog.length - take, take);
  const items = [];
  for (const m of chunk) {
    s.waiting.delete(m.seq);
    const entry = messageItem(m);
    s.items.set(m.seq, entry);
    items.push(entry.li);
  }
  prependItems(ul, items);
  if (s.backlog.length) setTimeout(() => drawBacklog(s), 0);
  else ul.dataset.complete = '1';
}

function messagesPath(s, after) {
  const query = after == null || after < 0 ? '' : `?after=${after}`;
  return `/api/conversations/${enc(s.id)}/messages${query}`;
}

/** Fetches what is new in the open conversation (one fetch at a time; a sync during one asks for another). */
async function refreshMessages() {
  const s = open;
  if (!s) return;
  if (s.busy) {
    s.again = true;
    return;
  }
  s.busy = true;
  try {
    do {
      s.again = false;
      let batch;
      do {
        batch = await api(messagesPath(s, s.lastSeq));
        if (s !== open) return;
        applyBatch(s, batch);
      } while (batch.length >= PAGE_GUESS);
    } while (s.again);
    clearError($('composer-error'));
    markRead(s);
    await refreshTicks(s);
  } catch (e) {
    if (s === open) showError($('composer-error'), e);
  } finally {
    s.busy = false;
  }
}

/** Delivered/read ticks change on messages already shown: refetch the recent unread ones. */
async function refreshTicks(s) {
  if (s.lastSeq == null) return;
  const floor = s.lastSeq - TICK_WINDOW;
  for (const seq of s.pending) if (seq <= floor) s.pending.delete(seq);
  if (!s.pending.size) return;
  const oldest = Math.min(...s.pending);
  const batch = await api(messagesPath(s, oldest - 1));
  if (s === open) applyBatch(s, batch);
}

function paneVisible() {
  return Boolean(open) && ctx.isVisible('chats');
}

/** Reports the newest message read while the conversation is open and the page visible. */
function markRead(s) {
  if (!s || s !== open || s.lastSeq == null || !paneVisible()) return;
  if (s.readPosted == null) {
    // First look: nothing to report if the server counts nothing unread.
    if ((s.conversation.unread ?? 0) === 0) {
      s.readPosted = s.lastOtherSeq ?? -1;
      return;
    }
  } else if (s.readPosted >= (s.lastOtherSeq ?? -1)) {
    return;
  }
  // Each report is an encrypted receipt to every member: while messages stream in, at
  // most one a second (the newest seq then covers all before it).
  const wait = READ_REPORT_MS - (Date.now() - (s.readPostedAt ?? 0));
  if (wait > 0) {
    if (!s.readTimer) {
      s.readTimer = setTimeout(() => {
        s.readTimer = null;
        markRead(s);
      }, wait);
    }
    return;
  }
  const seq = s.lastSeq;
  s.readPosted = seq;
  s.readPostedAt = Date.now();
  api(`/api/conversations/${enc(s.id)}/read`, { method: 'POST', body: { seq } })
    .then(() => {
      const entry = list.items.get(s.id);
      const c = list.data.get(s.id);
      if (entry && c) updateEntry(entry, { ...c, unread: 0 });
      refreshList();
    })
    .catch((e) => {
      if (s === open) {
        s.readPosted = null;
        showError($('composer-error'), e);
      }
    });
}

// ---- The open conversation ----

function renderHeader(s) {
  const c = s.conversation;
  $('conversation-title').textContent = c.name;
  const removed = Boolean(c.removed);
  $('conversation-removed').hidden = !removed;
  for (const el of $('composer').elements) el.disabled = removed;
  $('add-member').hidden = removed || Boolean(c.direct);
}

function showPane(shown) {
  $('view-chats').classList.toggle('open', shown);
  $('conversation').hidden = !shown;
  $('no-conversation').hidden = shown;
}

async function openConversation(id, focusSeq) {
  if (open?.id !== id) {
    const conversation = list.data.get(id) ?? { id, name: id, unread: 0 };
    open = newSession(conversation);
    timeCache.clear();
    const ul = $('messages');
    ul.replaceChildren();
    ul.dataset.loadedSeq = '0';
    delete ul.dataset.complete;
    clearError($('composer-error'));
    clearError($('members-error'));
    clearError($('add-member-error'));
    $('members').replaceChildren();
    renderHeader(open);
    for (const [key, entry] of list.items) updateEntry(entry, list.data.get(key));
    showPane(true);
    if (!$('members-panel').hidden) loadMembers();
    await refreshMessages();
  } else {
    showPane(true);
    markRead(open);
  }
  if (focusSeq != null) revealMessage(focusSeq);
  else if (window.matchMedia('(min-width: 48rem)').matches) $('message-text').focus({ preventScroll: true });
}

function revealMessage(seq) {
  if (open?.waiting.has(seq)) drawBacklog(open, true);
  const entry = open?.items.get(seq);
  if (!entry) return;
  for (const old of $('messages').querySelectorAll('.hit')) old.classList.remove('hit');
  entry.li.classList.add('hit');
  entry.li.tabIndex = -1;
  entry.li.scrollIntoView({ block: 'center' });
  entry.li.focus({ preventScroll: true });
}

function closeConversation() {
  const id = open?.id;
  open = null;
  $('messages').replaceChildren();
  $('messages').dataset.loadedSeq = '0';
  delete $('messages').dataset.complete;
  $('members-panel').hidden = true;
  $('members-toggle').setAttribute('aria-expanded', 'false');
  showPane(false);
  for (const [key, entry] of list.items) updateEntry(entry, list.data.get(key));
  list.items.get(id)?.button.focus();
}

// ---- Sending ----

async function send(event) {
  event.preventDefault();
  const s = open;
  const box = $('message-text');
  const text = box.value;
  if (!s || !text.trim()) return;
  clearError($('composer-error'));
  box.value = '';
  try {
    await api(`/api/conversations/${enc(s.id)}/messages`, { method: 'POST', body: { text } });
    if (s === open) await refreshMessages();
  } catch (e) {
    if (!box.value) box.value = text;
    showError($('composer-error'), e);
  }
}

function composerKeys(event) {
  if (event.key === 'Enter' && !event.shiftKey && !event.altKey && !event.ctrlKey && !event.metaKey && !event.isComposing) {
    event.preventDefault();
    $('composer').requestSubmit();
  }
}

async function attachFiles() {
  const input = $('attach');
  const files = [...input.files];
  input.value = '';
  const s = open;
  if (!s || !files.length) return;
  const row = $('upload-row');
  const progress = $('upload-progress');
  clearError($('composer-error'));
  for (const file of files) {
    row.hidden = false;
    $('upload-name').textContent = `${file.name} (${formatBytes(file.size)})`;
    progress.value = 0;
    try {
      const path = `/api/conversations/${enc(s.id)}/files?name=${enc(file.name)}`;
      await upload(path, file, (fraction) => {
        progress.value = Math.round(fraction * 100);
      });
      if (s === open) await refreshMessages();
    } catch (e) {
      showError($('composer-error'), e);
      break;
    }
  }
  setTimeout(() => {
    row.hidden = true;
  }, 1500);
}

// ---- Members ----

async function loadMembers() {
  const s = open;
  if (!s) return;
  try {
    const members = await api(`/api/conversations/${enc(s.id)}/members`);
    if (s !== open) return;
    clearError($('members-error'));
    renderMembers(s, members);
  } catch (e) {
    if (s === open) showError($('members-error'), e);
  }
}

function renderMembers(s, members) {
  const byUser = new Map();
  for (const m of members) {
    if (!byUser.has(m.user)) byUser.set(m.user, []);
    byUser.get(m.user).push(m);
  }
  const me = ctx.me()?.user;
  const canRemove = !s.conversation.direct && !s.conversation.removed;
  const items = [];
  for (const [user, devices] of byUser) {
    items.push(
      h(
        'li',
        { class: 'member' },
        h(
          'div',
          { class: 'member-head' },
          h('span', { class: 'user', text: user }),
          user === me ? h('span', { class: 'muted', text: ' (you)' }) : null,
          canRemove && user !== me
            ? h('button', { type: 'button', class: 'small', 'aria-label': `Remove ${user}`, text: 'Remove', onclick: (e) => removeMember(user, e.currentTarget) })
            : null,
        ),
        h(
          'ul',
          { class: 'member-devices', 'aria-label': `Devices of ${user}` },
          devices.map((d) =>
            h(
              'li',
              null,
              h('span', { class: 'device-name', text: d.device_name }),
              ' ',
              h('code', { class: 'fingerprint', title: 'Certificate SHA-256 fingerprint', text: fingerprint(d.fingerprint) }),
            ),
          ),
        ),
      ),
    );
  }
  $('members').replaceChildren(...items);
}

async function addMember(event) {
  event.preventDefault();
  const s = open;
  const input = $('add-member-user');
  const user = input.value.trim();
  if (!s || !user) return;
  clearError($('add-member-error'));
  try {
    await api(`/api/conversations/${enc(s.id)}/members`, { method: 'POST', body: { user } });
    input.value = '';
    await loadMembers();
  } catch (e) {
    showError($('add-member-error'), e);
  }
}

async function removeMember(user, button) {
  const s = open;
  if (!s) return;
  clearError($('members-error'));
  button.disabled = true;
  try {
    await api(`/api/conversations/${enc(s.id)}/members/${enc(user)}`, { method: 'DELETE' });
    await loadMembers();
  } catch (e) {
    button.disabled = false;
    showError($('members-error'), e);
  }
}

function toggleMembers(force) {
  const panel = $('members-panel');
  const shown = force ?? panel.hidden;
  panel.hidden = !shown;
  $('members-toggle').setAttribute('aria-expanded', String(shown));
  if (shown) {
    loadMembers();
    $('members-close').focus();
  } else {
    $('members-toggle').focus();
  }
}

// ---- New conversation ----

async function createConversation(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const slot = $('new-conversation-error');
  clearError(slot);
  const name = form.elements.name.value.trim();
  const members = splitList(form.elements.members.value);
  let body;
  if (!members.length) return showError(slot, 'Give at least one member.');
  if (name) body = { name, members };
  else if (members.length === 1) body = { peer: members[0] };
  else return showError(slot, 'A group needs a name.');
  const button = event.submitter;
  if (button) button.disabled = true;
  try {
    const conversation = await api('/api/conversations', { method: 'POST', body });
    $('new-conversation-dialog').close();
    await refreshList();
    if (conversation?.id) {
      if (!list.data.has(conversation.id)) list.data.set(conversation.id, conversation);
      await openConversation(conversation.id);
    }
  } catch (e) {
    showError(slot, e);
  } finally {
    if (button) button.disabled = false;
  }
}

// ---- Search ----

async function search(event) {
  event.preventDefault();
  const q = $('message-search-q').value.trim();
  const slot = $('conversations-error');
  clearError(slot);
  if (!q) return closeSearch();
  try {
    const hits = await api(`/api/search?q=${enc(q)}`);
    const items = hits.map((hit) =>
      h(
        'li',
        null,
        h(
          'button',
          { type: 'button', class: 'hit-button', onclick: () => openHit(hit) },
          h('span', { class: 'conv-top' }, h('span', { class: 'conv-name', text: hit.conversation.name }), ' ', h('span', { class: 'when', text: shortTime(hit.message.at_unix_s) })),
          h('span', { class: 'preview', text: `${hit.message.sender}: ${hit.message.text || hit.message.attachment?.name || ''}` }),
        ),
      ),
    );
    if (!items.length) items.push(h('li', { class: 'muted empty', text: 'No message found.' }));
    $('search-hits').replaceChildren(...items);
    $('search-results').hidden = false;
    $('conversations').hidden = true;
    $('conversations-empty').hidden = true;
  } catch (e) {
    showError(slot, e);
  }
}

async function openHit(hit) {
  await openConversation(hit.conversation.id, hit.message.seq);
}

function closeSearch() {
  $('search-results').hidden = true;
  $('search-hits').replaceChildren();
  $('conversations').hidden = false;
  $('conversations-empty').hidden = list.items.size > 0;
}

// ---- The view ----

export function init(context) {
  ctx = context;
  $('composer').addEventListener('submit', send);
  $('message-text').addEventListener('keydown', composerKeys);
  $('attach').addEventListener('change', attachFiles);
  $('conversation-back').addEventListener('click', closeConversation);
  $('members-toggle').addEventListener('click', () => toggleMembers());
  $('members-close').addEventListener('click', () => toggleMembers(false));
  $('add-member').addEventListener('submit', addMember);
  $('members-panel').addEventListener('keydown', (e) => {
    if (e.key === 'Escape') toggleMembers(false);
  });
  $('new-conversation').addEventListener('click', (e) => {
    $('new-conversation-form').reset();
    clearError($('new-conversation-error'));
    openDialog($('new-conversation-dialog'), e.currentTarget);
  });
  $('new-conversation-form').addEventListener('submit', createConversation);
  $('message-search').addEventListener('submit', search);
  $('search-close').addEventListener('click', () => {
    $('message-search-q').value = '';
    closeSearch();
  });
  document.addEventListener('visibilitychange', () => markRead(open));
}

export async function show() {
  await refreshList();
  markRead(open);
}

export function hide() {}

export function clear() {
  open = null;
  list.items.clear();
  list.data.clear();
  $('conversations').replaceChildren();
  $('messages').replaceChildren();
  $('messages').dataset.loadedSeq = '0';
  delete $('messages').dataset.complete;
  $('members').replaceChildren();
  $('message-text').value = '';
  $('members-panel').hidden = true;
  $('members-toggle').setAttribute('aria-expanded', 'false');
  closeSearch();
  showPane(false);
  ctx.setChatsUnread(0);
}

export function onSync(event) {
  const ids = event.conversations;
  const all = event.all || !Array.isArray(ids);
  if (all || ids.length) refreshList();
  if (open && (all || ids.includes(open.id))) {
    refreshMessages();
    if (!$('members-panel').hidden) loadMembers();
  }
}
