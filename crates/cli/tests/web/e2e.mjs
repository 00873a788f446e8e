// The browser half of crates/cli/tests/web.rs: drives Debian's Chromium through
// playwright-core (installed by .ci/install-browser) against the `redoubt web` processes the
// Rust test started, by the accessible names docs/web.md lists. One browser, one context per
// user. The Rust test checks the server-side and CLI-side facts afterwards, from the results
// file this script writes.
//
// Input: REDOUBT_E2E, a JSON object (built in web.rs: URLs, profiles, texts, paths); REDOUBT_PLAYWRIGHT_DIR
// (default /opt/redoubt-playwright) and REDOUBT_CHROMIUM (default /usr/bin/chromium).
// Exit status 0 when every step passed; otherwise 1, after printing the failed step, what was
// expected and what was found, and writing failure-WHO.png screenshots.

import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { basename, join } from 'node:path';

const started = Date.now();
const cfg = JSON.parse(process.env.REDOUBT_E2E ?? 'null');
if (!cfg) {
  console.error('web e2e: REDOUBT_E2E is not set; run this through `cargo test -p redoubt-cli --test web`');
  process.exit(1);
}
const playwrightDir = process.env.REDOUBT_PLAYWRIGHT_DIR || '/opt/redoubt-playwright';
const chromiumPath = process.env.REDOUBT_CHROMIUM || '/usr/bin/chromium';
const { chromium } = createRequire(join(playwrightDir, 'package.json'))('playwright-core');

/** Longest one UI expectation may take (live updates travel through the server). */
const LIVE_MS = 30_000;
/** Longest a mail may take through the connector (as the CLI mail tests allow). */
const MAIL_MS = 60_000;
/** The whole script, below the Rust test's own deadline for it. */
const SCRIPT_MS = 280_000;

const log = (...parts) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s]`, ...parts);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const escape = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

class Failure extends Error {}
function check(condition, message) {
  if (!condition) throw new Failure(message);
}

/** Polls `probe` until it returns something truthy; fails naming `what` and the last error. */
async function until(what, probe, timeoutMs = LIVE_MS) {
  const end = Date.now() + timeoutMs;
  let last = null;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > end) {
      throw new Failure(`timed out after ${timeoutMs / 1000} s waiting for ${what}${last ? ` (last error: ${last.message.split('\n')[0]})` : ''}`);
    }
    await sleep(200);
  }
}

/** Runs the redoubt binary; resolves to stdout, rejects with its stderr. */
function redoubt(profile, args) {
  return new Promise((resolve, reject) => {
    execFile(cfg.bin, ['--profile', profile, ...args], { timeout: 60_000, env: { PATH: process.env.PATH } }, (error, stdout, stderr) => {
      if (error) {
        error.stdout = stdout;
        error.stderr = stderr;
        reject(error);
      } else {
        resolve(stdout);
      }
    });
  });
}

// ---------------------------------------------------------------- what the pages do

const pages = {}; // who -> page
const problems = []; // page errors, CSP violations, requests to other origins

function watch(who, context, origin) {
  context.on('request', (request) => {
    const url = request.url();
    if (!url.startsWith(`${origin}/`) && !url.startsWith('data:') && !url.startsWith('blob:')) {
      problems.push(`${who}: request to another origin: ${request.method()} ${url}`);
    }
  });
  context.on('page', (page) => {
    page.on('pageerror', (error) => problems.push(`${who}: uncaught exception in the page: ${error.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error' && /Content Security Policy/i.test(message.text())) {
        problems.push(`${who}: CSP violation: ${message.text()}`);
      }
    });
  });
}

async function newPage(browser, who, origin) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, acceptDownloads: true });
  watch(who, context, origin);
  const page = await context.newPage();
  page.setDefaultTimeout(LIVE_MS);
  pages[who] = page;
  return page;
}

/** Opens the login URL `redoubt web` printed: the cookie is set and the page lands on `/`. */
async function login(browser, who, loginUrl) {
  const origin = new URL(loginUrl).origin;
  const page = await newPage(browser, who, origin);
  const response = await page.goto(loginUrl);
  check(response !== null, `${who}: no response to the login URL`);
  check(new URL(page.url()).pathname === '/', `${who}: the login URL should redirect to /, the page is at ${page.url()}`);
  check(!page.url().includes('token='), `${who}: the token is still in the address bar: ${page.url()}`);
  const cookies = await page.context().cookies(origin);
  check(cookies.length === 1, `${who}: expected one session cookie, got ${JSON.stringify(cookies.map((c) => c.name))}`);
  const [cookie] = cookies;
  check(cookie.httpOnly && cookie.sameSite === 'Strict' && cookie.path === '/',
    `${who}: the session cookie should be HttpOnly, SameSite=Strict, Path=/; got httpOnly=${cookie.httpOnly} sameSite=${cookie.sameSite} path=${cookie.path}`);
  await sections(page).waitFor();
  return page;
}

/** A page for a session the Rust test opened (its cookie), as a second tab would have it. */
async function withCookie(browser, who, base, cookie) {
  const page = await newPage(browser, who, base);
  const [name, ...value] = cookie.split('=');
  await page.context().addCookies([{ name, value: value.join('='), url: base, httpOnly: true, sameSite: 'Strict' }]);
  const response = await page.goto(`${base}/`);
  check(response?.status() === 200, `${who}: GET / with the session cookie should answer 200, got ${response?.status()}`);
  await sections(page).waitFor();
  return page;
}

const sections = (page) => page.getByRole('navigation', { name: 'Sections' });

async function openSection(page, name) {
  await sections(page).getByRole('button', { name, exact: true }).click();
}

/**
 * The console's own button `name` (the console's "Devices" is not the Sections' one), or
 * null when the console has none.
 */
async function consoleButton(page, name) {
  const all = page.getByRole('button', { name, exact: true });
  const nav = await sections(page).elementHandle();
  const count = await all.count();
  for (let i = 0; i < count; i += 1) {
    if (!(await all.nth(i).evaluate((element, navigation) => navigation.contains(element), nav))) return all.nth(i);
  }
  return null;
}

async function openConsole(page, first) {
  await openSection(page, 'Console');
  await until(`the console's "${first}" button`, () => consoleButton(page, first));
}

/** Clicks `target` and returns the response of the request `matches` picks, checking its status. */
async function clickFor(page, target, what, matches, status) {
  const response = page.waitForResponse((r) => matches(new URL(r.url()), r.request().method()));
  await target.click();
  const got = await response;
  const statuses = Array.isArray(status) ? status : [status];
  if (!statuses.includes(got.status())) {
    throw new Failure(`${what}: expected HTTP ${statuses.join(' or ')}, got ${got.status()}: ${await bodyOf(got)}`);
  }
  return got;
}

/** A response's body for a failure message (Chromium may have dropped it already). */
const bodyOf = (response) => response.text().then((text) => text.slice(0, 400), (error) => `<body unavailable: ${error.message.split('\n')[0]}>`);

const api = (path, method = 'GET') => (url, m) => url.pathname === path && m === method;
const apiPrefix = (prefix, method = 'GET') => (url, m) => url.pathname.startsWith(prefix) && m === method;

/** fetch() from inside the page: same origin, its cookie, and the Origin Chromium adds. */
function pageFetch(page, path, init = {}) {
  return page.evaluate(async ({ path, init }) => {
    const response = await fetch(path, init);
    return { status: response.status, text: await response.text() };
  }, { path, init });
}

async function shoot(page, name) {
  await sleep(300); // let the last render settle
  const path = join(cfg.screenshots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  results.screenshots.push(path);
  log(`screenshot ${path}`);
}

const messages = (page) => page.getByRole('list', { name: 'Messages' });
const conversationButton = (page, name, extra = '') =>
  page.getByRole('list', { name: 'Conversations' }).getByRole('button', { name: new RegExp(`^${escape(name)}\\b${extra}`) });

async function seeMessage(page, who, text) {
  await until(`${who} to see "${text}" in the list "Messages"`, async () => (await messages(page).getByText(text).count()) > 0);
}

async function sendText(page, who, text) {
  await page.getByRole('textbox', { name: 'Message', exact: true }).fill(text);
  await clickFor(page, page.getByRole('button', { name: 'Send', exact: true }), `${who} sends a message`,
    (url, m) => /^\/api\/conversations\/[0-9a-f]{64}\/messages$/.test(url.pathname) && m === 'POST', 200);
  await seeMessage(page, who, text);
}

// ---------------------------------------------------------------- the scenarios

const results = { screenshots: [] };
let current = 'start';

async function step(name, body) {
  current = name;
  log(`step: ${name}`);
  await body();
}

async function chats(browser) {
  const { alice: aliceUrl, bob: bobUrl } = cfg.login;
  const alice = await login(browser, 'alice', aliceUrl);
  const bob = await login(browser, 'bob', bobUrl);
  const group = cfg.group;

  await step('alice, with no role, has no Console', async () => {
    const count = await sections(alice).getByRole('button', { name: 'Console', exact: true }).count();
    check(count === 0, `alice has no role, yet the Sections show a "Console" button (${count})`);
  });

  await step(`alice creates the group "${group}" with bob and carol`, async () => {
    await openSection(alice, 'Chats');
    await alice.getByRole('button', { name: 'New conversation', exact: true }).click();
    const dialog = alice.getByRole('dialog');
    await dialog.getByRole('textbox', { name: 'Name', exact: true }).fill(group);
    await dialog.getByRole('textbox', { name: 'Members', exact: true }).fill('bob, carol');
    await clickFor(alice, dialog.getByRole('button', { name: 'Create', exact: true }), 'creating the group',
      api('/api/conversations', 'POST'), 200);
    await until(`"${group}" in alice's list "Conversations"`, async () => (await conversationButton(alice, group).count()) > 0);
    await conversationButton(alice, group).first().click();
    await sendText(alice, 'alice', cfg.chat.alice);
  });

  await step('bob sees the new conversation live, unread, and answers', async () => {
    await openSection(bob, 'Chats');
    await until(`"${group}" with "1 unread" in bob's list "Conversations"`,
      async () => (await conversationButton(bob, group, '.*\\b1 unread').count()) > 0);
    await conversationButton(bob, group).first().click();
    await seeMessage(bob, 'bob', cfg.chat.alice);
    await until(`bob's "${group}" to lose its "1 unread" once opened`,
      async () => (await conversationButton(bob, group, '.*\\b1 unread').count()) === 0);
    await sendText(bob, 'bob', cfg.chat.bob);
    await seeMessage(alice, 'alice (live, no reload)', cfg.chat.bob);
  });

  await step('carol, on the command line, reads and answers; both pages see it live', async () => {
    await redoubt(cfg.carol, ['read', '--json']);
    await redoubt(cfg.carol, ['send', group, cfg.chat.carol, '--json']);
    await seeMessage(alice, 'alice', cfg.chat.carol);
    await seeMessage(bob, 'bob', cfg.chat.carol);
  });

  await step('alice attaches a file; bob downloads it', async () => {
    const name = basename(cfg.upload);
    await conversationButton(alice, group).first().click();
    const sent = alice.waitForResponse((r) =>
      /^\/api\/conversations\/[0-9a-f]{64}\/files$/.test(new URL(r.url()).pathname) && r.request().method() === 'POST');
    await alice.getByLabel('Attach file', { exact: true }).setInputFiles(cfg.upload);
    const response = await sent;
    check(response.status() === 200, `uploading ${name}: expected HTTP 200, got ${response.status()}: ${await bodyOf(response)}`);
    check(new URL(response.url()).searchParams.get('name') === name, `the upload should carry ?name=${name}: ${response.url()}`);
    const link = messages(bob).getByRole('link', { name: new RegExp(escape(name)) })
      .or(messages(bob).getByRole('button', { name: new RegExp(escape(name)) }));
    await until(`"${name}" (a link or button) in bob's list "Messages"`, async () => (await link.count()) > 0);
    const [download] = await Promise.all([bob.waitForEvent('download'), link.first().click()]);
    check(download.suggestedFilename() === name, `the download should be named ${name}, got ${download.suggestedFilename()}`);
    results.download = join(cfg.work, `downloaded-${name}`);
    await download.saveAs(results.download);
    const failure = await download.failure();
    check(failure === null, `the download failed: ${failure}`);
  });

  await step('screenshot: chats', () => shoot(alice, 'chats'));
  return alice;
}

async function mail(alice) {
  await step('alice finds the mail from outside, reads it and answers', async () => {
    await openSection(alice, 'Mail');
    await alice.getByRole('list', { name: 'Folders' }).waitFor();
    const list = alice.getByRole('list', { name: 'Mail' });
    await until(`"${cfg.mail.subject}" in alice's list "Mail"`, async () => (await list.getByText(cfg.mail.subject).count()) > 0, MAIL_MS);
    const token = cfg.mail.subject.split(' ').pop();
    const search = alice.getByRole('textbox', { name: 'Search mail', exact: true });
    await search.fill(token);
    await search.press('Enter');
    await until(`the search for ${token} to list the mail`, async () => (await list.getByText(cfg.mail.subject).count()) > 0);
    await list.getByText(cfg.mail.subject).first().click();
    await until(`the mail's text (with ${cfg.mail.word}) on alice's page`,
      async () => (await alice.getByText(cfg.mail.word).count()) > 0, MAIL_MS);
    await shoot(alice, 'mail');
    await alice.getByRole('button', { name: 'Reply', exact: true }).click();
    await alice.getByRole('textbox', { name: 'Body', exact: true }).fill(cfg.mail.reply);
    await clickFor(alice, alice.getByRole('button', { name: 'Send mail', exact: true }), 'sending the reply',
      (url, m) => /^\/api\/mail\/[^/]+\/reply$/.test(url.pathname) && m === 'POST', 202);
    const alerts = alice.getByRole('alert').filter({ hasText: /\S/ });
    await sleep(1_000);
    check((await alerts.count()) === 0, `an alert after sending the reply: ${await alerts.allInnerTexts()}`);
  });
}

async function otherViews(alice) {
  for (const [section, path] of [['Calendar', '/api/calendar'], ['Contacts', '/api/contacts']]) {
    await step(`alice opens ${section}`, async () => {
      await clickFor(alice, sections(alice).getByRole('button', { name: section, exact: true }), `opening ${section}`,
        api(path), 200);
      await shoot(alice, section.toLowerCase());
    });
  }
  await step('alice opens Devices and sees her laptop', async () => {
    await clickFor(alice, sections(alice).getByRole('button', { name: 'Devices', exact: true }), 'opening Devices',
      api('/api/devices'), 200);
    await until('"alice-laptop" on the Devices view', async () => (await alice.getByText('alice-laptop').count()) > 0);
    await shoot(alice, 'devices');
  });
}

async function administer(browser) {
  const admin = await login(browser, 'admin', cfg.login.admin);
  const newUser = cfg.new_user;
  const device = cfg.new_device;

  await step('admin opens the console dashboard', async () => {
    await openConsole(admin, 'Dashboard');
    await clickFor(admin, await consoleButton(admin, 'Dashboard'), 'the dashboard', api('/api/admin/dashboard'), 200);
    await shoot(admin, 'console-dashboard');
  });

  await step(`admin adds the user ${newUser} and sees the activation code`, async () => {
    await clickFor(admin, await consoleButton(admin, 'Users'), 'the users', api('/api/admin/users'), 200);
    await admin.getByRole('textbox', { name: 'New user', exact: true }).fill(newUser);
    const added = await clickFor(admin, admin.getByRole('button', { name: 'Add user', exact: true }), `adding ${newUser}`,
      api('/api/admin/users', 'POST'), 200);
    const issued = await added.json();
    check(typeof issued.code === 'string' && issued.code.startsWith('RDB-'), `POST /api/admin/users should answer a code: ${JSON.stringify(issued)}`);
    const region = admin.getByRole('region', { name: 'Activation code' });
    await region.waitFor();
    await until('the code in the region "Activation code"', async () =>
      (await region.innerText()).replace(/\s+/g, '').includes(issued.code));
    await region.getByRole('img', { name: 'QR code' }).waitFor();
    results.code = issued.code;
    await shoot(admin, 'console-users');
  });

  await step(`${newUser} enrols a device with that code (CLI)`, async () => {
    await redoubt(cfg.new_profile, ['enroll', results.code, '--name', device, '--json']);
  });

  await step(`admin locks ${device}; the device finds itself locked`, async () => {
    await clickFor(admin, await consoleButton(admin, 'Devices'), 'the devices', apiPrefix('/api/admin/devices'), 200);
    await admin.getByRole('button', { name: `Lock ${device}`, exact: true }).click();
    await clickFor(admin, admin.getByRole('dialog').getByRole('button', { name: 'Confirm', exact: true }),
      `locking ${device}`, (url, m) => /^\/api\/admin\/devices\/[^/]+\/lock$/.test(url.pathname) && m === 'POST', 200);
    await shoot(admin, 'console-devices');
    const refused = await redoubt(cfg.new_profile, ['whoami', '--json']).then(
      (stdout) => ({ ok: true, stdout }), (error) => ({ ok: false, stderr: error.stderr }));
    check(!refused.ok && /locked by the organisation/.test(refused.stderr),
      `${device}'s whoami should fail as locked by the organisation; got ${JSON.stringify(refused)}`);
  });

  await step(`admin wipes ${device}`, async () => {
    await admin.getByRole('button', { name: `Wipe ${device}`, exact: true }).click();
    await clickFor(admin, admin.getByRole('dialog').getByRole('button', { name: 'Confirm', exact: true }),
      `wiping ${device}`, (url, m) => /^\/api\/admin\/devices\/[^/]+\/wipe$/.test(url.pathname) && m === 'POST', 200);
  });

  await step('admin changes the organisation policy; a bad setting is refused by name', async () => {
    await clickFor(admin, await consoleButton(admin, 'Policies'), 'the policies', apiPrefix('/api/admin/policies'), 200);
    const scope = admin.getByRole('combobox', { name: 'Scope', exact: true });
    if ((await scope.evaluate((element) => element.tagName)) === 'SELECT') {
      const options = await scope.evaluate((element) => [...element.options].map((o) => ({ value: o.value, label: o.label })));
      const org = options.find((o) => o.value === 'org') ?? options.find((o) => /^(org|organi[sz]ation|default)/i.test(o.label));
      check(org, `the "Scope" select has no organisation scope: ${JSON.stringify(options)}`);
      await scope.selectOption({ value: org.value });
    } else {
      await scope.fill('org');
    }
    const settings = admin.getByRole('textbox', { name: 'Policy settings', exact: true });
    await settings.fill(cfg.policy.bad);
    await clickFor(admin, admin.getByRole('button', { name: 'Save policy', exact: true }), 'saving a bad policy',
      api('/api/admin/policies', 'POST'), 400);
    await until(`an alert naming "${cfg.policy.bad_name}"`, async () =>
      (await admin.getByRole('alert').filter({ hasText: cfg.policy.bad_name }).count()) > 0);
    await settings.fill(cfg.policy.good);
    const saved = await clickFor(admin, admin.getByRole('button', { name: 'Save policy', exact: true }), 'saving the policy',
      api('/api/admin/policies', 'POST'), 200);
    results.policy_version = (await saved.json()).version;
    check(Number.isInteger(results.policy_version), `POST /api/admin/policies should answer {version}: ${results.policy_version}`);
    await shoot(admin, 'console-policies');
  });

  await step('the browsers\' devices apply the new policy live', async () => {
    const base = new URL(cfg.login.admin).origin;
    await until(`alice-laptop and bob-laptop to acknowledge policy version ${results.policy_version}`, async () => {
      const response = await admin.context().request.get(`${base}/api/admin/devices`);
      const rows = await response.json();
      return ['alice-laptop', 'bob-laptop'].every((name) =>
        rows.some((row) => row.name === name && row.policy_version_acked >= results.policy_version));
    });
  });

  await step('admin reads and verifies the audit log', async () => {
    await clickFor(admin, await consoleButton(admin, 'Audit'), 'the audit log', apiPrefix('/api/admin/audit'), 200);
    for (const action of ['user.add', 'device.lock', 'device.wipe', 'policy.set']) {
      await until(`"${action}" in the audit view`, async () => (await admin.getByText(action).count()) > 0);
    }
    const verified = await clickFor(admin, admin.getByRole('button', { name: 'Verify', exact: true }), 'verifying the audit log',
      api('/api/admin/audit/verify', 'POST'), 200);
    const body = await verified.json();
    check(body.ok === true, `the audit log should verify: ${JSON.stringify(body)}`);
    await shoot(admin, 'console-audit');
  });
}

async function helpdesk(browser) {
  const page = await login(browser, 'helpdesk', cfg.login.helpdesk);
  await step('the helpdesk sees users and devices, and no policy editing', async () => {
    await openConsole(page, 'Devices');
    check(await consoleButton(page, 'Users'), 'the helpdesk should see the console\'s "Users"');
    for (const name of ['Policies', 'Roles']) {
      check(!(await consoleButton(page, name)), `the helpdesk should not see the console's "${name}" button`);
    }
    await clickFor(page, await consoleButton(page, 'Devices'), 'the helpdesk\'s devices', apiPrefix('/api/admin/devices'), 200);
    await page.getByRole('button', { name: 'Lock alice-laptop', exact: true }).waitFor();
    for (const [role, name] of [['button', 'Save policy'], ['textbox', 'Policy settings']]) {
      const count = await page.getByRole(role, { name, exact: true }).count();
      check(count === 0, `the helpdesk's page shows the ${role} "${name}"`);
    }
    await shoot(page, 'helpdesk-console');
  });
}

async function auditor(browser) {
  const base = cfg.auditor.base;
  const page = await withCookie(browser, 'auditor', base, cfg.auditor.cookie);
  await step('the auditor can only read the audit log', async () => {
    await openConsole(page, 'Audit');
    for (const name of ['Users', 'Devices', 'Groups', 'Policies', 'Roles', 'Mail settings', 'Directory']) {
      check(!(await consoleButton(page, name)), `the auditor should not see the console's "${name}" button`);
    }
    check((await page.getByRole('button', { name: 'Add user', exact: true }).count()) === 0, 'the auditor sees "Add user"');
    await clickFor(page, await consoleButton(page, 'Audit'), 'the auditor\'s audit log', apiPrefix('/api/admin/audit'), 200);
    await until('"policy.set" in the auditor\'s audit view', async () => (await page.getByText('policy.set').count()) > 0);
    const verified = await clickFor(page, page.getByRole('button', { name: 'Verify', exact: true }), 'the auditor verifies',
      api('/api/admin/audit/verify', 'POST'), 200);
    check((await verified.json()).ok === true, 'the audit log should verify for the auditor');
    await shoot(page, 'auditor-console');
  });

  await step('a forged POST /api/admin/users from the auditor\'s page is refused', async () => {
    const forged = await pageFetch(page, '/api/admin/users', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ user: cfg.forged_user, display_name: 'Forged' }),
    });
    results.forged = forged;
    check(forged.status === 403, `expected 403, got ${forged.status}: ${forged.text}`);
    let code = null;
    try { code = JSON.parse(forged.text).error.code; } catch { /* checked below */ }
    check(code === 'forbidden', `expected {"error":{"code":"forbidden",...}}, got ${forged.text}`);
  });
}

async function main() {
  await mkdir(cfg.screenshots, { recursive: true });
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run'],
  });
  log(`Chromium ${browser.version()}`);
  try {
    const alice = await chats(browser);
    await mail(alice);
    await otherViews(alice);
    await administer(browser);
    await helpdesk(browser);
    await auditor(browser);
    current = 'page errors, CSP violations, requests to other origins';
    check(problems.length === 0, `the pages misbehaved:\n  ${problems.join('\n  ')}`);
    await writeFile(cfg.results, JSON.stringify(results, null, 2));
    log(`passed; screenshots:\n  ${results.screenshots.join('\n  ')}`);
  } catch (error) {
    console.error(`\nweb e2e FAILED at step "${current}":\n  ${error instanceof Failure ? error.message : error.stack}`);
    if (problems.length > 0) console.error(`also seen in the pages:\n  ${problems.join('\n  ')}`);
    for (const [who, page] of Object.entries(pages)) {
      const path = join(cfg.screenshots, `failure-${who}.png`);
      await page.screenshot({ path, fullPage: true }).then(() => console.error(`  ${who}'s page: ${path}`), () => {});
    }
    process.exitCode = 1;
  } finally {
    await browser.close().catch(() => {});
  }
}

setTimeout(() => {
  console.error(`web e2e: still running after ${SCRIPT_MS / 1000} s, at step "${current}"; giving up`);
  process.exit(1);
}, SCRIPT_MS).unref();
await main();
