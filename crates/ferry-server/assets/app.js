// Ferry's web UI: live updates and log paging, over the pages the server renders.
// No framework and no build step. Text from the server's events is only ever put into
// the page as text (textContent), never as markup; the only markup inserted is the
// server's own rendered fragments.
'use strict';
(function () {
  var MAX = 9007199254740991;
  var KEEP = 3000; // the most lines a log view keeps in the page
  var WINDOW_BACK = 900; // how far back its link to earlier lines starts
  var $ = function (s, el) { return (el || document).querySelector(s); };

  function setStatus(el, s) {
    if (!el) return;
    var span = document.createElement('span');
    span.className = 'st st-' + s;
    span.textContent = s.replace(/_/g, ' ');
    el.replaceChildren(span);
  }

  function offsetsFor(names, mine, have) {
    var o = {};
    names.forEach(function (n) { o[n] = MAX; });
    if (mine !== null) o[mine] = have;
    return encodeURIComponent(JSON.stringify(o));
  }

  // ANSI SGR colours as classes, as the server's ui::ansi does; other sequences dropped.
  function Ansi() { this.s = { b: 0, dim: 0, i: 0, u: 0, fg: -1, bg: -1 }; this.esc = null; this.cr = false; }
  Ansi.prototype.cls = function () {
    var s = this.s, c = [];
    if (s.b) c.push('b'); if (s.dim) c.push('dim'); if (s.i) c.push('i'); if (s.u) c.push('u');
    if (s.fg >= 0) c.push('fg' + s.fg); if (s.bg >= 0) c.push('bg' + s.bg);
    return c.join(' ');
  };
  Ansi.prototype.sgr = function (p) {
    var s = this.s, a = p === '' ? [0] : p.split(';').map(Number);
    for (var k = 0; k < a.length; k++) {
      var n = a[k];
      if (n === 0) { s.b = s.dim = s.i = s.u = 0; s.fg = s.bg = -1; }
      else if (n === 1) s.b = 1; else if (n === 2) s.dim = 1; else if (n === 3) s.i = 1; else if (n === 4) s.u = 1;
      else if (n === 22) s.b = s.dim = 0; else if (n === 23) s.i = 0; else if (n === 24) s.u = 0;
      else if (n >= 30 && n <= 37) s.fg = n - 30; else if (n === 39) s.fg = -1;
      else if (n >= 40 && n <= 47) s.bg = n - 40; else if (n === 49) s.bg = -1;
      else if (n >= 90 && n <= 97) s.fg = n - 82; else if (n >= 100 && n <= 107) s.bg = n - 92;
      else if ((n === 38 || n === 48) && a[k + 1] === 5) {
        var v = a[k + 2]; if (v < 16) { if (n === 38) s.fg = v; else s.bg = v; } k += 2;
      } else if ((n === 38 || n === 48) && a[k + 1] === 2) k += 4;
    }
  };
  // Passes over text that will not be drawn (whole lines): only the colours it leaves
  // set matter; returns how many lines it ends.
  Ansi.prototype.skip = function (t) {
    this.esc = null; this.cr = false;
    var re = /\x1b\[([0-9;]*)m/g, m;
    while ((m = re.exec(t)) !== null) this.sgr(m[1]);
    var n = 0;
    for (var at = t.indexOf('\n'); at !== -1; at = t.indexOf('\n', at + 1)) n++;
    return n;
  };
  // Feeds text; out.text(t, cls), out.nl() at a newline, out.cr() when a line is redrawn.
  Ansi.prototype.feed = function (t, out) {
    // Plain text (no escape, no carriage return): whole lines at once.
    if (this.esc === null && !this.cr && t.indexOf('\x1b') === -1 && t.indexOf('\r') === -1) {
      var parts = t.split('\n'), cls = this.cls();
      for (var p = 0; p < parts.length; p++) {
        if (p > 0) out.nl();
        if (parts[p]) out.text(parts[p], cls);
      }
      return;
    }
    var run = '';
    var self = this;
    function flush() { if (run) { out.text(run, self.cls()); run = ''; } }
    if (this.cr) { // a carriage return ended the last chunk: a redraw, unless a newline
      this.cr = false;
      if (t[0] !== '\n') out.cr();
    }
    for (var k = 0; k < t.length; k++) {
      var ch = t[k];
      if (ch === '\n') this.esc = null; // a line ends any escape sequence
      if (this.esc !== null) {
        this.esc += ch;
        var e = this.esc;
        if (e.length === 2 && e[1] !== '[' && e[1] !== ']') this.esc = null;
        else if (e[1] === '[' && e.length > 2 && ch >= '@' && ch <= '~') {
          if (ch === 'm') this.sgr(e.slice(2, -1));
          this.esc = null;
        } else if (e[1] === ']' && (ch === '\x07' || e.slice(-2) === '\x1b\\')) this.esc = null;
        else if (e.length > 256) this.esc = null;
        continue;
      }
      if (ch === '\x1b') { flush(); this.esc = '\x1b'; }
      else if (ch === '\n') { flush(); out.nl(); }
      else if (ch === '\r') {
        flush();
        if (k + 1 === t.length) this.cr = true;
        else if (t[k + 1] !== '\n') out.cr();
      }
      else if (ch < ' ' && ch !== '\t') { /* not shown */ }
      else run += ch;
    }
    flush();
  };

  // A job's log page: earlier lines on demand, later lines live.
  function logPage(box) {
    var lines = $('#log-lines', box);
    var base = box.dataset.base, job = box.dataset.job;
    var start = +box.dataset.start, end = +box.dataset.end, next = +box.dataset.nextLine;
    var showTs = box.dataset.ts === 'true';
    var last = lines.lastElementChild;
    var cur = box.dataset.open === 'true' && last ? $('.c', last) : null;
    var trimmed = false;

    // A permanent link to a line this window does not hold: ask for that line.
    var m = /^#L(\d+)$/.exec(location.hash);
    if (m && !document.getElementById('L' + m[1])) {
      location.replace(base + '?line=' + m[1] + location.hash);
      return;
    }

    var earlier = $('#log-earlier', box);
    if (earlier) earlier.addEventListener('click', function (ev) {
      if (trimmed) return; // the page no longer starts at a known byte: navigate
      ev.preventDefault();
      fetch(base + '/lines?before=' + start, { credentials: 'same-origin', redirect: 'error' }).then(function (r) {
        var at = r.headers.get('x-ferry-log-start');
        if (!r.ok || at === null) throw new Error(r.status);
        var s = +at;
        return r.text().then(function (html) { return [s, html]; });
      }).then(function (got) {
        var h = document.documentElement.scrollHeight;
        lines.insertAdjacentHTML('afterbegin', got[1]);
        window.scrollBy(0, document.documentElement.scrollHeight - h);
        start = got[0];
        // A finished log keeps at most KEEP lines: the last ones go, a link away.
        if (box.dataset.live !== 'true' && lines.childElementCount > KEEP) {
          while (lines.childElementCount > KEEP) lines.lastElementChild.remove();
          var after = +lines.lastElementChild.id.slice(1) + 1;
          var later = $('#log-later', box);
          if (!later) {
            later = document.createElement('a');
            later.className = 'log-more'; later.id = 'log-later';
            box.appendChild(later);
          }
          later.href = base + '?line=' + after + '#L' + after;
          later.textContent = 'Lines from ' + after + ' on are not shown: show later lines';
        }
        if (start === 0) earlier.remove();
        else {
          var first = lines.firstElementChild;
          earlier.href = base + '?before=' + start;
          earlier.textContent = 'Lines 1–' + (first ? +first.id.slice(1) - 1 : '?') + ' (' + start + ' bytes) are not shown: show earlier lines';
        }
      }).catch(function () { location.href = earlier.href; });
    });

    if (box.dataset.live !== 'true') return;
    var names = JSON.parse(document.getElementById('job-page').dataset.jobs || '[]');
    var ansi = new Ansi();
    var pending = [], scheduled = false;
    var enc = new TextEncoder();
    function newLine() {
      var n = next++;
      var div = document.createElement('div');
      div.className = 'l'; div.id = 'L' + n;
      var a = document.createElement('a');
      a.className = 'n'; a.setAttribute('href', '?line=' + n + '#L' + n); a.textContent = n;
      div.appendChild(a);
      if (showTs) {
        var t = document.createElement('span');
        t.className = 't'; t.textContent = new Date().toISOString().slice(11, 23);
        div.appendChild(t);
      }
      cur = document.createElement('span');
      cur.className = 'c';
      div.appendChild(cur);
      lines.appendChild(div);
    }
    var out = {
      text: function (t, cls) {
        if (!cur) newLine();
        if (cls) { var s = document.createElement('span'); s.className = cls; s.textContent = t; cur.appendChild(s); }
        else cur.appendChild(document.createTextNode(t));
      },
      nl: function () { if (!cur) newLine(); cur = null; },
      cr: function () { if (cur) cur.replaceChildren(); }
    };
    // Lines that can never be seen (more than KEEP come at once) are counted, and
    // their colours followed, but not drawn.
    function drain() {
      scheduled = false;
      var follow = window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 40;
      var empty = $('#log-empty', box); if (empty) empty.remove();
      var text = pending.join(''); pending = [];
      var seen = 0, cut = -1;
      for (var k = text.length - 1; k >= 0; k--) {
        if (text.charCodeAt(k) === 10 && ++seen > KEEP) { cut = k; break; }
      }
      if (cut >= 0) {
        // The first newline ends the line being drawn (already numbered), if any.
        var ended = ansi.skip(text.slice(0, cut + 1));
        next += ended - (cur ? 1 : 0);
        text = text.slice(cut + 1);
        lines.replaceChildren();
        cur = null;
        trimmed = true;
      }
      ansi.feed(text, out);
      // A long live log keeps its last KEEP lines in the page; the rest is a link away.
      var extra = lines.childElementCount - KEEP;
      for (var r = 0; r < extra; r++) lines.firstElementChild.remove();
      if (extra > 0) trimmed = true;
      if (trimmed && lines.firstElementChild) {
        var first = +lines.firstElementChild.id.slice(1);
        if (!earlier) {
          earlier = document.createElement('a');
          earlier.className = 'log-more'; earlier.id = 'log-earlier';
          box.insertBefore(earlier, lines);
        }
        earlier.href = base + '?line=' + Math.max(1, first - WINDOW_BACK) + '#L' + (first - 1);
        earlier.textContent = 'Lines 1–' + (first - 1) + ' are not shown: show earlier lines';
      }
      if (follow) window.scrollTo(0, document.documentElement.scrollHeight);
    }
    var es;
    function connect() {
      es = new EventSource('/api/v1/runs/' + encodeURIComponent(box.dataset.run) + '/events?offsets=' + offsetsFor(names, job, end));
      es.addEventListener('log', function (ev) {
        var d = JSON.parse(ev.data);
        if (d.job !== job) return;
        var upto = d.offset + enc.encode(d.text).length;
        if (upto <= end) return;
        end = upto;
        pending.push(d.text);
        // Drawn a few times a second at most: a fast log is drawn in batches, and a
        // batch longer than the page keeps is drawn from its end.
        if (!scheduled) {
          scheduled = true;
          setTimeout(function () { requestAnimationFrame(drain); }, 100);
        }
      });
      es.addEventListener('job', function (ev) {
        var d = JSON.parse(ev.data);
        if (d.job === job) setStatus($('[data-job-status]'), d.status);
      });
      es.addEventListener('end', function () { es.close(); drain(); });
      es.onerror = function () { es.close(); setTimeout(connect, 1000); };
    }
    connect();
  }

  // The run page: job and run states as they change; the whole page again at the end.
  function runPage(el) {
    if (el.dataset.finished === 'true') return;
    var names = JSON.parse(el.dataset.jobs || '[]');
    var es = new EventSource('/api/v1/runs/' + encodeURIComponent(el.dataset.run) + '/events?offsets=' + offsetsFor(names, null, 0));
    es.addEventListener('job', function (ev) {
      var d = JSON.parse(ev.data);
      document.querySelectorAll('[data-job]').forEach(function (n) {
        if (n.dataset.job !== d.job) return;
        if (n.classList.contains('node')) n.setAttribute('class', 'node n-' + d.status);
        else setStatus($('[data-job-status]', n), d.status);
      });
    });
    es.addEventListener('run', function (ev) { setStatus($('[data-run-status]', el), JSON.parse(ev.data).status); });
    es.addEventListener('end', function () { es.close(); setTimeout(function () { location.reload(); }, 300); });
  }

  // Delivery pages: shown again when a deployment or an approval changes (after the
  // stream's replay of what is stored, `synced`), unless the user is typing in a form.
  function deliveryPage(el) {
    var since = +el.dataset.since, synced = false, stale = false, timer = null;
    var es = new EventSource(el.dataset.api + '/events');
    function again() {
      var a = document.activeElement;
      if (a && /^(INPUT|SELECT|TEXTAREA)$/.test(a.tagName) && a.value) {
        if ($('#delivery-note')) return;
        var note = document.createElement('p');
        note.id = 'delivery-note'; note.className = 'flash ok'; note.setAttribute('role', 'status');
        note.textContent = 'Something changed: reload the page to see it.';
        el.appendChild(note);
        return;
      }
      location.reload();
    }
    function changed() { clearTimeout(timer); timer = setTimeout(again, 250); }
    es.addEventListener('deployment', function (ev) {
      if (synced) return changed();
      // The replay: a deployment that changed after the page was made makes it stale.
      var d = JSON.parse(ev.data).deployment || {};
      var t = Math.max(d.created_at || 0, d.started_at || 0, d.finished_at || 0, d.live_at || 0,
        d.verification_started_at || 0, d.verification_finished_at || 0);
      if (t > since) stale = true;
    });
    ['approval', 'health', 'lagged'].forEach(function (k) {
      es.addEventListener(k, function () { if (synced) changed(); else stale = true; });
    });
    es.addEventListener('synced', function () { synced = true; if (stale) changed(); });
  }

  document.addEventListener('DOMContentLoaded', function () {
    var box = $('#log'); if (box) logPage(box);
    var run = $('#run'); if (run) runPage(run);
    var d = $('#delivery'); if (d) deliveryPage(d);
  });
})();
