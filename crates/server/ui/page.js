// The standalone page of <sessiond-sessions> at /ui/. In cookie mode a SessiondClient signs in
// with the HttpOnly refresh cookie and keeps the session (access token in memory and encrypted
// in IndexedDB, refreshed ahead of expiry, once for every tab); otherwise a pasted access token
// (kept in sessionStorage as `sessiond.access_token`) is handed to the widget as is.
import { SessiondClient } from './sessiond-client.js';

const STORAGE_KEY = 'sessiond.access_token';
const form = document.getElementById('token-form');
const input = document.getElementById('token-input');
const signedIn = document.getElementById('signed-in');
const status = document.getElementById('page-status');
const widget = document.querySelector('sessiond-sessions');
let client = null;

function showForm(message) {
  signedIn.hidden = true;
  form.hidden = false;
  status.textContent = message || '';
}

function showWidget(attach) {
  form.hidden = true;
  signedIn.hidden = false;
  status.textContent = '';
  attach();
}

const pasted = () => sessionStorage.getItem(STORAGE_KEY);

form.addEventListener('submit', (event) => {
  event.preventDefault();
  const token = input.value.trim();
  if (!token) return;
  sessionStorage.setItem(STORAGE_KEY, token);
  input.value = '';
  showWidget(() => { widget.tokenProvider = pasted; });
});

document.getElementById('forget-token').addEventListener('click', () => {
  sessionStorage.removeItem(STORAGE_KEY);
  widget.tokenProvider = null;
  showForm('');
});

widget.addEventListener('sessiond:signed-out', () => {
  sessionStorage.removeItem(STORAGE_KEY);
  status.textContent = 'This session was signed out.';
});

if (pasted()) {
  showWidget(() => { widget.tokenProvider = pasted; });
} else {
  client = new SessiondClient({ mode: 'cookie' });
  let signedInByCookie = false;
  try {
    signedInByCookie = await client.start();
  } catch (_) {
    signedInByCookie = false;
  }
  if (signedInByCookie) showWidget(() => { widget.client = client; });
  else {
    client.close();
    showForm('');
  }
}
