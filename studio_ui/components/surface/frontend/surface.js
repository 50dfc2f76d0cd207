// The Activations surface: one plotly.js plot that stays in the page across reruns.
// Streamlit's v1 component protocol is spoken by hand (what streamlit-component-lib does):
// announce "componentReady", receive "render" messages with the arguments, report the height
// and, after a toggle here, the new view state ("setComponentValue": the server follows).
// The pooled grid arrives once (raw block extremes, their exact tokens and channels); the
// toggles |x|, log and sort channels are applied here, in the browser, and drawn with
// Plotly.react on the same <div> (same WebGL context; the camera survives via uirevision).
// The transforms are the server's (studio_backend/analysis/lod.py transform,
// studio_ui/services_activations.py sort_columns): tests/analysis/test_surface_toggles.py.
(function () {
  "use strict";
  var plot = document.getElementById("plot");
  var boxes = {
    abs: document.getElementById("t-abs"),
    log: document.getElementById("t-log"),
    sort: document.getElementById("t-sort"),
  };
  var lastSpec = null;
  var spec = null; // parsed: {fig, data, views, colorscales}
  var grid = null; // decoded arrays
  var height = 0;
  var config = {};
  var state = { abs: false, log: false, sort: false };
  var seq = 0; // this browser's latest toggle (the server echoes the one it has taken over)
  var drawn = null; // the state on screen

  function send(type, extra) {
    var msg = Object.assign({ isStreamlitMessage: true, type: type }, extra || {});
    window.parent.postMessage(msg, "*");
  }

  function decode(b64, Type) {
    var bin = atob(b64);
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new Type(bytes.buffer);
  }

  function load(d) {
    var raw = decode(d.raw, Float32Array);
    var rows = d.rows, cols = d.cols;
    // Per-column absmax over the raw block extremes: the sort key (NaN sorts last, like
    // numpy's argsort of -absmax).
    var key = new Float64Array(cols);
    for (var c = 0; c < cols; c++) {
      var m = -Infinity, nan = false;
      for (var r = 0; r < rows; r++) {
        var v = Math.abs(raw[r * cols + c]);
        if (v !== v) nan = true;
        else if (v > m) m = v;
      }
      key[c] = nan ? NaN : m;
    }
    var idx = [];
    for (c = 0; c < cols; c++) idx.push(c);
    var bad = []; // flat indices of the NaN / inf cells (marked by nonFinite), found once
    for (var i = 0; i < raw.length; i++) if (!isFinite(raw[i])) bad.push(i);
    var order = idx.slice().sort(function (a, b) {
      var ka = key[a], kb = key[b];
      var na = ka !== ka, nb = kb !== kb;
      if (na || nb) return na === nb ? a - b : na ? 1 : -1;
      return kb > ka ? 1 : kb < ka ? -1 : a - b; // descending, stable
    });
    return {
      rows: rows, cols: cols, raw: raw,
      tokens: decode(d.tokens, Int32Array), channels: decode(d.channels, Int32Array),
      x: d.x, xRank: d.xRank, y: d.y, texts: d.texts,
      identity: idx, order: order, bad: bad,
    };
  }

  function transform(v, abs, log) {
    // lod.transform: |x| and/or sign(x) * log10(1 + |x|), in float32 like the server.
    var out = abs ? Math.abs(v) : v;
    if (log) out = Math.fround(Math.sign(out) * Math.log10(1 + Math.abs(out)));
    return out;
  }

  // customdata / text are read as data[column][row] by plotly.js surfaces (figs._hover). Made
  // once per column order: an |x| / log toggle hands plotly.js the same arrays (unchanged).
  function hoverData(sort) {
    var g = grid, key = sort ? "sorted" : "plain";
    if (g[key]) return g[key];
    var cols = sort ? g.order : g.identity;
    var custom = new Array(g.cols), text = g.texts ? new Array(g.cols) : undefined;
    for (var j = 0; j < g.cols; j++) {
      var c = cols[j], cd = new Array(g.rows), tx = text ? new Array(g.rows) : null;
      for (var r = 0; r < g.rows; r++) {
        var i = r * g.cols + c;
        cd[r] = [g.tokens[i], g.channels[i], g.raw[i]];
        if (tx) tx[r] = g.texts[g.tokens[i]];
      }
      custom[j] = cd;
      if (text) text[j] = tx;
    }
    g[key] = { custom: custom, text: text };
    return g[key];
  }

  function nonFinite(s, lo, hi) {
    // NaN / inf cells are holes in a plotly.js surface: mark each with a magenta diamond, NaN
    // at zero height and +-inf at the surface's top / bottom (the PNG export's convention).
    var g = grid, xs = s.sort ? g.xRank : g.x, m = { x: [], y: [], z: [], custom: [] };
    if (s.sort && !g.rank) { // column c's position when sorted (the inverse of g.order)
      g.rank = new Int32Array(g.cols);
      g.order.forEach(function (c, j) { g.rank[c] = j; });
    }
    g.bad.forEach(function (i) {
      var r = Math.floor(i / g.cols), c = i % g.cols, v = g.raw[i];
      var t = transform(v, s.abs, s.log);
      m.x.push(xs[s.sort ? g.rank[c] : c]);
      m.y.push(g.y[r]);
      m.z.push(t !== t ? 0 : t > 0 ? hi : lo);
      m.custom.push([g.tokens[i], g.channels[i], v !== v ? "NaN" : v > 0 ? "+inf" : "-inf"]);
    });
    if (!m.x.length) return null;
    return {
      type: "scatter3d", mode: "markers", name: "NaN / inf", showlegend: false,
      x: m.x, y: m.y, z: m.z, customdata: m.custom,
      marker: { color: "#ff00ff", size: 5, symbol: "diamond", line: { color: "#000000", width: 1 } },
      hovertemplate: "token %{customdata[0]}<br>channel %{customdata[1]}<br>value %{customdata[2]}<extra></extra>",
    };
  }

  function trace(s) {
    var g = grid, cols = s.sort ? g.order : g.identity;
    var z = new Array(g.rows), lo = 0, hi = 0;
    for (var r = 0; r < g.rows; r++) {
      var row = new Float32Array(g.cols);
      for (var j = 0; j < g.cols; j++) {
        var v = transform(g.raw[r * g.cols + cols[j]], s.abs, s.log);
        row[j] = v;
        if (isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
      }
      z[r] = row;
    }
    var hover = hoverData(s.sort), custom = hover.custom, text = hover.text;
    var view = spec.views["" + (+s.abs) + (+s.log) + (+s.sort)];
    var t = Object.assign({}, spec.fig.data[0], {
      z: z, x: s.sort ? g.xRank : g.x, y: g.y, customdata: custom,
      hovertemplate: view.template,
      colorscale: s.abs ? spec.colorscales.sequential : spec.colorscales.diverging,
      cmid: s.abs ? null : 0,
      colorbar: Object.assign({}, spec.fig.data[0].colorbar, { title: { text: view.label } }),
    });
    if (text) t.text = text;
    var layout = JSON.parse(JSON.stringify(spec.fig.layout));
    layout.scene.xaxis.title = { text: view.xtitle };
    layout.scene.zaxis.title = { text: view.label };
    var marks = nonFinite(s, lo, hi);
    return { data: marks ? [t, marks] : [t], layout: layout };
  }

  function same(a, b) {
    return !!a && !!b && a.abs === b.abs && a.log === b.log && a.sort === b.sort;
  }

  function draw() {
    Object.keys(boxes).forEach(function (k) { boxes[k].checked = state[k]; });
    if (!grid || same(drawn, state)) return Promise.resolve(false);
    var want = Object.assign({}, state);
    var t0 = performance.now();
    var f = trace(want);
    var t1 = performance.now();
    drawn = want;
    window.__draws = (window.__draws || 0) + 1; // read by the tests
    return Plotly.react(plot, f.data, f.layout, config).then(function () {
      // Where a redraw's time goes (read by bench/activations_ui.py).
      window.__lastDraw = { build: t1 - t0, react: performance.now() - t1 };
      return true;
    });
  }

  function render(args) {
    if (args.height !== height) {
      height = args.height;
      plot.style.height = height - document.getElementById("bar").offsetHeight + "px";
      send("streamlit:setFrameHeight", { height: height });
    }
    config = args.config || {};
    if (args.spec !== lastSpec) { // a new tensor or grid: the only time data is parsed
      lastSpec = args.spec;
      spec = JSON.parse(args.spec);
      grid = load(spec.data);
      drawn = null;
    }
    // A rerun older than this browser's latest toggle carries a stale state: keep ours.
    if (args.seq >= seq) {
      seq = args.seq;
      state = Object.assign({}, args.state);
    }
    draw(); // nothing happens when the state on screen is already this one
  }

  Object.keys(boxes).forEach(function (k) {
    boxes[k].addEventListener("change", function () {
      state = Object.assign({}, state);
      state[k] = boxes[k].checked;
      seq += 1;
      var mine = seq;
      window.__toggleAt = performance.now();
      draw().then(function () {
        // Report after the new frame is drawn: the server's rerun does not compete with it.
        requestAnimationFrame(function () {
          window.__drawnAt = performance.now();
          if (mine === seq) {
            send("streamlit:setComponentValue", {
              value: { abs: state.abs, log: state.log, sort: state.sort, seq: seq },
              dataType: "json",
            });
          }
        });
      });
    });
  });
  window.addEventListener("message", function (ev) {
    var d = ev.data;
    if (d && d.type === "streamlit:render") render(d.args);
  });
  window.addEventListener("resize", function () {
    if (plot._fullLayout) Plotly.Plots.resize(plot);
  });
  send("streamlit:componentReady", { apiVersion: 1 });
})();
