// The admin dashboard at /ui/admin. The admin key is asked for once, kept in sessionStorage
// (this tab only) and sent as a bearer header; it never appears in a URL. Everything the
// server returns is written with textContent.
(() => {
  'use strict';

  const STORAGE_KEY = 'sessiond.admin_key';
  const SVG = 'http://www.w3.org/2000/svg';
  const CHART_REFRESH_MS = 30000;
  const CHARTS = [
    ['active_sessions', 'Active sessions'],
    ['refreshes', 'Refreshes'],
    ['refresh_failures', 'Refresh failures'],
    ['reuse_detections', 'Reuse detections'],
    ['rate_limited', 'Rate-limited requests'],
  ];

  const $ = (id) => document.getElementById(id);
  const status = $('admin-status');
  let chartTimer = null;
  let shownUser = null;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function formatInstant(text) {
    if (!text) return '—';
    const date = new Date(text);
    return Number.isNaN(date.getTime()) ? String(text) : date.toLocaleString();
  }

  function say(text) {
    status.textContent = text || '';
  }

  async function api(method, path) {
    const key = sessionStorage.getItem(STORAGE_KEY);
    const response = await fetch(path, { method, headers: { Authorization: `Bearer ${key}` } });
    if (response.status === 401) {
      sessionStorage.removeItem(STORAGE_KEY);
      showKeyForm('That admin key was refused.');
      throw new Error('unauthenticated');
    }
    if (!response.ok) {
      let message = `${method} ${path}: ${response.status}`;
      try {
        const problem = await response.json();
        if (problem && problem.message) message = problem.message;
      } catch (_) { /* not JSON */ }
      throw new Error(message);
    }
    return response.status === 204 ? null : response.json();
  }

  function row(cells) {
    const tr = document.createElement('tr');
    for (const cell of cells) {
      const td = document.createElement('td');
      if (cell instanceof Node) td.append(cell);
      else td.textContent = cell === null || cell === undefined || cell === '' ? '—' : String(cell);
      tr.append(td);
    }
    return tr;
  }

  function button(text, label, handler, danger) {
    const node = el('button', `sessiond-button${danger ? ' sessiond-danger' : ''}`, text);
    node.type = 'button';
    node.setAttribute('aria-label', label);
    node.addEventListener('click', handler);
    return node;
  }

  // Charts: one plain SVG per series over a fixed hour of slots (the closed minutes and the
  // one in progress), newest at the right edge, so a young process draws at the right.
  function chart(title, values, labels, slots) {
    const figure = el('figure', 'sessiond-chart');
    const caption = el('figcaption');
    const latest = values.length ? values[values.length - 1] : 0;
    caption.append(el('span', null, title), el('strong', null, latest));
    const width = 300;
    const height = 100;
    const max = Math.max(1, ...values);
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', `${title} per minute, oldest first: ${values.join(', ')}`);
    const first = Math.max(0, slots - values.length);
    const x = (index) => (width * (first + index)) / Math.max(1, slots - 1);
    const y = (value) => height - (value / max) * (height - 6) - 3;
    const points = values.map((value, index) => `${x(index).toFixed(1)},${y(value).toFixed(1)}`);
    const tip = document.createElementNS(SVG, 'title');
    tip.textContent = labels.map((label, index) => `${label}: ${values[index]}`).join('\n');
    svg.append(tip);
    if (values.length > 1) {
      const area = document.createElementNS(SVG, 'polygon');
      area.setAttribute('class', 'area');
      area.setAttribute('points', `${x(0).toFixed(1)},${height} ${points.join(' ')} ${width},${height}`);
      const polyline = document.createElementNS(SVG, 'polyline');
      polyline.setAttribute('class', 'line');
      polyline.setAttribute('points', points.join(' '));
      svg.append(area, polyline);
    }
    if (values.length) {
      const dot = document.createElementNS(SVG, 'rect');
      dot.setAttribute('class', 'dot');
      dot.setAttribute('x', String(width - 4));
      dot.setAttribute('y', String(y(latest) - 2));
      dot.setAttribute('width', '4');
      dot.setAttribute('height', '4');
      svg.append(dot);
    }
    figure.append(caption, svg);
    return figure;
  }

  async function loadCharts() {
    try {
      const history = await api('GET', '/v1/stats/history');
      const minutes = [...history.minutes, history.current];
      const labels = minutes.map((minute) => formatInstant(minute.started_at));
      $('charts').replaceChildren(...CHARTS.map(([field, title]) =>
        chart(title, minutes.map((minute) => minute[field] || 0), labels, history.capacity + 1)));
    } catch (error) {
      say(`Charts: ${error.message}`);
    }
  }

  async function showUser(userId) {
    const user = encodeURIComponent(userId);
    try {
      const [sessions, devices] = await Promise.all([
        api('GET', `/v1/users/${user}/sessions`),
        api('GET', `/v1/users/${user}/devices`),
      ]);
      shownUser = userId;
      $('user-heading').textContent = `${userId}: ${sessions.sessions.length} active session(s)`;
      $('user-revoke-all').disabled = sessions.sessions.length === 0;
      $('user-sessions').tBodies[0].replaceChildren(...sessions.sessions.map((session) => {
        const device = session.device || {};
        const name = device.name || device.id || 'unknown device';
        return row([
          name,
          [device.browser, device.os].filter(Boolean).join(' / ') || session.user_agent,
          session.ip,
          formatInstant(session.created_at),
          formatInstant(session.last_active_at),
          button('Revoke', `Revoke session on ${name}`, async () => {
            await act(() => api('DELETE', `/v1/sessions/${encodeURIComponent(session.id)}`), 'Session revoked');
          }, true),
        ]);
      }));
      $('user-devices').tBodies[0].replaceChildren(...devices.devices.map((device) => {
        const name = device.name || device.id;
        return row([
          name,
          device.type,
          [device.browser, device.os].filter(Boolean).join(' / '),
          device.trusted ? 'yes' : 'no',
          button('Forget', `Forget device ${name}`, async () => {
            await act(() => api('DELETE', `/v1/users/${user}/devices/${encodeURIComponent(device.id)}`), 'Device forgotten');
          }, true),
        ]);
      }));
      $('user-result').hidden = false;
    } catch (error) {
      say(`User: ${error.message}`);
    }
  }

  async function act(work, done) {
    try {
      await work();
      if (done) say(done);
    } catch (error) {
      say(error.message);
    }
    if (shownUser !== null) await showUser(shownUser);
    loadAudit();
  }

  async function loadAudit() {
    const form = $('audit-form');
    const query = new URLSearchParams();
    for (const name of ['user_id', 'type', 'since', 'limit']) {
      const value = form.elements[name].value.trim();
      if (value) query.set(name, value);
    }
    try {
      const [page, chain] = await Promise.all([
        api('GET', `/v1/audit?${query}`),
        api('GET', '/v1/audit/verify'),
      ]);
      $('audit').tBodies[0].replaceChildren(...page.events.map((event) => {
        const severity = el('span', `sessiond-sev-${event.severity}`, event.severity);
        const details = el('code', null, JSON.stringify(event.details));
        return row([event.seq, formatInstant(event.at), event.type, severity, event.user_id,
          event.session_id, event.ip, details]);
      }));
      const indicator = $('chain');
      indicator.classList.toggle('ok', chain.ok);
      indicator.classList.toggle('bad', !chain.ok);
      indicator.textContent = chain.ok
        ? `✓ Chain verified: ${chain.events} event(s) to seq ${chain.head_seq}`
        : `✗ Chain broken at seq ${chain.first_bad_seq}: ${chain.reason}`;
    } catch (error) {
      say(`Audit: ${error.message}`);
    }
  }

  async function loadKeys() {
    try {
      const answer = await api('GET', '/v1/keys');
      $('keys').tBodies[0].replaceChildren(...answer.keys.map((key) => row([
        el('code', null, key.kid), key.alg, key.state, formatInstant(key.created_at),
        key.deactivated_at ? formatInstant(key.deactivated_at) : '—',
        key.retire_at ? formatInstant(key.retire_at) : '—',
      ])));
    } catch (error) {
      say(`Keys: ${error.message}`);
    }
  }

  function showKeyForm(message) {
    clearInterval(chartTimer);
    $('dashboard').hidden = true;
    $('key-form').hidden = false;
    say(message);
  }

  function showDashboard() {
    $('key-form').hidden = true;
    $('dashboard').hidden = false;
    say('');
    loadCharts();
    loadAudit();
    loadKeys();
    clearInterval(chartTimer);
    chartTimer = setInterval(loadCharts, CHART_REFRESH_MS);
  }

  $('key-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const key = $('key-input').value.trim();
    if (!key) return;
    sessionStorage.setItem(STORAGE_KEY, key);
    $('key-input').value = '';
    showDashboard();
  });
  $('sign-out').addEventListener('click', () => {
    sessionStorage.removeItem(STORAGE_KEY);
    showKeyForm('');
  });
  $('user-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const userId = $('user-input').value.trim();
    if (userId) showUser(userId);
  });
  $('user-revoke-all').addEventListener('click', () => {
    if (shownUser === null) return;
    act(async () => {
      const answer = await api('POST', `/v1/users/${encodeURIComponent(shownUser)}/sessions/revoke-all`);
      say(`${answer.revoked} session(s) revoked`);
    }, null);
  });
  $('audit-form').addEventListener('submit', (event) => {
    event.preventDefault();
    loadAudit();
  });

  if (sessionStorage.getItem(STORAGE_KEY)) showDashboard();
  else showKeyForm('');
})();
