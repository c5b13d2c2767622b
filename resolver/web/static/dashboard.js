// The operator dashboard's refresh: every few seconds, GET /api/dashboard (the console
// session's cookie) and redraw the figures and tables the server rendered. Without this
// script the page is the same, as of its loading. Text goes in through textContent only:
// nothing from the JSON becomes markup.
"use strict";

(function () {
  const root = document.getElementById("dashboard");
  if (!root) return;
  const words = JSON.parse(document.getElementById("dash-words").textContent);
  const every = Math.max(2, Number(root.dataset.refresh) || 5) * 1000;
  const lang = document.documentElement.lang || "zh-CN";
  let chartStamp = "";

  function w(key, fields) {
    let text = words[key] || key;
    for (const [k, v] of Object.entries(fields || {})) text = text.split("{" + k + "}").join(v);
    return text;
  }
  const dash = "—";
  const num = (v) => (v === null || v === undefined ? dash : Number(v).toLocaleString(lang));
  const rate = (v) =>
    v === null || v === undefined
      ? dash
      : Number(v).toLocaleString(lang, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const ratio = (v) => (v === null || v === undefined ? dash : (v * 100).toFixed(1) + " %");
  const ms = (v) => (v === null || v === undefined ? dash : Number(v).toFixed(3));

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function setText(id, text) {
    const e = document.getElementById(id);
    if (e) e.textContent = text;
  }
  // Replace a table's rows: one array of cells (strings or elements) per row.
  function fill(id, rows, empty, cols) {
    const body = document.querySelector("#" + id + " tbody");
    if (!body) return;
    const out = [];
    for (const cells of rows) {
      const tr = el("tr");
      for (const c of cells) {
        if (c instanceof Node) tr.appendChild(c);
        else tr.appendChild(el("td", c));
      }
      out.push(tr);
    }
    if (!out.length) {
      const tr = el("tr", null, "empty");
      const td = el("td", empty);
      td.colSpan = cols;
      tr.appendChild(td);
      out.push(tr);
    }
    body.replaceChildren(...out);
  }
  const n = (text) => el("td", text, "n");
  function state(s) {
    const td = el("td");
    td.appendChild(el("span", w("dash_state." + s), "state state-" + s));
    return td;
  }

  function health(h) {
    const badge = document.getElementById("health-status");
    if (badge) {
      badge.textContent = w("dash_state." + h.status);
      badge.className = "state state-" + h.status;
    }
    fill(
      "health",
      h.parts.map((p) => {
        const name = el("td", w("dash_kind." + p.kind));
        if (p.name !== p.kind) {
          name.appendChild(el("br"));
          name.appendChild(el("span", p.name, "muted"));
        }
        return [name, state(p.state), p.reason];
      }),
      "",
      3
    );
  }

  function traffic(t) {
    setText("resolutions-total", num(t.resolutions.total));
    setText("resolutions-rate", rate(t.resolutions.perSecond));
    setText(
      "window-note",
      t.windowSeconds === null ? w("dash_rate_pending") : w("dash_rate_window", { n: t.windowSeconds })
    );
    fill(
      "requests",
      t.requests.map((r) => [r.door, r.rc + " " + r.rcName, n(num(r.total)), n(rate(r.perSecond))]),
      w("dash_no_requests"),
      4
    );
    fill(
      "cache",
      t.cache.map((c) => [c.name, n(num(c.hits)), n(num(c.misses)), n(ratio(c.hitRatio)), n(ratio(c.recentHitRatio))]),
      "",
      5
    );
    fill(
      "latency",
      t.latency.map((l) => [l.door, n(num(l.count)), n(ms(l.p50Ms)), n(ms(l.p90Ms)), n(ms(l.p99Ms))]),
      w("dash_no_requests"),
      5
    );
  }

  // Pending applications: redrawn only when the set changes (a reason being typed into
  // a row that is still pending is kept).
  function pending(apps) {
    const table = document.getElementById("pending");
    if (!table) return;
    const ids = apps.pending.map((a) => String(a.id)).join(",");
    const shown = Array.from(table.querySelectorAll("tbody tr[data-id]"))
      .map((tr) => tr.dataset.id)
      .join(",");
    if (ids === shown) return;
    const csrf = table.dataset.csrf;
    function form(id, action, label, withReason) {
      const f = el("form", null, "inline");
      f.method = "post";
      f.action = "/dashboard/applications/" + id + "/" + action;
      const token = el("input");
      token.type = "hidden";
      token.name = "csrf";
      token.value = csrf;
      f.appendChild(token);
      if (withReason) {
        const reason = el("input");
        reason.type = "text";
        reason.name = "reason";
        reason.required = true;
        reason.placeholder = w("dash_app_reason");
        reason.setAttribute("aria-label", w("dash_app_reason"));
        f.appendChild(reason);
      }
      const b = el("button", label, action);
      b.type = "submit";
      b.id = action + "-" + id;
      f.appendChild(b);
      return f;
    }
    fill(
      "pending",
      apps.pending.map((a) => {
        const td = el("td", null, "actions");
        td.appendChild(form(a.id, "approve", w("dash_approve"), false));
        td.appendChild(form(a.id, "reject", w("dash_reject"), true));
        return [String(a.id), a.prefix, a.applicant, a.createdAt, td];
      }),
      apps.error || w("dash_no_applications"),
      5
    );
    table.querySelectorAll("tbody tr").forEach((tr, i) => {
      if (apps.pending[i]) tr.dataset.id = String(apps.pending[i].id);
    });
  }

  function quotas(q) {
    fill(
      "quotas",
      q.prefixes.map((p) => [p.prefix, n(num(p.limit)), n(num(p.used)), n(num(p.left))]),
      w("dash_no_quotas"),
      4
    );
  }

  // The charts are images the node draws; fetched again only when the counts changed.
  function charts(s) {
    const stamp = JSON.stringify([s.registrations, s.resolutions]);
    if (chartStamp && stamp !== chartStamp) {
      for (const what of ["registrations", "resolutions"]) {
        const img = document.getElementById("chart-" + what);
        if (img) img.src = "/dashboard/charts/" + what + ".svg?v=" + Date.now();
      }
    }
    chartStamp = stamp;
  }

  async function refresh() {
    try {
      const r = await fetch(root.dataset.api, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
        cache: "no-store",
      });
      if (r.ok) {
        const d = (await r.json()).dashboard;
        health(d.health);
        traffic(d.traffic);
        setText("l1-entries", num(d.l1Entries));
        charts(d.statistics);
        pending(d.applications);
        quotas(d.quotas);
        setText("updated", w("dash_updated", { when: d.generatedAt }));
        root.dataset.refreshed = d.generatedAt;
      } else if (r.status === 401 || r.status === 403) {
        return; // signed out meanwhile: the page stays as it is, no more asking
      }
    } catch (e) {
      // The node restarting or the network gone: try again at the next tick.
    }
    setTimeout(refresh, every);
  }
  setTimeout(refresh, every);
})();
