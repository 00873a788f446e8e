// The browser half of `redoubt-bench web` (crates/bench/src/web.rs): Debian's Chromium,
// driven through playwright-core (.ci/install-browser), opens the page of a `redoubt web`
// process and reports, one JSON line per step on stdout:
//   {"step":"opened", first_render_ms, loaded_ms, heap_bytes, shown}  the 10,000-message conversation
//   {"step":"watching"}                                               the live phase may start
//   {"step":"live", shown: {"N": unix_ms, ...}}                       after "stop" on stdin
// Input: REDOUBT_BENCH_WEB = {url, conversation, last_seq, live_prefix}.

import { createRequire } from 'node:module';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const cfg = JSON.parse(process.env.REDOUBT_BENCH_WEB);
const playwrightDir = process.env.REDOUBT_PLAYWRIGHT_DIR || '/opt/redoubt-playwright';
const { chromium } = createRequire(join(playwrightDir, 'package.json'))('playwright-core');
const say = (value) => console.log(JSON.stringify(value));

const browser = await chromium.launch({
  executablePath: process.env.REDOUBT_CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run', '--enable-precise-memory-info'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await page.goto(cfg.url);
  await page.waitForSelector('body[data-ready="1"]', { timeout: 60_000 });
  const list = page.getByRole('list', { name: 'Conversations' });
  const button = list.getByRole('button', { name: new RegExp(cfg.conversation) });
  await button.waitFor({ timeout: 60_000 });

  // Opening the conversation: to the first message drawn, and to the last.
  const started = await page.evaluate(() => performance.now());
  await button.click();
  await page.waitForSelector('[aria-label="Messages"] li[data-seq]', { timeout: 60_000 });
  const first = await page.evaluate(() => performance.now());
  // Fully loaded: the newest message is there and every older one is drawn above it.
  await page.waitForFunction(
    (last) => {
      const list = document.querySelector('[aria-label="Messages"]');
      return Number(list?.dataset.loadedSeq ?? 0) >= last && list?.dataset.complete === '1';
    },
    cfg.last_seq, { timeout: 120_000, polling: 'raf' });
  const loaded = await page.evaluate(() => performance.now());
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('HeapProfiler.collectGarbage');
  const heap = await cdp.send('Runtime.getHeapUsage');
  const shown = await page.locator('[aria-label="Messages"] li[data-seq]').count();
  say({ step: 'opened', first_render_ms: first - started, loaded_ms: loaded - started,
    heap_bytes: heap.usedSize, shown });

  // Live: note when each new message appears, by the number in its text.
  await page.evaluate((prefix) => {
    window.benchShown = {};
    const pattern = new RegExp(`${prefix}(\\d+)`);
    const note = (node) => {
      if (node.nodeType !== 1) return;
      const items = node.matches('li[data-seq]') ? [node] : node.querySelectorAll('li[data-seq]');
      for (const item of items) {
        const match = pattern.exec(item.textContent);
        if (match && !(match[1] in window.benchShown)) window.benchShown[match[1]] = Date.now();
      }
    };
    const messages = document.querySelector('[aria-label="Messages"]');
    new MutationObserver((records) => {
      for (const record of records) record.addedNodes.forEach(note);
    }).observe(messages, { childList: true, subtree: true });
  }, cfg.live_prefix);
  say({ step: 'watching' });

  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    const { stop, expected, wait_ms } = JSON.parse(line);
    if (!stop) continue;
    const deadline = Date.now() + wait_ms;
    while (Date.now() < deadline) {
      const count = await page.evaluate(() => Object.keys(window.benchShown).length);
      if (count >= expected) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    say({ step: 'live', shown: await page.evaluate(() => window.benchShown) });
    break;
  }
} finally {
  await browser.close();
}
