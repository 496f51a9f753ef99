"""/status: a self-contained HTML page (no external assets, no script; it
refreshes itself) with the live figures, the queue, the modules with their
circuit states and the most recent rejects, loaded in headless Chromium
(Debian's package): the figures are checked in the DOM Chromium built, what
came from the network is shown as text (never as markup), and a screenshot
is kept as a test artefact (test_status_page.png in the build's
t/integration/)."""
import html.parser
import os
import re
import shutil
import subprocess
import tempfile

from harness import TOP_BUILDDIR, Petrel, Tap, free_port, maildir_messages, wait_for
from metricslib import http_get, wait_http
from modlib import module_dir

t = Tap(timeout=300)
CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    t.skip("headless Chromium", "chromium is not installed (scripts/install-deps.sh installs it)")
    t.done()
    raise SystemExit(0)
SCREENSHOT = os.path.join(TOP_BUILDDIR, "t", "integration", "test_status_page.png")


def chromium(url, *extra):
    """Runs headless Chromium on url; only loopback is ever reached."""
    profile = tempfile.mkdtemp(prefix="petrel-chromium-")
    try:
        r = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + profile,
                            "--no-first-run", "--disable-background-networking", "--disable-component-update",
                            "--disable-sync", "--disable-default-apps", "--disable-extensions",
                            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"] + list(extra) + [url],
                           capture_output=True, text=True, timeout=120)
        return r
    finally:
        shutil.rmtree(profile, ignore_errors=True)


class Dom(html.parser.HTMLParser):
    """The elements Chromium's DOM holds: text by id, and every tag seen under
    an element with a given id."""

    def __init__(self):
        super().__init__()
        self.stack = []
        self.text = {}
        self.tags_in = {}
        self.meta = []
        self.links = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for _, ident in self.stack:
            if ident:
                self.tags_in.setdefault(ident, []).append(tag)
        if tag == "meta":
            self.meta.append(attrs)
        if tag in ("script", "img", "link", "iframe") or attrs.get("src") or attrs.get("href"):
            self.links.append((tag, attrs))
        if tag not in ("meta", "br", "link", "img", "input"):
            self.stack.append((tag, attrs.get("id")))

    def handle_endtag(self, tag):
        if tag in ("td", "th", "li", "time"):
            self.handle_data(" ")   # cells read as words
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        for _, ident in self.stack:
            if ident:
                self.text[ident] = self.text.get(ident, "") + data


QMGR = "qmgr unix n - n 300 1 qmgr\n"
mport = free_port()
with Petrel(t, extra_services=QMGR, start=False) as p:
    mail = p.virtual_mailboxes({"u@vmail.test": "vmail.test/u/"}, {
        "metrics_listen": "127.0.0.1:%d" % mport,
        "modules": "testmod", "module_directory": module_dir("testmod"),
        "relay_domains": "later.test",
        "transport_maps": "inline:{ {later.test = retry:4.4.1 try again later} }",
        "mynetworks": "127.0.0.2/32",
    })
    p.start()
    t.ok(wait_http(mport), "the metrics endpoint answers")

    c = p.connect()
    for i in range(2):
        t.like(c.send_message("u@vmail.test", ["u@vmail.test"], "Subject: %d\r\n\r\nx\r\n" % i, ehlo=(i == 0)),
               r"^250 ", "message %d queued" % i)
    t.like(c.send_message("u@vmail.test", ["y@later.test"], "Subject: later\r\n\r\ny\r\n", ehlo=False), r"^250 ",
           "a message that will be deferred")
    t.like(c.cmd('MAIL FROM:<"<i>evil</i>"@vmail.test>'), r"^250 ", "a sender with markup in its local part")
    t.like(c.cmd("RCPT TO:<z@elsewhere.example>"), r"^454 ", "is rejected relaying")
    c.cmd("QUIT")
    c.close()
    t.ok(wait_for(lambda: len(maildir_messages(os.path.join(mail, "vmail.test/u"))) == 2, timeout=60), "two delivered")
    t.ok(wait_for(lambda: len(p.queue_files("deferred")) == 1, timeout=60), "one deferred")

    # A rate needs a sample at least a second old, and the queue manager
    # publishes its board once a second: on a quick machine all of the above
    # takes less than that. Wait for both before looking at the page.
    def settled():
        page = http_get(mport, "/status")[2]
        return (re.search(r'id="messages_received"><td>[^<]*</td><td class="total">3</td><td class="rate">[\d.]+<',
                          page) is not None and "no delivery yet" not in page and " retry " in re.sub(r"<[^>]*>", " ", page))
    t.ok(wait_for(settled, 30), "the status page has a rate and the queue manager's board",
         re.sub(r"<[^>]*>", " ", http_get(mport, "/status")[2])[-600:])
    status, headers, page = http_get(mport, "/status")
    t.is_(status, 200, "GET /status: 200")
    t.like(headers.get("Content-Type", ""), r"^text/html; charset=utf-8", "HTML")
    t.is_(headers.get("Content-Security-Policy"), "default-src 'none'; style-src 'unsafe-inline'",
          "a policy that forbids loading anything and running scripts")

    url = "http://127.0.0.1:%d/status" % mport
    r = chromium(url, "--dump-dom")
    t.is_(r.returncode, 0, "headless Chromium loads /status")
    dom = Dom()
    dom.feed(r.stdout)
    t.ok(any(m.get("http-equiv") == "refresh" and m.get("content") == "5" for m in dom.meta),
         "the page refreshes itself every 5 s")
    t.is_(dom.links, [], "no script, image, stylesheet or link: self-contained")
    t.like(dom.text.get("uptime", ""), r"^up \d+ s$", "the uptime")
    t.is_(dom.text.get("health"), "healthy", "healthy")
    t.is_((dom.text.get("smtpd"), dom.text.get("qmgr")), ("2/2", "1/1"), "the processes running of those expected")
    row = lambda ident: re.sub(r"\s+", " ", dom.text.get(ident, "")).strip()
    t.like(row("messages_received"), r"^messages received 3 [\d.]+$", "messages received: 3, with a rate")
    t.like(row("deliveries_sent"), r"^deliveries sent 2 ", "deliveries sent: 2")
    t.like(row("deliveries_deferred"), r"^deliveries deferred 1 ", "deliveries deferred: 1")
    t.like(row("rejects"), r"^rejects 1 ", "the reject is counted (1)")
    t.like(row("queue-deferred"), r"^deferred 1 \d+ s$", "the deferred queue: one message and its age")
    t.like(row("modules"), r"testmod [1-9]\d* [\d.]+ ms closed$", "the module with its calls, latency and closed circuit")
    dests = row("destinations")
    t.like(dests, r" virtual 0 0/\d+ 0 2 0 0 - ", "the busiest destinations: the virtual mailboxes (two sent in the last "
           "minute)")
    t.like(dests, r" retry 0 0/20 1 0 1 0 \d+ s ago: 4\.4\.1 try again later", "and the retry route, its deferred "
           "recipient and its last error")
    rejects = dom.text.get("recent-rejects", "")
    t.like(rejects, r'127\.0\.0\.1:\d+ RCPT from unknown\[127\.0\.0\.1\]: 454 4\.7\.1 <z@elsewhere\.example>: '
                    r'Relay access denied from=<"<i>evil</i>"@vmail\.test> to=<z@elsewhere\.example>',
           "the recent reject, with what the client sent shown as text")
    t.ok("i" not in dom.tags_in.get("recent-rejects", []), "and not as markup (no <i> element in the list)")

    if os.path.exists(SCREENSHOT):
        os.unlink(SCREENSHOT)
    r = chromium(url, "--screenshot=" + SCREENSHOT, "--window-size=1000,1400")
    t.ok(r.returncode == 0 and os.path.getsize(SCREENSHOT) > 10000,
         "a screenshot is kept: %s" % os.path.relpath(SCREENSHOT, TOP_BUILDDIR))

    # A problem shows on the page.
    incoming = os.path.join(p.queue, "incoming")
    os.chmod(incoming, 0o500)
    r = chromium(url, "--dump-dom")
    dom = Dom()
    dom.feed(r.stdout)
    t.is_(dom.text.get("health"), "unhealthy: queue directory %s is not writable: permission denied " % incoming,
          "an unwritable queue shows as unhealthy, with the reason")
    os.chmod(incoming, 0o700)
t.done()
