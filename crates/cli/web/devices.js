// This user's own devices (GET /api/devices, as `redoubt device list --json`) and the
// key-transparency notices (GET /api/security, as `redoubt security --json`).

import { api, enc, h, showError, clearError, longTime } from './util.js';

const $ = (id) => document.getElementById(id);

let ctx;
let gen = 0;

function stateOf(d) {
  if (d.revoked_at) return 'revoked';
  const pending = (d.commands ?? []).filter((c) => c.state === 'pending').map((c) => `${c.command} pending`);
  return [d.approved === false ? 'awaiting approval' : 'active', ...pending].join(', ');
}

function fact(name, value) {
  return [h('dt', { text: name }), h('dd', { text: value })];
}

function deviceItem(d, me) {
  const mine = d.device_id === me?.device_id;
  const history = d.history
    ? `${d.history.state}${d.history.messages != null ? ` (${d.history.messages} messages)` : ''}`
    : '—';
  return h(
    'li',
    { class: mine ? 'card current' : 'card', dataset: { id: d.device_id } },
    h(
      'div',
      { class: 'card-head' },
      h('h2', { class: 'card-title', text: d.name }),
      mine ? h('span', { class: 'tag', text: 'this device' }) : null,
      h('span', { class: `tag state-${d.revoked_at ? 'revoked' : 'ok'}`, text: stateOf(d) }),
      d.seen_only_in_log ? h('span', { class: 'tag state-revoked', text: 'seen only in the key directory' }) : null,
    ),
    h(
      'dl',
      { class: 'facts' },
      ...fact('Device id', d.device_id),
      ...fact('Enrolled', longTime(d.created_at)),
      ...fact('Last seen', longTime(d.last_seen_at)),
      ...fact('Certificate expires', longTime(d.certificate_expires_at)),
      ...fact('Policy version', String(d.policy_version_acked ?? '—')),
      ...fact('History transfer', history),
      ...(d.revoked_at ? fact('Revoked', longTime(d.revoked_at)) : []),
    ),
    d.approved === false && !d.revoked_at
      ? h('button', { type: 'button', text: `Approve ${d.name}`, onclick: () => approve(d) })
      : null,
  );
}

/** Lets a new device of this user in (policy new_device_approval). */
async function approve(d) {
  try {
    await api(`/api/devices/${enc(d.device_id)}/approve`, { method: 'POST' });
    await refresh();
  } catch (e) {
    showError($('devices-error'), e);
  }
}

/** One key-transparency notice: a device added unseen, a refused device, a fork. */
function noticeItem(n) {
  return h(
    'li',
    { class: 'card notice' },
    h(
      'div',
      { class: 'card-head' },
      h('h2', { class: 'card-title', text: `Security notice: ${n.kind.replaceAll('_', ' ')}` }),
      h('span', { class: 'tag state-revoked', text: `epoch ${n.epoch}` }),
    ),
    h('p', { text: n.detail }),
  );
}

async function refresh() {
  const mine = ++gen;
  try {
    const [devices, security] = await Promise.all([api('/api/devices'), api('/api/security')]);
    if (mine !== gen) return;
    clearError($('devices-error'));
    $('devices').replaceChildren(
      ...security.notices.map(noticeItem),
      ...devices.map((d) => deviceItem(d, ctx.me())),
    );
  } catch (e) {
    if (mine === gen) showError($('devices-error'), e);
  }
}

export function init(context) {
  ctx = context;
  $('devices-refresh').addEventListener('click', refresh);
}

export async function show() {
  await refresh();
}

export function hide() {}

export function clear() {
  gen += 1;
  $('devices').replaceChildren();
}

export function onSync() {}
