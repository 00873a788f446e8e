// Contacts: the list from the organisation's CardDAV server (through the connector), add
// and delete. Changes are connector commands (202 {command}, then an `outcome` event).

import { api, enc, h, showError, clearError, splitList, waitOutcome } from './util.js';

const $ = (id) => document.getElementById(id);

let ctx;
const state = { loaded: false, gen: 0 };

function list(value) {
  if (value == null) return [];
  return Array.isArray(value) ? value : [value];
}

function contactItem(c) {
  const name = c.name || '(no name)';
  const slot = h('p', { class: 'error', role: 'alert', hidden: true });
  return h(
    'li',
    { class: 'card', dataset: { id: c.id } },
    h(
      'div',
      { class: 'card-head' },
      h('h2', { class: 'card-title', text: name }),
      h('button', {
        type: 'button',
        class: 'small danger',
        'aria-label': `Delete ${name}`,
        text: 'Delete',
        onclick: (e) => deleteContact(c, e.currentTarget, slot),
      }),
    ),
    list(c.emails).length
      ? h('p', { class: 'card-line' }, h('span', { class: 'muted', text: 'Email ' }), list(c.emails).map((mail, i) => [i ? ', ' : '', h('a', { href: `mailto:${mail}`, text: mail })]))
      : null,
    list(c.phones).length
      ? h('p', { class: 'card-line' }, h('span', { class: 'muted', text: 'Phone ' }), list(c.phones).map((phone, i) => [i ? ', ' : '', h('a', { href: `tel:${phone.replace(/[^\d+]/g, '')}`, text: phone })]))
      : null,
    slot,
  );
}

async function refresh() {
  const gen = ++state.gen;
  try {
    const contacts = await api('/api/contacts');
    if (gen !== state.gen) return;
    clearError($('contacts-error'));
    contacts.sort((a, b) => String(a.name).localeCompare(String(b.name)));
    $('contacts').replaceChildren(...contacts.map(contactItem));
    $('contacts-empty').hidden = contacts.length > 0;
  } catch (e) {
    if (gen === state.gen) showError($('contacts-error'), e);
  }
}

async function deleteContact(c, button, slot) {
  clearError(slot);
  button.disabled = true;
  try {
    const answer = await api(`/api/contacts/${enc(c.id)}`, { method: 'DELETE' });
    $('contacts-status').textContent = `Deleting ${c.name}…`;
    const { error, timedOut } = await waitOutcome(answer?.command);
    if (error || timedOut) {
      $('contacts-status').textContent = '';
      showError(slot, error ?? 'The contacts server has not answered yet; the contact may still be deleted.');
    } else {
      $('contacts-status').textContent = `Deleted ${c.name}.`;
    }
    refresh();
  } catch (e) {
    showError(slot, e);
  } finally {
    button.disabled = false;
  }
}

async function addContact(event) {
  event.preventDefault();
  const f = event.currentTarget.elements;
  const slot = $('contact-form-error');
  clearError(slot);
  const body = { name: f.name.value.trim(), emails: splitList(f.emails.value), phones: splitList(f.phones.value) };
  if (!body.name) return showError(slot, 'Give the contact a name.');
  const button = event.submitter;
  if (button) button.disabled = true;
  try {
    const answer = await api('/api/contacts', { method: 'POST', body });
    event.target.reset();
    $('contacts-status').textContent = `Adding ${body.name}…`;
    const { error, timedOut } = await waitOutcome(answer?.command);
    if (error || timedOut) {
      $('contacts-status').textContent = '';
      showError(slot, error ?? 'The contacts server has not answered yet; the contact may still appear.');
    } else {
      $('contacts-status').textContent = `Added ${body.name}.`;
      refresh();
    }
  } catch (e) {
    showError(slot, e);
  } finally {
    if (button) button.disabled = false;
  }
}

export function init(context) {
  ctx = context;
  $('contact-form').addEventListener('submit', addContact);
}

export async function show() {
  state.loaded = true;
  await refresh();
}

export function hide() {}

export function clear() {
  state.loaded = false;
  state.gen += 1;
  $('contacts').replaceChildren();
  $('contacts-status').textContent = '';
}

export function onSync(event) {
  // Contacts come from the same DAV server as the calendar.
  if (event.calendar && state.loaded && ctx.isVisible('contacts')) refresh();
}
