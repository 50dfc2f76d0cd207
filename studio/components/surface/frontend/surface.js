// The Activations surface: one plotly.js plot that stays in the page across reruns.
// Streamlit's v1 component protocol is spoken by hand (what streamlit-component-lib does):
// announce "componentReady", receive "render" messages with the arguments, report the height.
// A new figure is applied with Plotly.react on the same <div>, so the WebGL context and the
// camera (layout.uirevision) survive a toggle; only what changed is rebuilt.
(function () {
  "use strict";
  var plot = document.getElementById("plot");
  var lastSpec = null;
  var height = 0;

  function send(type, extra) {
    var msg = Object.assign({ isStreamlitMessage: true, type: type }, extra || {});
    window.parent.postMessage(msg, "*");
  }

  function render(args) {
    if (args.height !== height) {
      height = args.height;
      plot.style.height = height + "px";
      send("streamlit:setFrameHeight", { height: height });
    }
    if (args.spec === lastSpec) return; // a rerun that changed nothing shown
    lastSpec = args.spec;
    var fig = JSON.parse(args.spec);
    Plotly.react(plot, fig.data, fig.layout, args.config || {});
  }

  window.addEventListener("message", function (ev) {
    var d = ev.data;
    if (d && d.type === "streamlit:render") render(d.args);
  });
  window.addEventListener("resize", function () {
    if (plot._fullLayout) Plotly.Plots.resize(plot);
  });
  send("streamlit:componentReady", { apiVersion: 1 });
})();
