/* sendworx pages: progressive enhancement only. Every form works without this script; it
 * selects all rows, keeps figures current (polling /nodeworx/live every 5 s while the page is
 * visible) and draws the activity charts with uPlot. Text goes in with textContent only. */
(function () {
  "use strict";

  var POLL_MS = 5000;

  function number(n) { return Number(n || 0).toLocaleString("en-US"); }

  function age(seconds) {
    seconds = Math.max(0, Math.floor(seconds || 0));
    var d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
    var m = Math.floor(seconds % 3600 / 60);
    if (d) return h ? d + " d " + h + " h" : d + " d";
    if (h) return m ? h + " h " + m + " min" : h + " h";
    if (m) return m + " min";
    return seconds + " s";
  }

  function size(bytes) {
    var value = Number(bytes || 0), units = ["B", "KB", "MB", "GB"];
    for (var i = 0; i < units.length; i++) {
      if (value < 1024 || i === units.length - 1) {
        return i === 0 ? value.toFixed(0) + " B" : value.toFixed(1) + " " + units[i];
      }
      value /= 1024;
    }
    return "";
  }

  function when(epoch) {
    if (!epoch) return "";
    return new Date(epoch * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function clock(epoch) { return new Date(epoch * 1000).toISOString().slice(11, 16); }

  function element(tag, text, className) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function link(href, text) {
    var a = element("a", text);
    a.href = href;
    return a;
  }

  function row(cells) {
    var tr = document.createElement("tr");
    cells.forEach(function (cell) {
      var td = element("td", null, cell.className || "");
      if (cell.node) td.appendChild(cell.node); else td.textContent = cell.text;
      tr.appendChild(td);
    });
    return tr;
  }

  function fill(tbody, rows, empty, columns) {
    if (!tbody) return;
    tbody.textContent = "";
    if (!rows.length) {
      var td = element("td", empty, "muted");
      td.colSpan = columns;
      var tr = document.createElement("tr");
      tr.appendChild(td);
      tbody.appendChild(tr);
      return;
    }
    rows.forEach(function (r) { tbody.appendChild(r); });
  }

  /* -- selecting messages --------------------------------------------------------------- */

  function selectedCount() {
    var out = document.querySelector("[data-selected-count]");
    if (!out) return;
    var n = document.querySelectorAll('input[name="ids"]:checked').length;
    out.textContent = n ? "(" + n + " selected)" : "";
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches && target.matches("[data-select-all]")) {
      document.querySelectorAll('input[type="checkbox"][name="ids"]').forEach(function (box) {
        box.checked = target.checked;
      });
    }
    if (target.name === "ids" || target.matches("[data-select-all]")) selectedCount();
  });

  /* -- live figures ----------------------------------------------------------------------- */

  function showStatus(status) {
    var pill = document.querySelector('[data-live="running"]');
    if (pill) {
      pill.textContent = status.running ? "Running" : "Stopped";
      pill.className = "pill " + (status.running ? "pill-on" : "pill-off");
    }
    var since = document.querySelector('[data-live="since"]');
    if (since) since.textContent = status.running && status.since ? "since " + when(status.since) : "";
  }

  function showQueue(summary) {
    var totals = summary.totals || {};
    document.querySelectorAll("[data-total]").forEach(function (node) {
      var value = totals[node.getAttribute("data-total")];
      var format = node.getAttribute("data-format");
      if (format === "size") node.textContent = size(value);
      else if (format === "age") node.textContent = totals.messages ? age(value) : "–";
      else node.textContent = number(value);
    });
    var base = "/nodeworx/mail/queue?";
    fill(document.querySelector('[data-summary="destinations"]'),
      (summary.destinations || []).map(function (d) {
        return row([
          { node: link(base + "destination=" + encodeURIComponent(d.destination), d.destination) },
          { text: number(d.messages), className: "num" },
          { text: age(d.oldest_age), className: "num" },
          { text: d.top_reply, className: "reply" }
        ]);
      }), "Nothing waits.", 4);
    fill(document.querySelector('[data-summary="sender_domains"]'),
      (summary.sender_domains || []).map(function (s) {
        return row([
          { node: link(base + "sender=" + encodeURIComponent(s.domain), s.domain || "(bounces)") },
          { text: number(s.messages), className: "num" },
          { text: size(s.bytes), className: "num" },
          { text: age(s.oldest_age), className: "num" }
        ]);
      }), "The queue is empty.", 4);
  }

  var charts = {};

  function chartWidth(container) { return Math.max(260, container.clientWidth); }

  function seriesOf(activity) {
    var at = [], queued = [], delivered = [], deferred = [], failed = [], bounced = [];
    (activity.minutes || []).forEach(function (m) {
      // Before the engine started nothing is known: a gap, not a zero.
      var known = m.at + 60 > (activity.since || 0);
      at.push(m.at); queued.push(known ? m.queued : null);
      delivered.push(known ? m.delivered : null); deferred.push(known ? m.deferred : null);
      failed.push(known ? m.failed : null); bounced.push(known ? m.bounced : null);
    });
    return { queue: [at, queued], results: [at, delivered, deferred, failed, bounced] };
  }

  function makeChart(id, data, series) {
    var container = document.getElementById(id);
    if (!container || typeof window.uPlot !== "function") return null;
    var options = {
      width: chartWidth(container),
      height: 240,
      tzDate: function (ts) { return window.uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
      scales: { y: { range: function (u, min, max) { return [0, Math.max(5, max * 1.1)]; } } },
      axes: [{ values: function (u, ticks) { return ticks.map(clock); } }, { size: 56 }],
      series: [{ label: "UTC", value: function (u, ts) { return ts ? when(ts) : "--"; } }].concat(series)
    };
    var chart = new window.uPlot(options, data, container);
    if (window.ResizeObserver) {
      new ResizeObserver(function () {
        chart.setSize({ width: chartWidth(container), height: 240 });
      }).observe(container);
    }
    return chart;
  }

  function line(label, colour) {
    return { label: label, stroke: colour, width: 2, points: { show: false } };
  }

  function drawCharts(activity) {
    var data = seriesOf(activity);
    if (charts.queue) charts.queue.setData(data.queue);
    else charts.queue = makeChart("queue-chart", data.queue, [
      Object.assign(line("queued", "#1f4fbf"), { fill: "rgba(31, 79, 191, 0.12)" })
    ]);
    if (charts.results) charts.results.setData(data.results);
    else charts.results = makeChart("results-chart", data.results, [
      line("delivered", "#176b3a"), line("deferred", "#d97706"),
      line("failed", "#b42318"), line("bounced", "#5b3fa8")
    ]);
  }

  function showActivity(activity) {
    var minutes = activity.minutes || [];
    document.querySelectorAll("[data-activity-total]").forEach(function (node) {
      var key = node.getAttribute("data-activity-total");
      node.textContent = number(minutes.reduce(function (sum, m) { return sum + (m[key] || 0); }, 0));
    });
    fill(document.querySelector("[data-latest]"), (activity.latest || []).map(function (a) {
      return row([
        { text: when(a.at) },
        { node: element("span", a.result, "badge badge-" + a.result) },
        { node: link("/nodeworx/mail/queue/message/" + encodeURIComponent(a.id), a.recipient), className: "address" },
        { text: a.relay },
        { text: a.reply, className: "reply" }
      ]);
    }), "No attempt yet.", 5);
    drawCharts(activity);
  }

  var parts = [], hours = "1", timer = null, stopped = false;
  document.querySelectorAll("[data-live-parts]").forEach(function (node) {
    parts.push(node.getAttribute("data-live-parts"));
    if (node.getAttribute("data-hours")) hours = node.getAttribute("data-hours");
  });

  function sessionEnded(text) {
    stopped = true;
    var main = document.getElementById("main");
    if (!main || document.getElementById("live-ended")) return;
    var notice = element("div", null, "notice notice-error");
    notice.id = "live-ended";
    notice.setAttribute("role", "alert");
    notice.appendChild(element("p", text + " Reload the page to continue."));
    main.insertBefore(notice, main.firstChild);
  }

  function poll() {
    timer = null;
    if (stopped || document.hidden) return;
    var url = "/nodeworx/live?parts=" + encodeURIComponent(parts.join(",")) + "&hours=" + hours;
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401) { sessionEnded("Your session has ended."); return null; }
        return response.ok ? response.json() : null;
      })
      .then(function (answer) {
        if (!answer) return;
        if (answer.status) showStatus(answer.status);
        if (answer.queue) showQueue(answer.queue);
        if (answer.activity) showActivity(answer.activity);
      })
      .catch(function () { /* the panel restarts or the network blips: try again later */ })
      .then(schedule);
  }

  function schedule() {
    if (!stopped && timer === null && !document.hidden) timer = setTimeout(poll, POLL_MS);
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && timer === null) poll();
  });

  // A record's Copy button (DKIM): shown only where a script can copy; the text stays
  // selectable without one.
  function copyButtons() {
    document.querySelectorAll("[data-copy]").forEach(function (button) {
      if (!navigator.clipboard) return;
      button.hidden = false;
      button.addEventListener("click", function () {
        var source = document.getElementById(button.getAttribute("data-copy"));
        navigator.clipboard.writeText(source.value).then(function () {
          button.textContent = "Copied";
        }, function () {
          source.select();  // refused (no permission): selected, for Ctrl+C
        });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    copyButtons();
    var embedded = document.getElementById("activity-data");
    if (embedded) drawCharts(JSON.parse(embedded.textContent));
    selectedCount();
    if (parts.length) schedule();
  });
})();
