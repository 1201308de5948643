/*
 * Modelvault console: a vanilla JS single page over the governed API.
 *
 * Invariants (the server's Content-Security-Policy relies on them):
 *  - No HTML-string DOM APIs (no inner/outer HTML setters, no adjacent-HTML
 *    insertion, no document writes), no string-to-code evaluation, no inline
 *    styles. Every node is built with h() and every stored string (names,
 *    tags, reasons, principals) is a text node, never markup.
 *  - Every state-changing request (POST/PUT/PATCH/DELETE) carries the
 *    session's X-CSRF-Token header and a JSON body ({} if none).
 *  - No token is ever stored by this script (no web storage, never in a
 *    URL). The session is an HttpOnly cookie the browser sends by itself.
 */
'use strict';

(() => {
  // ---------------------------------------------------------------- DOM helpers
  const $ = (sel) => document.querySelector(sel);

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  // add(el, ...children): like Element.append, but null, undefined and
  // false add nothing (Element.append would add the text "null").
  const add = (el, ...children) => append(el, children);

  // h(tag, attrs, ...children): string children become text nodes;
  // attributes named onX with a function value become event listeners.
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') el.className = Array.isArray(v) ? v.filter(Boolean).join(' ') : v;
      else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    return append(el, children);
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  const enc = encodeURIComponent;
  const dash = '—';

  function time(s) {
    if (!s) return dash;
    const d = new Date(s);
    if (Number.isNaN(d.getTime())) return String(s);
    return h('time', { datetime: d.toISOString() }, d.toLocaleString());
  }

  function humanSize(n) {
    if (typeof n !== 'number' || !Number.isFinite(n)) return n == null ? dash : String(n);
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
  }

  // Plain text for any JSON value.
  function txt(v) {
    if (v === null || v === undefined || v === '') return dash;
    if (typeof v === 'string') return v;
    if (typeof v === 'number' || typeof v === 'boolean') return String(v);
    return JSON.stringify(v);
  }

  // A value that may be a timestamp (RFC 3339) or anything else.
  function val(v) {
    if (typeof v === 'string' && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/.test(v)) return time(v);
    return txt(v);
  }

  const safeClass = (s) => String(s || 'unknown').toLowerCase().replace(/[^a-z0-9_-]/g, '');

  function sensBadge(level) {
    return h('span', { class: `badge sens-${safeClass(level)}` }, level || 'unknown');
  }

  function tagChips(tags) {
    const entries = Object.entries(tags || {});
    if (!entries.length) return dash;
    return h('span', { class: 'tags' }, entries.map(([k, v]) => h('span', { class: 'tag' }, `${k}=${txt(v)}`)));
  }

  function metaValue(v) {
    if (v === '[redacted]') return h('span', { class: 'redacted' }, '[redacted]');
    return txt(v);
  }

  function dl(obj, id) {
    const entries = Object.entries(obj || {});
    if (!entries.length) return h('p', { id, class: 'muted' }, 'None.');
    return h('dl', { id, class: 'kv' }, entries.map(([k, v]) => [h('dt', null, k), h('dd', null, metaValue(v))]));
  }

  function facts(pairs) {
    return h('dl', { class: 'kv facts' }, pairs.map(([k, v]) => [h('dt', null, k), h('dd', null, v)]));
  }

  // A table wider than its column scrolls inside its wrapper. A scrolling
  // region must be reachable by keyboard (WCAG 2.1.1), so the wrapper is a
  // focusable, labelled region exactly while it scrolls (not a tab stop
  // otherwise). Both the wrapper and the table are observed: rows added
  // later change the table's size, a narrower window the wrapper's.
  const scrolling = new ResizeObserver((entries) => {
    for (const { target } of entries) {
      const wrap = target.classList.contains('table-wrap') ? target : target.parentElement;
      if (!wrap) continue;
      if (wrap.scrollWidth > wrap.clientWidth) {
        wrap.setAttribute('tabindex', '0');
        wrap.setAttribute('role', 'region');
        wrap.setAttribute('aria-label', wrap.dataset.label);
      } else {
        wrap.removeAttribute('tabindex');
        wrap.removeAttribute('role');
        wrap.removeAttribute('aria-label');
      }
    }
  });

  function table(id, headers, rows, opts = {}) {
    const body = rows.length ? rows
      : [h('tr', null, h('td', { colspan: headers.length, class: 'empty' }, opts.empty || 'None.'))];
    const tbody = h('tbody', null, body);
    const t = h('table', { id, class: opts.class },
      opts.caption ? h('caption', null, opts.caption) : null,
      h('thead', null, h('tr', null, headers.map((x) => h('th', { scope: 'col' }, x)))),
      tbody);
    const label = opts.label || opts.caption || `Table: ${headers.join(', ')}`;
    const wrap = h('div', { class: 'table-wrap', 'data-label': `${label} (scrolls sideways)` }, t);
    scrolling.observe(wrap);
    scrolling.observe(t);
    return wrap;
  }

  const tr = (cells, attrs) => h('tr', attrs, cells.map((c) => h('td', null, c)));

  function safeHref(u) {
    try {
      const url = new URL(u, location.href);
      if (url.origin === location.origin || url.protocol === 'https:') return url.href;
    } catch (_) { /* fall through */ }
    return null;
  }

  function download(filename, text, mime) {
    const url = URL.createObjectURL(new Blob([text], { type: mime }));
    const a = h('a', { href: url, download: filename, class: 'hidden' });
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  const modelHash = (ns, name) => `#/models/${enc(ns)}/${enc(name)}`;
  const versionHash = (ns, name, v) => `${modelHash(ns, name)}/versions/${enc(v)}`;
  const modelApi = (ns, name) => `/v1/models/${enc(ns)}/${enc(name)}`;
  const versionApi = (ns, name, v) => `${modelApi(ns, name)}/versions/${enc(v)}`;

  // ---------------------------------------------------------------- messages
  function setStatus(msg) { $('#status').textContent = msg || ''; }

  function errorText(e) {
    let s = (e && e.message) || 'Request failed.';
    if (e && e.plugin) s += ` — denied by policy ${e.plugin}${e.reason_code ? ` (${e.reason_code})` : ''}`;
    return s;
  }

  function setError(e) {
    const el = $('#error');
    el.textContent = typeof e === 'string' ? e : errorText(e);
    el.classList.remove('hidden');
  }

  function clearError() {
    const el = $('#error');
    el.textContent = '';
    el.classList.add('hidden');
  }

  // ---------------------------------------------------------------- API
  let session = null; // {csrf_token, expires_at, whoami}; never holds the API token

  class ApiError extends Error {
    constructor(status, body, statusText) {
      const err = (body && body.error) || {};
      super(err.message || `${status} ${statusText || 'error'}`);
      this.status = status;
      this.code = err.code;
      this.plugin = err.plugin;
      this.reason_code = err.reason_code;
    }
  }

  async function api(method, path, body) {
    const opts = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (method !== 'GET' && method !== 'HEAD') {
      opts.headers['Content-Type'] = 'application/json';
      if (session && session.csrf_token) opts.headers['X-CSRF-Token'] = session.csrf_token;
      opts.body = JSON.stringify(body === undefined ? {} : body);
    }
    let res;
    try {
      res = await fetch(path, opts);
    } catch (_) {
      throw new ApiError(0, { error: { message: 'The server could not be reached.' } });
    }
    const text = res.status === 204 ? '' : await res.text();
    let data = null;
    if (text) { try { data = JSON.parse(text); } catch (_) { data = null; } }
    if (!res.ok) throw new ApiError(res.status, data, res.statusText);
    return data;
  }

  // ---------------------------------------------------------------- routing
  const STALE = Symbol('stale');
  let renderSeq = 0;
  let keysTimer = null;

  function stopTimer() {
    if (keysTimer) { clearTimeout(keysTimer); keysTimer = null; }
  }

  // A GET that is abandoned (throws STALE) if the user navigated meanwhile.
  async function get(seq, path) {
    const d = await api('GET', path);
    if (seq !== renderSeq) throw STALE;
    return d;
  }

  function parseRoute() {
    const hash = location.hash;
    if (!hash.startsWith('#/')) return null;
    return hash.slice(2).split('/').filter((p) => p !== '').map((p) => {
      try { return decodeURIComponent(p); } catch (_) { return p; }
    });
  }

  function navigate(hash) {
    if (location.hash === hash) route();
    else location.hash = hash;
  }

  function page(title, heading) {
    document.title = `${title} · Modelvault`;
    const main = clear($('#main'));
    main.appendChild(h('h1', null, heading || title));
    return main;
  }

  function loading(main) {
    const p = h('p', { class: 'loading muted' }, 'Loading…');
    main.appendChild(p);
    return p;
  }

  function markNav(first) {
    for (const a of document.querySelectorAll('#nav a')) {
      if (a.getAttribute('href') === `#/${first}`) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
  }

  async function route(focusId) {
    stopTimer();
    if (!session) return;
    const parts = parseRoute();
    if (!parts) return;
    const seq = ++renderSeq;
    clearError();
    markNav(parts[0] || '');
    try {
      const [a, b, c, d, e] = parts;
      if (a === 'models' && parts.length === 1) await pageModels(seq);
      else if (a === 'models' && parts.length === 3) await pageModel(seq, b, c);
      else if (a === 'models' && parts.length === 5 && d === 'versions') await pageVersion(seq, b, c, e);
      else if (a === 'approvals' && parts.length === 1) await pageInbox(seq);
      else if (a === 'audit' && parts.length === 1) await pageAudit(seq);
      else if (a === 'access' && parts.length === 1) await pageAccess(seq);
      else if (a === 'policies' && parts.length === 1) await pagePolicies(seq);
      else if (a === 'keys' && parts.length === 1) await pageKeys(seq);
      else if (parts.length === 0) { navigate('#/models'); return; } else pageNotFound();
      if (focusId) { const el = document.getElementById(focusId); if (el) el.focus(); }
    } catch (err) {
      if (err === STALE || seq !== renderSeq) return;
      handleError(err, true);
    }
  }

  // 401 anywhere: the sign-in page. Other errors: in the page and in #error.
  function handleError(err, inPage) {
    if (err && err.status === 401) { showSignin(); return; }
    if (inPage) {
      const main = $('#main');
      for (const l of main.querySelectorAll('.loading')) l.remove();
      main.appendChild(h('p', { class: 'page-error' }, errorText(err)));
    }
    setError(err);
  }

  function pageNotFound() {
    const main = page('Not found', 'Page not found');
    main.appendChild(h('p', null, 'There is no such page. ', h('a', { href: '#/models' }, 'Go to models'), '.'));
  }

  // ---------------------------------------------------------------- session
  function showSignedIn() {
    const w = session.whoami || {};
    $('#whoami').textContent = w.environment ? `${w.id || ''} (${w.environment})` : String(w.id || '');
    $('#nav').classList.remove('hidden');
    $('#session-box').classList.remove('hidden');
  }

  function showSignin() {
    stopTimer();
    renderSeq += 1;
    session = null;
    $('#nav').classList.add('hidden');
    $('#session-box').classList.add('hidden');
    $('#whoami').textContent = '';
    const main = page('Sign in', 'Sign in');
    const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false' });
    const form = h('form', { id: 'signin-form', class: 'stack', novalidate: true },
      h('div', { class: 'field' }, h('label', { for: 'token' }, 'API token'), input),
      h('button', { type: 'submit', id: 'signin' }, 'Sign in'));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const token = input.value.trim();
      if (!token) { setError('Enter an API token.'); input.focus(); return; }
      const btn = $('#signin');
      btn.disabled = true;
      try {
        const s = await api('POST', '/ui/api/session', { token });
        input.value = '';
        session = s;
        clearError();
        setStatus('Signed in.');
        showSignedIn();
        navigate('#/models');
      } catch (err) {
        input.value = '';
        btn.disabled = false;
        setError(err.status === 401 ? (err.message && !/^401 /.test(err.message) ? err.message : 'The token was not accepted.') : errorText(err));
        input.focus();
      }
    });
    const issuers = h('ul', { id: 'oidc-issuers', class: 'issuers' });
    add(main, form, h('h2', null, 'Single sign-on'), issuers);
    api('GET', '/ui/api/login-options').then((opts) => {
      for (const i of (opts && opts.issuers) || []) {
        const href = safeHref(i.login_url);
        if (!href) continue;
        issuers.appendChild(h('li', null, h('a', { class: 'button-link', href }, `Sign in with ${i.issuer}`)));
      }
      if (!issuers.children.length) issuers.appendChild(h('li', { class: 'muted' }, 'No single sign-on issuers are configured.'));
    }).catch(() => {
      issuers.appendChild(h('li', { class: 'muted' }, 'Single sign-on options are unavailable.'));
    });
  }

  async function signOut() {
    try {
      await api('DELETE', '/ui/api/session', {});
      setStatus('Signed out.');
    } catch (err) {
      if (err.status !== 401) { setError(err); return; }
    }
    showSignin();
  }

  // ---------------------------------------------------------------- models
  async function pageModels(seq) {
    const main = page('Models');
    const wait = loading(main);
    const data = await get(seq, '/v1/models');
    wait.remove();
    const models = (data && data.models) || [];
    const filter = h('input', { id: 'model-filter', type: 'search', autocomplete: 'off' });
    const count = h('p', { class: 'muted', id: 'model-count' });
    const rows = models.map((m) => {
      const tags = Object.entries(m.tags || {}).map(([k, v]) => `${k}=${txt(v)}`).join(' ');
      const row = tr([
        m.namespace,
        h('a', { class: 'model-link', href: modelHash(m.namespace, m.name) }, m.name),
        sensBadge(m.sensitivity),
        tagChips(m.tags),
        txt(m.owner),
        time(m.created_at),
      ]);
      row.dataset.search = [m.namespace, m.name, m.sensitivity, m.owner, tags].join(' ').toLowerCase();
      return row;
    });
    const apply = () => {
      const q = filter.value.trim().toLowerCase();
      let shown = 0;
      for (const r of rows) {
        const hit = !q || r.dataset.search.includes(q);
        r.classList.toggle('hidden', !hit);
        if (hit) shown += 1;
      }
      count.textContent = `${shown} of ${rows.length} models`;
    };
    filter.addEventListener('input', apply);
    add(main, 
      h('div', { class: 'field' }, h('label', { for: 'model-filter' }, 'Filter models'), filter),
      count,
      table('models-table', ['Namespace', 'Name', 'Sensitivity', 'Tags', 'Owner', 'Created'], rows, { empty: 'No models are visible to you.' }));
    apply();
  }

  async function pageModel(seq, ns, name) {
    const main = page(`${ns}/${name}`);
    const wait = loading(main);
    const [m, deps] = await Promise.all([
      get(seq, modelApi(ns, name)),
      get(seq, `${modelApi(ns, name)}/deployments`).catch((e) => {
        if (e === STALE || e.status === 401) throw e;
        return { error: e };
      }),
    ]);
    wait.remove();
    add(main, 
      facts([
        ['Sensitivity', sensBadge(m.sensitivity)],
        ['Owner', txt(m.owner)],
        ['Created', time(m.created_at)],
        ['Revision', txt(m.revision)],
        ['Tags', tagChips(m.tags)],
        ['Sensitive fields', (m.sensitive_fields || []).length ? m.sensitive_fields.join(', ') : dash],
      ]),
      h('h2', null, 'Metadata'), dl(m.metadata, 'model-metadata'),
      h('h2', null, 'Versions'),
      table('versions-table', ['Version', 'Uploader', 'Created', 'Files', 'Total size'],
        (m.versions || []).map((v) => tr([
          h('a', { class: 'version-link', href: versionHash(ns, name, v.version) }, v.version),
          txt(v.uploader), time(v.created_at), txt(v.file_count), humanSize(v.total_size),
        ])), { empty: 'No versions uploaded.' }),
      m.older_versions
        ? h('p', { id: 'older-versions', class: 'muted' }, `The newest ${(m.versions || []).length} versions; older ones are not shown (modelvault model show --versions N lists up to 1000).`)
        : null,
      h('h2', null, 'Deployments'),
      deps.error ? h('p', { class: 'page-error' }, errorText(deps.error))
        : table('deployments-table', ['Version', 'Environment', 'Deployer', 'Time'],
          ((deps && deps.deployments) || []).map((d) => tr([
            h('a', { href: versionHash(ns, name, d.version) }, d.version),
            txt(d.environment), txt(d.deployer), time(d.time),
          ])), { empty: 'Not deployed anywhere.' }));
  }

  async function pageVersion(seq, ns, name, version) {
    const main = page(`${ns}/${name}@${version}`);
    const wait = loading(main);
    const v = await get(seq, versionApi(ns, name, version));
    wait.remove();
    const me = (session && session.whoami) || {};
    const env = me.environment;
    const approvals = v.approvals || [];
    const mine = env && approvals.some((a) => a.approver === me.id && a.environment === env);

    const act = async (btn, method, path, body, done) => {
      btn.disabled = true;
      clearError();
      try {
        await api(method, path, body);
        setStatus(done);
        await route(btn.id);
      } catch (err) {
        btn.disabled = false;
        if (err.status === 401) showSignin(); else setError(err);
      }
    };
    const actions = h('div', { class: 'actions' });
    if (env) {
      const approve = h('button', { type: 'button', id: 'approve' }, `Approve for ${env}`);
      approve.addEventListener('click', () => act(approve, 'POST', `${versionApi(ns, name, version)}/approvals`,
        { environment: env }, `Approved ${ns}/${name}@${version} for ${env}.`));
      actions.appendChild(approve);
      if (mine) {
        const revoke = h('button', { type: 'button', id: 'revoke-approval', class: 'secondary' }, 'Revoke my approval');
        revoke.addEventListener('click', () => act(revoke, 'DELETE',
          `${versionApi(ns, name, version)}/approvals/${enc(env)}`, {},
          `Revoked your approval of ${ns}/${name}@${version} for ${env}.`));
        actions.appendChild(revoke);
      }
    } else {
      actions.appendChild(h('p', { class: 'muted' }, 'Your session has no environment, so you cannot approve.'));
    }

    add(main, 
      h('p', null, h('a', { href: modelHash(ns, name) }, `Back to ${ns}/${name}`)),
      facts([
        ['Sensitivity', sensBadge(v.sensitivity)],
        ['Uploader', txt(v.uploader)],
        ['Created', time(v.created_at)],
        ['Stage', txt(v.stage || 'candidate')],
        ['Key generation', txt(v.dek_generation)],
        ['Tags', tagChips(v.tags)],
      ]),
      h('h2', null, 'Files'),
      table('files-table', ['Path', 'Size', 'SHA-256'], (v.files || []).map((f) => tr([
        txt(f.path), humanSize(f.size), h('code', null, txt(f.sha256)),
      ])), { empty: 'No files.' }),
      h('h2', null, 'Version metadata'), dl(v.version_metadata, 'version-metadata'),
      h('h2', null, 'Model metadata'), dl(v.metadata, 'model-metadata'),
      h('h2', null, 'Approvals'),
      h('ul', { id: 'approvals-list' }, approvals.map((a) => h('li', null,
        h('span', { class: 'approver' }, txt(a.approver)), ' — ',
        h('span', { class: 'env' }, txt(a.environment)), ' — ',
        h('span', { class: 'kind' }, txt(a.kind || 'review')), ' — ', time(a.time)))),
      approvals.length ? null : h('p', { class: 'muted' }, 'No approvals yet.'),
      actions,
      h('h2', null, 'Deployments'),
      table('version-deployments-table', ['Environment', 'Deployer', 'Time'], (v.deployments || []).map((d) => tr([
        txt(d.environment), txt(d.deployer), time(d.time),
      ])), { empty: 'Not deployed anywhere.' }));

    const section = h('section', { id: 'who-can-download', 'aria-labelledby': 'who-heading' },
      h('h2', { id: 'who-heading' }, `Who can download this in ${env || 'an environment'}`));
    main.appendChild(section);
    const wait2 = loading(section);
    let review;
    try {
      review = await get(seq, `/v1/access/review?namespace=${enc(ns)}&model=${enc(name)}&version=${enc(version)}`);
    } catch (err) {
      if (err === STALE) throw err;
      if (err.status === 401) { showSignin(); return; }
      wait2.remove();
      section.appendChild(err.status === 403
        ? h('p', { class: 'muted' }, 'Who can download a version comes from the access review, which needs the audit-read permission for all namespaces (auditors and admins). ', h('span', { class: 'detail' }, errorText(err)))
        : h('p', { class: 'page-error' }, errorText(err)));
      return;
    }
    wait2.remove();
    const access = ((review && review.versions) || [])
      .filter((x) => (x.namespace == null || x.namespace === ns) && (x.model == null || x.model === name)
        && (x.version == null || String(x.version) === String(version)))
      .flatMap((x) => x.access || []);
    const envs = [...new Set(access.map((a) => a.environment).filter(Boolean))];
    if (env && !envs.includes(env)) envs.unshift(env);
    const select = h('select', { id: 'review-env' }, envs.map((e) => h('option', { value: e }, e)));
    if (env) select.value = env;
    const holder = h('div');
    const draw = () => {
      const e = select.value;
      section.querySelector('h2').textContent = `Who can download this in ${e || 'an environment'}`;
      clear(holder).appendChild(table('who-table', ['Principal', 'Via', 'Policy', 'Downloads', 'Last download'],
        access.filter((a) => a.environment === e).map((a) => tr([
          h('span', null, txt(a.principal), a.kind ? h('span', { class: 'muted' }, ` (${a.kind})`) : null),
          (a.via || []).length ? a.via.map(txt).join(', ') : dash,
          h('span', { class: `policy policy-${safeClass(a.policy)}` }, txt(a.policy), a.reason_code ? ` (${a.reason_code})` : ''),
          txt(a.downloads), time(a.last_download),
        ])), { empty: 'No one can download this version in that environment.' }));
    };
    select.addEventListener('change', draw);
    add(section, h('div', { class: 'field' }, h('label', { for: 'review-env' }, 'Environment'), select), holder);
    draw();
  }

  // ---------------------------------------------------------------- approvals inbox
  async function pageInbox(seq) {
    const main = page('Approvals', 'Approvals inbox');
    const wait = loading(main);
    const data = await get(seq, '/v1/approvals/inbox');
    wait.remove();
    const items = (data && data.items) || [];
    if (!items.length) {
      main.appendChild(h('p', { id: 'inbox-empty' }, 'Nothing is waiting for your approval.'));
      return;
    }
    const rows = items.map((it, i) => {
      const label = `${it.namespace}/${it.model}@${it.version}`;
      const relevant = (it.approvals || []).filter((a) => !it.environment || !a.environment || a.environment === it.environment);
      const base = `${versionApi(it.namespace, it.model, it.version)}/approvals`;
      const btn = it.you_approved
        ? h('button', { type: 'button', class: 'revoke-btn secondary', id: `inbox-btn-${i}`, 'aria-label': `Revoke approval of ${label} for ${it.environment}` }, 'Revoke')
        : h('button', { type: 'button', class: 'approve-btn', id: `inbox-btn-${i}`, 'aria-label': `Approve ${label} for ${it.environment}` }, 'Approve');
      btn.addEventListener('click', async () => {
        btn.disabled = true;
        clearError();
        try {
          if (it.you_approved) {
            await api('DELETE', `${base}/${enc(it.environment)}`, {});
            setStatus(`Revoked your approval of ${label} for ${it.environment}.`);
          } else {
            await api('POST', base, { environment: it.environment });
            setStatus(`Approved ${label} for ${it.environment}.`);
          }
          await route(btn.id);
        } catch (err) {
          btn.disabled = false;
          if (err.status === 401) showSignin(); else setError(err);
        }
      });
      return tr([
        h('a', { href: versionHash(it.namespace, it.model, it.version) }, label),
        txt(it.uploader), time(it.created_at), txt(it.environment),
        h('span', null, `${it.plugin || 'policy'}: ${it.rule || dash}`, h('br'),
          `${relevant.length} of ${it.required == null ? '?' : it.required}`),
        relevant.length ? relevant.map((a) => a.approver).join(', ') : dash,
        btn,
      ]);
    });
    main.appendChild(table('inbox-table', ['Model', 'Uploader', 'Created', 'Environment', 'Rule', 'Approvers so far', 'Action'], rows));
  }

  // ---------------------------------------------------------------- audit
  const OUTCOMES = ['allowed', 'denied', 'unauthenticated', 'not_found', 'rejected', 'error', 'complete', 'aborted'];

  function resourceText(r) {
    if (!r) return dash;
    let s = '';
    if (r.namespace && r.model) s = `${r.namespace}/${r.model}`;
    else if (r.model) s = r.model;
    else if (r.namespace) s = r.namespace;
    if (r.version) s += `@${r.version}`;
    if (r.file) s += ` ${r.file}`;
    if (r.name) s += s ? ` ${r.name}` : r.name;
    return s.trim() || dash;
  }

  let auditRowId = 0;
  function auditRows(rec) {
    const id = `audit-detail-${++auditRowId}`;
    const decisions = rec.decisions || [];
    const btn = h('button', { type: 'button', class: 'decisions-btn secondary small', 'aria-expanded': 'false', 'aria-controls': id },
      `Decisions (${decisions.length})`);
    const detail = h('tr', { id, class: 'detail-row hidden' }, h('td', { colspan: 8 },
      decisions.length ? h('ul', { class: 'decisions' }, decisions.map((d) => h('li', null,
        h('strong', null, txt(d.plugin)), ` · mode ${txt(d.mode)} · ${txt(d.outcome)}`,
        d.reason_code ? ` · ${d.reason_code}` : '', d.reason ? ` · ${d.reason}` : '',
        d.sha256 ? [' · ', h('code', { title: d.sha256 }, String(d.sha256).slice(0, 12))] : '')))
        : h('p', { class: 'muted' }, 'No policy decisions recorded.'),
      rec.request_id ? h('p', null, `Request ${rec.request_id} · ${txt(rec.chain)} #${txt(rec.seq)}`) : null,
      rec.detail != null ? h('p', null, 'Detail: ', txt(rec.detail)) : null));
    btn.addEventListener('click', () => {
      const open = btn.getAttribute('aria-expanded') === 'true';
      btn.setAttribute('aria-expanded', String(!open));
      detail.classList.toggle('hidden', open);
    });
    const p = rec.principal || {};
    return [tr([
      time(rec.time), txt(p.id), txt(rec.action), resourceText(rec.resource),
      h('span', { class: `outcome outcome-${safeClass(rec.outcome)}` }, txt(rec.outcome)),
      txt(rec.status), txt(rec.channel), btn,
    ]), detail];
  }

  async function pageAudit(seq) {
    const main = page('Audit');
    const field = (id, label, input) => h('div', { class: 'field' }, h('label', { for: id }, label), input);
    const fPrincipal = h('input', { id: 'f-principal', type: 'text', autocomplete: 'off' });
    const fAction = h('input', { id: 'f-action', type: 'text', autocomplete: 'off' });
    const fOutcome = h('select', { id: 'f-outcome' }, h('option', { value: '' }, 'any'), OUTCOMES.map((o) => h('option', { value: o }, o)));
    const fModel = h('input', { id: 'f-model', type: 'text', autocomplete: 'off', placeholder: 'namespace/name' });
    const fSince = h('input', { id: 'f-since', type: 'datetime-local' });
    const fUntil = h('input', { id: 'f-until', type: 'datetime-local' });
    const form = h('form', { id: 'audit-form', class: 'filters' },
      field('f-principal', 'Principal', fPrincipal), field('f-action', 'Action', fAction),
      field('f-outcome', 'Outcome', fOutcome), field('f-model', 'Model (NS/NAME)', fModel),
      field('f-since', 'Since', fSince), field('f-until', 'Until', fUntil),
      h('div', { class: 'field buttons' }, h('button', { type: 'submit', id: 'audit-search' }, 'Search')));
    const tableWrap = table('audit-table', ['Time', 'Principal', 'Action', 'Resource', 'Outcome', 'Status', 'Channel', 'Decisions'], []);
    const tbody = tableWrap.querySelector('tbody');
    const more = h('button', { type: 'button', id: 'audit-more', class: 'secondary hidden' }, 'Load more');
    const exp = h('button', { type: 'button', id: 'audit-export', class: 'secondary' }, 'Export JSON lines');
    const verify = h('section', { id: 'audit-verify', 'aria-labelledby': 'verify-heading' }, h('h2', { id: 'verify-heading' }, 'Chain verification'));
    add(main, form, h('h2', null, 'Records'), tableWrap, h('div', { class: 'actions' }, more, exp), verify);

    let filter = {};
    let cursor = null;
    const query = (extra) => {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries({ ...filter, ...extra })) if (v !== '' && v != null) q.set(k, v);
      return `/v1/audit?${q.toString()}`;
    };
    const readFilter = () => {
      const iso = (s) => { if (!s) return ''; const d = new Date(s); return Number.isNaN(d.getTime()) ? '' : d.toISOString(); };
      return {
        principal: fPrincipal.value.trim(), action: fAction.value.trim(), outcome: fOutcome.value,
        model: fModel.value.trim(), since: iso(fSince.value), until: iso(fUntil.value),
      };
    };
    const load = async (append_) => {
      const data = await get(seq, query({ limit: 50, cursor: append_ ? cursor : '' }));
      if (!append_) clear(tbody);
      const records = (data && data.records) || [];
      for (const r of records) add(tbody, auditRows(r));
      if (!tbody.children.length) tbody.appendChild(h('tr', null, h('td', { colspan: 8, class: 'empty' }, 'No records match.')));
      cursor = (data && data.next_cursor) || null;
      more.classList.toggle('hidden', !cursor);
      return records.length;
    };
    const run = async (fn) => {
      clearError();
      try { await fn(); } catch (err) { if (err !== STALE) handleError(err, false); }
    };
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      filter = readFilter();
      run(async () => { const n = await load(false); setStatus(`${n} audit records loaded.`); });
    });
    more.addEventListener('click', () => run(async () => {
      more.disabled = true;
      try { const n = await load(true); setStatus(`${n} more audit records loaded.`); } finally { more.disabled = false; }
    }));
    exp.addEventListener('click', () => run(async () => {
      exp.disabled = true;
      setStatus('Exporting audit records…');
      try {
        const lines = [];
        let c = '';
        const seen = new Set();
        for (;;) {
          const data = await get(seq, query({ limit: 1000, cursor: c }));
          for (const r of (data && data.records) || []) lines.push(JSON.stringify(r));
          c = data && data.next_cursor;
          if (!c || seen.has(c)) break;
          seen.add(c);
        }
        download('audit.jsonl', lines.length ? `${lines.join('\n')}\n` : '', 'application/x-ndjson');
        setStatus(`Exported ${lines.length} audit records to audit.jsonl.`);
      } finally { exp.disabled = false; }
    }));

    const verifyDone = (async () => {
      const wait = loading(verify);
      try {
        const v = await get(seq, '/v1/audit/verify');
        wait.remove();
        add(verify, 
          h('p', { id: 'verify-ok', class: v.ok ? 'ok' : 'problem' }, v.ok ? 'All chains verify' : 'Problems found'),
          table('verify-table', ['Chain', 'Records', 'Last seq', 'Verified to', 'Status', 'Open intents'],
            (v.chains || []).map((c) => tr([
              txt(c.chain), txt(c.records), txt(c.last_seq), val(c.verified_to),
              c.problem ? h('span', { class: 'problem' }, `PROBLEM ${txt(c.problem.kind)}: ${txt(c.problem.message)}`,
                c.problem.seq != null ? ` (seq ${c.problem.seq})` : '')
                : h('span', { class: 'ok' }, 'ok'),
              String((c.open_intents || []).length),
            ])), { empty: 'No chains.' }));
      } catch (err) {
        if (err === STALE) return;
        if (err.status === 401) { showSignin(); return; }
        wait.remove();
        verify.appendChild(h('p', { class: 'page-error' }, errorText(err)));
      }
    })();
    await load(false);
    await verifyDone;
  }

  // ---------------------------------------------------------------- access review
  const accessHeaders = ['Principal', 'Kind', 'Environment', 'Via', 'Can read', 'Download permission', 'Policy', 'Downloads', 'Last download'];

  function accessCells(a) {
    return [a.principal, a.kind, a.environment, (a.via || []).join(', '), a.can_read ? 'yes' : 'no',
      txt(a.download_permission), `${txt(a.policy)}${a.reason_code ? ` (${a.reason_code})` : ''}`,
      a.downloads, a.last_download];
  }

  function mdCell(v) {
    return txt(v).replace(/\\/g, '\\\\').replace(/\|/g, '\\|').replace(/\r?\n/g, ' ');
  }

  function reviewMarkdown(r) {
    const unused = new Set(r.unused_access || []);
    const out = ['# Access review', '', `Generated: ${txt(r.generated_at)}`, `Since: ${txt(r.since)}`, ''];
    for (const v of r.versions || []) {
      out.push(`## ${v.namespace}/${v.model}@${v.version} (${txt(v.sensitivity)})`, '');
      out.push(`| ${accessHeaders.join(' | ')} | Unused |`, `|${accessHeaders.map(() => '---').join('|')}|---|`);
      for (const a of v.access || []) {
        out.push(`| ${accessCells(a).map(mdCell).join(' | ')} | ${unused.has(a.principal) ? 'unused' : ''} |`);
      }
      if ((v.downloaded_without_access_today || []).length) {
        out.push('', `Downloaded without access today: ${v.downloaded_without_access_today.map(txt).join(', ')}`);
      }
      out.push('');
    }
    out.push('## Unused access', '');
    for (const p of r.unused_access || []) out.push(`- ${txt(p)}`);
    if (!(r.unused_access || []).length) out.push('None.');
    out.push('', '## Expiring tokens', '', '| Name | Principal | Expires | Status |', '|---|---|---|---|');
    for (const t of r.expiring_tokens || []) {
      out.push(`| ${[t.name, t.principal, t.expires_at, t.expired ? 'expired' : 'expiring'].map(mdCell).join(' | ')} |`);
    }
    out.push('', '## Group bindings', '', '| Subject | Role | Namespaces |', '|---|---|---|');
    for (const g of r.group_bindings || []) {
      out.push(`| ${[g.subject, g.role, (g.namespaces || []).join(', ')].map(mdCell).join(' | ')} |`);
    }
    if ((r.notes || []).length) {
      out.push('', '## Notes', '');
      for (const n of r.notes) out.push(`- ${txt(n)}`);
    }
    return `${out.join('\n')}\n`;
  }

  async function pageAccess(seq) {
    const main = page('Access review');
    const wait = loading(main);
    const r = await get(seq, '/v1/access/review');
    wait.remove();
    const unused = new Set(r.unused_access || []);
    const bJson = h('button', { type: 'button', id: 'review-json', class: 'secondary' }, 'Download review.json');
    const bMd = h('button', { type: 'button', id: 'review-md', class: 'secondary' }, 'Download review.md');
    bJson.addEventListener('click', () => {
      download('review.json', `${JSON.stringify(r, null, 2)}\n`, 'application/json');
      setStatus('Downloaded review.json.');
    });
    bMd.addEventListener('click', () => {
      download('review.md', reviewMarkdown(r), 'text/markdown');
      setStatus('Downloaded review.md.');
    });
    add(main, 
      facts([['Generated', time(r.generated_at)], ['Activity since', val(r.since)]]),
      h('div', { class: 'actions' }, bJson, bMd));
    for (const v of r.versions || []) {
      const label = `${v.namespace}/${v.model}@${v.version}`;
      const rows = (v.access || []).map((a) => {
        const cells = accessCells(a).map((c, i) => (i === 8 ? time(c) : txt(c)));
        if (unused.has(a.principal)) cells[0] = h('span', null, txt(a.principal), ' ', h('span', { class: 'marker' }, 'unused'));
        return tr(cells, { class: unused.has(a.principal) ? 'unused' : null });
      });
      add(main, h('section', { class: 'review-version' },
        h('h2', null, h('a', { href: versionHash(v.namespace, v.model, v.version) }, label), ' ', sensBadge(v.sensitivity)),
        table(null, accessHeaders, rows, { class: 'access-table', empty: 'No one has access.', label: `Who can access ${label}` }),
        (v.downloaded_without_access_today || []).length
          ? h('p', { class: 'problem' }, 'Downloaded without access today: ', v.downloaded_without_access_today.map(txt).join(', '))
          : null));
    }
    if (!(r.versions || []).length) main.appendChild(h('p', { class: 'muted' }, 'No versions in the report.'));
    add(main, 
      h('section', { id: 'unused-access', 'aria-labelledby': 'unused-heading' },
        h('h2', { id: 'unused-heading' }, 'Unused access'),
        unused.size ? h('ul', null, [...unused].map((p) => h('li', null, txt(p))))
          : h('p', { class: 'muted' }, 'None.')),
      h('section', { id: 'expiring-tokens', 'aria-labelledby': 'expiring-heading' },
        h('h2', { id: 'expiring-heading' }, 'Expiring tokens'),
        table(null, ['Name', 'Principal', 'Expires', 'Status'], (r.expiring_tokens || []).map((t) => tr([
          txt(t.name), txt(t.principal), time(t.expires_at),
          t.expired ? h('span', { class: 'marker' }, 'expired') : 'expiring',
        ], { class: t.expired ? 'expired' : null })), { empty: 'No tokens expire soon.' })),
      h('section', { id: 'group-bindings', 'aria-labelledby': 'groups-heading' },
        h('h2', { id: 'groups-heading' }, 'Group bindings'),
        table(null, ['Subject', 'Role', 'Namespaces'], (r.group_bindings || []).map((g) => tr([
          txt(g.subject), txt(g.role), (g.namespaces || []).map(txt).join(', ') || dash,
        ])), { empty: 'None.' })),
      h('section', { id: 'review-notes', 'aria-labelledby': 'notes-heading' },
        h('h2', { id: 'notes-heading' }, 'Notes'),
        (r.notes || []).length ? h('ul', null, r.notes.map((n) => h('li', null, txt(n)))) : h('p', { class: 'muted' }, 'None.')));
  }

  // ---------------------------------------------------------------- policies
  async function pagePolicies(seq) {
    const main = page('Policies');
    const wait = loading(main);
    const x = await get(seq, '/v1/admin/policies');
    wait.remove();
    const list = (Array.isArray(x) ? x : x && x.policies) || [];
    main.appendChild(table('policies-table',
      ['Name', 'Mode', 'SHA-256', 'Size', 'Signed by', 'Installed', 'Shadow results'],
      list.map((p) => {
        let shadow = dash;
        if (p.mode === 'shadow') {
          shadow = (typeof p.shadow_flips === 'number' && typeof p.shadow_decisions === 'number')
            ? `would have flipped ${p.shadow_flips} of ${p.shadow_decisions} decisions`
            : 'no shadow decisions yet';
        }
        return tr([
          txt(p.name),
          h('span', { class: `badge mode-${safeClass(p.mode)}` }, txt(p.mode)),
          p.sha256 ? h('code', { title: p.sha256 }, String(p.sha256).slice(0, 16)) : dash,
          humanSize(p.size), txt(p.signed_by),
          h('span', null, txt(p.installed_by), h('br'), time(p.installed_at)),
          shadow,
        ]);
      }), { empty: 'No policies are installed.' }));
  }

  // ---------------------------------------------------------------- keys
  const RUNNING = /^(running|pending|queued|started|in[_-]?progress)$/i;

  async function pageKeys(seq) {
    const main = page('Keys');
    const wait = loading(main);
    const k = await get(seq, '/v1/keys/status');
    wait.remove();
    const jobs = k.jobs || [];
    add(main, 
      facts([['Provider', txt(k.provider)], ['Current KEK version', txt(k.current_kek_version)]]),
      h('h2', null, 'Key encryption keys'),
      table('kek-table', ['Version', 'State', 'Key records wrapped'], (k.kek_versions || []).map((v) => tr([
        txt(v.version), txt(v.state), txt(v.dek_count),
      ])), { empty: 'No KEK versions.' }),
      h('h2', null, 'Jobs'),
      table('jobs-table', ['ID', 'Kind', 'State', 'Phase', 'Progress', 'Started by', 'Updated'], jobs.map((j) => {
        const done = Number(j.done) || 0;
        const total = Number(j.total) || 0;
        return tr([
          txt(j.id), txt(j.kind),
          h('span', null, txt(j.state), j.error ? [h('br'), h('span', { class: 'problem' }, txt(j.error))] : null),
          txt(j.phase),
          h('span', { class: 'progress' },
            h('progress', { value: done, max: total || 1, 'aria-label': `Job ${txt(j.id)} progress` }),
            ` ${done}/${total}`),
          txt(j.started_by), time(j.updated_at),
        ]);
      }), { empty: 'No key jobs.' }));
    if (jobs.some((j) => RUNNING.test(String(j.state || '')))) {
      main.appendChild(h('p', { class: 'muted' }, 'A job is running; this page refreshes every 5 seconds.'));
      keysTimer = setTimeout(() => {
        keysTimer = null;
        if (seq === renderSeq && session && (parseRoute() || [])[0] === 'keys') route();
      }, 5000);
    }
  }

  // ---------------------------------------------------------------- boot
  async function boot() {
    document.querySelector('a.skip').addEventListener('click', (ev) => {
      ev.preventDefault();
      $('#main').focus();
    });
    $('#signout').addEventListener('click', signOut);
    window.addEventListener('hashchange', () => {
      if (!parseRoute()) return; // not a route (e.g. "#main"): no navigation
      setStatus('');
      route().then(() => { if (session) $('#main').focus({ preventScroll: true }); });
    });
    try {
      session = await api('GET', '/ui/api/session');
    } catch (err) {
      if (err.status !== 401) setError(err);
      showSignin();
      return;
    }
    showSignedIn();
    const parts = parseRoute();
    if (!parts || !parts.length) navigate('#/models');
    else route();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
