// Shared by every view: the API client, uploads, outcome waiting, DOM building and
// formatting. Nothing here ever parses HTML: data from the API (message text, mail) is
// hostile, so it only ever becomes text nodes and attribute values.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// The app registers what a 423 (locked) or 401 (session gone) means for the page.
const hooks = { locked() {}, sessionLost() {} };
let stopped = false;

export function setApiHooks(h) {
  Object.assign(hooks, h);
}

/** After a wipe or a lost session: every later call fails without a request. */
export function stopApi() {
  stopped = true;
}

export function isStopped() {
  return stopped;
}

async function errorFrom(res) {
  let code = `http_${res.status}`;
  let message = `${res.status} ${res.statusText || 'error'}`;
  try {
    const body = await res.json();
    if (body && body.error) {
      code = body.error.code ?? code;
      message = body.error.message ?? message;
    }
  } catch {
    // Not JSON (a proxy's page, an empty body): keep the status line.
  }
  return new ApiError(res.status, code, message);
}

function checkStatus(status, path) {
  if (status === 423) hooks.locked();
  else if (status === 401 && path !== '/api/unlock') hooks.sessionLost();
}

/**
 * One request; answers the Response when it is 2xx, throws ApiError otherwise.
 * `body` is sent as JSON; `raw` (a Blob, File or string) as application/octet-stream.
 */
export async function request(path, { method = 'GET', body, raw } = {}) {
  if (stopped) throw new ApiError(0, 'stopped', 'This page has stopped.');
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (method !== 'GET') {
    if (raw !== undefined) {
      init.headers['Content-Type'] = 'application/octet-stream';
      init.body = raw;
    } else {
      init.headers['Content-Type'] = 'application/json';
      if (body !== undefined || method === 'POST') init.body = JSON.stringify(body ?? {});
    }
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, 'network', `redoubt web is not answering (${e.message}).`);
  }
  checkStatus(res.status, path);
  if (!res.ok) throw await errorFrom(res);
  return res;
}

/** A request whose answer is JSON (or empty). */
export async function api(path, options) {
  const res = await request(path, options);
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

/** Percent-encodes one path segment or query value. */
export const enc = encodeURIComponent;

/**
 * Uploads a file as the raw body with progress (fetch cannot report upload progress).
 * `onProgress(fraction)` gets 0..1. Answers the JSON reply.
 */
export function upload(path, file, onProgress) {
  return new Promise((resolve, reject) => {
    if (stopped) {
      reject(new ApiError(0, 'stopped', 'This page has stopped.'));
      return;
    }
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    xhr.withCredentials = true;
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable && e.total > 0) onProgress(e.loaded / e.total);
    };
    xhr.onload = () => {
      checkStatus(xhr.status, path);
      let body = null;
      try {
        body = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(1);
        resolve(body);
      } else {
        const err = body && body.error;
        reject(new ApiError(xhr.status, err?.code ?? `http_${xhr.status}`, err?.message ?? `${xhr.status} ${xhr.statusText}`));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, 'network', 'The upload failed: redoubt web is not answering.'));
    xhr.onabort = () => reject(new ApiError(0, 'aborted', 'The upload was cancelled.'));
    xhr.send(file);
  });
}

// ---- Outcomes of mail/calendar commands (202 {command}, then an `outcome` event) ----

const waiting = new Map(); // command → resolve
const early = new Map(); // outcomes that arrived before anyone waited (bounded)
const EARLY_MAX = 200;
const OUTCOME_TIMEOUT_MS = 120_000;

/** Resolves with `{error: null|text, timedOut?: true}` once the command is answered. */
export function waitOutcome(command) {
  if (early.has(command)) {
    const error = early.get(command);
    early.delete(command);
    return Promise.resolve({ error });
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      waiting.delete(command);
      resolve({ error: null, timedOut: true });
    }, OUTCOME_TIMEOUT_MS);
    waiting.set(command, (error) => {
      clearTimeout(timer);
      resolve({ error });
    });
  });
}

export function deliverOutcome(event) {
  const resolve = waiting.get(event.command);
  if (resolve) {
    waiting.delete(event.command);
    resolve(event.error ?? null);
    return;
  }
  early.set(event.command, event.error ?? null);
  if (early.size > EARLY_MAX) early.delete(early.keys().next().value);
}

// ---- DOM ----

/**
 * createElement with properties and children. `text` sets textContent, `class` the class,
 * `dataset` data-*, `on*` functions become listeners, `true` is an empty attribute,
 * `false`/null/undefined are skipped; children may be nodes, strings, arrays or null.
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value == null || value === false) continue;
      if (key === 'class') el.className = value;
      else if (key === 'text') el.textContent = value;
      else if (key === 'dataset') Object.assign(el.dataset, value);
      else if (key === 'value') el.value = value;
      else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? '' : String(value));
    }
  }
  appendAll(el, children);
  return el;
}

function appendAll(el, children) {
  for (const child of children) {
    if (child == null || child === false) continue;
    if (Array.isArray(child)) appendAll(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** An alert slot placed next to a control; hidden while there is nothing to say. */
export function errorSlot() {
  return h('p', { class: 'error', role: 'alert', hidden: true });
}

export function messageOf(error) {
  if (error instanceof ApiError) return error.message;
  return String(error?.message ?? error);
}

/** Shows an error in its slot; a lock (423) or a lost session is shown elsewhere. */
export function showError(slot, error) {
  if (error instanceof ApiError && (error.status === 423 || error.code === 'stopped')) return;
  slot.textContent = typeof error === 'string' ? error : messageOf(error);
  slot.hidden = false;
}

export function clearError(slot) {
  slot.textContent = '';
  slot.hidden = true;
}

/** A status line (role=status) that says how an action went. */
export function statusSlot() {
  return h('p', { class: 'note', role: 'status' });
}

/** Opens a modal dialog and gives focus back to `opener` when it closes. */
export function openDialog(dialog, opener) {
  const back = opener ?? document.activeElement;
  dialog.addEventListener(
    'close',
    () => {
      if (back && back.isConnected && typeof back.focus === 'function') back.focus();
    },
    { once: true },
  );
  dialog.showModal();
}

/** Asks for confirmation in the page's confirmation dialog. */
export function confirmAction(text, opener) {
  const dialog = document.getElementById('confirm-dialog');
  document.getElementById('confirm-text').textContent = text;
  return new Promise((resolve) => {
    dialog.returnValue = '';
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'confirm'), { once: true });
    openDialog(dialog, opener);
  });
}

/** Saves a Blob under a name through a temporary download link. */
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: name || 'download', hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** Splits "a, b; c" into ["a", "b", "c"]. */
export function splitList(text) {
  return String(text ?? '')
    .split(/[,;\n]/)
    .map((s) => s.trim())
    .filter(Boolean);
}

// ---- Formatting (always the browser's local time) ----

const clockFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayFormat = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });
const fullDayFormat = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric' });
const longFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

let todayKey = '';
let todayUntil = 0;
function today() {
  const now = Date.now();
  if (now >= todayUntil) {
    const d = new Date(now);
    todayKey = d.toDateString();
    d.setHours(24, 0, 0, 0);
    todayUntil = d.getTime();
  }
  return todayKey;
}

/** Seconds since 1970 from a number, an RFC 3339 string or null. */
export function unixOf(value) {
  if (value == null || value === '') return null;
  if (typeof value === 'number') return value;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : Math.floor(ms / 1000);
}

/** Compact: "14:03" today, "3 Dec 14:03" this year, "3 Dec 2024 14:03" before. */
export function shortTime(unixS) {
  if (unixS == null) return '—';
  const d = new Date(unixS * 1000);
  const clock = clockFormat.format(d);
  if (d.toDateString() === today()) return clock;
  const sameYear = d.getFullYear() === new Date().getFullYear();
  return `${(sameYear ? dayFormat : fullDayFormat).format(d)} ${clock}`;
}

export function longTime(value) {
  const s = unixOf(value);
  return s == null ? '—' : longFormat.format(new Date(s * 1000));
}

export function clock(unixS) {
  return clockFormat.format(new Date(unixS * 1000));
}

/** A <time> element showing local time, with the exact instant as its datetime. */
export function timeEl(value, format = shortTime) {
  const s = unixOf(value);
  if (s == null) return h('span', { text: '—' });
  const d = new Date(s * 1000);
  return h('time', { datetime: d.toISOString(), title: longFormat.format(d), text: format(s) });
}

export function formatBytes(n) {
  if (n == null) return '';
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

/** A certificate fingerprint as hex in groups of four: "a1b2 c3d4 …". */
export function fingerprint(hex) {
  return (String(hex ?? '').toLowerCase().match(/.{1,4}/g) ?? []).join(' ');
}

export function humanKey(key) {
  const text = String(key).replace(/_unix_s$/, '').replace(/_/g, ' ');
  return text.charAt(0).toUpperCase() + text.slice(1);
}

const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d)?(\.\d+)?(Z|[+-]\d\d:\d\d)$/;

/** One value as display text: times in local time, lists joined, null as a dash. */
export function scalarText(key, value) {
  if (value == null) return '—';
  if (typeof value === 'boolean') return value ? 'yes' : 'no';
  if (typeof value === 'number' && /_unix_s$|_at$/.test(key)) return longTime(value);
  if (typeof value === 'string' && RFC3339.test(value)) return longTime(value);
  if (Array.isArray(value)) return value.length ? value.map((v) => scalarText('', v)).join(', ') : '—';
  if (typeof value === 'object') {
    if ('host' in value && 'port' in value) return `${value.host}:${value.port}`;
    return JSON.stringify(value);
  }
  return String(value);
}

function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * Any JSON the console shows without a dedicated layout (settings, reports): objects as
 * definition lists, lists of objects as tables, everything else as text.
 */
export function renderValue(value, label) {
  if (Array.isArray(value) && value.length && value.every(isPlainObject)) {
    return table(label, [...new Set(value.flatMap((row) => Object.keys(row)))].map((key) => ({
      label: humanKey(key),
      cell: (row) => (isPlainObject(row[key]) || (Array.isArray(row[key]) && row[key].some(isPlainObject))
        ? renderValue(row[key])
        : scalarText(key, row[key])),
    })), value);
  }
  if (isPlainObject(value) && !('host' in value && 'port' in value)) {
    const dl = h('dl', { class: 'facts' });
    for (const [key, v] of Object.entries(value)) {
      const nested = isPlainObject(v) || (Array.isArray(v) && v.some(isPlainObject));
      dl.append(h('dt', { text: humanKey(key) }), h('dd', null, nested ? renderValue(v, humanKey(key)) : scalarText(key, v)));
    }
    return dl;
  }
  return h('span', { text: scalarText('', value) });
}

/**
 * A table in a horizontally scrollable wrapper. `columns`: [{label, cell(row) → node|text}].
 */
export function table(label, columns, rows) {
  const body = h('tbody');
  for (const row of rows) {
    body.append(h('tr', null, columns.map((c) => h('td', null, c.cell(row)))));
  }
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      { 'aria-label': label ?? null },
      h('thead', null, h('tr', null, columns.map((c) => h('th', { scope: 'col', text: c.label })))),
      body,
    ),
  );
}

/** Base64 of a UTF-8 string, for data: URLs. */
export function base64Utf8(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}
