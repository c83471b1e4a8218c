// The standalone page of <sessiond-sessions> at /ui/. The access token comes from, in order:
// sessionStorage (`sessiond.access_token`, which the paste form fills), or in cookie mode a
// refresh by the HttpOnly cookie (POST /v1/sessions/refresh with X-Sessiond-CSRF: 1), whose
// access token is kept in memory only.
(() => {
  'use strict';

  const STORAGE_KEY = 'sessiond.access_token';
  const form = document.getElementById('token-form');
  const input = document.getElementById('token-input');
  const signedIn = document.getElementById('signed-in');
  const status = document.getElementById('page-status');
  const widget = document.querySelector('sessiond-sessions');
  let cookieToken = null;

  /** The `exp` of a JWT, in milliseconds, or 0 when it cannot be read. */
  function expiresAt(token) {
    try {
      const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(atob(payload)).exp * 1000;
    } catch (_) {
      return 0;
    }
  }

  async function refreshByCookie() {
    const response = await fetch('/v1/sessions/refresh', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'X-Sessiond-CSRF': '1' },
    });
    if (!response.ok) return null;
    const pair = await response.json();
    return pair.access_token || null;
  }

  async function tokenProvider() {
    const stored = sessionStorage.getItem(STORAGE_KEY);
    if (stored) return stored;
    if (!cookieToken || expiresAt(cookieToken) - Date.now() < 30000) {
      cookieToken = await refreshByCookie();
    }
    return cookieToken;
  }

  function showForm(message) {
    signedIn.hidden = true;
    form.hidden = false;
    status.textContent = message || '';
  }

  function showWidget() {
    form.hidden = true;
    signedIn.hidden = false;
    status.textContent = '';
    widget.tokenProvider = tokenProvider;
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    sessionStorage.setItem(STORAGE_KEY, token);
    input.value = '';
    showWidget();
  });

  document.getElementById('forget-token').addEventListener('click', () => {
    sessionStorage.removeItem(STORAGE_KEY);
    cookieToken = null;
    showForm('');
  });

  widget.addEventListener('sessiond:signed-out', () => {
    sessionStorage.removeItem(STORAGE_KEY);
    cookieToken = null;
    status.textContent = 'This session was signed out.';
  });

  (async () => {
    if (sessionStorage.getItem(STORAGE_KEY)) {
      showWidget();
      return;
    }
    try {
      cookieToken = await refreshByCookie();
    } catch (_) {
      cookieToken = null;
    }
    if (cookieToken) showWidget();
    else showForm('');
  })();
})();
