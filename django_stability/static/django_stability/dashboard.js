/* The Stability page: draws the status, polls it, sends the operator's actions.
 *
 * No dependencies and no HTML strings: every value is put in the page as text,
 * so nothing from the status (a policy name, a rate-limit key) can inject markup.
 */
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var root, statusUrl, actUrl, refreshSeconds, csrfToken, timer, permissions = {};

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      var value = attrs[name];
      if (value === null || value === undefined || value === false) return;
      if (name === "text") node.textContent = value;
      else if (name.slice(0, 2) === "on") node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    });
    (children || []).forEach(function (child) {
      if (child === null || child === undefined) return;
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    });
    return node;
  }

  function shown(value, suffix) {
    if (value === null || value === undefined || value === "") return "–";
    return String(value) + (suffix || "");
  }

  function seconds(value) {
    if (value === null || value === undefined) return "–";
    if (value < 90) return value.toFixed(value < 10 ? 1 : 0) + " s";
    if (value < 5400) return Math.round(value / 60) + " min";
    return (value / 3600).toFixed(1) + " h";
  }

  function badge(state) {
    var label = String(state || "unknown");
    return el("span", {"class": "stability-state " + label, "data-state": label, text: label.replace("_", " ")});
  }

  function counts(map) {
    var keys = Object.keys(map || {}).filter(function (key) { return map[key]; });
    if (!keys.length) return "–";
    return keys.sort().map(function (key) { return key.replace("_", " ") + " " + map[key]; }).join(", ");
  }

  function table(columns, rows, empty, rowAttrs) {
    if (!rows || !rows.length) return el("p", {"class": "stability-empty", text: empty});
    var head = el("tr", {}, columns.map(function (column) { return el("th", {scope: "col", text: column[0]}); }));
    var body = rows.map(function (row) {
      return el("tr", rowAttrs ? rowAttrs(row) : {}, columns.map(function (column) {
        var value = column[1](row);
        var cell = column[0] === "Actions" ? {"class": "stability-buttons"} : {};
        return el("td", cell, [typeof value === "object" && value !== null ? value : shown(value)]);
      }));
    });
    return el("table", {"class": "stability-table"}, [el("thead", {}, [head]), el("tbody", {}, body)]);
  }

  // Actions -------------------------------------------------------------------------------

  function say(message, ok) {
    var box = document.getElementById("stability-message");
    box.textContent = "";
    box.appendChild(el("p", {"class": ok ? "stability-ok" : "stability-error", text: message}));
  }

  function act(fields, button) {
    var body = new FormData();
    Object.keys(fields).forEach(function (name) { body.append(name, fields[name]); });
    if (button) button.disabled = true;
    return fetch(actUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: {"X-CSRFToken": csrfToken, "Accept": "application/json"},
      body: body
    }).then(function (response) {
      return response.json().then(function (data) { say(data.message, response.ok && data.ok); });
    }).catch(function (error) {
      say("The action could not be sent: " + error.message, false);
    }).then(function () {
      if (button) button.disabled = false;
      poll();
    });
  }

  function button(target, name, action, label, extra) {
    var fields = {target: target, name: name, action: action};
    Object.keys(extra || {}).forEach(function (key) { fields[key] = extra[key]; });
    return el("button", {
      type: "button",
      "class": "button stability-action",
      "data-target": target,
      "data-name": name,
      "data-action": action,
      onclick: function (event) { act(fields, event.currentTarget); }
    }, [label]);
  }

  function buttons(target, name, choices) {
    if (!permissions[target]) return "";
    return el("span", {"class": "stability-actions"}, choices.map(function (choice) {
      return button(target, name, choice[0], choice[1]);
    }));
  }

  // Charts --------------------------------------------------------------------------------

  function chart(definition, history) {
    var width = 320, height = 72, pad = 4;
    var minutes = history.minutes || [];
    var rows = definition.series.map(function (name) { return (history.series || {})[name] || []; });
    var top = 1;
    rows.forEach(function (values) {
      values.forEach(function (value) { if (value > top) top = value; });
    });
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("class", "stability-chart");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", definition.title + ", per minute, the last " + minutes.length + " minutes");
    rows.forEach(function (values, index) {
      if (values.length < 2) return;
      var step = (width - 2 * pad) / (values.length - 1);
      var points = values.map(function (value, i) {
        return (pad + i * step).toFixed(1) + "," + (height - pad - (value / top) * (height - 2 * pad)).toFixed(1);
      }).join(" ");
      var line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", points);
      line.setAttribute("class", "stability-series series-" + index);
      svg.appendChild(line);
    });
    var legend = el("ul", {"class": "stability-legend"}, definition.series.map(function (name, index) {
      var values = rows[index];
      var total = values.reduce(function (sum, value) { return sum + value; }, 0);
      var latest = values.length ? values[values.length - 1] : 0;
      return el("li", {"data-series": name}, [
        el("span", {"class": "stability-swatch series-" + index}),
        name.replace(/_/g, " ") + ": " + latest + " this minute, " + total + " in all"
      ]);
    }));
    var axis = el("div", {"class": "stability-axis"}, [
      el("span", {text: minutes.length + " min ago"}), el("span", {text: "now"})
    ]);
    return el("figure", {"class": "stability-figure"}, [
      el("figcaption", {text: definition.title + " (per minute, up to " + top + ")"}), svg, axis, legend
    ]);
  }

  // Sections ------------------------------------------------------------------------------

  var BREAKER_ACTIONS = [["reset", "Reset"], ["forced_open", "Force open"], ["disabled", "Disable"],
    ["metrics_only", "Shadow"], ["automatic", "Automatic"]];

  var sections = {
    charts: function (status) {
      var history = status.history || {};
      return el("div", {"class": "stability-charts"}, (history.charts || []).map(function (definition) {
        return chart(definition, history);
      }));
    },

    breakers: function (status) {
      return table([
        ["Name", function (row) { return row.name; }],
        ["State", function (row) { return badge(row.state); }],
        ["Mode", function (row) { return row.mode; }],
        ["Scope", function (row) { return row.scope; }],
        ["Failure rate", function (row) { return shown(row.failure_rate, "%"); }],
        ["Slow-call rate", function (row) { return shown(row.slow_call_rate, "%"); }],
        ["Calls in window", function (row) { return row.calls; }],
        ["Time left open", function (row) { return seconds(row.time_left_open); }],
        ["Processes", function (row) { return counts(row.processes); }],
        ["Actions", function (row) { return buttons("breaker", row.name, BREAKER_ACTIONS); }]
      ], status.breakers, "No circuit breaker is defined in code, settings or the admin.",
      function (row) { return {"data-breaker": row.name}; });
    },

    ratelimits: function (status) {
      return table([
        ["Policy", function (row) { return row.name; }],
        ["Rate", function (row) { return row.rate; }],
        ["Key", function (row) { return row.key; }],
        ["Mode", function (row) { return row.mode; }],
        ["Decisions", function (row) { return row.decisions; }],
        ["Refused", function (row) { return row.refusals; }],
        ["Shadow refusals", function (row) { return row.shadow_refusals; }],
        ["Keys limited now", function (row) {
          if (!row.limited.length) return "none";
          return el("ul", {"class": "stability-keys"}, row.limited.map(function (item) {
            return el("li", {}, [el("code", {text: item.key}), " retry in " + seconds(item.retry_in) + " ",
              permissions.ratelimit ? button("ratelimit", row.name, "reset_key", "Reset", {key: item.key}) : ""]);
          }).concat(row.limited_count > row.limited.length
            ? [el("li", {text: "and " + (row.limited_count - row.limited.length) + " more"})] : []));
        }]
      ], status.ratelimits, "No rate-limit policy is defined.", function (row) { return {"data-ratelimit": row.name}; });
    },

    shedding: function (status) {
      var shedding = status.shedding;
      if (!shedding) return "";
      var classes = Object.keys(shedding.in_flight || {});
      var reasons = counts(shedding.shed_by_reason);
      var summary = el("p", {"class": "stability-summary"}, [
        "Mode " + shedding.mode + ". In flight " + shedding.in_flight_total +
        (shedding.limit_total ? " of " + shedding.limit_total : " (no in-flight limit)") +
        " in " + shedding.processes + " process(es). Shed by reason: " + reasons +
        (shedding.shadow_shed ? "; in shadow mode: " + shedding.shadow_shed : "") +
        ". Brownout now in " + shedding.browned_out_processes + " process(es)."
      ]);
      var rows = classes.map(function (name) {
        return {name: name, in_flight: shedding.in_flight[name], shedding: shedding.processes_shedding[name],
          shed: shedding.shed[name]};
      });
      return el("div", {}, [summary, table([
        ["Class", function (row) { return row.name; }],
        ["In flight", function (row) { return row.in_flight; }],
        ["Shedding it now", function (row) {
          if (!row.shedding) return "no";
          return el("span", {"class": "stability-state open", "data-state": "shedding",
            text: "in " + row.shedding + " process(es)"});
        }],
        ["Shed so far", function (row) { return row.shed; }]
      ], rows, "")]);
    },

    features: function (status) {
      return table([
        ["Feature", function (row) { return row.name; }],
        ["State", function (row) { return badge(row.state); }],
        ["Turns off when shedding", function (row) { return row.brownout ? "yes" : "no"; }],
        ["Off in processes", function (row) { return row.off_in_processes; }],
        ["Actions", function (row) {
          return buttons("feature", row.name, row.enabled ? [["turn_off", "Turn off"]] : [["turn_on", "Turn on"]]);
        }]
      ], status.features, "No feature switch is declared (register_feature() or the admin).",
      function (row) { return {"data-feature": row.name}; });
    },

    concurrency: function (status) {
      return table([
        ["Policy", function (row) { return row.name; }],
        ["Limit", function (row) { return row.limit; }],
        ["Key", function (row) { return row.key || "one pool"; }],
        ["Holding a slot", function (row) { return row.holders === null ? "per key" : row.holders; }],
        ["Waiting in line", function (row) { return row.waiting_room ? row.waiting : "no waiting room"; }],
        ["Mode", function (row) { return row.mode; }]
      ], status.concurrency, "No cluster-wide concurrency limit is defined.");
    },

    bulkheads: function (status) {
      return table([
        ["Name", function (row) { return row.name; }],
        ["Mode", function (row) { return badge(row.mode); }],
        ["Scope", function (row) { return row.scope; }],
        ["Limit", function (row) { return row.limit + (row.scope === "process" ? " per process" : ""); }],
        ["In use", function (row) { return row.in_use; }],
        ["In use (cluster)", function (row) { return row.cluster_in_use; }],
        ["Waiting", function (row) { return row.waiting; }],
        ["Refused", function (row) { return row.refused; }]
      ], status.bulkheads, "No bulkhead is defined.", function (row) { return {"data-bulkhead": row.name}; });
    },

    cache: function (status) {
      var cache = status.cache || {policies: [], servers: []};
      return el("div", {}, [
        table([
          ["Policy", function (row) { return row.name; }],
          ["Fresh hits", function (row) { return row.hits; }],
          ["Stale served", function (row) { return row.stale; }],
          ["Waited", function (row) { return row.waits; }],
          ["Recomputes", function (row) { return row.recomputes; }],
          ["Errors", function (row) { return row.errors; }],
          ["Without the server", function (row) { return row.degraded; }]
        ], cache.policies, "No cache policy has counted anything yet."),
        table([
          ["Cache server", function (row) { return row.name; }],
          ["Its breaker", function (row) { return badge(row.state); }],
          ["Processes", function (row) { return counts(row.processes); }]
        ], cache.servers, "No protected cache server changed state since the processes started.")
      ]);
    },

    jobs: function (status) {
      var jobs = status.jobs || {queues: [], by_name: []};
      return el("div", {}, [
        table([
          ["Queue", function (row) { return row.name; }],
          ["Depth", function (row) { return row.depth; }],
          ["Problem", function (row) { return row.error; }]
        ], jobs.queues, "No job policy names a queue."),
        table([
          ["Job", function (row) { return row.name; }],
          ["Queued", function (row) { return row.queued; }],
          ["Running", function (row) { return row.running; }],
          ["Succeeded (" + jobs.window_minutes + " min)", function (row) { return row.succeeded; }],
          ["Failed (" + jobs.window_minutes + " min)", function (row) { return row.failed; }],
          ["Refused", function (row) { return row.refused; }]
        ], jobs.by_name, "No background job ran in the last " + jobs.window_minutes + " minutes.")
      ]);
    },

    processes: function (status) {
      var store = status.store || {};
      var summary = el("p", {"class": "stability-summary"}, [
        "Store: " + shown(store.kind) + " ", badge(store.state),
        store.round_trip_ms !== null && store.round_trip_ms !== undefined ? " round trip " + store.round_trip_ms + " ms" : "",
        store.time_left_open ? " next probe in " + seconds(store.time_left_open) : "",
        store.error ? " (" + store.error + ")" : "",
        store.processes_on_fallback ? "; " + store.processes_on_fallback + " process(es) on the local fallback" : ""
      ]);
      return el("div", {}, [summary, table([
        ["Process", function (row) { return row.id; }],
        ["Host", function (row) { return row.host; }],
        ["PID", function (row) { return row.pid; }],
        ["Up for", function (row) { return seconds(row.uptime); }],
        ["In flight", function (row) { return row.in_flight + (row.limit ? " of " + row.limit : ""); }],
        ["Store", function (row) { return badge(row.store); }],
        ["Reported", function (row) { return seconds(row.report_age) + " ago"; }]
      ], status.processes, "No process reports.")]);
    }
  };

  var ERROR_OF = {charts: "history", processes: "processes", features: "features"};

  function render(status) {
    permissions = status.permissions || {};
    Object.keys(sections).forEach(function (name) {
      var box = document.getElementById("stability-" + name);
      if (!box) return;
      var body = box.querySelector(".stability-body");
      var error = (status.errors || {})[ERROR_OF[name] || name];
      body.textContent = "";
      if (error) body.appendChild(el("p", {"class": "stability-error", text: "This section failed: " + error}));
      else body.appendChild(el("div", {}, [sections[name](status)]));
    });
    var stamp = new Date(status.generated_at);
    var meta = document.getElementById("stability-meta");
    meta.textContent = "Live state of " + (status.processes || []).length + " process(es), as of " +
      stamp.toLocaleTimeString() + "; refreshes every " + refreshSeconds + " s.";
    meta.setAttribute("data-generated-at", status.generated_at);
    fillKeyForm(status);
  }

  // The form to reset a key that is not listed (typed by the operator); kept across redraws.
  function fillKeyForm(status) {
    var form = document.getElementById("stability-reset-key");
    if (!form) return;
    form.hidden = !permissions.ratelimit || !(status.ratelimits || []).length;
    var select = form.querySelector("select");
    var names = (status.ratelimits || []).map(function (row) { return row.name; });
    var current = Array.prototype.map.call(select.options, function (option) { return option.value; });
    if (names.join("\n") === current.join("\n")) return;
    var chosen = select.value;
    select.textContent = "";
    names.forEach(function (name) { select.appendChild(el("option", {value: name, text: name})); });
    if (names.indexOf(chosen) >= 0) select.value = chosen;
  }

  function poll() {
    window.clearTimeout(timer);
    return fetch(statusUrl, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (!response.ok) throw new Error("the server answered " + response.status);
        return response.json();
      })
      .then(function (status) {
        render(status);
        root.classList.remove("stability-stale");
      })
      .catch(function (error) {
        root.classList.add("stability-stale");
        document.getElementById("stability-meta").textContent =
          "Refreshing failed (" + error.message + "); showing the last state, trying again.";
      })
      .then(schedule);
  }

  function schedule() {
    window.clearTimeout(timer);
    if (!document.hidden) timer = window.setTimeout(poll, refreshSeconds * 1000);
  }

  function start() {
    root = document.getElementById("stability-dashboard");
    if (!root) return;
    statusUrl = root.getAttribute("data-status-url");
    actUrl = root.getAttribute("data-act-url");
    refreshSeconds = parseFloat(root.getAttribute("data-refresh")) || 5;
    var token = root.querySelector("input[name=csrfmiddlewaretoken]");
    csrfToken = token ? token.value : "";
    var form = document.getElementById("stability-reset-key");
    if (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        var key = form.querySelector("input[name=key]");
        act({target: "ratelimit", name: form.querySelector("select").value, action: "reset_key", key: key.value},
          form.querySelector("button")).then(function () { key.value = ""; });
      });
    }
    render(JSON.parse(document.getElementById("stability-initial").textContent));
    root.setAttribute("data-ready", "1");
    document.addEventListener("visibilitychange", function () {
      if (document.hidden) window.clearTimeout(timer); else poll();
    });
    schedule();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
