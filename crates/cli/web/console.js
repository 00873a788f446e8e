// The console: organisation management for devices whose user has a role. Each section
// is fetched when chosen; buttons a role cannot use are not shown (admin: everything;
// helpdesk: dashboard, users, devices with lock/unlock/wipe; auditor: the audit log), and
// a 403 from the API still replaces the section with "Your role does not allow this".

import {
  api, enc, request, h, showError, clearError, errorSlot, statusSlot, confirmAction, table,
  renderValue, scalarText, longTime, base64Utf8, formatBytes,
} from './util.js';

const $ = (id) => document.getElementById(id);
const FORBIDDEN = 'Your role does not allow this';
const ROLES = ['admin', 'helpdesk', 'auditor'];

let ctx;
let current = null;
let gen = 0;

// What each role may do, as the server's authorisation table has it.
function can(permission) {
  const roles = ctx.me()?.roles ?? [];
  if (roles.includes('admin')) return true;
  if (roles.includes('helpdesk') && (permission === 'users' || permission === 'command')) return true;
  if (roles.includes('auditor') && permission === 'audit') return true;
  return false;
}

const SECTIONS = [
  { key: 'dashboard', label: 'Dashboard', permission: 'users', build: dashboard },
  { key: 'users', label: 'Users', permission: 'users', build: users },
  { key: 'devices', label: 'Devices', permission: 'users', build: devices },
  { key: 'groups', label: 'Groups', permission: 'admin', build: groups },
  { key: 'policies', label: 'Policies', permission: 'admin', build: policies },
  { key: 'roles', label: 'Roles', permission: 'admin', build: roles },
  { key: 'audit', label: 'Audit', permission: 'audit', build: audit },
  { key: 'mail', label: 'Mail settings', permission: 'admin', build: mailSettings },
  { key: 'directory', label: 'Directory', permission: 'admin', build: directory },
  { key: 'cluster', label: 'Cluster nodes', permission: 'admin', build: cluster },
];

function allowedSections() {
  return SECTIONS.filter((s) => can(s.permission));
}

function renderNav() {
  const nav = document.querySelector('#view-console .console-nav');
  nav.replaceChildren(
    ...allowedSections().map((s) =>
      h('button', {
        type: 'button',
        dataset: { section: s.key },
        'aria-current': s.key === current ? 'page' : null,
        text: s.label,
        onclick: () => showSection(s.key),
      }),
    ),
  );
}

function forbidden(error) {
  return error?.status === 403;
}

async function showSection(key) {
  const section = SECTIONS.find((s) => s.key === key && can(s.permission)) ?? allowedSections()[0];
  if (!section) return;
  current = section.key;
  const mine = ++gen;
  renderNav();
  const panel = h('section', { class: 'console-panel', 'aria-labelledby': 'console-title' });
  const title = h('h2', { id: 'console-title', class: 'view-title', text: section.label });
  panel.append(title, h('p', { class: 'muted', text: 'Loading…' }));
  $('console-section').replaceChildren(panel);
  const live = () => mine === gen && current === section.key;
  try {
    const parts = await section.build(live);
    if (!live()) return;
    panel.replaceChildren(title, ...parts.filter(Boolean));
  } catch (e) {
    if (!live()) return;
    const text = forbidden(e) ? FORBIDDEN : e.message;
    const slot = errorSlot();
    showError(slot, text);
    panel.replaceChildren(title, slot);
  }
}

function reload() {
  if (current) showSection(current);
}

/** Runs an action from a control: errors go to `slot` beside it (403: the server's reason). */
async function act(slot, button, action) {
  clearError(slot);
  if (button) button.disabled = true;
  try {
    return await action();
  } catch (e) {
    showError(slot, forbidden(e) ? `${FORBIDDEN}: ${e.message}` : e);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

function field(label, input) {
  return h('label', { class: 'field' }, label, ' ', input);
}

function filterBox(label, rows, textOf) {
  const input = h('input', { type: 'text', 'aria-label': label, placeholder: label, autocomplete: 'off' });
  input.addEventListener('input', () => {
    const q = input.value.trim().toLowerCase();
    for (const [row, item] of rows) row.hidden = q !== '' && !textOf(item).toLowerCase().includes(q);
  });
  return input;
}

/** A table whose rows stay reachable for filtering: answers [wrapper, [[tr, item]…]]. */
function rowsTable(label, columns, items) {
  const wrapper = table(label, columns, items);
  const trs = [...wrapper.querySelectorAll('tbody tr')];
  return [wrapper, trs.map((tr, i) => [tr, items[i]])];
}

// ---- Dashboard ----

async function dashboard() {
  // A figure the role may not read is absent, and so not shown.
  const d = await api('/api/admin/dashboard');
  const audit = d.audit ?? {};
  const checkpoint = audit.last_checkpoint_at ?? audit.last_checkpoint_unix_s;
  const facts = [
    ['Users', d.users],
    ['Devices', d.devices],
    ['Devices online', d.devices_online],
    ['Messages in the last minute', d.messages_last_minute],
    ['Storage', d.storage_bytes == null ? null : formatBytes(d.storage_bytes)],
    ['Commands pending', d.commands_pending],
    ['Policy version', d.policy_version],
    ['Audit entries', audit.entries],
    ['Last audit checkpoint', d.audit && (checkpoint == null
      ? 'none yet'
      : `${audit.last_checkpoint_seq != null ? `entry ${audit.last_checkpoint_seq}, ` : ''}${longTime(checkpoint)}`)],
  ].filter(([, v]) => v != null && v !== false);
  return [
    h('dl', { class: 'facts big' }, facts.map(([k, v]) => [h('dt', { text: k }), h('dd', { text: String(v) })])),
    d.stats ? h('details', null, h('summary', { text: 'Server statistics' }), renderValue(d.stats)) : null,
    h('button', { type: 'button', text: 'Refresh', onclick: reload }),
  ].filter(Boolean);
}

// ---- Users ----

function qrSource(svg) {
  const text = String(svg);
  if (text.startsWith('data:')) return text;
  if (text.trimStart().startsWith('<')) return `data:image/svg+xml;base64,${base64Utf8(text)}`;
  return `data:image/svg+xml;base64,${text}`;
}

function showCode(region, issued, what) {
  const expires = issued.expires_at ?? issued.expires_at_unix_s;
  region.replaceChildren(
    h('h3', { class: 'subtitle', text: `Activation code for ${what}` }),
    h('p', { class: 'code', text: issued.code }),
    h('p', { class: 'muted', text: `Valid until ${longTime(expires)}; single use. On the device: redoubt enroll CODE` }),
    issued.qr_svg ? h('img', { class: 'qr', alt: 'QR code', src: qrSource(issued.qr_svg) }) : null,
  );
  region.hidden = false;
  region.focus({ preventScroll: false });
}

async function users() {
  const list = await api('/api/admin/users');
  const parts = [];
  const region = h('section', { class: 'code-region', 'aria-label': 'Activation code', tabindex: '-1', hidden: true });

  if (can('users')) {
    const user = h('input', { type: 'text', 'aria-label': 'New user', placeholder: 'user name', autocomplete: 'off', required: true });
    const display = h('input', { type: 'text', 'aria-label': 'Display name', placeholder: 'Display name (optional)', autocomplete: 'off' });
    const slot = errorSlot();
    const form = h('form', { class: 'inline-form wrap' }, user, display, h('button', { type: 'submit', class: 'primary', text: 'Add user' }));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const name = user.value.trim();
      if (!name) return;
      act(slot, e.submitter, async () => {
        const body = { user: name };
        if (display.value.trim()) body.display_name = display.value.trim();
        const issued = await api('/api/admin/users', { method: 'POST', body });
        form.reset();
        showCode(region, issued, issued.user ?? name);
        refreshUsers();
      });
    });
    parts.push(h('h3', { class: 'subtitle', text: 'Add a user' }), form, slot);
  }
  parts.push(region);

  if (can('admin')) {
    const file = h('input', { type: 'file', accept: '.csv,text/csv', 'aria-label': 'Import CSV' });
    const slot = errorSlot();
    const report = h('section', { class: 'report', 'aria-label': 'Import report', hidden: true });
    file.addEventListener('change', () => {
      const chosen = file.files[0];
      file.value = '';
      if (!chosen) return;
      act(slot, null, async () => {
        const res = await request('/api/admin/users/import', { method: 'POST', raw: chosen });
        const answer = await res.json();
        report.replaceChildren(...importReport(answer));
        report.hidden = false;
        refreshUsers();
      });
    });
    parts.push(
      h('h3', { class: 'subtitle', text: 'Import users' }),
      h('p', { class: 'hint', text: 'A CSV file of user,display_name,groups,roles: every row is imported, or none.' }),
      field('Import CSV', file),
      slot,
      report,
    );
  }

  const tableSlot = h('div');
  const rowSlot = errorSlot();
  parts.push(h('h3', { class: 'subtitle', text: 'Users' }), rowSlot, tableSlot);

  function render(items) {
    const columns = [
      { label: 'User', cell: (u) => u.user },
      { label: 'Name', cell: (u) => u.display_name ?? '—' },
      { label: 'Roles', cell: (u) => (u.roles?.length ? u.roles.join(', ') : '—') },
      { label: 'Devices', cell: (u) => String(u.devices_active ?? '—') },
      { label: 'Created', cell: (u) => scalarText('created_at', u.created_at ?? u.created_at_unix_s) },
    ];
    if (can('users')) {
      columns.push({
        label: 'Actions',
        cell: (u) =>
          h('button', {
            type: 'button',
            class: 'small',
            'aria-label': `New device code for ${u.user}`,
            text: 'New device code',
            onclick: (e) =>
              act(rowSlot, e.currentTarget, async () => {
                const issued = await api(`/api/admin/users/${enc(u.user)}/devices`, { method: 'POST' });
                showCode(region, issued, `a new device of ${u.user}`);
              }),
          }),
      });
    }
    const [wrapper, rows] = rowsTable('Users', columns, items);
    const filter = filterBox('Filter', rows, (u) => `${u.user} ${u.display_name ?? ''} ${(u.roles ?? []).join(' ')}`);
    tableSlot.replaceChildren(filter, wrapper);
  }

  async function refreshUsers() {
    try {
      render(await api('/api/admin/users'));
    } catch (e) {
      showError(rowSlot, e);
    }
  }

  render(list);
  return parts;
}

function importReport(answer) {
  const issued = answer?.users ?? answer?.codes;
  if (!Array.isArray(issued)) return [renderValue(answer)];
  return [
    h('p', { text: `Imported ${answer.imported ?? issued.length} user(s). Give each their activation code:` }),
    table('Imported users', [
      { label: 'User', cell: (u) => u.user },
      { label: 'Activation code', cell: (u) => h('code', { text: u.activation_code ?? u.code ?? '' }) },
      { label: 'Expires', cell: (u) => longTime(u.expires_at ?? u.expires_at_unix_s) },
    ], issued),
  ];
}

// ---- Devices ----

const DEVICE_ACTIONS = [
  { verb: 'lock', label: 'Lock', permission: 'command', explain: 'It locks at once if online, or when it next connects.' },
  { verb: 'unlock', label: 'Unlock', permission: 'command', explain: 'It unlocks when it next connects.' },
  { verb: 'wipe', label: 'Wipe', permission: 'command', explain: 'It erases its messages, mail and keys when it next connects. This cannot be undone.' },
  { verb: 'revoke', label: 'Revoke', permission: 'admin', explain: 'Its sessions close at once and it can never connect again. This cannot be undone.' },
];

function commandsText(d) {
  const commands = d.commands ?? [];
  if (!commands.length) return '—';
  return commands
    .map((c) => (c.state === 'acknowledged' ? `${c.command}: acknowledged ${longTime(c.acknowledged_at)}` : `${c.command}: pending`))
    .join('; ');
}

function deviceState(d) {
  if (d.revoked_at) return 'revoked';
  return d.approved === false ? 'awaiting approval' : 'active';
}

async function devices() {
  const slot = errorSlot();
  const status = statusSlot();
  const tableSlot = h('div');
  let filterText = '';

  function render(items) {
    const columns = [
      { label: 'User', cell: (d) => d.user },
      { label: 'Name', cell: (d) => d.name },
      { label: 'Device', cell: (d) => h('code', { title: d.device_id, text: String(d.device_id).slice(0, 8) }) },
      { label: 'Policy acknowledged', cell: (d) => String(d.policy_version_acked ?? '—') },
      { label: 'Last seen', cell: (d) => longTime(d.last_seen_at ?? d.last_seen_at_unix_s) },
      { label: 'State', cell: (d) => deviceState(d) },
      { label: 'Commands', cell: (d) => commandsText(d) },
    ];
    const actions = DEVICE_ACTIONS.filter((a) => can(a.permission));
    if (actions.length) {
      columns.push({
        label: 'Actions',
        cell: (d) => {
          if (d.revoked_at) return '—';
          const rowSlot = errorSlot();
          return h(
            'div',
            { class: 'actions' },
            actions.map((a) =>
              h('button', {
                type: 'button',
                class: a.verb === 'wipe' || a.verb === 'revoke' ? 'small danger' : 'small',
                'aria-label': `${a.label} ${d.name}`,
                text: a.label,
                onclick: (e) => deviceAction(a, d, e.currentTarget, rowSlot),
              }),
            ),
            rowSlot,
          );
        },
      });
    }
    const [wrapper, rows] = rowsTable('Devices', columns, items);
    const filter = filterBox('Filter', rows, (d) => `${d.user} ${d.name} ${d.device_id}`);
    filter.value = filterText;
    filter.addEventListener('input', () => {
      filterText = filter.value;
    });
    tableSlot.replaceChildren(filter, wrapper);
    if (filterText) filter.dispatchEvent(new Event('input'));
  }

  async function deviceAction(a, d, button, rowSlot) {
    const ok = await confirmAction(`${a.label} ${d.name} (${d.user})? ${a.explain}`, button);
    if (!ok) return;
    await act(rowSlot, button, async () => {
      await api(`/api/admin/devices/${enc(d.device_id)}/${a.verb}`, { method: 'POST' });
      status.textContent = a.verb === 'revoke'
        ? `${d.name} is revoked.`
        : `${a.label} sent to ${d.name}: pending until the device acknowledges it.`;
      await refreshDevices();
    });
  }

  async function refreshDevices() {
    try {
      render(await api('/api/admin/devices'));
      clearError(slot);
    } catch (e) {
      showError(slot, e);
    }
  }

  render(await api('/api/admin/devices'));
  return [status, slot, tableSlot, h('button', { type: 'button', text: 'Refresh', onclick: refreshDevices })];
}

// ---- Groups ----

function groupName(g) {
  return g.group ?? g.name;
}

async function groups() {
  const items = await api('/api/admin/groups');
  const slot = errorSlot();
  const name = h('input', { type: 'text', 'aria-label': 'New group', placeholder: 'group name', autocomplete: 'off', required: true });
  const form = h('form', { class: 'inline-form' }, name, h('button', { type: 'submit', class: 'primary', text: 'Create group' }));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const group = name.value.trim();
    if (group) act(slot, e.submitter, async () => {
      await api('/api/admin/groups', { method: 'POST', body: { group } });
      reload();
    });
  });

  const setMember = (group, user, add, button, errors) =>
    act(errors, button, async () => {
      await api(`/api/admin/groups/${enc(group)}/members`, { method: 'POST', body: { user, add } });
      reload();
    });

  const list = h(
    'ul',
    { class: 'cards', 'aria-label': 'Groups' },
    items.map((g) => {
      const group = groupName(g);
      const errors = errorSlot();
      const input = h('input', { type: 'text', 'aria-label': `Add member to ${group}`, placeholder: 'user name', autocomplete: 'off', required: true });
      const add = h('form', { class: 'inline-form' }, input, h('button', { type: 'submit', 'aria-label': `Add to ${group}`, text: 'Add' }));
      add.addEventListener('submit', (e) => {
        e.preventDefault();
        const user = input.value.trim();
        if (user) setMember(group, user, true, e.submitter, errors);
      });
      const members = g.members ?? [];
      return h(
        'li',
        { class: 'card' },
        h('div', { class: 'card-head' }, h('h3', { class: 'card-title', text: group }), h('span', { class: 'muted', text: `${members.length} member(s)` })),
        h(
          'ul',
          { class: 'chips', 'aria-label': `Members of ${group}` },
          members.map((user) =>
            h(
              'li',
              null,
              h('span', { text: user }),
              ' ',
              h('button', {
                type: 'button',
                class: 'small',
                'aria-label': `Remove ${user} from ${group}`,
                text: '×',
                onclick: (e) => setMember(group, user, false, e.currentTarget, errors),
              }),
            ),
          ),
        ),
        add,
        errors,
      );
    }),
  );
  return [h('h3', { class: 'subtitle', text: 'Create a group' }), form, slot, list];
}

// ---- Policies ----

/** "default"/"org", "group X"/"group:X", "user X"/"user:X" → the API's scope names. */
function normaliseScope(scope) {
  const text = String(scope ?? '').trim();
  if (text === 'default' || text === 'org' || text === '') return 'org';
  const m = /^(group|user)[: ](.+)$/.exec(text);
  return m ? `${m[1]}:${m[2]}` : text;
}

function tomlValue(v) {
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(tomlValue).join(', ')}]`;
  return String(v);
}

function tomlOf(document) {
  if (typeof document === 'string') return document;
  if (typeof document?.settings_toml === 'string') return document.settings_toml;
  const settings = document?.settings ?? document ?? {};
  return Object.entries(settings).map(([k, v]) => `${k} = ${tomlValue(v)}\n`).join('');
}

function documentsOf(report) {
  const documents = new Map();
  const raw = report?.documents ?? [];
  if (Array.isArray(raw)) for (const d of raw) documents.set(normaliseScope(d.scope), tomlOf(d));
  else for (const [scope, d] of Object.entries(raw)) documents.set(normaliseScope(scope), tomlOf(d));
  return documents;
}

async function policies() {
  const [report, userList, groupList] = await Promise.all([
    api('/api/admin/policies'),
    api('/api/admin/users').catch(() => []),
    api('/api/admin/groups').catch(() => []),
  ]);
  const documents = documentsOf(report);
  const scopes = [
    ['org', 'Organisation (default)'],
    ...groupList.map((g) => [`group:${groupName(g)}`, `Group ${groupName(g)}`]),
    ...userList.map((u) => [`user:${u.user}`, `User ${u.user}`]),
  ];
  for (const scope of documents.keys()) if (!scopes.some(([s]) => s === scope)) scopes.push([scope, scope]);

  const scope = h('select', { 'aria-label': 'Scope' }, scopes.map(([value, label]) => h('option', { value, text: documents.has(value) ? `${label} ✎` : label })));
  const text = h('textarea', { 'aria-label': 'Policy settings', rows: '12', spellcheck: 'false', class: 'mono' });
  const slot = errorSlot();
  const status = statusSlot();
  status.textContent = `Policy version ${report?.version ?? '—'}.`;
  const fill = () => {
    text.value = documents.get(scope.value) ?? '';
    clearError(slot);
  };
  scope.addEventListener('change', fill);
  fill();
  const save = h('button', { type: 'button', class: 'primary', text: 'Save policy' });
  save.addEventListener('click', () =>
    act(slot, save, async () => {
      const answer = await api('/api/admin/policies', { method: 'POST', body: { scope: scope.value, settings_toml: text.value } });
      if (text.value.trim()) documents.set(scope.value, text.value);
      else documents.delete(scope.value);
      status.textContent = `Saved. The policy version is now ${answer?.version ?? '—'}; devices apply it before their next request.`;
    }),
  );

  const who = h('select', { 'aria-label': 'Effective policy for' }, userList.map((u) => h('option', { value: u.user, text: u.user })));
  const effectiveSlot = h('div');
  const effectiveError = errorSlot();
  const show = h('button', { type: 'button', text: 'Show effective policy' });
  show.addEventListener('click', () =>
    act(effectiveError, show, async () => {
      const answer = await api(`/api/admin/policies?user=${enc(who.value)}`);
      const settings = answer?.effective?.settings ?? [];
      effectiveSlot.replaceChildren(
        table(`Effective policy for ${who.value}`, [
          { label: 'Setting', cell: (s) => s.setting },
          { label: 'Value', cell: (s) => scalarText('', s.value) },
          { label: 'Source', cell: (s) => s.source },
        ], settings),
      );
    }),
  );

  return [
    status,
    field('Scope', scope),
    h('label', { class: 'field block' }, 'Policy settings', text),
    slot,
    h('p', { class: 'hint', text: 'TOML, as for `redoubt admin policy set`; an empty text removes this scope’s document.' }),
    save,
    h('h3', { class: 'subtitle', text: 'Effective policy' }),
    h('div', { class: 'inline-form' }, who, show),
    effectiveError,
    effectiveSlot,
  ];
}

// ---- Roles ----

async function roles() {
  const userList = await api('/api/admin/users');
  const datalist = h('datalist', { id: 'role-users' }, userList.map((u) => h('option', { value: u.user })));
  const user = h('input', { type: 'text', list: 'role-users', 'aria-label': 'User', placeholder: 'user name', autocomplete: 'off' });
  const role = h('select', { 'aria-label': 'Role' }, ROLES.map((r) => h('option', { value: r, text: r })));
  const slot = errorSlot();
  const status = statusSlot();
  const change = (grant) => (e) => {
    const name = user.value.trim();
    if (!name) return showError(slot, 'Give a user name.');
    return act(slot, e.currentTarget, async () => {
      await api('/api/admin/roles', { method: 'POST', body: { user: name, role: role.value, grant } });
      status.textContent = grant ? `${name} now has the ${role.value} role.` : `${name} no longer has the ${role.value} role.`;
      await refresh();
    });
  };
  const tableSlot = h('div');
  const render = (items) =>
    tableSlot.replaceChildren(
      table('Users and roles', [
        { label: 'User', cell: (u) => u.user },
        { label: 'Name', cell: (u) => u.display_name ?? '—' },
        { label: 'Roles', cell: (u) => (u.roles?.length ? u.roles.join(', ') : '—') },
      ], items),
    );
  const refresh = async () => render(await api('/api/admin/users'));
  render(userList);
  return [
    h(
      'div',
      { class: 'inline-form wrap' },
      datalist,
      user,
      role,
      h('button', { type: 'button', text: 'Grant', onclick: change(true) }),
      h('button', { type: 'button', class: 'danger', text: 'Revoke', onclick: change(false) }),
    ),
    slot,
    status,
    tableSlot,
  ];
}

// ---- Audit ----

async function audit() {
  const since = h('input', { type: 'datetime-local', name: 'since' });
  const action = h('input', { type: 'text', name: 'action', autocomplete: 'off', placeholder: 'e.g. device.' });
  const limit = h('input', { type: 'number', name: 'limit', min: '1', max: '1000', value: '200' });
  const slot = errorSlot();
  const tableSlot = h('div');
  const form = h(
    'form',
    { class: 'inline-form wrap' },
    field('Since', since),
    field('Action prefix', action),
    field('Limit', limit),
    h('button', { type: 'submit', text: 'Show entries' }),
  );

  async function load() {
    const query = new URLSearchParams();
    // datetime-local has no zone: it is local time, as Date reads it.
    const sinceS = since.value ? Math.floor(new Date(since.value).getTime() / 1000) : null;
    if (sinceS != null) query.set('since', String(sinceS));
    if (action.value.trim()) query.set('action', action.value.trim());
    if (limit.value) query.set('limit', limit.value);
    const entries = await api(`/api/admin/audit?${query}`);
    tableSlot.replaceChildren(
      entries.length
        ? table('Audit entries', [
          { label: 'Seq', cell: (e) => String(e.seq) },
          { label: 'Time', cell: (e) => longTime(e.at ?? e.at_unix_s) },
          { label: 'Actor', cell: (e) => e.actor ?? e.actor_user ?? 'server' },
          { label: 'Action', cell: (e) => e.action },
          { label: 'Subject', cell: (e) => e.subject ?? '' },
          { label: 'Details', cell: (e) => (typeof e.details === 'string' ? e.details : scalarText('', e.details)) },
        ], entries)
        : h('p', { class: 'muted', text: 'No entries match.' }),
    );
  }
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    act(slot, e.submitter, load);
  });

  const verifySlot = errorSlot();
  const verifyStatus = statusSlot();
  const verify = h('button', { type: 'button', text: 'Verify' });
  verify.addEventListener('click', () =>
    act(verifySlot, verify, async () => {
      verifyStatus.textContent = '';
      const r = await api('/api/admin/audit/verify', { method: 'POST' });
      const text = r.message ?? `${r.entries ?? '?'} entries${r.head ? `; head ${r.head}` : ''}`;
      if (r.ok) verifyStatus.textContent = text;
      else showError(verifySlot, r.message ?? `The audit log does NOT verify (${text}).`);
    }),
  );

  await load();
  return [form, slot, h('div', { class: 'inline-form' }, verify), verifyStatus, verifySlot, tableSlot];
}

// ---- Mail settings, directory, cluster ----

async function mailSettings() {
  const view = await api('/api/admin/mail');
  const { users: mailboxes = [], ...settings } = view ?? {};
  return [
    h('h3', { class: 'subtitle', text: 'Servers' }),
    renderValue(settings),
    h('h3', { class: 'subtitle', text: 'Mailboxes' }),
    mailboxes.length
      ? table('Mailboxes', [
        { label: 'User', cell: (u) => u.user },
        { label: 'Address', cell: (u) => `${u.address}${u.mapped ? ' (mapped)' : ''}` },
        { label: 'Own login', cell: (u) => (u.own_login ? 'yes' : 'no') },
        {
          label: 'Status',
          cell: (u) => (u.status
            ? h('span', { class: u.status.ok ? 'ok' : 'bad', text: `${u.status.ok ? 'ok' : 'error'}: ${u.status.detail} (${longTime(u.status.at_unix_s)})` })
            : 'not tried yet'),
        },
      ], mailboxes)
      : h('p', { class: 'muted', text: 'No mailboxes yet.' }),
  ];
}

function syncSummary(r) {
  if (r.refused) return `Not applied: ${r.refused}`;
  const counts = ['create', 'update', 'disable', 'enable', 'memberships', 'skipped']
    .filter((k) => Array.isArray(r[k]) && r[k].length)
    .map((k) => `${r[k].length} ${k}`);
  const what = counts.length ? counts.join(', ') : 'nothing to change';
  return `${r.dry_run ? 'Dry run (nothing changed)' : 'Applied'}: ${what}. Read ${r.users_seen ?? '?'} users and ${r.groups_seen ?? '?'} groups in ${r.duration_ms ?? '?'} ms.`;
}

async function directory() {
  const status = await api('/api/admin/directory');
  const slot = errorSlot();
  const report = h('section', { class: 'report', 'aria-label': 'Sync report', hidden: true });
  const statusSlotEl = h('div', null, renderValue(status));
  const run = (dryRun) => (e) =>
    act(slot, e.currentTarget, async () => {
      const r = await api('/api/admin/directory/sync', { method: 'POST', body: { dry_run: dryRun } });
      report.replaceChildren(h('h3', { class: 'subtitle', text: dryRun ? 'Dry run' : 'Sync' }), h('p', { text: syncSummary(r) }), renderValue(r));
      report.hidden = false;
      if (!dryRun) statusSlotEl.replaceChildren(renderValue(await api('/api/admin/directory')));
    });
  return [
    h(
      'div',
      { class: 'inline-form' },
      h('button', { type: 'button', class: 'primary', text: 'Sync now', onclick: run(false) }),
      h('button', { type: 'button', text: 'Dry run', onclick: run(true) }),
    ),
    slot,
    report,
    h('h3', { class: 'subtitle', text: 'Status' }),
    statusSlotEl,
  ];
}

async function cluster() {
  const nodes = await api('/api/admin/cluster');
  if (!nodes.length) return [h('p', { class: 'muted', text: 'One node: this server runs without a cluster.' })];
  return [
    table('Cluster nodes', [
      { label: 'Node', cell: (n) => n.id },
      { label: 'Address', cell: (n) => n.public_address },
      { label: 'State', cell: (n) => n.state },
      { label: 'Sessions', cell: (n) => String(n.sessions) },
      { label: 'Started', cell: (n) => longTime(n.started_at ?? n.started_at_unix_s) },
      { label: 'Last heartbeat', cell: (n) => longTime(n.heartbeat_at ?? n.heartbeat_at_unix_s) },
    ], nodes),
    h('button', { type: 'button', text: 'Refresh', onclick: reload }),
  ];
}

// ---- The view ----

export function init(context) {
  ctx = context;
}

export async function show() {
  if (!current || !allowedSections().some((s) => s.key === current)) current = allowedSections()[0]?.key ?? null;
  if (current) await showSection(current);
  else renderNav();
}

export function hide() {}

export function clear() {
  gen += 1;
  current = null;
  $('console-section').replaceChildren();
  document.querySelector('#view-console .console-nav').replaceChildren();
}

export function onSync() {}
