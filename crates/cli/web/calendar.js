// Calendar: one week in seven day columns, events placed by day and time (side by side
// when they overlap), previous/next week, add and delete. Changes are connector commands
// (202 {command}, then an `outcome` event).

import { api, enc, h, showError, clearError, clock, splitList, waitOutcome } from './util.js';

const $ = (id) => document.getElementById(id);
const DAY_S = 86_400;

const dayName = new Intl.DateTimeFormat(undefined, { weekday: 'short', day: 'numeric', month: 'short' });
const dayLong = new Intl.DateTimeFormat(undefined, { weekday: 'long', day: 'numeric', month: 'long' });
const weekTitle = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'long', year: 'numeric' });

let ctx;
const state = { weekStart: startOfWeek(new Date()), events: [], gen: 0, scrolled: false, loaded: false };

/** Monday 00:00 local time of the week holding `date`. */
function startOfWeek(date) {
  const d = new Date(date);
  d.setHours(0, 0, 0, 0);
  d.setDate(d.getDate() - ((d.getDay() + 6) % 7));
  return d;
}

function addDays(date, n) {
  const d = new Date(date);
  d.setDate(d.getDate() + n);
  return d;
}

function isoDate(d) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

function summaryOf(e) {
  return e.summary ?? e.title ?? '(no title)';
}

/** Gives overlapping segments of one day lanes: [{segment, lane, lanes}]. */
function layOut(segments) {
  segments.sort((a, b) => a.start - b.start || b.end - a.end);
  const placed = [];
  let cluster = [];
  let clusterEnd = -Infinity;
  let laneEnds = [];
  const closeCluster = () => {
    for (const p of cluster) p.lanes = laneEnds.length;
    cluster = [];
    laneEnds = [];
  };
  for (const segment of segments) {
    if (segment.start >= clusterEnd) closeCluster();
    let lane = laneEnds.findIndex((end) => end <= segment.start);
    if (lane === -1) {
      lane = laneEnds.length;
      laneEnds.push(segment.end);
    } else {
      laneEnds[lane] = segment.end;
    }
    const p = { segment, lane, lanes: 1 };
    cluster.push(p);
    placed.push(p);
    clusterEnd = Math.max(clusterEnd, segment.end);
  }
  closeCluster();
  return placed;
}

function eventItem(e, p, dayStartS) {
  const { start, end } = p.segment;
  const top = ((start - dayStartS) / DAY_S) * 100;
  const height = Math.max(((end - start) / DAY_S) * 100, 0);
  const summary = summaryOf(e);
  const li = h(
    'li',
    { class: 'event', dataset: { id: e.id } },
    h('span', { class: 'event-time', text: `${clock(e.start_unix_s)}–${clock(e.end_unix_s)}` }),
    ' ',
    h('span', { class: 'event-title', text: summary }),
    e.location ? h('span', { class: 'event-where', text: ` · ${e.location}` }) : null,
    h('button', {
      type: 'button',
      class: 'event-delete',
      'aria-label': `Delete ${summary}`,
      title: `Delete ${summary}`,
      text: '×',
      onclick: (ev) => deleteEvent(e, li, ev.currentTarget),
    }),
  );
  // Placement is data, not style: set from script, which the CSP allows.
  li.style.top = `${top}%`;
  li.style.height = `${height}%`;
  li.style.left = `${(p.lane / p.lanes) * 100}%`;
  li.style.width = `${100 / p.lanes}%`;
  return li;
}

function render() {
  const start = state.weekStart;
  const end = addDays(start, 6);
  $('week-title').textContent = `Week of ${weekTitle.format(start)}`;
  const todayKey = new Date().toDateString();
  const hours = h(
    'div',
    { class: 'hours', 'aria-hidden': 'true' },
    Array.from({ length: 24 }, (_, i) => h('span', { text: `${String(i).padStart(2, '0')}:00` })),
  );
  const days = [];
  for (let i = 0; i < 7; i += 1) {
    const day = addDays(start, i);
    const dayStartS = day.getTime() / 1000;
    const dayEndS = addDays(day, 1).getTime() / 1000;
    const segments = [];
    for (const e of state.events) {
      const s = Math.max(e.start_unix_s, dayStartS);
      const t = Math.min(Math.max(e.end_unix_s, e.start_unix_s + 900), dayEndS);
      if (s < dayEndS && t > dayStartS) segments.push({ start: s, end: t, event: e });
    }
    const placed = layOut(segments);
    const headId = `day-${i}`;
    days.push(
      h(
        'section',
        { class: day.toDateString() === todayKey ? 'day today' : 'day', 'aria-labelledby': headId },
        h('h2', { class: 'day-head', id: headId, title: dayLong.format(day), text: dayName.format(day) }),
        h(
          'ol',
          { class: 'day-body', 'aria-label': `Events on ${dayLong.format(day)}` },
          placed.map((p) => eventItem(p.segment.event, p, dayStartS)),
        ),
      ),
    );
  }
  const week = $('week');
  week.setAttribute('aria-label', `${weekTitle.format(start)} – ${weekTitle.format(end)}`);
  week.setAttribute('role', 'group');
  week.replaceChildren(hours, ...days);
  if (!state.scrolled) {
    // Open on the working day rather than at midnight.
    state.scrolled = true;
    week.scrollTop = (week.scrollHeight / 24) * 7;
  }
}

async function refresh() {
  const gen = ++state.gen;
  const from = Math.floor(state.weekStart.getTime() / 1000);
  const to = Math.floor(addDays(state.weekStart, 7).getTime() / 1000);
  try {
    const events = await api(`/api/calendar?from=${from}&to=${to}`);
    if (gen !== state.gen) return;
    clearError($('calendar-error'));
    state.events = events;
    render();
  } catch (e) {
    if (gen === state.gen) showError($('calendar-error'), e);
  }
}

function moveWeek(weeks) {
  state.weekStart = weeks === 0 ? startOfWeek(new Date()) : addDays(state.weekStart, 7 * weeks);
  state.events = [];
  render();
  refresh();
}

async function deleteEvent(e, li, button) {
  const slot = $('calendar-error');
  clearError(slot);
  button.disabled = true;
  li.classList.add('pending');
  try {
    const answer = await api(`/api/calendar/${enc(e.id)}`, { method: 'DELETE' });
    $('calendar-status').textContent = `Deleting “${summaryOf(e)}”…`;
    const { error, timedOut } = await waitOutcome(answer?.command);
    if (error || timedOut) {
      showError(slot, error ?? 'The calendar server has not answered yet; the event may still be deleted.');
      $('calendar-status').textContent = '';
    } else {
      $('calendar-status').textContent = `Deleted “${summaryOf(e)}”.`;
    }
  } catch (err) {
    showError(slot, err);
  }
  li.classList.remove('pending');
  button.disabled = false;
  refresh();
}

async function addEvent(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const f = form.elements;
  const slot = $('event-form-error');
  clearError(slot);
  // "YYYY-MM-DDTHH:MM" without a zone is local time.
  const start = new Date(`${f.date.value}T${f.start.value}`);
  const end = new Date(`${f.date.value}T${f.end.value}`);
  if (Number.isNaN(start.getTime()) || Number.isNaN(end.getTime())) return showError(slot, 'Give a date, a start and an end.');
  if (end <= start) return showError(slot, 'The end must be after the start.');
  const body = {
    summary: f.summary.value.trim(),
    start_unix_s: Math.floor(start.getTime() / 1000),
    end_unix_s: Math.floor(end.getTime() / 1000),
    location: f.location.value.trim(),
    attendees: splitList(f.attendees.value),
  };
  if (!body.summary) return showError(slot, 'Give the event a summary.');
  const button = event.submitter;
  if (button) button.disabled = true;
  try {
    const answer = await api('/api/calendar', { method: 'POST', body });
    const status = $('calendar-status');
    status.textContent = `Adding “${body.summary}”…`;
    f.summary.value = '';
    f.location.value = '';
    f.attendees.value = '';
    const week = startOfWeek(start);
    if (week.getTime() !== state.weekStart.getTime()) moveWeek(Math.round((week - state.weekStart) / (7 * DAY_S * 1000)));
    const { error, timedOut } = await waitOutcome(answer?.command);
    if (error || timedOut) {
      status.textContent = '';
      showError(slot, error ?? 'The calendar server has not answered yet; the event may still appear.');
    } else {
      status.textContent = `Added “${body.summary}”.`;
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
  $('week-prev').addEventListener('click', () => moveWeek(-1));
  $('week-next').addEventListener('click', () => moveWeek(1));
  $('week-today').addEventListener('click', () => moveWeek(0));
  $('event-form').addEventListener('submit', addEvent);
}

export async function show() {
  const date = $('event-form').elements.date;
  if (!date.value) date.value = isoDate(new Date());
  state.loaded = true;
  if (!$('week').childElementCount) render();
  await refresh();
}

export function hide() {}

export function clear() {
  state.events = [];
  state.loaded = false;
  state.gen += 1;
  $('week').replaceChildren();
  $('calendar-status').textContent = '';
}

export function onSync(event) {
  if (event.calendar && state.loaded && ctx.isVisible('calendar')) refresh();
}
