// sessiond's web UI in headless Chromium against the real binary: target/debug/sessiond
// (build it first) on a random port with a temporary SQLite database and an admin key.
// Sessions are created through the admin API; the pages are driven as a user would.
//
// Run: cd ui-tests && npm ci && npm test. SESSIOND_BIN and CHROMIUM override the paths.
// Screenshots of each page at desktop and phone width go to docs/screenshots/.

import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..');
const BINARY = process.env.SESSIOND_BIN || join(ROOT, 'target/debug/sessiond');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SCREENSHOTS = join(ROOT, 'docs/screenshots');
const ADMIN_KEY = 'ui-test-admin-key-0123456789-abcdefghijkl';
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };
const XSS = '<img src=x onerror=alert(1)>';
const FIREFOX = 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0';
const IPHONE = 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1';
const CHROME = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36';

let server;
let base;
let dir;
let browser;

/** Starts sessiond on `listen` over the test's database; resolves to its base URL. */
async function startServer(listen) {
  server = spawn(BINARY, ['serve'], {
    cwd: dir,
    env: {
      ...process.env,
      SESSIOND_LISTEN: listen,
      SESSIOND_DATABASE_URL: `sqlite://${join(dir, 'sessiond.db')}`,
      SESSIOND_ADMIN_KEYS: ADMIN_KEY,
      SESSIOND_ISSUER: 'http://sessiond.ui-test',
      SESSIOND_RATE_LIMITS: 'off',
      SESSIOND_EVENT_HEARTBEAT: '1s',
      RUST_LOG: 'warn',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const started = server;
  return new Promise((resolveBase, reject) => {
    let seen = '';
    started.on('exit', (code) => reject(new Error(`sessiond exited with ${code}`)));
    started.stdout.on('data', (chunk) => {
      seen += chunk;
      const match = /sessiond listening on (http:\/\/\S+)/.exec(seen);
      if (match) resolveBase(match[1]);
    });
  });
}

async function stopServer() {
  const stopping = server;
  server = null;
  if (!stopping || stopping.exitCode !== null) return;
  await new Promise((resolveExit) => {
    stopping.once('exit', resolveExit);
    stopping.kill('SIGTERM');
  });
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sessiond-ui-'));
  base = await startServer('127.0.0.1:0');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  mkdirSync(SCREENSHOTS, { recursive: true });
});

after(async () => {
  if (browser) await browser.close();
  await stopServer();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function admin(method, path, body) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${ADMIN_KEY}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${await response.clone().text()}`);
  return response.status === 204 ? null : response.json();
}

async function createSession(userId, device) {
  return admin('POST', '/v1/sessions', { user_id: userId, device });
}

/** A page that fails the test on any dialog (alert, confirm) or uncaught page error. */
async function newPage(viewport) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const problems = [];
  page.on('dialog', async (dialog) => {
    problems.push(`a dialog opened: ${dialog.message()}`);
    await dialog.dismiss();
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    // A CSP violation is reported on the console: the pages must never cause one.
    if (/Content Security Policy/i.test(message.text())) problems.push(message.text());
  });
  return { page, context, problems };
}

/** Opens the widget's page for `token`, entered through the paste form. */
async function openWidget(viewport, token) {
  const opened = await newPage(viewport);
  await opened.page.goto(`${base}/ui/`);
  await opened.page.getByLabel('Access token').fill(token);
  await opened.page.getByRole('button', { name: 'Show sessions' }).click();
  return opened;
}

/** Fails unless the page fits its viewport's width (tables scroll inside their own box). */
async function assertNoSidewaysScroll(page) {
  const widths = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  assert.ok(widths[0] <= widths[1], `the page is ${widths[0]}px wide in a ${widths[1]}px viewport`);
}

function rows(page) {
  return page.locator('sessiond-sessions li.sessiond-session');
}

test('the widget lists, revokes live, and signs out the others', async () => {
  const user = 'ui-alice';
  const laptop = await createSession(user, { name: 'Work laptop', user_agent: FIREFOX, ip: '203.0.113.7' });
  const phone = await createSession(user, { name: 'Phone', user_agent: IPHONE, ip: '198.51.100.20' });
  const desktop = await createSession(user, { name: 'Home desktop', user_agent: CHROME, ip: '192.0.2.44' });

  const first = await openWidget(DESKTOP, laptop.access_token);
  await assert.doesNotReject(rows(first.page).nth(2).waitFor());
  assert.equal(await rows(first.page).count(), 3);
  const current = first.page.locator('sessiond-sessions li.sessiond-current');
  assert.match(await current.innerText(), /Work laptop/);
  assert.match(await current.innerText(), /This device/);
  await first.page.screenshot({ path: join(SCREENSHOTS, 'sessions-desktop.png'), fullPage: true });

  // A second page, of the phone's session, follows the first one's actions live.
  const second = await openWidget(PHONE, phone.access_token);
  await rows(second.page).nth(2).waitFor();
  await second.page.screenshot({ path: join(SCREENSHOTS, 'sessions-phone.png'), fullPage: true });
  await assertNoSidewaysScroll(second.page);
  // Let the second page's event stream open before acting.
  await second.page.waitForTimeout(300);

  const desktopRow = first.page.locator(`li[data-session-id="${desktop.session.id}"]`);
  await desktopRow.getByRole('button', { name: /^Sign out: / }).click();
  await desktopRow.waitFor({ state: 'detached', timeout: 2000 });
  const started = Date.now();
  await second.page
    .locator(`li[data-session-id="${desktop.session.id}"]`)
    .waitFor({ state: 'detached', timeout: 1000 });
  assert.ok(Date.now() - started <= 1000, 'the other page dropped the session within a second');
  assert.equal(await rows(second.page).count(), 2);

  // Trust the current device from the keyboard: the mark appears.
  await current.getByRole('button', { name: /^Trust device/ }).focus();
  await first.page.keyboard.press('Enter');
  await current.locator('.sessiond-badge-trusted').waitFor();

  // "Sign out all other sessions" from the laptop: the phone's page is told it is signed out.
  const signedOut = second.page.evaluate(() => new Promise((resolveEvent) => {
    document.addEventListener('sessiond:signed-out', () => resolveEvent(true), { once: true });
  }));
  await first.page.getByRole('button', { name: 'Sign out all other sessions' }).click();
  await first.page.waitForFunction(() =>
    document.querySelector('sessiond-sessions').shadowRoot.querySelectorAll('li.sessiond-session').length === 1);
  assert.equal(await signedOut, true);
  await second.page.getByText('This session was signed out.').first().waitFor();
  assert.equal(await rows(second.page).count(), 0);

  const sessions = await admin('GET', `/v1/users/${user}/sessions`);
  assert.deepEqual(sessions.sessions.map((session) => session.id), [laptop.session.id]);
  assert.deepEqual(first.problems, []);
  assert.deepEqual(second.problems, []);
  await first.context.close();
  await second.context.close();
});

test('a hostile user agent and device name render as text and run nothing', async () => {
  const user = 'ui-mallory';
  const hostile = await createSession(user, { name: XSS, user_agent: XSS, ip: '203.0.113.66' });
  const opened = await openWidget(PHONE, hostile.access_token);
  await rows(opened.page).first().waitFor();
  const text = await rows(opened.page).first().innerText();
  assert.ok(text.includes(XSS), `the markup is shown as text: ${text}`);
  const images = await opened.page.evaluate(() =>
    document.querySelector('sessiond-sessions').shadowRoot.querySelectorAll('img').length);
  assert.equal(images, 0);

  // The admin dashboard shows the same session as text as well.
  const dashboard = await openDashboard(DESKTOP);
  await findUser(dashboard.page, user);
  await dashboard.page.locator('#user-sessions td', { hasText: XSS }).first().waitFor();
  assert.equal(await dashboard.page.locator('#user-sessions img').count(), 0);
  await dashboard.page.waitForTimeout(500);
  assert.deepEqual(opened.problems, []);
  assert.deepEqual(dashboard.problems, []);
  await opened.context.close();
  await dashboard.context.close();
});

async function openDashboard(viewport) {
  const opened = await newPage(viewport);
  await opened.page.goto(`${base}/ui/admin`);
  await opened.page.getByLabel('Admin key').fill(ADMIN_KEY);
  await opened.page.getByRole('button', { name: 'Open dashboard' }).click();
  await opened.page.locator('#charts svg').first().waitFor();
  return opened;
}

async function findUser(page, user) {
  await page.getByLabel('User id', { exact: true }).first().fill(user);
  await page.getByRole('button', { name: 'Find' }).click();
  await page.locator('#user-heading', { hasText: user }).waitFor();
}

test('the admin dashboard finds a user and revokes all their sessions', async () => {
  const user = 'ui-bob';
  const bobs = [];
  for (const [name, agent] of [['Laptop', FIREFOX], ['Phone', IPHONE], ['Tablet', CHROME]]) {
    bobs.push(await createSession(user, { name, user_agent: agent, ip: '198.51.100.9' }));
  }
  // A failed refresh, so the failure chart has something to draw.
  await fetch(`${base}/v1/sessions/refresh`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ refresh_token: 'not-a-token' }),
  });

  // Bob keeps the widget open on his laptop while an admin signs him out everywhere.
  const widget = await openWidget(DESKTOP, bobs[0].access_token);
  await rows(widget.page).nth(2).waitFor();
  await widget.page.waitForTimeout(300);

  const dashboard = await openDashboard(DESKTOP);
  await dashboard.page.locator('#chain.ok').waitFor({ timeout: 5000 });
  assert.match(await dashboard.page.locator('#chain').innerText(), /Chain verified/);
  assert.ok(await dashboard.page.locator('#keys tbody tr').count() >= 1);
  assert.ok(await dashboard.page.locator('#audit tbody tr').count() >= 1);
  assert.equal(await dashboard.page.locator('#charts figure').count(), 5);
  await findUser(dashboard.page, user);
  assert.equal(await dashboard.page.locator('#user-sessions tbody tr').count(), 3);
  assert.equal(await dashboard.page.locator('#user-devices tbody tr').count(), 3);
  await dashboard.page.screenshot({ path: join(SCREENSHOTS, 'admin-desktop.png'), fullPage: true });

  await dashboard.page.getByRole('button', { name: 'Revoke all sessions' }).click();
  await dashboard.page.locator('#user-heading', { hasText: '0 active session(s)' }).waitFor();
  assert.equal(await dashboard.page.locator('#user-sessions tbody tr').count(), 0);
  await widget.page.getByText('This session was signed out.').first().waitFor({ timeout: 2000 });
  const left = await admin('GET', `/v1/users/${user}/sessions`);
  assert.equal(left.sessions.length, 0);

  // The key lives in sessionStorage only: never in the address.
  assert.ok(!dashboard.page.url().includes(ADMIN_KEY));

  const phone = await openDashboard(PHONE);
  await findUser(phone.page, 'ui-alice');
  await phone.page.screenshot({ path: join(SCREENSHOTS, 'admin-phone.png'), fullPage: true });
  await assertNoSidewaysScroll(phone.page);

  assert.deepEqual(dashboard.problems, []);
  assert.deepEqual(widget.problems, []);
  assert.deepEqual(phone.problems, []);
  await dashboard.context.close();
  await widget.context.close();
  await phone.context.close();
});

test('in cookie mode the page signs in with the HttpOnly refresh cookie', async () => {
  const cookieDir = mkdtempSync(join(tmpdir(), 'sessiond-ui-cookie-'));
  const cookieServer = spawn(BINARY, ['serve'], {
    cwd: cookieDir,
    env: {
      ...process.env,
      SESSIOND_LISTEN: '127.0.0.1:0',
      SESSIOND_DATABASE_URL: `sqlite://${join(cookieDir, 'sessiond.db')}`,
      SESSIOND_ADMIN_KEYS: ADMIN_KEY,
      SESSIOND_ISSUER: 'http://sessiond.ui-test',
      SESSIOND_COOKIE_MODE: 'on',
      RUST_LOG: 'warn',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    const cookieBase = await new Promise((resolveBase, reject) => {
      let seen = '';
      cookieServer.on('exit', (code) => reject(new Error(`sessiond exited with ${code}`)));
      cookieServer.stdout.on('data', (chunk) => {
        seen += chunk;
        const match = /sessiond listening on (http:\/\/\S+)/.exec(seen);
        if (match) resolveBase(match[1]);
      });
    });
    const response = await fetch(`${cookieBase}/v1/sessions`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${ADMIN_KEY}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ user_id: 'ui-dana', device: { name: 'Browser', user_agent: FIREFOX } }),
    });
    assert.equal(response.status, 201);
    const pair = await response.json();
    // The browser's first refresh, with the token in the body, moves it into the HttpOnly
    // cookie; from then on the page refreshes by cookie alone.
    const opened = await newPage(DESKTOP);
    await opened.page.goto(`${cookieBase}/ui/`);
    await opened.page.getByLabel('Access token').waitFor();
    const moved = await opened.page.evaluate(async (refreshToken) => {
      const answer = await fetch('/v1/sessions/refresh', {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ refresh_token: refreshToken }),
      });
      return answer.status;
    }, pair.refresh_token);
    assert.equal(moved, 200);
    await opened.page.goto(`${cookieBase}/ui/`);
    await rows(opened.page).first().waitFor();
    assert.match(await rows(opened.page).first().innerText(), /This device/);
    assert.equal(await opened.page.evaluate(() => document.cookie), '');
    assert.equal(await opened.page.evaluate(() => sessionStorage.length), 0);
    assert.deepEqual(opened.problems, []);
    await opened.context.close();
  } finally {
    cookieServer.kill('SIGTERM');
    rmSync(cookieDir, { recursive: true, force: true });
  }
});

// Last, since it restarts the server.
test('the widget resumes its event stream with Last-Event-ID after a restart', async () => {
  const user = 'ui-carol';
  const laptop = await createSession(user, { name: 'Laptop', user_agent: FIREFOX });
  const phone = await createSession(user, { name: 'Phone', user_agent: IPHONE });
  const opened = await openWidget(DESKTOP, laptop.access_token);
  const streams = [];
  opened.page.on('request', (request) => {
    if (new URL(request.url()).pathname === '/v1/events') streams.push(request.headers());
  });
  await rows(opened.page).nth(1).waitFor();
  await opened.page.waitForTimeout(300);
  // An event the widget sees live, so that it has an id to resume after.
  await createSession(user, { name: 'Tablet', user_agent: CHROME });
  await rows(opened.page).nth(2).waitFor({ timeout: 2000 });

  await stopServer();
  const restarted = await startServer(new URL(base).host);
  assert.equal(restarted, base);
  await admin('DELETE', `/v1/sessions/${phone.session.id}`);
  await opened.page
    .locator(`li[data-session-id="${phone.session.id}"]`)
    .waitFor({ state: 'detached', timeout: 10000 });
  assert.equal(await rows(opened.page).count(), 2);
  const resumed = streams.filter((headers) => headers['last-event-id']);
  assert.ok(resumed.length >= 1, `a reconnect sent Last-Event-ID: ${JSON.stringify(streams)}`);
  assert.ok(streams.every((headers) => /^Bearer /.test(headers.authorization || '')));
  assert.deepEqual(opened.problems, []);
  await opened.context.close();
});
