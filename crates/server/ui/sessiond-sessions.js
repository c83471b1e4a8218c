// <sessiond-sessions>: the signed-in user's sessions, live.
//
// An application includes this file from its sessiond server and hands the element a
// function that returns the user's current access token:
//
//   <script src="https://sessions.example.com/ui/sessiond-sessions.js"></script>
//   <sessiond-sessions></sessiond-sessions>
//   document.querySelector('sessiond-sessions').tokenProvider = async () => accessToken;
//
// The element lists the sessions (GET /v1/sessions), revokes one, signs out the others,
// trusts or forgets a device, and follows GET /v1/events so that a session revoked elsewhere
// disappears without a reload. When the current session ends it says so and dispatches a
// `sessiond:signed-out` event (bubbling, composed) that the application can act on.
//
// The API is the origin this script was loaded from, or the element's `api-base` attribute.
// Everything that comes from the server is written with textContent, never parsed as HTML.
(() => {
  'use strict';

  const SCRIPT_URL = document.currentScript ? document.currentScript.src : location.href;
  const RECONNECT_MIN_MS = 1000;
  const RECONNECT_MAX_MS = 30000;

  /** An element with a class and, optionally, text. */
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function formatInstant(text) {
    if (!text) return '—';
    const date = new Date(text);
    if (Number.isNaN(date.getTime())) return String(text);
    return date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  }

  class SessiondSessions extends HTMLElement {
    constructor() {
      super();
      this._tokenProvider = null;
      this._sessions = [];
      this._devices = new Map();
      this._lastEventId = null;
      this._stream = null;
      this._reconnectDelay = RECONNECT_MIN_MS;
      this._signedOut = false;
      this._connected = false;
      this._refetchTimer = null;

      const root = this.attachShadow({ mode: 'open' });
      const style = document.createElement('link');
      style.rel = 'stylesheet';
      style.href = new URL('sessiond.css', SCRIPT_URL).href;
      root.append(style);

      this._box = el('section', 'sessiond');
      this._box.setAttribute('aria-label', 'Your sessions');
      const header = el('header', 'sessiond-header');
      header.append(el('h2', 'sessiond-title', 'Your sessions'));
      this._revokeOthers = el('button', 'sessiond-button sessiond-danger', 'Sign out all other sessions');
      this._revokeOthers.type = 'button';
      this._revokeOthers.setAttribute('data-action', 'revoke-others');
      this._revokeOthers.addEventListener('click', () => this.revokeOthers());
      header.append(this._revokeOthers);
      this._status = el('p', 'sessiond-status');
      this._status.setAttribute('role', 'status');
      this._status.setAttribute('aria-live', 'polite');
      this._list = el('ul', 'sessiond-list');
      this._box.append(header, this._status, this._list);
      root.append(this._box);
    }

    /** A function returning (a promise of) the user's access token. */
    get tokenProvider() {
      return this._tokenProvider;
    }

    set tokenProvider(provider) {
      this._tokenProvider = provider;
      this._signedOut = false;
      if (this._connected) this._start();
    }

    connectedCallback() {
      this._connected = true;
      if (this._tokenProvider) this._start();
    }

    disconnectedCallback() {
      this._connected = false;
      this._stopStream();
    }

    get _apiBase() {
      return new URL(this.getAttribute('api-base') || '/', SCRIPT_URL);
    }

    async _token() {
      if (!this._tokenProvider) throw new Error('no tokenProvider');
      const token = await this._tokenProvider();
      if (!token) throw new Error('no access token');
      return token;
    }

    async _api(method, path, body) {
      const headers = { Authorization: `Bearer ${await this._token()}` };
      const init = { method, headers };
      if (body !== undefined) {
        headers['Content-Type'] = 'application/json';
        init.body = JSON.stringify(body);
      }
      const response = await fetch(new URL(path, this._apiBase), init);
      if (response.status === 401) {
        this._becomeSignedOut('Your session has ended. Sign in again.');
        throw new Error('signed out');
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

    _say(text, isError) {
      this._status.textContent = text || '';
      this._status.classList.toggle('sessiond-error', Boolean(isError));
    }

    async _start() {
      this._stopStream();
      await this.reload();
      if (!this._signedOut) this._openStream();
    }

    /** Fetches the sessions and devices again and redraws. */
    async reload() {
      try {
        const [sessions, devices] = await Promise.all([
          this._api('GET', 'v1/sessions'),
          this._api('GET', 'v1/devices').catch(() => ({ devices: [] })),
        ]);
        this._sessions = sessions.sessions || [];
        this._devices = new Map((devices.devices || []).map((device) => [device.id, device]));
        this._render();
      } catch (error) {
        if (!this._signedOut) this._say(`Could not load your sessions: ${error.message}`, true);
      }
    }

    _scheduleReload() {
      clearTimeout(this._refetchTimer);
      this._refetchTimer = setTimeout(() => this.reload(), 200);
    }

    _render() {
      const others = this._sessions.filter((session) => !session.current).length;
      this._revokeOthers.disabled = this._signedOut || others === 0;
      this._list.replaceChildren(...this._sessions.map((session) => this._row(session)));
      if (!this._signedOut) {
        this._say(this._sessions.length === 1 ? '1 active session' : `${this._sessions.length} active sessions`);
      }
    }

    _row(session) {
      const device = session.device || {};
      const item = el('li', 'sessiond-session');
      item.setAttribute('data-session-id', session.id);
      if (session.current) item.classList.add('sessiond-current');

      const title = el('div', 'sessiond-session-title');
      const label = device.name || [device.browser, device.os].filter(Boolean).join(' on ') || 'Unknown device';
      title.append(el('strong', 'sessiond-device-name', label));
      if (session.current) title.append(el('span', 'sessiond-badge sessiond-badge-current', 'This device'));
      if (device.trusted) title.append(el('span', 'sessiond-badge sessiond-badge-trusted', 'Trusted'));
      item.append(title);

      const facts = el('dl', 'sessiond-facts');
      const fact = (name, value) => {
        const pair = el('div', 'sessiond-fact');
        pair.append(el('dt', null, name), el('dd', null, value || '—'));
        facts.append(pair);
      };
      fact('Type', device.type);
      fact('Browser', device.browser);
      fact('System', device.os);
      fact('IP address', session.ip);
      fact('Signed in', formatInstant(session.created_at));
      fact('Last active', formatInstant(session.last_active_at));
      if (!device.browser && session.user_agent) fact('User agent', session.user_agent);
      item.append(facts);

      const actions = el('div', 'sessiond-actions');
      const button = (text, action, handler, danger) => {
        const node = el('button', `sessiond-button${danger ? ' sessiond-danger' : ''}`, text);
        node.type = 'button';
        node.setAttribute('data-action', action);
        node.setAttribute('aria-label', `${text}: ${label}`);
        node.addEventListener('click', handler);
        actions.append(node);
        return node;
      };
      button(session.current ? 'Sign out here' : 'Sign out', 'revoke', () => this.revoke(session.id), true);
      if (device.id) {
        button(device.trusted ? 'Stop trusting' : 'Trust device', 'trust',
          () => this.trust(device.id, !device.trusted));
        button('Forget device', 'forget', () => this.forget(device.id), true);
      }
      item.append(actions);
      return item;
    }

    async _act(work, done) {
      try {
        await work();
        if (done) this._say(done);
        await this.reload();
      } catch (error) {
        if (!this._signedOut) this._say(error.message, true);
      }
    }

    /** Revokes one session. */
    revoke(id) {
      return this._act(() => this._api('DELETE', `v1/sessions/${encodeURIComponent(id)}`), 'Session signed out');
    }

    /** Revokes every session but this one. */
    revokeOthers() {
      return this._act(async () => {
        const answer = await this._api('POST', 'v1/sessions/revoke-all', { except_current: true });
        this._say(`${answer.revoked} other session(s) signed out`);
      });
    }

    /** Trusts (or stops trusting) a device. */
    trust(deviceId, trusted) {
      return this._act(
        () => this._api('POST', `v1/devices/${encodeURIComponent(deviceId)}/trust`, { trusted }),
        trusted ? 'Device trusted' : 'Device no longer trusted',
      );
    }

    /** Forgets a device, signing out its sessions. */
    forget(deviceId) {
      return this._act(() => this._api('DELETE', `v1/devices/${encodeURIComponent(deviceId)}`), 'Device forgotten');
    }

    _becomeSignedOut(message) {
      if (this._signedOut) return;
      this._signedOut = true;
      this._stopStream();
      this._sessions = [];
      this._list.replaceChildren();
      this._revokeOthers.disabled = true;
      this._say(message, true);
      this.dispatchEvent(new CustomEvent('sessiond:signed-out', { bubbles: true, composed: true }));
    }

    _stopStream() {
      if (this._stream) this._stream.abort();
      this._stream = null;
    }

    // EventSource cannot send an Authorization header, so the stream is read with fetch().
    async _openStream() {
      const controller = new AbortController();
      this._stream = controller;
      let retry = this._reconnectDelay;
      try {
        const headers = { Accept: 'text/event-stream', Authorization: `Bearer ${await this._token()}` };
        if (this._lastEventId) headers['Last-Event-ID'] = this._lastEventId;
        const response = await fetch(new URL('v1/events', this._apiBase), { headers, signal: controller.signal });
        if (response.status === 401) {
          this._becomeSignedOut('Your session has ended. Sign in again.');
          return;
        }
        if (!response.ok || !response.body) throw new Error(`events: ${response.status}`);
        this._reconnectDelay = RECONNECT_MIN_MS;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        let data = [];
        let id = null;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let newline;
          while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
            const line = buffer.slice(0, newline);
            buffer = buffer.slice(newline + (buffer.startsWith('\r\n', newline) ? 2 : 1));
            if (line === '') {
              if (id !== null) this._lastEventId = id;
              if (data.length) this._onMessage(data.join('\n'));
              data = [];
              id = null;
              if (this._signedOut) return;
              continue;
            }
            if (line.startsWith(':')) continue;
            const colon = line.indexOf(':');
            const field = colon < 0 ? line : line.slice(0, colon);
            let text = colon < 0 ? '' : line.slice(colon + 1);
            if (text.startsWith(' ')) text = text.slice(1);
            if (field === 'data') data.push(text);
            else if (field === 'id') id = text;
            else if (field === 'retry' && /^\d+$/.test(text)) retry = Number(text);
          }
        }
      } catch (error) {
        if (controller.signal.aborted) return;
      }
      if (this._stream !== controller || this._signedOut) return;
      // The stream ended (a restart, a network change): resume after the last event seen.
      const delay = Math.max(retry, this._reconnectDelay);
      this._reconnectDelay = Math.min(this._reconnectDelay * 2, RECONNECT_MAX_MS);
      setTimeout(() => {
        if (this._stream === controller && !this._signedOut) {
          this.reload();
          this._openStream();
        }
      }, delay);
    }

    _onMessage(text) {
      let event;
      try {
        event = JSON.parse(text);
      } catch (_) {
        return;
      }
      const current = this._sessions.find((session) => session.current);
      switch (event.type) {
        case 'session.revoked':
        case 'session.expired':
          if (current && event.session_id === current.id) {
            this._becomeSignedOut('This session was signed out.');
            return;
          }
          this._sessions = this._sessions.filter((session) => session.id !== event.session_id);
          this._render();
          break;
        case 'stream.closed':
          if (event.reason === 'session_ended') this._becomeSignedOut('This session was signed out.');
          break;
        case 'session.created':
        case 'device.new':
          this._scheduleReload();
          break;
        default:
          break;
      }
    }
  }

  if (!customElements.get('sessiond-sessions')) {
    customElements.define('sessiond-sessions', SessiondSessions);
  }
})();
