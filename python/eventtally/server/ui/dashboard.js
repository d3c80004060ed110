/* eventtally dashboard: plain browser JavaScript, no library, no build step.
 *
 * What it guarantees:
 * - The Read key lives in sessionStorage only and leaves the page only as the x-api-token header
 *   of same-origin requests to ../api/v1/ (relative, so a path prefix in front of the server
 *   works); it is never put in a URL.
 * - Every value from the server reaches the DOM through textContent or an attribute, never as
 *   markup.
 * - One chart per filter x aggregation x calculation, drawn as SVG by this file; each point is a
 *   <circle class="pt"> carrying data-dt, data-series and data-value, one per row of the
 *   /metrics/results answer for the chart's query (data-query on the figure), limited to the
 *   top-N series. The interval that contains the server's "now" is drawn dashed and hollow.
 * - Time ranges are measured on the server's clock (GET server-info "now"), so a browser with a
 *   wrong clock still sees "the last hour" of the server.
 * - Auto-refresh polls a chart at most once per displayed interval (never below 10 s), never
 *   with a request still in flight, and not while the tab is hidden.
 * - Every chart has a table of its numbers next to it; every control is reachable with the
 *   keyboard; arrow keys walk a focused chart's points.
 */
(function () {
  "use strict";

  var STORAGE_KEY = "eventtally.apiKey";
  var API = "../api/v1/";
  var SVG_NS = "http://www.w3.org/2000/svg";
  var MIN_POLL_MS = 10000;
  var HEALTH_POLL_MS = 30000;
  var MAX_POINTS = 240; // roll up so that a chart has at most about this many buckets per series
  // Okabe-Ito palette: distinguishable with the common colour-vision deficiencies.
  var COLORS = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#7a6500",
    "#000000"];
  var UNIT_SECONDS = { SECOND: 1, MINUTE: 60, HOUR: 3600, DAY: 86400, WEEK: 604800 };
  var RANGES = { "15m": 900, "1h": 3600, "24h": 86400, "7d": 604800 };
  var ROLLUPS = [60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 604800];

  var state = {
    key: null,
    offsetMs: 0, // server clock minus browser clock
    charts: [],
    healthTimer: null,
    generation: 0, // bumped at sign-out so late answers of an old session are ignored
  };

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    setAttrs(node, attrs);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function setAttrs(node, attrs) {
    if (!attrs) return;
    Object.keys(attrs).forEach(function (k) {
      if (attrs[k] !== undefined && attrs[k] !== null && attrs[k] !== false) {
        node.setAttribute(k, String(attrs[k]));
      }
    });
  }

  function serverNow() { return Date.now() + state.offsetMs; }

  // ------------------------------------------------------------------ formatting

  function iso(ms) { return new Date(ms).toISOString().replace(".000Z", "Z"); }

  function utcLabel(ms, withDate) {
    var s = new Date(ms).toISOString();
    return withDate ? s.slice(5, 10) + " " + s.slice(11, 16) : s.slice(11, 16);
  }

  function fullTime(ms) { return new Date(ms).toISOString().slice(0, 19).replace("T", " ") + " UTC"; }

  function number(v) {
    if (v === null || v === undefined) return "–";
    var a = Math.abs(v);
    if (a !== 0 && (a >= 1e15 || a < 1e-4)) return v.toExponential(3);
    return v.toLocaleString("en-US", { maximumFractionDigits: a >= 100 ? 1 : 4 });
  }

  function shortNumber(v) {
    var a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toFixed(a >= 1e10 ? 0 : 1) + "G";
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(0) + "k";
    return number(v);
  }

  function bytes(n) {
    if (n === null || n === undefined) return "–";
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function duration(s) {
    if (s === null || s === undefined) return "–";
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }

  function seriesLabel(groupings) {
    if (!groupings) return "all events";
    var keys = Object.keys(groupings).sort();
    if (!keys.length) return "all events";
    return keys.map(function (k) {
      var v = groupings[k];
      return k + " = " + (v === "" ? "(empty)" : v);
    }).join(", ");
  }

  function seriesKey(groupings) {
    if (!groupings) return "";
    var keys = Object.keys(groupings).sort();
    return JSON.stringify(keys.map(function (k) { return [k, groupings[k]]; }));
  }

  // ------------------------------------------------------------------ HTTP

  function ApiError(status, message) {
    this.status = status;
    this.message = message;
  }

  function api(path, body) {
    var gen = state.generation;
    var init = {
      method: body === undefined ? "GET" : "POST",
      headers: { "x-api-token": state.key },
      cache: "no-store",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(API + path, init).then(function (resp) {
      return resp.text().then(function (text) {
        if (gen !== state.generation) throw new ApiError(0, "signed out");
        var doc = null;
        try { doc = text ? JSON.parse(text) : null; } catch (e) { doc = null; }
        if (!resp.ok) {
          var msg = doc && typeof doc.message === "string" ? doc.message
            : "HTTP " + resp.status + " " + resp.statusText;
          throw new ApiError(resp.status, msg);
        }
        return doc;
      });
    }, function (err) {
      throw new ApiError(0, "The server did not answer (" + (err && err.message || err) + ")");
    });
  }

  // ------------------------------------------------------------------ time ranges

  function intervalSeconds(filter) {
    var unit = UNIT_SECONDS[filter.intervalType];
    var count = filter.intervalCount || 1;
    if (unit) return unit * count;
    if (filter.intervalType === "MONTH") return 2629746 * count; // mean month: scale only
    if (filter.intervalType === "YEAR") return 31556952 * count;
    return 60;
  }

  function calendarStep(filter) {
    return filter.intervalType === "MONTH" || filter.intervalType === "YEAR";
  }

  function currentRange() {
    var choice = $("range").value;
    var now = serverNow();
    if (choice === "custom") {
      var from = Date.parse($("from").value + ":00Z");
      var to = Date.parse($("to").value + ":00Z");
      if (isNaN(from) || isNaN(to)) return { error: "Enter both custom times (UTC)." };
      if (from >= to) return { error: "The custom range must start before it ends." };
      return { start: from, end: to, custom: true };
    }
    // The end is the next whole second, so the bucket holding "now" is included.
    var end = Math.floor(now / 1000) * 1000 + 1000;
    return { start: end - RANGES[choice] * 1000, end: end, custom: false };
  }

  // The bucket length a chart shows: the filter's interval, or a coarser epoch-aligned rollup
  // when the range would hold more than MAX_POINTS buckets.
  function displayStep(filter, range) {
    var base = intervalSeconds(filter);
    if (calendarStep(filter)) return { seconds: base, rollup: null };
    var spanS = (range.end - range.start) / 1000;
    if (spanS / base <= MAX_POINTS) return { seconds: base, rollup: null };
    var want = spanS / MAX_POINTS;
    for (var i = 0; i < ROLLUPS.length; i++) {
      var r = ROLLUPS[i];
      if (r > base && r >= want && r % base === 0) return { seconds: r, rollup: r };
    }
    var k = Math.ceil(want / base);
    return { seconds: base * k, rollup: base * k };
  }

  function bucketEnd(startMs, step, filter) {
    if (calendarStep(filter) && !step.rollup) {
      var d = new Date(startMs);
      var n = filter.intervalCount || 1;
      if (filter.intervalType === "MONTH") d.setUTCMonth(d.getUTCMonth() + n);
      else d.setUTCFullYear(d.getUTCFullYear() + n);
      return d.getTime();
    }
    return startMs + step.seconds * 1000;
  }

  // ------------------------------------------------------------------ sign-in

  function showError(message) { $("signin-error").textContent = message; }

  function signIn(key) {
    state.key = key;
    showError("");
    $("status").textContent = "Signing in…";
    return Promise.all([api("server-info"), api("filter-definitions")]).then(function (docs) {
      try { sessionStorage.setItem(STORAGE_KEY, key); } catch (e) { /* storage disabled */ }
      $("apiKey").value = "";
      $("status").textContent = "";
      $("signin-panel").hidden = true;
      $("dashboard").hidden = false;
      $("signout").hidden = false;
      applyServerInfo(docs[0]);
      renderFilters(docs[1]);
      refreshAll();
      refreshHealth();
      $("main").focus();
    }, function (err) {
      state.key = null;
      try { sessionStorage.removeItem(STORAGE_KEY); } catch (e) { /* storage disabled */ }
      $("status").textContent = "";
      $("signin-panel").hidden = false;
      $("dashboard").hidden = true;
      showError(err.message || String(err));
      $("apiKey").focus();
    });
  }

  function signOut() {
    state.generation++;
    state.key = null;
    try { sessionStorage.removeItem(STORAGE_KEY); } catch (e) { /* storage disabled */ }
    stopTimers();
    state.charts = [];
    $("filters").textContent = "";
    $("ingests").textContent = "";
    $("server-info").textContent = "";
    $("dashboard").hidden = true;
    $("signout").hidden = true;
    $("signin-panel").hidden = false;
    $("apiKey").focus();
  }

  function stopTimers() {
    state.charts.forEach(function (c) { clearTimeout(c.timer); c.timer = null; });
    clearTimeout(state.healthTimer);
    state.healthTimer = null;
  }

  // ------------------------------------------------------------------ server info

  function fact(dl, label, value, cls) {
    var div = el("div", cls ? { "class": cls } : null);
    div.appendChild(el("dt", null, label));
    div.appendChild(el("dd", null, value));
    dl.appendChild(div);
  }

  function applyServerInfo(info) {
    state.offsetMs = Date.parse(info.now) - Date.now();
    var dl = $("server-info");
    dl.textContent = "";
    fact(dl, "Version", info.version, "server-version");
    fact(dl, "Uptime", duration(info.uptimeSeconds), "server-uptime");
    fact(dl, "Server time", fullTime(Date.parse(info.now)), "server-now");
    fact(dl, "Data directory", bytes(info.dataDirBytes), "server-datadir");
    if (info.wal && info.wal.enabled) {
      fact(dl, "Write-ahead log", info.wal.segments + " segment(s), " + bytes(info.wal.bytes),
        "server-wal");
      fact(dl, "Last log write", ago(info.wal.lastWriteAgeSeconds), "server-wal-age");
      fact(dl, "Oldest log segment", ago(info.wal.oldestSegmentAgeSeconds), "server-wal-oldest");
    } else {
      fact(dl, "Write-ahead log", "off", "server-wal");
    }
    fact(dl, "Last snapshot", ago(info.snapshot && info.snapshot.ageSeconds), "server-snapshot-age");
    fact(dl, "Organization", info.organization, "server-org");
  }

  function ago(s) { return s === null || s === undefined ? "–" : duration(s) + " ago"; }

  // ------------------------------------------------------------------ filters

  function describeInterval(f) {
    return (f.intervalCount || 1) + " × " + f.intervalType;
  }

  function renderFilters(defs) {
    stopTimers();
    state.charts = [];
    var root = $("filters");
    root.textContent = "";
    if (!defs.length) {
      root.appendChild(el("p", { "class": "help" },
        "This organization has no enabled filters yet: create one in eventtally.toml, with " +
        "`eventtally filter create` or the admin API."));
      return;
    }
    defs.forEach(function (f) {
      var art = el("article", { "class": "filter", "data-filter-id": f.id,
        "aria-labelledby": "filter-" + f.id });
      var h = el("h3", { id: "filter-" + f.id });
      h.appendChild(el("span", { "class": "filter-name" }, f.name || f.id));
      art.appendChild(h);
      var meta = el("dl", { "class": "filter-meta" });
      meta.appendChild(el("dt", null, "Id"));
      meta.appendChild(el("dd", { "class": "filter-id" }, f.id));
      meta.appendChild(el("dt", null, "Condition"));
      var cond = el("dd");
      cond.appendChild(el("code", { "class": "filter-condition" }, f.filter || ""));
      if (!f.filter) cond.appendChild(el("span", { "class": "help" }, "every event"));
      meta.appendChild(cond);
      meta.appendChild(el("dt", null, "Interval"));
      meta.appendChild(el("dd", { "class": "filter-interval" }, describeInterval(f)));
      meta.appendChild(el("dt", null, "Groupings"));
      var gdd = el("dd");
      var gitems = f.groupingItems || [];
      if (!gitems.length) gdd.appendChild(el("span", { "class": "help" }, "none"));
      else {
        var gul = el("ul", { "class": "groupings" });
        gitems.forEach(function (g) {
          var li = el("li", { "class": "grouping" });
          li.appendChild(el("span", { "class": "grouping-alias" }, g.alias || g.grouping));
          li.appendChild(document.createTextNode(" ← "));
          li.appendChild(el("code", { "class": "grouping-path" }, g.grouping));
          gul.appendChild(li);
        });
        gdd.appendChild(gul);
      }
      meta.appendChild(gdd);
      meta.appendChild(el("dt", null, "Aggregations"));
      var add = el("dd");
      var aul = el("ul", { "class": "aggregations" });
      (f.aggregations || []).forEach(function (a) {
        var li = el("li", { "class": "aggregation", "data-aggregation-id": a.id });
        li.appendChild(el("span", { "class": "aggregation-name" }, a.name || ("#" + a.id)));
        li.appendChild(document.createTextNode(": "));
        li.appendChild(el("span", { "class": "aggregation-calculations" },
          (a.calculations || []).join(", ")));
        if (a.calculationField) {
          li.appendChild(document.createTextNode(" of "));
          li.appendChild(el("code", { "class": "aggregation-field" }, a.calculationField));
        }
        if (a.subFilter) {
          li.appendChild(document.createTextNode(" where "));
          li.appendChild(el("code", { "class": "aggregation-subfilter" }, a.subFilter));
        }
        aul.appendChild(li);
      });
      add.appendChild(aul);
      meta.appendChild(add);
      art.appendChild(meta);
      var charts = el("div", { "class": "charts" });
      (f.aggregations || []).forEach(function (a) {
        (a.calculations || []).forEach(function (calc) {
          var chart = makeChart(f, a, calc);
          charts.appendChild(chart.fig);
          state.charts.push(chart);
        });
      });
      art.appendChild(charts);
      root.appendChild(art);
    });
  }

  // ------------------------------------------------------------------ charts

  var chartSeq = 0;

  function makeChart(filter, agg, calc) {
    var id = "chart-" + (++chartSeq);
    var title = (agg.name || "#" + agg.id) + " · " + calc;
    var fig = el("figure", { "class": "chart", id: id, "data-filter-id": filter.id,
      "data-aggregation-id": agg.id, "data-calculation": calc, "aria-labelledby": id + "-title" });
    var cap = el("figcaption");
    cap.appendChild(el("span", { id: id + "-title", "class": "chart-title" }, title));
    var chart = { id: id, filter: filter, agg: agg, calc: calc, fig: fig, timer: null,
      inflight: false, lastPoll: 0, percentile: null, points: [], cursor: -1 };
    if (calc === "PERCENTILES") {
      var lab = el("label", null, "Percentile ");
      var input = el("input", { type: "number", min: "0.1", max: "100", step: "any",
        value: "95", "class": "percentile", "aria-label": title + " percentile (0–100)" });
      lab.appendChild(input);
      cap.appendChild(lab);
      chart.percentile = input;
      input.addEventListener("change", function () { loadChart(chart, true); });
    }
    chart.state = el("span", { "class": "chart-state" });
    cap.appendChild(chart.state);
    fig.appendChild(cap);
    chart.error = el("p", { "class": "chart-error", role: "alert", hidden: true });
    fig.appendChild(chart.error);
    chart.plot = svg("svg", { "class": "plot", viewBox: "0 0 640 240", role: "img",
      tabindex: "0", "aria-label": title + " chart; use the arrow keys to read its points",
      focusable: "true" });
    fig.appendChild(chart.plot);
    chart.readout = el("p", { "class": "readout", "aria-live": "polite" });
    fig.appendChild(chart.readout);
    chart.legend = el("ul", { "class": "legend", "aria-label": "Series" });
    fig.appendChild(chart.legend);
    var det = el("details", { "class": "numbers" });
    det.appendChild(el("summary", null, "Table of the numbers"));
    chart.tableWrap = el("div", { "class": "table-wrap" });
    det.appendChild(chart.tableWrap);
    fig.appendChild(det);
    chart.plot.addEventListener("keydown", function (ev) { chartKey(chart, ev); });
    chart.plot.addEventListener("blur", function () { setCursor(chart, -1); });
    return chart;
  }

  function chartQuery(chart, range, step) {
    var q = {
      filterId: chart.filter.id,
      aggregationId: chart.agg.id,
      calculation: chart.calc,
      startTime: iso(range.start),
      endTime: iso(range.end),
      includeIncompleteIntervals: true,
    };
    if (chart.percentile) {
      var p = parseFloat(chart.percentile.value);
      if (!(p > 0 && p <= 100)) p = 95;
      q.percentile = p / 100;
    }
    if (step.rollup) q.recalculatedInterval = { type: "SECOND", frequency: step.rollup };
    return q;
  }

  function pollPeriodMs(chart) {
    var range = currentRange();
    var step = range.error ? { seconds: intervalSeconds(chart.filter) } : displayStep(chart.filter, range);
    return Math.max(MIN_POLL_MS, step.seconds * 1000);
  }

  function schedule(chart) {
    clearTimeout(chart.timer);
    chart.timer = null;
    if (!$("auto").checked || !state.key) return;
    var range = currentRange();
    if (range.custom && range.end < serverNow()) return; // a past range does not change
    chart.timer = setTimeout(function () {
      chart.timer = null;
      if (document.hidden) { schedule(chart); return; }
      loadChart(chart, false);
    }, pollPeriodMs(chart));
  }

  function loadChart(chart, manual) {
    if (chart.inflight) {
      // One request per chart at a time; a settings change waits for it, then asks again.
      if (manual) chart.again = true;
      return;
    }
    var range = currentRange();
    if (range.error) {
      chart.state.textContent = range.error;
      clearTimeout(chart.timer);
      chart.timer = null;
      return;
    }
    var step = displayStep(chart.filter, range);
    var query = chartQuery(chart, range, step);
    chart.inflight = true;
    chart.lastPoll = Date.now();
    chart.fig.setAttribute("aria-busy", "true");
    api("metrics/results", query).then(function (rows) {
      chart.error.hidden = true;
      chart.error.textContent = "";
      chart.fig.setAttribute("data-query", JSON.stringify(query));
      drawChart(chart, rows || [], range, step);
    }, function (err) {
      if (err.status === 0 && err.message === "signed out") return;
      chart.error.hidden = false;
      chart.error.textContent = err.message;
      if (err.status === 401) signOutWith(err.message);
    }).then(function () {
      chart.inflight = false;
      chart.fig.removeAttribute("aria-busy");
      if (chart.again && state.key) {
        chart.again = false;
        loadChart(chart, true);
      } else {
        schedule(chart);
      }
    });
  }

  function signOutWith(message) {
    signOut();
    showError(message);
  }

  function refreshAll() {
    state.charts.forEach(function (c) { loadChart(c, true); });
  }

  function topSeries(rows, n) {
    var series = {};
    var order = [];
    rows.forEach(function (r) {
      var key = seriesKey(r.groupings);
      var s = series[key];
      if (!s) {
        s = series[key] = { key: key, label: seriesLabel(r.groupings), groupings: r.groupings,
          rows: [], total: 0 };
        order.push(s);
      }
      s.rows.push(r);
      s.total += r.value;
    });
    order.sort(function (a, b) {
      return b.total - a.total || (a.label < b.label ? -1 : a.label > b.label ? 1 : 0);
    });
    return { shown: order.slice(0, n), hidden: Math.max(0, order.length - n) };
  }

  // Round tick values (1, 2 or 5 times a power of ten) from at most lo to at least hi.
  function niceTicks(lo, hi, count) {
    if (!(hi > lo)) hi = lo + 1;
    var raw = (hi - lo) / count;
    var mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var norm = raw / mag;
    var step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
    var v = Math.floor(lo / step) * step;
    var ticks = [v];
    while (v < hi - step * 1e-9 && ticks.length < 50) {
      v = Number((v + step).toPrecision(12));
      ticks.push(v);
    }
    return ticks;
  }

  function drawChart(chart, rows, range, step) {
    var n = Math.max(1, parseInt($("topN").value, 10) || 5);
    var top = topSeries(rows, n);
    var now = serverNow();
    var W = 640, H = 240, L = 56, R = 12, T = 12, B = 28;
    var plot = chart.plot;
    plot.textContent = "";
    chart.points = [];
    chart.cursor = -1;
    chart.readout.textContent = "";
    var x0 = range.start, x1 = range.end;
    var values = [];
    top.shown.forEach(function (s) { s.rows.forEach(function (r) { values.push(r.value); }); });
    var lo = Math.min(0, Math.min.apply(null, values.length ? values : [0]));
    var hi = Math.max.apply(null, values.length ? values : [1]);
    var ticks = niceTicks(lo, hi, 4);
    lo = ticks[0];
    hi = ticks[ticks.length - 1];
    if (hi === lo) hi = lo + 1;
    function X(ms) { return L + (W - L - R) * (ms - x0) / (x1 - x0); }
    function Y(v) { return T + (H - T - B) * (1 - (v - lo) / (hi - lo)); }
    ticks.forEach(function (t) {
      plot.appendChild(svg("line", { "class": "grid", x1: L, x2: W - R, y1: Y(t), y2: Y(t) }));
      plot.appendChild(svg("text", { x: L - 6, y: Y(t) + 4, "text-anchor": "end" }, shortNumber(t)));
    });
    var spanMs = x1 - x0;
    var withDate = spanMs > 86400000;
    var xt = 5;
    for (var i = 0; i <= xt; i++) {
      var ms = x0 + spanMs * i / xt;
      var x = X(ms);
      plot.appendChild(svg("line", { "class": "grid", x1: x, x2: x, y1: T, y2: H - B }));
      plot.appendChild(svg("text", { x: x, y: H - B + 16,
        "text-anchor": i === 0 ? "start" : i === xt ? "end" : "middle" }, utcLabel(ms, withDate)));
    }
    plot.appendChild(svg("line", { "class": "axis", x1: L, x2: W - R, y1: Y(lo), y2: Y(lo) }));
    plot.appendChild(svg("line", { "class": "axis", x1: L, x2: L, y1: T, y2: H - B }));
    if (!top.shown.length) {
      plot.appendChild(svg("text", { "class": "empty", x: (L + W - R) / 2, y: H / 2,
        "text-anchor": "middle" }, "No data in this range"));
    }
    top.shown.forEach(function (s, si) {
      var color = COLORS[si % COLORS.length];
      var pts = s.rows.map(function (r) {
        var t = Date.parse(r.dt);
        return { t: t, value: r.value, row: r, incomplete: bucketEnd(t, step, chart.filter) > now };
      }).sort(function (a, b) { return a.t - b.t; });
      var solid = [];
      var dashed = [];
      pts.forEach(function (p, i) {
        var xy = X(p.t).toFixed(1) + "," + Y(p.value).toFixed(1);
        if (p.incomplete) {
          if (!dashed.length && i > 0) dashed.push(solid[solid.length - 1]);
          dashed.push(xy);
        } else {
          solid.push(xy);
        }
      });
      if (solid.length > 1) {
        plot.appendChild(svg("polyline", { "class": "line", points: solid.join(" "),
          stroke: color }));
      }
      if (dashed.length > 1) {
        plot.appendChild(svg("polyline", { "class": "line incomplete", points: dashed.join(" "),
          stroke: color }));
      }
      pts.forEach(function (p) {
        var c = svg("circle", { "class": p.incomplete ? "pt incomplete" : "pt", cx: X(p.t).toFixed(1),
          cy: Y(p.value).toFixed(1), r: 3.5, fill: color, stroke: color,
          "data-dt": p.row.dt, "data-series": s.label, "data-value": p.value });
        c.appendChild(svg("title", null, s.label + " · " + fullTime(p.t) + ": " + number(p.value) +
          (p.incomplete ? " (incomplete interval)" : "")));
        plot.appendChild(c);
        chart.points.push({ node: c, t: p.t, value: p.value, label: s.label, incomplete: p.incomplete });
      });
    });
    chart.points.sort(function (a, b) { return a.t - b.t || (a.label < b.label ? -1 : 1); });
    // legend
    chart.legend.textContent = "";
    top.shown.forEach(function (s, si) {
      var li = el("li", { "class": "legend-item" });
      li.appendChild(el("span", { "class": "swatch", "aria-hidden": "true",
        "data-color": COLORS[si % COLORS.length] }));
      li.lastChild.style.backgroundColor = COLORS[si % COLORS.length];
      li.appendChild(el("span", { "class": "legend-label" }, s.label));
      chart.legend.appendChild(li);
    });
    if (top.hidden) {
      chart.legend.appendChild(el("li", { "class": "legend-more" },
        "+" + top.hidden + " more series (raise “Series shown”)"));
    }
    if (chart.points.some(function (p) { return p.incomplete; })) {
      var inc = el("li", { "class": "legend-incomplete" });
      inc.appendChild(el("span", { "class": "swatch dashed", "aria-hidden": "true" }));
      inc.appendChild(el("span", null, "dashed, hollow: interval still in progress"));
      chart.legend.appendChild(inc);
    }
    var stepText = step.rollup ? duration(step.seconds) + " buckets (rolled up)"
      : describeInterval(chart.filter) + " buckets";
    chart.state.textContent = stepText + " · updated " + utcLabel(now, false) + " UTC";
    drawTable(chart, top, step);
    chart.fig.setAttribute("data-drawn", String(Number(chart.fig.getAttribute("data-drawn") || 0) + 1));
  }

  function drawTable(chart, top, step) {
    var wrap = chart.tableWrap;
    wrap.textContent = "";
    var table = el("table", { "class": "chart-table" });
    table.appendChild(el("caption", null, chart.fig.querySelector(".chart-title").textContent +
      " (" + (step.rollup ? duration(step.seconds) : describeInterval(chart.filter)) +
      " buckets, UTC)"));
    var thead = el("thead");
    var hr = el("tr");
    hr.appendChild(el("th", { scope: "col" }, "Bucket start (UTC)"));
    top.shown.forEach(function (s) { hr.appendChild(el("th", { scope: "col" }, s.label)); });
    thead.appendChild(hr);
    table.appendChild(thead);
    var times = {};
    var now = serverNow();
    top.shown.forEach(function (s, si) {
      s.rows.forEach(function (r) {
        var t = Date.parse(r.dt);
        if (!times[t]) times[t] = { t: t, cells: {} };
        times[t].cells[si] = r.value;
      });
    });
    var tbody = el("tbody");
    Object.keys(times).map(function (k) { return times[k]; })
      .sort(function (a, b) { return a.t - b.t; })
      .forEach(function (row) {
        var incomplete = bucketEnd(row.t, step, chart.filter) > now;
        var tr = el("tr", incomplete ? { "class": "incomplete" } : null);
        tr.appendChild(el("th", { scope: "row" }, fullTime(row.t) + (incomplete ? " (incomplete)" : "")));
        top.shown.forEach(function (s, si) {
          var v = row.cells[si];
          tr.appendChild(el("td", { "data-value": v === undefined ? null : v },
            v === undefined ? "–" : number(v)));
        });
        tbody.appendChild(tr);
      });
    table.appendChild(tbody);
    wrap.appendChild(table);
  }

  function setCursor(chart, i) {
    chart.points.forEach(function (p) { p.node.classList.remove("current"); });
    chart.cursor = i;
    if (i < 0 || i >= chart.points.length) {
      chart.readout.textContent = "";
      return;
    }
    var p = chart.points[i];
    p.node.classList.add("current");
    chart.readout.textContent = p.label + " · " + fullTime(p.t) + ": " + number(p.value) +
      (p.incomplete ? " (incomplete interval)" : "") + " — point " + (i + 1) + " of " +
      chart.points.length;
  }

  function chartKey(chart, ev) {
    var n = chart.points.length;
    if (!n) return;
    var i = chart.cursor;
    if (ev.key === "ArrowRight" || ev.key === "ArrowDown") i = Math.min(n - 1, i + 1);
    else if (ev.key === "ArrowLeft" || ev.key === "ArrowUp") i = i < 0 ? n - 1 : Math.max(0, i - 1);
    else if (ev.key === "Home") i = 0;
    else if (ev.key === "End") i = n - 1;
    else if (ev.key === "Escape") i = -1;
    else return;
    ev.preventDefault();
    setCursor(chart, i);
  }

  // ------------------------------------------------------------------ ingest health

  function refreshHealth() {
    clearTimeout(state.healthTimer);
    state.healthTimer = null;
    Promise.all([api("server-info"), api("ingest-health?minutes=60&rejected=20")])
      .then(function (docs) {
        applyServerInfo(docs[0]);
        renderHealth(docs[1]);
      }, function (err) {
        if (err.status === 0 && err.message === "signed out") return;
        $("status").textContent = "Ingest health: " + err.message;
        if (err.status === 401) signOutWith(err.message);
      }).then(function () {
        if ($("auto").checked && state.key) {
          state.healthTimer = setTimeout(function () {
            if (document.hidden) { state.healthTimer = null; return; }
            refreshHealth();
          }, HEALTH_POLL_MS);
        }
      });
  }

  function sumValues(obj) {
    return Object.keys(obj || {}).reduce(function (a, k) { return a + obj[k]; }, 0);
  }

  function byKey(obj) {
    var keys = Object.keys(obj || {}).sort();
    if (!keys.length) return "none";
    return keys.map(function (k) { return k + ": " + obj[k]; }).join(", ");
  }

  function renderHealth(doc) {
    var root = $("ingests");
    root.textContent = "";
    if (!doc.ingests.length) {
      root.appendChild(el("p", { "class": "help" }, "This organization has no ingests."));
    }
    var now = Date.parse(doc.now);
    doc.ingests.forEach(function (ing) {
      var art = el("article", { "class": "ingest", "data-ingest-id": ing.id,
        "aria-labelledby": "ingest-" + ing.id });
      art.appendChild(el("h3", { id: "ingest-" + ing.id }, (ing.name || ing.id) + " (" + ing.id +
        ", " + ing.schema + (ing.enabled ? "" : ", disabled") + ")"));
      var t = ing.totals;
      var dl = el("dl", { "class": "facts" });
      fact(dl, "Batches accepted", t.batches, "ingest-batches");
      fact(dl, "Events received", t.received, "ingest-received");
      fact(dl, "Events accepted", t.accepted, "ingest-accepted");
      fact(dl, "Events dropped", sumValues(t.dropped) + (sumValues(t.dropped) ? " (" +
        byKey(t.dropped) + ")" : ""), "ingest-dropped");
      fact(dl, "Timestamp fallbacks", t.timestampFallback, "ingest-fallback");
      fact(dl, "Batches refused", sumValues(t.rejected) + (sumValues(t.rejected) ? " (" +
        byKey(t.rejected) + ")" : ""), "ingest-rejected");
      fact(dl, "Last event", ing.lastEventAt ? fullTime(Date.parse(ing.lastEventAt)) : "none yet",
        "ingest-last-event");
      fact(dl, "Since last event", ing.lagSeconds === null ? "–" : duration(ing.lagSeconds),
        "ingest-lag");
      art.appendChild(dl);
      art.appendChild(healthChart(ing, now, doc.minutes));
      art.appendChild(healthTable(ing));
      art.appendChild(rejectedTable(ing));
      root.appendChild(art);
    });
  }

  function healthChart(ing, now, minutes) {
    var W = 640, H = 120, L = 56, R = 12, T = 8, B = 22;
    var end = (Math.floor(now / 60000) + 1) * 60000;
    var start = end - minutes * 60000;
    var plot = svg("svg", { "class": "plot health-plot", viewBox: "0 0 " + W + " " + H,
      role: "img", "aria-label": "Events per minute for " + ing.id + " (see the table below)" });
    var maxV = 1;
    ing.series.forEach(function (m) {
      maxV = Math.max(maxV, m.accepted + sumValues(m.dropped), sumValues(m.rejected));
    });
    var ticks = niceTicks(0, maxV, 2);
    var hi = ticks[ticks.length - 1];
    var bw = (W - L - R) / minutes;
    function X(ms) { return L + (W - L - R) * (ms - start) / (end - start); }
    function Y(v) { return T + (H - T - B) * (1 - v / hi); }
    ticks.forEach(function (tk) {
      plot.appendChild(svg("line", { "class": "grid", x1: L, x2: W - R, y1: Y(tk), y2: Y(tk) }));
      plot.appendChild(svg("text", { x: L - 6, y: Y(tk) + 4, "text-anchor": "end" }, shortNumber(tk)));
    });
    for (var i = 0; i <= 4; i++) {
      var ms = start + (end - start) * i / 4;
      plot.appendChild(svg("text", { x: X(ms), y: H - 6,
        "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, utcLabel(ms, false)));
    }
    plot.appendChild(svg("line", { "class": "axis", x1: L, x2: W - R, y1: Y(0), y2: Y(0) }));
    ing.series.forEach(function (m) {
      var t = Date.parse(m.dt);
      var x = X(t);
      var dropped = sumValues(m.dropped);
      var rejected = sumValues(m.rejected);
      var w = Math.max(1, bw * 0.8);
      if (m.accepted) {
        plot.appendChild(svg("rect", { "class": "bar-accepted", x: x, width: w,
          y: Y(m.accepted), height: Y(0) - Y(m.accepted), "data-dt": m.dt,
          "data-value": m.accepted }));
      }
      if (dropped) {
        plot.appendChild(svg("rect", { "class": "bar-dropped", x: x, width: w,
          y: Y(m.accepted + dropped), height: Y(m.accepted) - Y(m.accepted + dropped),
          "data-dt": m.dt, "data-value": dropped }));
      }
      if (rejected) {
        plot.appendChild(svg("circle", { "class": "bar-rejected", cx: x + w / 2, cy: Y(rejected),
          r: 3, "data-dt": m.dt, "data-value": rejected }));
      }
    });
    var wrap = el("div", { "class": "health-chart" });
    wrap.appendChild(plot);
    var legend = el("ul", { "class": "legend" });
    [["swatch-accepted", "events accepted"], ["swatch-dropped", "events dropped"],
      ["swatch-rejected", "batches refused"]].forEach(function (p) {
      var li = el("li");
      li.appendChild(el("span", { "class": "swatch " + p[0], "aria-hidden": "true" }));
      li.appendChild(el("span", null, p[1]));
      legend.appendChild(li);
    });
    wrap.appendChild(legend);
    return wrap;
  }

  function healthTable(ing) {
    var det = el("details", { "class": "numbers" });
    det.appendChild(el("summary", null, "Per-minute table"));
    var wrap = el("div", { "class": "table-wrap" });
    var table = el("table", { "class": "health-table" });
    table.appendChild(el("caption", null, "Ingest " + ing.id + " per minute (UTC)"));
    var hr = el("tr");
    ["Minute (UTC)", "Received", "Accepted", "Dropped", "Refused batches"].forEach(function (h) {
      hr.appendChild(el("th", { scope: "col" }, h));
    });
    var thead = el("thead");
    thead.appendChild(hr);
    table.appendChild(thead);
    var tbody = el("tbody");
    ing.series.forEach(function (m) {
      var tr = el("tr");
      tr.appendChild(el("th", { scope: "row" }, fullTime(Date.parse(m.dt))));
      tr.appendChild(el("td", null, m.received));
      tr.appendChild(el("td", null, m.accepted));
      tr.appendChild(el("td", null, sumValues(m.dropped) ? byKey(m.dropped) : "0"));
      tr.appendChild(el("td", null, sumValues(m.rejected) ? byKey(m.rejected) : "0"));
      tbody.appendChild(tr);
    });
    if (!ing.series.length) {
      var empty = el("tr");
      empty.appendChild(el("td", { colspan: 5 }, "No batches in this period"));
      tbody.appendChild(empty);
    }
    table.appendChild(tbody);
    wrap.appendChild(table);
    det.appendChild(wrap);
    return det;
  }

  function rejectedTable(ing) {
    var sec = el("div", { "class": "rejected" });
    sec.appendChild(el("h4", null, "Last refused batches"));
    if (!ing.rejectedBatches.length) {
      sec.appendChild(el("p", { "class": "help" }, "None since the server started."));
      return sec;
    }
    var wrap = el("div", { "class": "table-wrap" });
    var table = el("table", { "class": "rejected-table" });
    table.appendChild(el("caption", null, "Newest first; only the first bytes of each body are kept"));
    var hr = el("tr");
    ["Time (UTC)", "Status", "Message", "Size", "First bytes"].forEach(function (h) {
      hr.appendChild(el("th", { scope: "col" }, h));
    });
    var thead = el("thead");
    thead.appendChild(hr);
    table.appendChild(thead);
    var tbody = el("tbody");
    ing.rejectedBatches.forEach(function (r) {
      var tr = el("tr", { "class": "rejected-batch" });
      tr.appendChild(el("th", { scope: "row" }, fullTime(Date.parse(r.at))));
      tr.appendChild(el("td", { "class": "status" }, r.status));
      tr.appendChild(el("td", { "class": "message" }, r.message));
      tr.appendChild(el("td", null, r.bodyBytes === null ? "–" : bytes(r.bodyBytes) +
        (r.contentEncoding ? " " + r.contentEncoding : "")));
      var td = el("td", { "class": "body-prefix" });
      td.appendChild(el("code", null, r.bodyPrefix));
      tr.appendChild(td);
      tbody.appendChild(tr);
    });
    table.appendChild(tbody);
    wrap.appendChild(table);
    sec.appendChild(wrap);
    return sec;
  }

  // ------------------------------------------------------------------ wiring

  function onSettingsChanged() {
    $("custom-range").hidden = $("range").value !== "custom";
    if ($("range").value === "custom" && !$("from").value) {
      var now = serverNow();
      $("to").value = new Date(now).toISOString().slice(0, 16);
      $("from").value = new Date(now - 3600000).toISOString().slice(0, 16);
    }
    refreshAll();
  }

  function init() {
    $("signin").addEventListener("submit", function (ev) {
      ev.preventDefault();
      var key = $("apiKey").value.trim();
      if (!key) { showError("Enter a Read API key."); return; }
      signIn(key);
    });
    $("signout").addEventListener("click", signOut);
    $("settings").addEventListener("submit", function (ev) { ev.preventDefault(); refreshAll(); });
    ["range", "from", "to", "topN"].forEach(function (id) {
      $(id).addEventListener("change", onSettingsChanged);
    });
    $("auto").addEventListener("change", function () {
      if ($("auto").checked) { refreshAll(); refreshHealth(); } else { stopTimers(); }
    });
    $("refresh").addEventListener("click", function () { refreshAll(); refreshHealth(); });
    document.addEventListener("visibilitychange", function () {
      if (document.hidden || !state.key || !$("auto").checked) return;
      // Back in view: catch up at once on charts whose interval has passed, keep the rest.
      state.charts.forEach(function (c) {
        if (!c.timer && !c.inflight) loadChart(c, false);
      });
      if (!state.healthTimer) refreshHealth();
    });
    var saved = null;
    try { saved = sessionStorage.getItem(STORAGE_KEY); } catch (e) { saved = null; }
    if (saved) signIn(saved);
    else $("apiKey").focus();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
