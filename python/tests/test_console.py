"""The web console at /ui/, driven in Debian's Chromium (headless) by
Selenium with Debian's chromedriver, against a real server.

Two managers approve a version in turn and the access review then answers
"allow" for a production download; the uploader's own approval is refused
by `separation-of-duties`, shown with the plugin and reason; the audit page
finds the approvals (channel `ui`); a tag holding `<script>` is shown as
text; a POST without the CSRF token is refused; sign-out revokes the
session; OIDC sign-in (authorization code + PKCE) against the test IdP;
axe-core runs on every page and a screenshot of each lands in
target/console-screenshots/.

Needs MODELVAULT_TEST_AXE (axe.min.js) and /usr/bin/chromium +
/usr/bin/chromedriver (scripts/test.sh installs them); with
MODELVAULT_REQUIRE_CONSOLE=1 their absence is a failure, not a skip."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, Server, make_files

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
AXE = os.environ.get("MODELVAULT_TEST_AXE", "")
IDP = os.environ.get("MODELVAULT_TEST_OIDC_ISSUER", "")
SHOTS = ROOT / "target" / "console-screenshots"
XSS = "<script>window.__xss=1</script><img src=x onerror=window.__xss=2>"

_missing = [p for p in (CHROMIUM, CHROMEDRIVER, AXE) if not p or not Path(p).exists()]
try:
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException, TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # pragma: no cover - reported below
    _missing.append("selenium")

if _missing:
    if os.environ.get("MODELVAULT_REQUIRE_CONSOLE") == "1":
        raise RuntimeError(f"console tests need {_missing} (scripts/test.sh installs them)")
    pytest.skip(f"console tests need {_missing}", allow_module_level=True)


def oidc_config(issuer: str) -> str:
    return f"""
[[oidc.issuers]]
issuer = "{issuer}"
audience = "urn:modelvault"
groups_claim = "groups"
allow_http_issuer = true
cli_client_id = "modelvault-cli"
cli_scope = "openid api"

[[access.bindings]]
group = "auditors"
role = "auditor"

[console.oidc_clients]
"{issuer}" = "modelvault-console"
"""


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    data = tmp_path_factory.mktemp("console") / "data"
    # A stricter separation of duties (three approvals), installed in
    # shadow mode: once two approvals let a download through, it would
    # have denied it, and the policies page counts that flip.
    extra = '\n[policy.config.strict-sod]\ngated = "production"\nrequired_approvals = "3"\n'
    extra += oidc_config(IDP) if IDP else ""
    s = Server(data, extra_config=extra)
    bundled = ROOT / "crates" / "modelvault-bundled-policies" / "bundled" / "separation_of_duties.wasm"
    s.cli("policy", "install", "strict-sod", str(bundled), "--shadow")
    src = tmp_path_factory.mktemp("console-src")
    make_files(src, {"model.bin": os.urandom(4096), "config.json": b'{"layers": 2}'})
    # The uploader may also approve (model-manager): the policy, not the
    # role table, must stop it approving its own upload.
    writer = s.token("ui-writer", ["data-scientist", "model-manager"], ["ui"], env="production")
    s.cli("model", "create", "ui/ranker", "--tag", f"note={XSS}", "--tag", "team=search", token=writer)
    s.cli("push", "ui/ranker@v1", str(src), token=writer)
    tokens = {
        "writer": writer,
        "mgr-a": s.token("mgr-a", ["model-manager"], ["ui"], env="production"),
        "mgr-b": s.token("mgr-b", ["model-manager"], ["ui"], env="production"),
        "engineer": s.token("ui-engineer", ["ml-engineer"], ["ui"], env="production"),
    }
    yield s, tokens
    s.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    downloads = tmp_path_factory.mktemp("downloads")
    opts.add_experimental_option("prefs", {
        "download.default_directory": str(downloads),
        "download.prompt_for_download": False,
    })
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1280,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        opts.add_argument(flag)
    # Dates must follow the viewer's time zone, whatever the server's.
    service = Service(CHROMEDRIVER, env={**os.environ, "TZ": "Asia/Kolkata"})
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(30)
    driver.downloads = downloads
    yield driver
    driver.quit()


def wait(driver, cond, secs: float = 15):
    return WebDriverWait(driver, secs).until(cond)


def css(driver, sel: str, secs: float = 15):
    return wait(driver, EC.presence_of_element_located((By.CSS_SELECTOR, sel)), secs)


def visible_text(driver, sel: str, text: str, secs: float = 15):
    wait(driver, EC.text_to_be_present_in_element((By.CSS_SELECTOR, sel), text), secs)


def axe(driver) -> list:
    """axe-core's serious and critical violations on the current page."""
    driver.execute_script(Path(AXE).read_text())
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => done(JSON.stringify(r.violations)))"
        ".catch(e => done(JSON.stringify([{id: 'axe-error', impact: 'critical', help: String(e)}])));"
    )
    return [v for v in json.loads(result) if v.get("impact") in ("serious", "critical")]


def check_page(driver, name: str) -> None:
    """Screenshot, axe-core, and no script ran from stored strings."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    time.sleep(0.2)  # let the page settle (fonts, layout) before the shot
    driver.save_screenshot(str(SHOTS / f"{name}.png"))
    bad = axe(driver)
    assert not bad, f"axe-core on {name}: " + "; ".join(
        f"{v['id']} ({v['impact']}): {v.get('help')} at {[n.get('target') for n in v.get('nodes', [])][:3]}"
        for v in bad
    )
    assert driver.execute_script("return window.__xss === undefined"), f"a stored string ran as script on {name}"
    try:
        driver.switch_to.alert
        raise AssertionError(f"an alert opened on {name}")
    except NoAlertPresentException:
        pass


def _downloaded(driver, name: str):
    p = Path(driver.downloads) / name
    return p if p.exists() and p.stat().st_size > 0 else None


def signed_out(driver, url: str) -> None:
    """Open the console with no session, whatever an earlier test left."""
    driver.get(url + "/ui/")
    driver.delete_all_cookies()
    driver.get(url + "/ui/")


def sign_in(driver, url: str, token: str) -> None:
    signed_out(driver, url)
    field = css(driver, "#token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.ID, "signin").click()
    css(driver, "#models-table")


def sign_out(driver) -> None:
    driver.find_element(By.ID, "signout").click()
    css(driver, "#signin-form")


def session_cookie(driver) -> dict:
    cookies = {c["name"]: c for c in driver.get_cookies()}
    assert "mv_session" in cookies, f"no session cookie: {list(cookies)}"
    return cookies["mv_session"]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: D102 - keep the 303
        return None


def http(method: str, url: str, headers: dict | None = None, body: bytes | None = None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def test_console_headers_and_assets_are_locked_down(console):
    s, _ = console
    status, headers, body = http("GET", s.url + "/ui/")
    assert status == 200 and b"/ui/assets/app.js" in body
    csp = headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert b"<script>" not in body.replace(b'<script src="/ui/assets/app.js" defer></script>', b"")
    # No session: the session route says so as JSON, like every API error.
    status, _, body = http("GET", s.url + "/ui/api/session")
    assert status == 401 and json.loads(body)["error"]["code"] == "unauthenticated"
    # A bad token is refused and lands in the failure count, not a session.
    status, headers, body = http(
        "POST", s.url + "/ui/api/session", {"Content-Type": "application/json"},
        json.dumps({"token": "mv_nope_nope"}).encode(),
    )
    assert status == 401 and headers.get("Set-Cookie") is None


def _open_session(url: str, token: str) -> str:
    status, headers, body = http(
        "POST", url + "/ui/api/session", {"Content-Type": "application/json"},
        json.dumps({"token": token}).encode(),
    )
    assert status == 200, body
    cookie = headers.get("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and token not in cookie
    assert token.encode() not in body  # the answer holds a CSRF token, not the API token
    return cookie.split(";")[0]


def test_a_session_dies_with_its_token_and_cannot_be_forged(console):
    s, _ = console
    # Revoking the API token a session was opened with ends the session.
    token = s.token("ui-short", ["auditor"], ["ui"])
    cookie = _open_session(s.url, token)
    assert http("GET", s.url + "/v1/whoami", {"Cookie": cookie})[0] == 200
    # A cookie-authenticated answer is kept by no cache (a cookie, unlike
    # an Authorization header, does not keep it out of shared caches).
    status, headers, _ = http("GET", s.url + "/v1/models", {"Cookie": cookie})
    assert status == 200
    assert headers.get("Cache-Control") == "no-store" and "Cookie" in headers.get("Vary", "")
    # Sign-out ends the cookie's own session only: a bearer token cannot
    # sign someone else's session out, nor can a made-up id.
    assert http("DELETE", s.url + "/ui/api/session",
                {"Cookie": cookie, "Authorization": f"Bearer {s.admin}"})[0] == 400
    s.cli("token", "revoke", "ui-short")
    assert http("GET", s.url + "/v1/whoami", {"Cookie": cookie})[0] == 401

    # As a bucket writer: extending a stored session's expiry breaks its
    # record MAC, so the session stops working (fail closed).
    token = s.token("ui-long", ["auditor"], ["ui"])
    cookie = _open_session(s.url, token)
    sid = cookie.split("=", 1)[1].split(".")[0]
    record = Path(s.data) / "store" / "console-sessions" / f"{sid}.json"
    text = record.read_text()
    assert '"expires_at"' in text and token not in text
    record.write_text(text.replace('"expires_at":"2', '"expires_at":"3', 1))
    assert record.read_text() != text
    assert http("GET", s.url + "/v1/whoami", {"Cookie": cookie})[0] == 401
    # A made-up cookie of the right shape is refused too.
    fake = "mv_session=" + "A" * 22 + "." + "B" * 43
    assert http("GET", s.url + "/v1/whoami", {"Cookie": fake})[0] == 401


def test_two_managers_approve_in_the_browser_and_the_download_becomes_allowed(console, browser):
    s, t = console
    d = browser
    url = s.url

    # The engineer cannot download in production yet (real CLI, real policy).
    early = s.run("pull", "ui/ranker@v1", "-o", str(Path(s.data).parent / "early"), token=t["engineer"])
    assert early.returncode == 4 and "approval" in early.stderr, early.stderr

    # Sign in with a token: the cookie is HttpOnly + SameSite=Strict, and
    # the token is nowhere in the page's storage or URL.
    sign_in(d, url, t["mgr-a"])
    c = session_cookie(d)
    assert c["httpOnly"] is True and c.get("sameSite") == "Strict"
    assert t["mgr-a"] not in c["value"]
    assert t["mgr-a"] not in d.current_url
    assert d.execute_script("return localStorage.length + sessionStorage.length") == 0
    assert "mv_session" not in d.execute_script("return document.cookie")
    visible_text(d, "#whoami", "mgr-a (production)")
    check_page(d, "models")

    # The tag holding markup is shown as text.
    tags = " ".join(e.text for e in d.find_elements(By.CSS_SELECTOR, "#models-table span.tag"))
    assert XSS in tags

    # Browse to the version: files with SHA-256.
    d.find_element(By.CSS_SELECTOR, "a.model-link").click()
    css(d, "#versions-table")
    check_page(d, "model")
    d.find_element(By.CSS_SELECTOR, "a.version-link").click()
    css(d, "#files-table")
    files = d.find_element(By.ID, "files-table").text
    assert "model.bin" in files and "config.json" in files
    assert len([w for w in files.split() if len(w) == 64]) == 2  # two SHA-256s

    # The inbox lists it with the rule that needs it; approve from there.
    d.get(url + "/ui/#/approvals")
    css(d, "#inbox-table")
    inbox = d.find_element(By.ID, "inbox-table").text
    assert "ui/ranker" in inbox and "separation-of-duties" in inbox and "ui-writer" in inbox
    check_page(d, "approvals")
    d.find_element(By.CSS_SELECTOR, "button.approve-btn").click()
    css(d, "button.revoke-btn")
    sign_out(d)

    # Sign-out revoked the session in the store: the old cookie is dead.
    status, _, _ = http("GET", url + "/ui/api/session", {"Cookie": f"mv_session={c['value']}"})
    assert status == 401

    # The second manager approves from the version page.
    sign_in(d, url, t["mgr-b"])
    d.get(url + "/ui/#/models/ui/ranker/versions/v1")
    css(d, "#approve").click()
    visible_text(d, "#approvals-list", "mgr-b")
    assert "mgr-a" in d.find_element(By.ID, "approvals-list").text
    check_page(d, "version")

    # A POST with the session cookie but without the CSRF token is refused,
    # as is one with the token from another origin; nothing is recorded.
    cookie = f"mv_session={session_cookie(d)['value']}"
    approvals = f"{url}/v1/models/ui/ranker/versions/v1/approvals/production"
    status, _, body = http("DELETE", approvals, {"Cookie": cookie, "Content-Type": "application/json"}, b"{}")
    assert status == 403 and json.loads(body)["error"]["code"] == "csrf_failed"
    csrf = d.execute_script(
        "return fetch('/ui/api/session', {credentials: 'same-origin'}).then(r => r.json()).then(j => j.csrf_token)"
    )
    status, _, body = http(
        "DELETE", approvals,
        {"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": "https://evil.example", "Content-Type": "application/json"},
        b"{}",
    )
    assert status == 403 and json.loads(body)["error"]["code"] == "csrf_failed"
    sign_out(d)

    # The uploader's own approval: refused by separation-of-duties, shown
    # with the plugin and the reason.
    sign_in(d, url, t["writer"])
    d.get(url + "/ui/#/models/ui/ranker/versions/v1")
    css(d, "#approve").click()
    visible_text(d, "#error", "separation-of-duties")
    err = d.find_element(By.ID, "error").text
    assert "denied by policy separation-of-duties" in err, err
    assert "(separation-of-duties." in err, err
    sign_out(d)

    # The download is now allowed, for the engineer in production.
    target = Path(s.data).parent / "pulled"
    s.cli("pull", "ui/ranker@v1", "-o", str(target), token=t["engineer"])
    assert (target / "config.json").read_bytes() == b'{"layers": 2}'

    # As the admin: who can download it in production, audit, review,
    # policies, keys.
    sign_in(d, url, s.admin)
    d.get(url + "/ui/#/models/ui/ranker/versions/v1")
    css(d, "#who-table")
    Select(d.find_element(By.ID, "review-env")).select_by_value("production")
    who = d.find_element(By.ID, "who-table")
    row = next(r for r in who.find_elements(By.TAG_NAME, "tr") if "ui-engineer" in r.text)
    assert "allow" in row.text, row.text

    d.get(url + "/ui/#/audit")
    css(d, "#audit-form")
    d.find_element(By.ID, "f-action").send_keys("approve")
    d.find_element(By.ID, "audit-search").click()
    visible_text(d, "#audit-table", "mgr-b")
    table = d.find_element(By.ID, "audit-table").text
    assert "mgr-a" in table and "ui-writer" in table and "denied" in table
    d.find_element(By.CSS_SELECTOR, "button.decisions-btn").click()
    visible_text(d, "#audit-table", "separation-of-duties")
    visible_text(d, "#verify-ok", "All chains verify")
    check_page(d, "audit")
    # Export of the filtered set as JSON lines.
    d.find_element(By.ID, "audit-export").click()
    exported = wait(d, lambda _: _downloaded(d, "audit.jsonl"))
    lines = [json.loads(x) for x in exported.read_text().splitlines() if x.strip()]
    assert len(lines) >= 3 and {r["action"] for r in lines} == {"approve"}

    d.get(url + "/ui/#/access")
    css(d, "#unused-access")
    check_page(d, "access-review")
    d.find_element(By.ID, "review-md").click()
    md = wait(d, lambda _: _downloaded(d, "review.md")).read_text()
    assert "ui/ranker" in md and "ui-engineer" in md
    d.find_element(By.ID, "review-json").click()
    review = json.loads(wait(d, lambda _: _downloaded(d, "review.json")).read_text())
    assert any(v["model"] == "ranker" for v in review["versions"])
    d.get(url + "/ui/#/policies")
    css(d, "#policies-table")
    policies = d.find_element(By.ID, "policies-table").text
    assert "separation-of-duties" in policies
    row = next(r.text for r in d.find_elements(By.CSS_SELECTOR, "#policies-table tr") if "strict-sod" in r.text)
    assert "shadow" in row and "would have flipped" in row, row
    flips = int(row.split("would have flipped ")[1].split(" ")[0])
    assert flips >= 1, row  # the engineer's allowed download, which it would have denied
    check_page(d, "policies")
    # Dates are in the viewer's time zone (the browser runs in Asia/Kolkata,
    # UTC+05:30): an install time stored in UTC is shown in local time.
    assert d.execute_script("return new Date().getTimezoneOffset()") == -330
    stamp = d.find_element(By.CSS_SELECTOR, "#policies-table time")
    iso = stamp.get_attribute("datetime")
    assert iso.endswith("Z") or "+00:00" in iso, iso
    assert stamp.text == d.execute_script("return new Date(arguments[0]).toLocaleString()", iso)
    d.get(url + "/ui/#/keys")
    css(d, "#kek-table")
    check_page(d, "keys")


    # The approvals are in the audit trail as the signed-in principals,
    # channel `ui`; the refused CSRF-less request changed nothing.
    records = s.audit()
    ui = [r for r in records if r.get("action") == "approve" and r.get("channel") == "ui"]
    by = {(r["principal"]["id"], r["outcome"]) for r in ui}
    assert ("mgr-a", "allowed") in by and ("mgr-b", "allowed") in by and ("ui-writer", "denied") in by
    refused = [r for r in records if r.get("action") == "revoke-approval"]
    assert refused and all(r["outcome"] != "allowed" for r in refused)
    assert any(r.get("action") == "console-sign-out" and r.get("channel") == "ui" for r in records)
    sign_out(d)


def test_phone_width_and_keyboard(console, browser):
    s, t = console
    d = browser
    sign_in(d, s.url, t["mgr-a"])
    try:
        d.set_window_size(375, 800)
        d.get(s.url + "/ui/#/models/ui/ranker/versions/v1")
        css(d, "#files-table")
        time.sleep(0.3)
        # Nothing but the table wrappers scrolls sideways.
        assert d.execute_script("return document.documentElement.scrollWidth") <= 380
        # A table wrapper that scrolls is a labelled region reachable by
        # keyboard; one that fits is no tab stop.
        scrolled = 0
        for page, table in (("models/ui/ranker/versions/v1", "#files-table"), ("models", "#models-table"),
                            ("audit", "#audit-table")):
            d.get(f"{s.url}/ui/#/{page}")
            css(d, table)
            time.sleep(0.3)
            for wrap in d.find_elements(By.CSS_SELECTOR, ".table-wrap"):
                scrolls = d.execute_script("return arguments[0].scrollWidth > arguments[0].clientWidth", wrap)
                if scrolls:
                    scrolled += 1
                    assert wrap.get_attribute("tabindex") == "0" and wrap.get_attribute("role") == "region"
                    assert "scrolls sideways" in wrap.get_attribute("aria-label")
                else:
                    assert wrap.get_attribute("tabindex") is None
        assert scrolled, "no table scrolled sideways at phone width"
        check_page(d, "version-phone")
        # Keyboard: the first Tab reaches the skip link, Enter moves focus
        # to the main region without leaving the page.
        # Keyboard: from a fresh load, Tab walks the skip link, the nav links
        # and sign-out before the page's own controls.
        d.get(s.url + "/ui/#/models")
        d.refresh()
        css(d, "#models-table")
        seen = []
        for _ in range(12):
            d.switch_to.active_element.send_keys(Keys.TAB)
            el = d.switch_to.active_element
            seen.append(el.get_attribute("id") or el.get_attribute("href") or el.get_attribute("class") or "")
        assert seen[0].endswith("#main"), seen  # the skip link
        assert any(x.endswith("#/approvals") for x in seen) and "signout" in seen, seen
        d.refresh()
        css(d, "#models-table")
        d.switch_to.active_element.send_keys(Keys.TAB)
        focused = d.switch_to.active_element
        assert "skip" in (focused.get_attribute("class") or ""), focused.get_attribute("outerHTML")
        focused.send_keys(Keys.ENTER)
        assert d.switch_to.active_element.get_attribute("id") == "main"
        assert d.current_url.endswith("#/models")
    finally:
        d.set_window_size(1280, 900)
        sign_out(d)


@pytest.mark.skipif(not IDP, reason="no test IdP (MODELVAULT_TEST_OIDC_ISSUER)")
def test_oidc_sign_in_refuses_forged_hosts_states_and_planted_cookies(console):
    s, _ = console
    start = s.url + "/ui/oidc/login?" + urllib.parse.urlencode({"issuer": IDP})
    # A forged Host never picks the redirect URI (no public_url here).
    status, _, body = http("GET", start, {"Host": "evil.example"})
    assert status == 400 and b"public_url" in body
    # A real start: a redirect to the issuer with PKCE (S256), and the flow
    # cookie (HttpOnly, scoped to /ui/oidc).
    try:
        urllib.request.build_opener(NoRedirect).open(start)
        raise AssertionError("no redirect to the issuer")
    except urllib.error.HTTPError as r:
        assert r.code == 303
        location = r.headers["Location"]
        flow = r.headers["Set-Cookie"]
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
    assert q["code_challenge_method"] == ["S256"] and len(q["code_challenge"][0]) == 43
    assert q["client_id"] == ["modelvault-console"] and "HttpOnly" in flow and "Path=/ui/oidc" in flow
    cookie = flow.split(";")[0]
    assert q["state"][0] in cookie and q["code_challenge"][0] not in cookie
    callback = s.url + "/ui/oidc/callback?"
    # Another sign-in's state: refused, and the flow cookie is cleared.
    status, headers, _ = http("GET", callback + "code=x&state=not-mine", {"Cookie": cookie})
    assert status == 401 and "Max-Age=0" in headers.get("Set-Cookie", "")
    # Two flow cookies (one planted): refused.
    status, _, _ = http("GET", callback + "code=x&state=" + q["state"][0],
                        {"Cookie": cookie + "; mv_oidc=a.b.c"})
    assert status == 400
    # The issuer's own error text is not echoed to the page.
    status, _, body = http("GET", callback + "error=access_denied&error_description=%3Cb%3Eboo%3C%2Fb%3E",
                           {"Cookie": cookie})
    assert status == 401 and b"boo" not in body and b"access_denied" in body


@pytest.mark.skipif(not IDP, reason="no test IdP (MODELVAULT_TEST_OIDC_ISSUER)")
def test_oidc_sign_in_with_code_and_pkce(console, browser):
    s, _ = console
    d = browser
    signed_out(d, s.url)
    link = css(d, "#oidc-issuers a")
    assert IDP in link.text
    link.click()
    # The IdP's bare login form.
    field = wait(d, EC.presence_of_element_located((By.NAME, "login")))
    field.send_keys("bob")
    d.find_element(By.NAME, "password").send_keys("pw-bob")
    d.find_element(By.TAG_NAME, "button").click()
    try:
        css(d, "#models-table", 20)
    except TimeoutException:
        raise AssertionError(f"OIDC sign-in did not land in the console: {d.current_url}\n{d.page_source[:2000]}")
    visible_text(d, "#whoami", "bob")
    c = session_cookie(d)
    assert c["httpOnly"] is True and "." in c["value"] and not c["value"].startswith("ey")
    assert "code=" not in d.current_url and "access_token" not in d.current_url
    # bob is an auditor through his group: the audit page works.
    d.get(s.url + "/ui/#/audit")
    css(d, "#verify-ok")
    visible_text(d, "#verify-ok", "All chains verify")
    sign_out(d)
    records = s.audit()
    assert any(
        r.get("action") == "console-sign-in" and r.get("channel") == "ui"
        and (r.get("principal") or {}).get("id", "").endswith("bob")
        for r in records
    )
