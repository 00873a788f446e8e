// Mail: folders, a folder's list or search results, reading (fetching the whole text from
// the connector when only a preview is here), reply, forward, compose with attachments,
// flag, move and delete. Every change is a connector command: the request answers 202
// {command} at once and the result comes as an `outcome` event.

import {
  api, enc, request, upload, h, openDialog, showError, clearError, splitList, shortTime,
  longTime, formatBytes, waitOutcome, saveBlob, messageOf,
} from './util.js';

const $ = (id) => document.getElementById(id);

let ctx;
const state = {
  folders: [],
  folder: 'INBOX',
  query: null, // search words, when the list shows search results
  mails: [],
  openId: null,
  open: null, // the mail shown
  gen: 0,
  loaded: false,
  loading: false,
  again: false,
  mode: 'compose',
};

function list(value) {
  if (value == null) return [];
  return Array.isArray(value) ? value : [value];
}

function bodyText(mail) {
  return mail.full_text ?? mail.text ?? mail.preview ?? '';
}

function isComplete(mail) {
  return mail.complete ?? mail.text_complete ?? mail.full_text != null;
}

function note(text) {
  $('mail-status').textContent = text;
}

/** Runs a connector command and reports its outcome next to `slot`. */
async function command(promise, slot, done) {
  const answer = await promise;
  const { error, timedOut } = await waitOutcome(answer?.command);
  if (error) showError(slot, error);
  else if (timedOut) showError(slot, 'The mail connector has not answered yet; the change may still happen.');
  else done?.();
  return !error && !timedOut;
}

// ---- Folders and list ----

function renderFolders() {
  const items = state.folders.map((folder) =>
    h(
      'li',
      null,
      h('button', {
        type: 'button',
        class: 'folder',
        'aria-current': state.query == null && folder === state.folder ? 'true' : null,
        text: folder,
        onclick: () => chooseFolder(folder),
      }),
    ),
  );
  $('folders').replaceChildren(...items);
  const move = $('mail-move-to');
  const current = move.value;
  move.replaceChildren(...state.folders.map((f) => h('option', { value: f, text: f })));
  if (state.folders.includes(current)) move.value = current;
}

function mailItem(mail) {
  const classes = ['mail-item'];
  if (!mail.seen) classes.push('unseen');
  return h(
    'li',
    { dataset: { id: mail.id } },
    h(
      'button',
      {
        type: 'button',
        class: classes.join(' '),
        'aria-current': mail.id === state.openId ? 'true' : null,
        onclick: () => openMail(mail.id),
      },
      h(
        'span',
        { class: 'conv-top' },
        h('span', { class: 'from', text: mail.from || '(no sender)' }),
        ' ',
        mail.seen ? null : h('span', { class: 'vh', text: 'unread ' }),
        mail.flagged ? h('span', { class: 'flag-mark', role: 'img', 'aria-label': 'flagged', text: '⚑' }) : null,
        list(mail.attachments).length ? h('span', { class: 'tag', text: 'attachment' }) : null,
        h('span', { class: 'when', text: shortTime(mail.date_unix_s) }),
      ),
      h('span', { class: 'subject', text: mail.subject || '(no subject)' }),
    ),
  );
}

function renderList() {
  $('mail-list-title').textContent = state.query == null ? state.folder : `Search: ${state.query}`;
  $('mail-list').replaceChildren(...state.mails.map(mailItem));
  $('mail-empty').hidden = state.mails.length > 0;
}

async function loadStatus() {
  try {
    const s = await api('/api/mail/status');
    if (s && s.mailbox === false) note('No mailbox yet: the organisation’s mail connector has not set one up for you.');
    else if (s && s.ok === false) note(`Mail connector: ${s.detail ?? 'error'}`);
    else note('');
  } catch {
    // The status is a courtesy; the list below reports real failures.
  }
}

async function refresh() {
  if (state.loading) {
    state.again = true;
    return;
  }
  state.loading = true;
  const slot = $('mail-error');
  try {
    do {
      state.again = false;
      const [folders, mails] = await Promise.all([
        api('/api/mail/folders'),
        state.query == null ? api(`/api/mail?folder=${enc(state.folder)}`) : api(`/api/mail?q=${enc(state.query)}`),
      ]);
      clearError(slot);
      state.folders = folders.length ? folders : ['INBOX'];
      state.mails = mails;
      renderFolders();
      renderList();
      syncOpen();
    } while (state.again);
  } catch (e) {
    showError(slot, e);
  } finally {
    state.loading = false;
  }
}

/** Keeps the open mail's flags in step with the list; closes it when it left the folder. */
function syncOpen() {
  if (!state.openId || !state.open) return;
  const listed = state.mails.find((m) => m.id === state.openId);
  if (!listed) return;
  state.open = { ...state.open, seen: listed.seen, flagged: listed.flagged };
  renderFlag();
}

function chooseFolder(folder) {
  state.folder = folder;
  state.query = null;
  $('mail-search-q').value = '';
  closeMail();
  refresh();
}

function searchMail(event) {
  event.preventDefault();
  const q = $('mail-search-q').value.trim();
  state.query = q || null;
  closeMail();
  refresh();
}

// ---- Reading ----

function header(name, value) {
  return [h('dt', { text: name }), h('dd', { text: value })];
}

function renderFlag() {
  $('mail-flag').setAttribute('aria-pressed', String(Boolean(state.open?.flagged)));
}

function renderMail(mail) {
  $('mail-subject').textContent = mail.subject || '(no subject)';
  $('mail-headers').replaceChildren(
    ...header('From', mail.from ?? ''),
    ...header('To', list(mail.to).join(', ')),
    ...(list(mail.cc).length ? header('Cc', list(mail.cc).join(', ')) : []),
    ...header('Date', longTime(mail.date_unix_s)),
    ...header('Folder', mail.folder ?? state.folder),
  );
  $('mail-body').textContent = bodyText(mail);
  renderFlag();
  const attachments = list(mail.attachments);
  $('mail-attachments').hidden = attachments.length === 0;
  $('mail-attachments').replaceChildren(
    ...attachments.map((a, i) => {
      const index = a.index ?? i;
      const slot = h('span', { class: 'error', role: 'alert', hidden: true });
      return h(
        'li',
        null,
        h('button', {
          type: 'button',
          class: 'small',
          'aria-label': `Download ${a.name}`,
          text: `↓ ${a.name} (${formatBytes(a.bytes)})`,
          onclick: (e) => downloadAttachment(mail.id, index, a.name, e.currentTarget, slot),
        }),
        ' ',
        slot,
      );
    }),
  );
  for (const option of $('mail-move-to').options) option.disabled = option.value === (mail.folder ?? state.folder);
  const firstFree = [...$('mail-move-to').options].find((o) => !o.disabled);
  if (firstFree && $('mail-move-to').selectedOptions[0]?.disabled) $('mail-move-to').value = firstFree.value;
}

function showReader(shown) {
  $('mail-reader').hidden = !shown;
  $('view-mail').classList.toggle('reading', shown);
}

async function openMail(id) {
  const gen = ++state.gen;
  state.openId = id;
  for (const button of $('mail-list').querySelectorAll('button')) {
    if (button.parentElement.dataset.id === id) button.setAttribute('aria-current', 'true');
    else button.removeAttribute('aria-current');
  }
  clearError($('mail-action-error'));
  $('mail-fetching').textContent = '';
  try {
    const mail = await api(`/api/mail/${enc(id)}`);
    if (gen !== state.gen) return;
    state.open = mail;
    renderMail(mail);
    showReader(true);
    $('mail-subject').tabIndex = -1;
    $('mail-subject').focus({ preventScroll: true });
    if (!mail.seen) markSeen(mail);
    if (!isComplete(mail)) fetchBody(id, gen);
  } catch (e) {
    showError($('mail-error'), e);
  }
}

async function markSeen(mail) {
  try {
    await api(`/api/mail/${enc(mail.id)}/flags`, { method: 'POST', body: { seen: true } });
    const listed = state.mails.find((m) => m.id === mail.id);
    if (listed) {
      listed.seen = true;
      renderList();
    }
  } catch {
    // Not being marked seen is harmless; the next sync shows the server's flags.
  }
}

async function fetchBody(id, gen) {
  const fetching = $('mail-fetching');
  fetching.textContent = 'Fetching the whole message…';
  try {
    const answer = await api(`/api/mail/${enc(id)}/body`, { method: 'POST' });
    const { error, timedOut } = await waitOutcome(answer?.command);
    if (gen !== state.gen) return;
    if (error || timedOut) {
      fetching.textContent = '';
      showError($('mail-action-error'), error ?? 'The mail connector has not answered; only the start of the message is shown.');
      return;
    }
    const mail = await api(`/api/mail/${enc(id)}`);
    if (gen !== state.gen) return;
    state.open = mail;
    renderMail(mail);
    fetching.textContent = '';
  } catch (e) {
    if (gen === state.gen) {
      fetching.textContent = '';
      showError($('mail-action-error'), e);
    }
  }
}

async function downloadAttachment(id, index, name, button, slot) {
  clearError(slot);
  button.disabled = true;
  try {
    // 202 while the connector fetches it: wait for the outcome, then ask again.
    for (let attempt = 0; attempt < 3; attempt += 1) {
      const res = await request(`/api/mail/${enc(id)}/attachments/${index}`);
      if (res.status === 202) {
        const answer = await res.json().catch(() => null);
        button.setAttribute('aria-busy', 'true');
        const { error } = await waitOutcome(answer?.command);
        button.removeAttribute('aria-busy');
        if (error) throw new Error(error);
        continue;
      }
      saveBlob(await res.blob(), name);
      return;
    }
    throw new Error('The attachment is not here yet; try again.');
  } catch (e) {
    showError(slot, messageOf(e));
  } finally {
    button.disabled = false;
  }
}

function closeMail() {
  state.gen += 1;
  state.openId = null;
  state.open = null;
  showReader(false);
  $('mail-body').textContent = '';
  $('mail-headers').replaceChildren();
  $('mail-attachments').replaceChildren();
}

// ---- Actions on the open mail ----

function removeFromList(id) {
  state.mails = state.mails.filter((m) => m.id !== id);
  renderList();
}

async function toggleFlag() {
  const mail = state.open;
  if (!mail) return;
  const slot = $('mail-action-error');
  clearError(slot);
  const flagged = !mail.flagged;
  mail.flagged = flagged;
  renderFlag();
  try {
    const ok = await command(api(`/api/mail/${enc(mail.id)}/flags`, { method: 'POST', body: { flagged } }), slot);
    if (!ok && state.open === mail) {
      mail.flagged = !flagged;
      renderFlag();
    }
  } catch (e) {
    mail.flagged = !flagged;
    renderFlag();
    showError(slot, e);
  }
}

async function moveMail() {
  const mail = state.open;
  const folder = $('mail-move-to').value;
  if (!mail || !folder) return;
  const slot = $('mail-action-error');
  clearError(slot);
  try {
    const pending = api(`/api/mail/${enc(mail.id)}/move`, { method: 'POST', body: { folder } });
    await pending;
    note(`Moving to ${folder}…`);
    closeMail();
    removeFromList(mail.id);
    const ok = await command(pending, $('mail-error'));
    note(ok ? `Moved to ${folder}.` : '');
    refresh();
  } catch (e) {
    showError(slot, e);
  }
}

async function deleteMail() {
  const mail = state.open;
  if (!mail) return;
  const slot = $('mail-action-error');
  clearError(slot);
  try {
    const pending = api(`/api/mail/${enc(mail.id)}`, { method: 'DELETE' });
    await pending;
    note('Deleting…');
    closeMail();
    removeFromList(mail.id);
    const ok = await command(pending, $('mail-error'));
    note(ok ? 'Deleted.' : '');
    refresh();
  } catch (e) {
    showError(slot, e);
  }
}

// ---- Compose, reply, forward (one dialog in three modes) ----

function openCompose(mode, opener) {
  state.mode = mode;
  const form = $('compose-form');
  form.reset();
  clearError($('compose-error'));
  $('compose-upload').hidden = true;
  const shown = {
    compose: ['to', 'cc', 'subject', 'attachments'],
    reply: [],
    forward: ['to'],
  }[mode];
  for (const el of form.querySelectorAll('[data-field]')) el.hidden = !shown.includes(el.dataset.field);
  $('compose-title').textContent = { compose: 'New mail', reply: 'Reply', forward: 'Forward' }[mode];
  const context = $('compose-context');
  context.hidden = mode === 'compose';
  if (mode !== 'compose' && state.open) {
    const subject = state.open.subject || '(no subject)';
    context.textContent = mode === 'reply' ? `To ${state.open.from}: Re: ${subject}` : `Fwd: ${subject}`;
  }
  openDialog($('compose-dialog'), opener);
  (mode === 'reply' ? form.elements.body : form.elements.to).focus();
}

async function uploadAttachments(files) {
  const uploads = [];
  const row = $('compose-upload');
  const progress = $('compose-upload-progress');
  for (const file of files) {
    row.hidden = false;
    $('compose-upload-name').textContent = `${file.name} (${formatBytes(file.size)})`;
    progress.value = 0;
    const answer = await upload(`/api/uploads?name=${enc(file.name)}`, file, (fraction) => {
      progress.value = Math.round(fraction * 100);
    });
    uploads.push(answer.upload);
  }
  row.hidden = true;
  return uploads;
}

async function submitCompose(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const slot = $('compose-error');
  clearError(slot);
  const f = form.elements;
  const to = splitList(f.to.value);
  const text = f.body.value;
  const mail = state.open;
  let path;
  let body;
  if (state.mode === 'compose') {
    if (!to.length) return showError(slot, 'Give at least one address in To.');
    path = '/api/mail';
    body = { to, cc: splitList(f.cc.value), subject: f.subject.value, text, uploads: [] };
  } else if (state.mode === 'reply') {
    path = `/api/mail/${enc(mail.id)}/reply`;
    body = { text };
  } else {
    if (!to.length) return showError(slot, 'Give at least one address in To.');
    path = `/api/mail/${enc(mail.id)}/forward`;
    body = { to, text };
  }
  const button = event.submitter;
  if (button) button.disabled = true;
  try {
    if (state.mode === 'compose') body.uploads = await uploadAttachments([...f.attachments.files]);
    const pending = api(path, { method: 'POST', body });
    await pending;
    $('compose-dialog').close();
    note('Sending…');
    clearError($('mail-error'));
    const ok = await command(pending, $('mail-error'));
    note(ok ? 'Mail sent.' : '');
  } catch (e) {
    $('compose-upload').hidden = true;
    showError(slot, e);
  } finally {
    if (button) button.disabled = false;
  }
}

// ---- The view ----

export function init(context) {
  ctx = context;
  $('mail-search').addEventListener('submit', searchMail);
  $('compose').addEventListener('click', (e) => openCompose('compose', e.currentTarget));
  $('mail-reply').addEventListener('click', (e) => openCompose('reply', e.currentTarget));
  $('mail-forward').addEventListener('click', (e) => openCompose('forward', e.currentTarget));
  $('compose-form').addEventListener('submit', submitCompose);
  $('mail-flag').addEventListener('click', toggleFlag);
  $('mail-move').addEventListener('click', moveMail);
  $('mail-delete').addEventListener('click', deleteMail);
  $('mail-back').addEventListener('click', () => {
    const id = state.openId;
    closeMail();
    $('mail-list').querySelector(`li[data-id="${CSS.escape(id ?? '')}"] button`)?.focus();
  });
}

export async function show() {
  if (!state.loaded) {
    state.loaded = true;
    loadStatus();
  }
  await refresh();
}

export function hide() {}

export function clear() {
  closeMail();
  state.loaded = false;
  state.mails = [];
  state.folders = [];
  state.query = null;
  $('mail-list').replaceChildren();
  $('folders').replaceChildren();
  $('mail-search-q').value = '';
  note('');
}

export function onSync(event) {
  if (!event.mail || !state.loaded || !ctx.isVisible('mail')) {
    if (event.mail) state.stale = true;
    return;
  }
  refresh();
}
