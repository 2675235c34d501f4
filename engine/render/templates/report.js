// The decision table: search, filters, sorting and expandable rows over data embedded as JSON.
// Only the rows in view are in the DOM (windowing), so 100,000 rows stay fast. Every value
// from the data is written with textContent, never as markup.
(function () {
  "use strict";
  var ROW_H = 34, OVERSCAN = 8;
  var TONES = { ACTIVE: "good", REJECTED: "bad", UNENROLLED: "bad", NEEDS_ACTION: "warn", PAUSED: "warn",
    PENDING: "info", SUBMITTED: "info", update: "info", none: "muted", skip: "muted", error: "bad" };
  var VERDICTS = ["no match", "match", "error", "skipped"];

  // The header, notes and cards come last in the file (a run's numbers are known at its end)
  // and the stylesheet shows them first; here they move first in the document too, so that
  // keyboards and screen readers meet them in the order they are seen.
  var mainEl = document.querySelector("main"), tableSection = document.getElementById("table-section");
  var header = document.querySelector("body > header.top");
  if (header) document.body.insertBefore(header, document.body.firstChild);
  Array.prototype.forEach.call(mainEl.querySelectorAll(":scope > .page-note, :scope > .cards"), function (node) {
    mainEl.insertBefore(node, tableSection);
  });

  // Blocks of one kind in file order, parsed and joined: the rows come in chunks, each with
  // the strings its rows are the first to use, and ids count across chunks.
  function blocks(selector) {
    return Array.prototype.map.call(document.querySelectorAll(selector), function (b) { return JSON.parse(b.textContent); });
  }
  function joined(parts, pick) { return Array.prototype.concat.apply([], parts.map(pick)); }
  var table = JSON.parse(document.getElementById("report-table").textContent);
  var chunks = blocks("script.report-rows");
  var columns = table.columns, cells = joined(chunks, function (c) { return c.cells; });
  var strings = columns.map(function (_, i) { return joined(chunks, function (c) { return c.strings[i]; }); });
  chunks = null;
  var stride = columns.length + 1, total = cells.length / stride;
  var visible = [], filterCols = [], searchCols = [];
  columns.forEach(function (c, i) {
    c.index = i;
    if (!c.hidden) visible.push(c);
    if (c.filter) filterCols.push(c);
    if (c.sort === "text") searchCols.push(i);
  });

  var viewport = document.getElementById("viewport"), spacer = document.getElementById("spacer");
  var rowsEl = document.getElementById("rows"), countEl = document.getElementById("count");
  var searchEl = document.getElementById("search"), filtersEl = document.getElementById("filters");
  var root = document.documentElement;
  root.style.setProperty("--row-h", ROW_H + "px");
  var template = visible.map(function (c) { return c.width; }).join(" ");
  tableSection.style.setProperty("--columns", template);

  var state = { query: "", filters: {}, sortCol: -1, sortDir: 1, expanded: -1 };
  var order = null;        // row indexes in sort order (null: as given)
  var view = new Int32Array(total), viewLen = 0;
  var expandedPos = -1, detailEl = null, detailH = 0;
  var lower = null, details = null, ranks = {};

  function cell(row, col) { return cells[row * stride + col]; }
  function text(col, id) { return id < 0 || id === null ? "" : strings[col][id]; }
  function fmt(n) { return n.toLocaleString("en-US"); }
  function el(tag, cls, content) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (content !== undefined && content !== null) node.textContent = content;
    return node;
  }

  // --- head, filters --------------------------------------------------------------------
  var head = document.getElementById("grid-head"), sortButtons = [];
  visible.forEach(function (c) {
    var th = el("div", "cell");
    th.setAttribute("role", "columnheader");
    var button = el("button", "sort");
    button.type = "button";
    button.appendChild(el("span", null, c.label));
    button.appendChild(el("span", "arrow", ""));
    button.addEventListener("click", function () { sortBy(c.index); });
    th.appendChild(button);
    head.appendChild(th);
    sortButtons.push({ col: c.index, th: th, arrow: button.lastChild });
  });

  var selects = {}, splits = {};
  filterCols.forEach(function (c) {
    var tally = new Int32Array(strings[c.index].length + 1), counts = new Map(), r;  // [0]: empty cells
    for (r = 0; r < total; r++) tally[cell(r, c.index) + 1]++;
    var split = c.split ? splitValues(c, tally) : null, name = split ? function (v) { return split.values[v]; }
      : function (v) { return text(c.index, v); };
    if (split) split.counts.forEach(function (n, v) { if (n) counts.set(v, n); });
    else for (r = 0; r < tally.length; r++) if (tally[r]) counts.set(r - 1, tally[r]);
    if (split && tally[0]) counts.set(-1, tally[0]);
    var label = el("label", "filter", c.label);
    var select = el("select");
    select.setAttribute("data-col", c.key);
    var all = el("option", null, "all (" + fmt(total) + ")");
    all.value = "";
    select.appendChild(all);
    var place = split ? function (v) { return v; } : function (v) { return v < 0 ? -1 : rankOf(c.index).rank[v]; };
    Array.from(counts.keys()).sort(function (a, b) {
      return counts.get(b) - counts.get(a) || place(a) - place(b);
    }).forEach(function (v) {
      var option = el("option", null, (v < 0 ? "(empty)" : name(v)) + " (" + fmt(counts.get(v)) + ")");
      option.value = String(v);
      select.appendChild(option);
    });
    select.addEventListener("change", function () { setFilter(c.index, select.value); });
    label.appendChild(select);
    filtersEl.appendChild(label);
    selects[c.key] = { select: select, col: c.index, name: name };
    if (split) splits[c.index] = split;
  });

  // A cell that lists values ("status, reason"): each value once, the rows that list it
  // counted, and per value which of the column's strings contain it.
  function splitValues(c, tally) {
    var values = [], ids = new Map(), has = [], counts = [];
    rankOf(c.index).order.forEach(function (sid) {
      var s = strings[c.index][sid];
      s.split(c.split).forEach(function (part) {
        if (!part) return;
        if (!ids.has(part)) { ids.set(part, values.length); values.push(part); has.push(new Uint8Array(strings[c.index].length)); counts.push(0); }
        var v = ids.get(part);
        if (!has[v][sid]) { has[v][sid] = 1; counts[v] += tally[sid + 1]; }
      });
    });
    return { values: values, has: has, counts: counts };
  }

  function setFilter(col, value) {
    if (value === "") delete state.filters[col]; else state.filters[col] = Number(value);
    apply();
  }

  // A bar or list entry in the summary filters the table by its label.
  document.querySelectorAll("[data-filter-key]").forEach(function (button) {
    button.addEventListener("click", function () {
      var target = selects[button.getAttribute("data-filter-key")];
      if (!target) return;
      var wanted = button.getAttribute("data-filter-value");
      for (var i = 0; i < target.select.options.length; i++) {
        var option = target.select.options[i];
        if (option.value !== "" && Number(option.value) >= 0 && target.name(Number(option.value)) === wanted) {
          target.select.value = option.value;
          setFilter(target.col, option.value);
          tableSection.scrollIntoView({ block: "start" });
          return;
        }
      }
    });
  });

  searchEl.addEventListener("input", function () { state.query = searchEl.value; apply(); });
  document.getElementById("reset").addEventListener("click", function () {
    state.query = ""; searchEl.value = ""; state.filters = {};
    Object.keys(selects).forEach(function (k) { selects[k].select.value = ""; });
    apply();
  });

  // --- search, filter, sort -------------------------------------------------------------
  // Per searched column, which of its strings contain the word: each distinct string is
  // looked at once, then rows are matched by number.
  function matchingStrings(word) {
    if (lower === null) lower = strings.map(function (list) { return list.map(function (s) { return s.toLowerCase(); }); });
    return searchCols.map(function (col) {
      var list = lower[col], hits = new Uint8Array(list.length);
      for (var i = 0; i < list.length; i++) if (list[i].indexOf(word) !== -1) hits[i] = 1;
      return hits;
    });
  }

  function apply() {
    var words = state.query.toLowerCase().split(/\s+/).filter(Boolean);
    var hitSets = words.map(matchingStrings);
    var filterList = Object.keys(state.filters).map(function (k) {
      var value = state.filters[k], split = splits[k];
      return [Number(k), value, split && value >= 0 ? split.has[value] : null];  // a split value: the strings that list it
    });
    viewLen = 0;
    for (var p = 0; p < total; p++) {
      var r = order === null ? p : order[p], base = r * stride, ok = true, f, w, c;
      for (f = 0; f < filterList.length && ok; f++) {
        var got = cells[base + filterList[f][0]], has = filterList[f][2];
        ok = has ? got >= 0 && has[got] === 1 : got === filterList[f][1];
      }
      for (w = 0; w < hitSets.length && ok; w++) {
        var hits = hitSets[w], found = false;
        for (c = 0; c < searchCols.length && !found; c++) { var v = cells[base + searchCols[c]]; found = v >= 0 && hits[c][v] === 1; }
        ok = found;
      }
      if (ok) view[viewLen++] = r;
    }
    searchEl.classList.toggle("active", words.length > 0);
    Object.keys(selects).forEach(function (k) { selects[k].select.classList.toggle("active", selects[k].select.value !== ""); });
    locateExpanded();
    countEl.textContent = viewLen === total ? fmt(total) + " " + table.noun
      : "Showing " + fmt(viewLen) + " of " + fmt(total) + " " + table.noun;
    layout();
    render();
  }

  // Each text column's strings in sort order (case-insensitive, then by code), made once per
  // column: order[i] is the i-th string, rank[id] its place (equal strings, equal places).
  // Each chunk's new strings come sorted, so the sort mostly merges runs.
  function rankOf(col) {
    if (ranks[col]) return ranks[col];
    var list = strings[col], n = list.length, folded = new Array(n), order = new Array(n), i;
    for (i = 0; i < n; i++) { folded[i] = list[i].toLowerCase(); order[i] = i; }
    order.sort(function (a, b) {
      var x = folded[a], y = folded[b];
      if (x !== y) return x < y ? -1 : 1;
      x = list[a]; y = list[b];
      return x < y ? -1 : x > y ? 1 : a - b;
    });
    var rank = new Int32Array(n), count = 0;
    for (i = 0; i < n; i++) {
      if (i > 0 && list[order[i]] !== list[order[i - 1]]) count++;
      rank[order[i]] = count;
    }
    ranks[col] = { order: order, rank: rank, count: n ? count + 1 : 0 };
    return ranks[col];
  }

  // A text cell's rank is its sort key; keys and row numbers are packed into one float so
  // the native numeric sort does the work.
  function sortBy(col) {
    if (state.sortCol === col) state.sortDir = -state.sortDir; else { state.sortCol = col; state.sortDir = 1; }
    var dir = state.sortDir, numeric = columns[col].sort === "number", r;
    if (numeric) {
      var values = Array.from({ length: total }, function (_, i) { return i; });
      values.sort(function (a, b) {
        var x = cell(a, col), y = cell(b, col);
        if (x === null || y === null) return (x === null) - (y === null) || a - b;
        return (x - y) * dir || a - b;
      });
      order = Int32Array.from(values);
    } else {
      var ranked = rankOf(col), rank = ranked.rank, last = ranked.count;
      var packed = new Float64Array(total);
      for (r = 0; r < total; r++) {
        var v = cell(r, col), key = v < 0 ? 2 * last : (dir > 0 ? rank[v] : last - 1 - rank[v]);  // empty cells last
        packed[r] = key * total + r;
      }
      packed.sort();
      order = new Int32Array(total);
      for (r = 0; r < total; r++) order[r] = packed[r] % total;
    }
    sortButtons.forEach(function (b) {
      var on = b.col === col;
      b.arrow.textContent = on ? (dir > 0 ? "\u25B2" : "\u25BC") : "";
      b.th.setAttribute("aria-sort", on ? (dir > 0 ? "ascending" : "descending") : "none");
    });
    apply();
  }

  // --- windowed rendering ---------------------------------------------------------------
  function locateExpanded() {
    expandedPos = -1;
    if (state.expanded < 0) return;
    for (var p = 0; p < viewLen; p++) if (view[p] === state.expanded) { expandedPos = p; return; }
  }

  function topOf(position) { return position * ROW_H + (expandedPos >= 0 && position > expandedPos ? detailH : 0); }

  function layout() {
    spacer.style.height = Math.max(viewLen * ROW_H + (expandedPos >= 0 ? detailH : 0), ROW_H * 2) + "px";
    if (detailEl && expandedPos < 0) { detailEl.remove(); detailEl = null; detailH = 0; }
    if (detailEl) detailEl.style.top = (expandedPos + 1) * ROW_H + "px";
  }

  function positionAt(y) {
    if (expandedPos >= 0 && y > (expandedPos + 1) * ROW_H + detailH) return Math.floor((y - detailH) / ROW_H);
    if (expandedPos >= 0 && y > (expandedPos + 1) * ROW_H) return expandedPos;
    return Math.floor(y / ROW_H);
  }

  function render() {
    var top = viewport.scrollTop, height = viewport.clientHeight || 600;
    var first = Math.max(0, positionAt(top) - OVERSCAN);
    var last = Math.min(viewLen, positionAt(top + height) + OVERSCAN + 1);
    var fragment = document.createDocumentFragment();
    for (var p = first; p < last; p++) fragment.appendChild(rowElement(view[p], p));
    if (viewLen === 0) fragment.appendChild(el("div", "no-rows", table.empty));
    rowsEl.replaceChildren(fragment);
  }

  function rowElement(r, position) {
    var row = el("div", "row");
    row.setAttribute("role", "row");
    row.tabIndex = 0;
    row.dataset.row = String(r);
    row.style.top = topOf(position) + "px";
    var open = r === state.expanded, hasDetail = cell(r, stride - 1) >= 0;
    if (open) row.classList.add("expanded");
    if (hasDetail) row.setAttribute("aria-expanded", open ? "true" : "false");
    visible.forEach(function (c, i) {
      var v = cell(r, c.index), content = c.sort === "number" ? (v === null ? "" : fmt(v)) : text(c.index, v);
      var td = el("div", "cell" + (c.mono ? " mono" : ""));
      td.setAttribute("role", "cell");
      if (i === 0) td.appendChild(el("span", "twisty", hasDetail ? (open ? "\u25BE" : "\u25B8") : ""));
      if (content === "") { td.classList.add("empty-cell"); td.appendChild(document.createTextNode("\u2014")); }
      else if (c.badge) td.appendChild(el("span", "badge tone-" + (TONES[content] || "neutral"), content));
      else td.appendChild(document.createTextNode(content));
      if (content !== "") td.title = content;
      row.appendChild(td);
    });
    return row;
  }

  function toggle(r) {
    if (detailEl) { detailEl.remove(); detailEl = null; detailH = 0; }
    state.expanded = state.expanded === r || cell(r, stride - 1) < 0 ? -1 : r;
    locateExpanded();
    if (expandedPos >= 0) {
      detailEl = detailElement(cell(r, stride - 1));
      detailEl.style.top = (expandedPos + 1) * ROW_H + "px";
      spacer.appendChild(detailEl);
      detailH = detailEl.offsetHeight;
    }
    layout();
    render();
    if (expandedPos >= 0) {
      var bottom = (expandedPos + 1) * ROW_H + detailH;
      if (bottom > viewport.scrollTop + viewport.clientHeight) {
        viewport.scrollTop = Math.min(expandedPos * ROW_H, bottom - viewport.clientHeight);
      }
      var focused = rowsEl.querySelector('[data-row="' + r + '"]');
      if (focused) focused.focus({ preventScroll: true });
    }
  }

  rowsEl.addEventListener("click", function (event) {
    var row = event.target.closest(".row");
    if (row) toggle(Number(row.dataset.row));
  });
  rowsEl.addEventListener("keydown", function (event) {
    var row = event.target.closest(".row");
    if (!row) return;
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); toggle(Number(row.dataset.row)); }
  });
  var pending = false;
  viewport.addEventListener("scroll", function () {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () { pending = false; render(); });
  });
  window.addEventListener("resize", function () { render(); });

  // --- explanations (parsed on the first expanded row) ----------------------------------
  function loadDetails() {
    if (details !== null) return true;
    // The blocks come after this script, so the first rows show before they are even read.
    if (document.readyState === "loading") return false;
    var parts = blocks("script.report-details");
    details = {
      strings: joined(parts, function (p) { return p.strings; }),
      steps: joined(parts, function (p) { return p.steps; }),
      details: joined(parts, function (p) { return p.details; })
    };
    return true;
  }
  // Parsed, and each sortable column ranked, when the browser is idle after loading, so the
  // first row opens and the first sort of a column runs at once.
  document.addEventListener("DOMContentLoaded", function () {
    var work = [loadDetails];
    visible.forEach(function (c) { if (c.sort === "text") work.push(function () { rankOf(c.index); }); });
    (function next() {
      var task = work.shift();
      if (!task) return;
      var run = function () { task(); next(); };
      if (window.requestIdleCallback) requestIdleCallback(run, { timeout: 3000 }); else setTimeout(run, 200);
    })();
  });

  function detailElement(id) {
    if (!loadDetails()) return pendingDetail(id);
    var s = details.strings, d = details.details[id];
    function t(i) { return i < 0 ? null : s[i]; }
    var box = el("div", "detail");
    box.setAttribute("role", "region");
    box.setAttribute("aria-label", "Explanation");
    if (t(d[0]) !== null) box.appendChild(el("p", "summary", t(d[0])));
    if (d[1].length) {
      var notes = el("ul", "notes");
      d[1].forEach(function (n) { notes.appendChild(el("li", null, t(n))); });
      box.appendChild(notes);
    }
    // Two sections (a diff's base and new policy) stand side by side, to be read across.
    var sections = el("div", "sections" + (d[2].length === 2 ? " side-by-side" : ""));
    d[2].forEach(function (section) {
      var part = sections.appendChild(el("div", "section"));
      if (t(section[0]) !== null) part.appendChild(el("h3", null, t(section[0])));
      if (t(section[2]) !== null) part.appendChild(el("p", "detail-note", t(section[2])));
      if (!section[1].length) return;
      var list = el("ol", "steps");
      section[1].forEach(function (stepId) { list.appendChild(stepElement(details.steps[stepId], t)); });
      part.appendChild(list);
    });
    box.appendChild(sections);
    return box;
  }

  function pendingDetail(id) {
    var box = el("div", "detail", "Loading the explanations\u2026");
    document.addEventListener("DOMContentLoaded", function () {
      if (detailEl === box) { var r = state.expanded; state.expanded = -1; toggle(r); }
    });
    return box;
  }

  function stepElement(step, t) {
    var verdict = VERDICTS[step[2]];
    var item = el("li", "step verdict-" + verdict.replace(" ", "-"));
    var headLine = el("div", "step-head");
    headLine.appendChild(el("span", "step-kind", t(step[1])));
    headLine.appendChild(el("code", "step-id", t(step[0])));
    headLine.appendChild(el("span", "badge tone-" + (verdict === "match" ? "good" : verdict === "error" ? "bad" : "muted"), verdict));
    item.appendChild(headLine);
    var reads = step[3];
    if (reads.length) {
      var readTable = el("table", "reads"), body = el("tbody");
      for (var i = 0; i < reads.length; i += 3) {
        var tr = el("tr");
        tr.appendChild(el("td", null)).appendChild(el("code", null, t(reads[i])));
        tr.appendChild(el("td", null)).appendChild(el("code", null, t(reads[i + 1])));
        var flag = tr.appendChild(el("td", null));
        if (reads[i + 2]) flag.appendChild(el("span", "tag", "missing"));
        body.appendChild(tr);
      }
      readTable.appendChild(body);
      item.appendChild(readTable);
    }
    var decided = step[4];
    if (decided.length) {
      var box = el("div", "decided");
      for (var j = 0; j < decided.length; j += 2) {
        var line = el("div");
        line.style.paddingLeft = (j / 2) * 1.2 + "em";
        line.appendChild(el("span", "why", j === 0 ? "decided by " : "because "));
        line.appendChild(el("code", null, t(decided[j])));
        line.appendChild(el("span", "why", " \u2192 "));
        line.appendChild(el("code", null, t(decided[j + 1])));
        box.appendChild(line);
      }
      item.appendChild(box);
    }
    if (t(step[5]) !== null) item.appendChild(el("p", "step-error", "error: " + t(step[5])));
    return item;
  }

  // For tests and the benchmark: the numbers behind what is on screen.
  window.reportTable = { total: total, shown: function () { return viewLen; }, apply: apply, sortBy: sortBy };
  apply();
  root.setAttribute("data-ready", "true");
  window.reportReadyAt = performance.now();
  requestAnimationFrame(function () { window.reportFrameAt = performance.now(); });  // the rows' first frame
})();
