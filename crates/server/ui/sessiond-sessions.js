// <sessiond-sessions>: the signed-in user's sessions, live.
//
// An application includes this file from its sessiond server and hands the element either a
// client of @sessiond/client (served next to it as /ui/sessiond-client.js), which then
// refreshes and follows events for the whole page, or a function that returns the user's
// current access token:
//
//   <script src="https://sessions.example.com/ui/sessiond-sessions.js"></script>
//   <sessiond-sessions></sessiond-sessions>
//   document.querySelector('sessiond-sessions').client = client;            // or:
//   document.querySelector('sessiond-sessions').tokenProvider = async () => accessToken;
//
// The element lists the sessions (GET /v1/sessions), revokes one, signs out the others,
// trusts or forgets a device, and follows GET /v1/events (through the client) so that a
// session revoked elsewhere disappears without a reload. When the current session ends it
// says so and dispatches a `sessiond:signed-out` event (bubbling, composed) that the
// application can act on.
//
// The API is the origin this script was loaded from, or the element's `api-base` attribute.
// Everything that comes from the server is written with textContent, never parsed as HTML.
(() => {
  'use strict';

  const SCRIPT_URL = document.currentScript ? document.currentScript.src : location.href;
  // The client is an ES module; a classic script reaches it with a dynamic import.
  let sdk = null;
  const loadSdk = () => (sdk ??= import(new URL('sessiond-client.js', SCRIPT_URL).href));

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
      this._client = null;
      this._ownsClient = false;
      this._unsubscribe = [];
      this._sessions = [];
      this._devices = new Map();
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

    /** The SessiondClient that signs requests and follows the event stream. */
    get client() {
      return this._client;
    }

    set client(client) {
      this._use(client, false);
    }

    /** A function returning (a promise of) the user's access token, for pages without a client. */
    get tokenProvider() {
      return this._tokenProvider;
    }

    set tokenProvider(provider) {
      this._tokenProvider = provider;
      if (!provider) {
        this._use(null, false);
        return;
      }
      loadSdk().then(({ SessiondClient }) => {
        if (this._tokenProvider !== provider) return;
        this._use(new SessiondClient({ baseUrl: this._apiBase, tokenProvider: provider }), true);
      }, (error) => this._say(`Could not load the client: ${error.message}`, true));
    }

    connectedCallback() {
      this._connected = true;
      if (this._client) this._start();
      else if (this._tokenProvider) this.tokenProvider = this._tokenProvider;
    }

    disconnectedCallback() {
      this._connected = false;
      this._detach();
    }

    get _apiBase() {
      return new URL(this.getAttribute('api-base') || '/', SCRIPT_URL);
    }

    _use(client, owned) {
      this._detach();
      this._client = client;
      this._ownsClient = owned;
      this._signedOut = false;
      if (client && this._connected) this._start();
    }

    _detach() {
      for (const unsubscribe of this._unsubscribe) unsubscribe();
      this._unsubscribe = [];
      if (this._ownsClient && this._client) {
        this._client.close();
        this._client = null;
      }
    }

    async _start() {
      const client = this._client;
      for (const unsubscribe of this._unsubscribe) unsubscribe();
      this._unsubscribe = [
        client.on('event', (event) => this._onEvent(event)),
        client.on('signedOut', (out) => this._becomeSignedOut(
          ['revoked', 'expired', 'session_ended'].includes(out.reason)
            ? 'This session was signed out.'
            : 'Your session has ended. Sign in again.')),
        // After a reconnect (a restart, a network change), catch up on what the replay may not say.
        client.on('stream', (state) => state.connected && this._scheduleReload()),
      ];
      await this.reload();
      if (this._ownsClient && !this._signedOut && this._client === client) await client.start();
    }

    async _api(method, path, body) {
      const init = { method };
      if (body !== undefined) {
        init.headers = { 'Content-Type': 'application/json' };
        init.body = JSON.stringify(body);
      }
      const response = await this._client.fetch(new URL(path, this._apiBase), init);
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

    /** Fetches the sessions and devices again and redraws. */
    async reload() {
      if (!this._client) return;
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
      this._refetchTimer = setTimeout(() => {
        if (!this._signedOut && this._client) this.reload();
      }, 200);
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
      this._sessions = [];
      this._list.replaceChildren();
      this._revokeOthers.disabled = true;
      this._say(message, true);
      this.dispatchEvent(new CustomEvent('sessiond:signed-out', { bubbles: true, composed: true }));
    }

    _onEvent(event) {
      switch (event.type) {
        case 'session.revoked':
        case 'session.expired':
          // The client signs out for the current session; other sessions just leave the list.
          this._sessions = this._sessions.filter((session) => session.id !== event.session_id);
          if (!this._signedOut) this._render();
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
